/**
 * Child processes and folders a test file starts, removed when its process ends: on a normal
 * exit, and on SIGINT/SIGTERM/SIGHUP (tap's timeout sends SIGTERM, which skips 'exit'), after
 * which the signal acts as before. Every helper that spawns servers registers them here.
 */
import type { ChildProcess } from 'node:child_process'
import fs from 'node:fs'

const live = new Set<ChildProcess>()
const dirs = new Set<string>()
let hooked = false

function cleanupSync (): void {
  for (const child of live) {
    try { if (child.pid !== undefined) process.kill(child.pid, 'SIGKILL') } catch { /* gone */ }
  }
  live.clear()
  for (const dir of dirs) {
    try { fs.rmSync(dir, { recursive: true, force: true }) } catch { /* best effort */ }
  }
  dirs.clear()
}

function hook (): void {
  if (hooked) return
  hooked = true
  process.on('exit', cleanupSync)
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    const handler = (): void => {
      process.removeListener(sig, handler)
      cleanupSync()
      if (process.listenerCount(sig) === 0) process.kill(process.pid, sig)
    }
    process.prependListener(sig, handler)
  }
}

/** Killed (SIGKILL) when this process ends, unless it exited first. */
export function reapChild (child: ChildProcess): void {
  hook()
  live.add(child)
  child.on('exit', () => live.delete(child))
}

/** Removed when this process ends, unless `keepDir` releases it first. */
export function reapDir (dir: string): void {
  hook()
  dirs.add(dir)
}

/** Kills and removes everything registered so far, now. */
export function reapNow (): void {
  cleanupSync()
}

/** A folder already removed (or to keep): no longer removed at exit. */
export function keepDir (dir: string): void {
  dirs.delete(dir)
}
