/**
 * App instances as separate processes, started the way a deployment starts them: the
 * migration step once (`cli migrate`), then each server from its own empty working
 * directory (no `.env`, no `./data`, so nothing on disk can be shared by accident). They run
 * from the sources through tsx's loader, the same modules `npm run build` compiles to dist/.
 *
 * Every process started here is killed in `stop()`, in the test's teardown, and, should the
 * test process end without its teardown (a runner timeout's SIGTERM, an uncaught error), on
 * its way out.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { keepDir, reapChild, reapDir } from '../helpers/reaper.js'

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..')
const tsxLoader = import.meta.resolve('tsx')


export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))

/** Polls `check` until it returns a value other than undefined, or fails after `timeoutMs`. */
export async function waitFor<T> (what: string, timeoutMs: number, check: () => Promise<T | undefined> | T | undefined): Promise<T> {
  const deadline = Date.now() + timeoutMs
  let last: unknown
  for (;;) {
    try {
      const value = await check()
      if (value !== undefined) return value
    } catch (err) { last = err }
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms${last !== undefined ? ` (last error: ${String(last)})` : ''}`)
    await sleep(100)
  }
}

/** One JSON log line of an instance (pino). */
export interface LogLine { level: number, msg: string, [key: string]: unknown }

export interface Instance {
  readonly name: string
  readonly dir: string
  readonly url: string
  readonly pid: number
  /** Log lines whose message matches one of `keepLogs`, in order. */
  readonly kept: LogLine[]
  /** The last few kilobytes of output, for failure messages. */
  tail (): string
  stop (): Promise<void>
}

interface SpawnOptions {
  name: string
  script: string
  args?: string[]
  env: Record<string, string>
  dir: string
}

function spawnNode (o: SpawnOptions): { child: ChildProcess, output: () => string, onLine: (fn: (line: string) => void) => void } {
  const child = spawn(process.execPath, ['--import', tsxLoader, path.join(root, o.script), ...(o.args ?? [])], {
    cwd: o.dir,
    // Only what a deployment sets: no inherited NODE_ENV=test, no tap variables.
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: o.dir, ...o.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  reapChild(child)
  let output = ''
  const listeners: Array<(line: string) => void> = []
  let partial = ''
  const onData = (d: Buffer): void => {
    const text = d.toString('utf8')
    output = (output + text).slice(-8000)
    partial += text
    const lines = partial.split('\n')
    partial = lines.pop() ?? ''
    for (const line of lines) for (const fn of listeners) fn(line)
  }
  child.stdout?.on('data', onData)
  child.stderr?.on('data', onData)
  return { child, output: () => output, onLine: (fn) => listeners.push(fn) }
}

const exited = (child: ChildProcess): boolean => child.exitCode !== null || child.signalCode !== null

async function kill (child: ChildProcess, graceMs: number): Promise<void> {
  if (exited(child)) return
  const gone = new Promise((resolve) => child.once('exit', resolve))
  child.kill('SIGTERM')
  const timer = setTimeout(() => child.kill('SIGKILL'), graceMs)
  await gone
  clearTimeout(timer)
}

/** A fresh empty directory, removed on stop. */
export function workingDirectory (name: string): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `aic-${name}-`))
  reapDir(dir)
  return dir
}

/** `node dist/src/cli.js migrate`, from the sources: the deploy step that runs once before the instances start. */
export async function migrateOnce (env: Record<string, string>, timeoutMs = 60_000): Promise<{ output: string, ms: number }> {
  const started = Date.now()
  const dir = workingDirectory('migrate')
  const { child, output } = spawnNode({ name: 'migrate', script: 'src/cli.ts', args: ['migrate'], env, dir })
  let timer: NodeJS.Timeout | undefined
  const code = await Promise.race([
    new Promise<number | null>((resolve) => { if (exited(child)) resolve(child.exitCode); else child.once('exit', (c) => resolve(c)) }),
    new Promise<'timeout'>((resolve) => { timer = setTimeout(() => resolve('timeout'), timeoutMs) }),
  ])
  clearTimeout(timer)
  if (code === 'timeout') await kill(child, 1000)
  fs.rmSync(dir, { recursive: true, force: true })
  keepDir(dir)
  if (code === 'timeout') {
    throw new Error(`cli migrate did not finish within ${timeoutMs} ms:\n${output()}`)
  }
  if (code !== 0) throw new Error(`cli migrate exited ${String(code)}:\n${output()}`)
  return { output: output(), ms: Date.now() - started }
}

/**
 * Starts `src/server.ts` in a new working directory on a free port (PORT=0; the address is
 * read from the "Server listening" line) and waits until /api/health/ready answers 200.
 */
export async function startInstance (name: string, env: Record<string, string>, options: { keepLogs?: RegExp, readyTimeoutMs?: number } = {}): Promise<Instance> {
  const dir = workingDirectory(name)
  const { child, output, onLine } = spawnNode({ name, script: 'src/server.ts', env: { ...env, HOST: '127.0.0.1', PORT: '0' }, dir })
  const kept: LogLine[] = []
  let url: string | undefined
  onLine((line) => {
    if (!line.startsWith('{')) return
    let parsed: LogLine
    try { parsed = JSON.parse(line) as LogLine } catch { return }
    const listening = /^Server listening at (http:\/\/127\.0\.0\.1:\d+)$/.exec(parsed.msg)
    if (listening !== null) url = listening[1]
    if (options.keepLogs?.test(parsed.msg) === true) kept.push(parsed)
  })
  const instance: Instance = {
    name,
    dir,
    get url () { return url ?? '' },
    pid: child.pid ?? 0,
    kept,
    tail: output,
    stop: async () => {
      await kill(child, 15_000)
      fs.rmSync(dir, { recursive: true, force: true })
      keepDir(dir)
    },
  }
  try {
    const state = await waitFor(`${name} ready`, options.readyTimeoutMs ?? 90_000, async () => {
      if (exited(child)) return 'exited'
      if (url === undefined) return undefined
      const res = await fetch(`${url}/api/health/ready`, { signal: AbortSignal.timeout(5000) })
      return res.status === 200 ? 'ready' : undefined
    })
    if (state === 'exited') throw new Error(`${name} exited (${String(child.exitCode ?? child.signalCode)})`)
  } catch (err) {
    await instance.stop()
    throw new Error(`${String(err)}\n--- ${name} output ---\n${output()}`)
  }
  return instance
}
