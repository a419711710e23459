/**
 * Instructions per request, counted by callgrind (valgrind): one server process under
 * valgrind with instrumentation off, `warm` requests, then `measure` requests counted,
 * then a dump. Counts are of user-space instructions and repeat closely for the same
 * build, inputs and flags, whatever else the machine is doing; they are no stand-in for
 * time. Used by `npm run bench:instructions` (bench/instructions.ts, bench/tick-records.ts).
 *
 * Needs `valgrind` and `callgrind_control` on PATH. callgrind_control finds the process by
 * USER and HOST, so the child gets fixed values for both (and the control calls the same).
 */
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process'
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs'
import { createRequire } from 'node:module'
import os from 'node:os'
import path from 'node:path'
import { pathToFileURL } from 'node:url'
import { promisify } from 'node:util'
import { getFreePort } from './redis-server.js'

const run = promisify(execFile)

/** The V8 runtime function behind Node 20's slow `process.nextTick` (see src/hold-tick-records.ts). */
export const RUNTIME_FN = 'Runtime_DefineKeyedOwnPropertyInLiteral'

/** tsx by absolute URL, so the server can run with a temp dir as its cwd. */
export const TSX_LOADER = pathToFileURL(createRequire(import.meta.url).resolve('tsx')).href

export interface CallgrindTarget {
  /** Label in error messages. */
  name: string
  /** What follows `node` (flags, then the entry): e.g. ['--import', TSX_LOADER, 'src/server.ts']. */
  nodeArgs: string[]
  /** Path every counted request asks for (GET). */
  path: string
  /** Path that answers 200 once the server is up. */
  readyPath: string
  /** Added to a minimal environment (PATH, HOME, PORT and the callgrind_control identity). */
  env?: Record<string, string>
  warm: number
  measure: number
  /** Called with the valgrind child as soon as it exists (e.g. to kill it with the caller). */
  onChild?: (child: ChildProcess) => void
  /** Called once the server answers, before the warm requests. */
  onReady?: (child: ChildProcess) => Promise<void>
  readyTimeoutMs?: number
}

export interface InstructionCount {
  /** Per counted request, all threads. */
  instructions: number
  /** Per counted request, the JavaScript thread only. */
  mainThread: number
  /** Calls into RUNTIME_FN per counted request, and their inclusive instructions. */
  runtimeCalls: number
  runtimeInstructions: number
}

/** Whether valgrind and callgrind_control can run here. */
export function callgrindAvailable (): boolean {
  try {
    execFileSync('valgrind', ['--version'], { stdio: 'ignore' })
    execFileSync('callgrind_control', ['-h'], { stdio: 'ignore' })
    return true
  } catch {
    return false
  }
}

export async function countInstructions (target: CallgrindTarget): Promise<InstructionCount> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'aic-callgrind-'))
  const port = await getFreePort()
  // HOST is also the address the service listens on (its HOST setting): 127.0.0.1 for both.
  const identity = { USER: 'callgrind', LOGNAME: 'callgrind', HOST: '127.0.0.1' }
  const env = { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? dir, ...target.env, ...identity, PORT: String(port) }
  // Through `env -i`: exactly `env` reaches the server. A test runner adds NODE_OPTIONS to
  // every child it spawns (tap: its coverage loader), and coverage changes how V8 compiles.
  const child = spawn('env', ['-i', ...Object.entries(env).map(([k, v]) => `${k}=${v}`),
    'valgrind', '--tool=callgrind', '--separate-threads=yes', '--instr-atstart=no', `--callgrind-out-file=${path.join(dir, 'callgrind.out')}`,
    process.execPath, ...target.nodeArgs], { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] })
  target.onChild?.(child)
  let stderr = ''
  child.stderr.on('data', (d: Buffer) => { stderr = (stderr + d.toString()).slice(-4000) })
  const control = async (...args: string[]): Promise<void> => {
    await run('callgrind_control', [...args, String(child.pid)], { env: { ...process.env, ...identity } })
  }
  try {
    const base = `http://127.0.0.1:${port}`
    await waitReady(target.name, base + target.readyPath, target.readyTimeoutMs ?? 180_000, child, () => stderr)
    await target.onReady?.(child)
    await fire(base + target.path, target.warm)
    await control('-i', 'on')
    await fire(base + target.path, target.measure)
    await control('-i', 'off')
    await control('-d')
    await new Promise((resolve) => setTimeout(resolve, 1000))
    const dumps = readdirSync(dir).filter((f) => f.startsWith('callgrind.out')).map((f) => summarizeDump(readFileSync(path.join(dir, f), 'utf8')))
    const sum = (k: 'total' | 'runtimeCalls' | 'runtimeInstructions', thread?: number): number =>
      dumps.reduce((a, d) => (thread === undefined || d.thread === thread ? a + d[k] : a), 0)
    if (sum('total') === 0) throw new Error(`${target.name}: callgrind counted nothing (${dumps.length} dumps)\n${stderr}`)
    return {
      instructions: sum('total') / target.measure,
      mainThread: sum('total', 1) / target.measure,
      runtimeCalls: sum('runtimeCalls') / target.measure,
      runtimeInstructions: sum('runtimeInstructions') / target.measure,
    }
  } finally {
    child.kill('SIGKILL')
    rmSync(dir, { recursive: true, force: true })
  }
}

/** Sums one callgrind dump: all instructions, and the calls into (and inclusive cost of) RUNTIME_FN. */
function summarizeDump (text: string): { thread: number, total: number, runtimeCalls: number, runtimeInstructions: number } {
  const names = new Map<string, string>()
  let total = 0
  let thread = 1
  let runtimeCalls = 0
  let runtimeInstructions = 0
  let callee: string | undefined
  let pendingCall: number | undefined
  for (const line of text.split('\n')) {
    if (line.startsWith('totals:')) total = Number(line.slice(7).trim())
    else if (line.startsWith('thread:')) thread = Number(line.slice(7).trim())
    else if (line.startsWith('cfn=')) callee = resolveName(names, line.slice(4))
    else if (line.startsWith('fn=')) resolveName(names, line.slice(3))
    else if (line.startsWith('calls=')) pendingCall = Number(line.slice(6).split(' ')[0])
    else if (pendingCall !== undefined && /^[\d+\-*]/.test(line)) {
      // The line after calls= is the call's inclusive cost: position, then Ir.
      if (callee?.includes(RUNTIME_FN)) {
        runtimeCalls += pendingCall
        runtimeInstructions += Number(line.split(' ')[1] ?? 0)
      }
      pendingCall = undefined
    }
  }
  return { thread, total, runtimeCalls, runtimeInstructions }
}

/** callgrind compresses names: `(12) name` defines id 12, a later `(12)` refers to it. */
function resolveName (names: Map<string, string>, spec: string): string {
  const m = /^\((\d+)\)(?: (.*))?$/.exec(spec)
  if (!m) return spec
  if (m[2] !== undefined) names.set(m[1] as string, m[2])
  return names.get(m[1] as string) ?? spec
}

async function waitReady (name: string, url: string, timeoutMs: number, child: ChildProcess, output: () => string): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (Date.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`${name}: the server under valgrind exited before answering ${url}\n${output()}`)
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(5000) })
      await res.arrayBuffer()
      if (res.ok) return
    } catch { /* not yet */ }
    await new Promise((resolve) => setTimeout(resolve, 500))
  }
  throw new Error(`${name}: ${url} did not answer 200 within ${timeoutMs / 1000} s under valgrind\n${output()}`)
}

interface AutocannonResult { non2xx: number, errors: number, timeouts: number }
type Autocannon = (opts: Record<string, unknown>, cb: (err: Error | null, res: AutocannonResult) => void) => unknown
const autocannon = createRequire(import.meta.url)('autocannon') as Autocannon

/** `amount` GETs over 10 connections; any non-2xx, error or timeout is an error. */
async function fire (url: string, amount: number): Promise<void> {
  const result = await new Promise<AutocannonResult>((resolve, reject) => {
    autocannon({ url, connections: 10, amount, timeout: 60 }, (err, res) => { if (err) reject(err); else resolve(res) })
  })
  if (result.non2xx > 0 || result.errors > 0 || result.timeouts > 0) {
    throw new Error(`${url}: ${result.non2xx} non-2xx, ${result.errors} errors, ${result.timeouts} timeouts in ${amount} requests`)
  }
}
