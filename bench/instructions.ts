/**
 * `npm run bench:instructions`: instructions per request, counted by callgrind (valgrind),
 * for the bare route and for the service's hot quote (an L1 hit, no Redis), each with the
 * package.json start script's node flags and with INSTR_ALT_FLAGS instead (default
 * `--no-concurrent-marking`). Writes bench/results/instructions.{md,json}.
 *
 * Why: req/s and CPU time on a shared 2-core VM move by 20 % and more from one process to
 * the next; the bare route's count of instructions hardly moves, and the service's moves
 * when the work a process does moves (below). It counts user
 * space only (the kernel's side of a socket write is not in it) and is no stand-in for
 * time, so the targets stay with `npm run bench`. What it shows well is work one build does
 * and the other does not, such as Node 20's `process.nextTick` falling to V8's runtime
 * (`Runtime_DefineKeyedOwnPropertyInLiteral`, 20 to 30 calls a request) in some processes
 * and not in others: README, "Benchmarks".
 *
 * Each process: WARM requests uninstrumented, then MEASURE requests counted (10
 * connections). INSTR_RUNS (default 2) fresh processes per variant; INSTR_WARM (60000) and
 * INSTR_MEASURE (20000) set the counts. Needs valgrind and callgrind_control; two
 * processes run at a time. Takes about 6 minutes here.
 */
import { execFile, spawn } from 'node:child_process'
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { promisify } from 'node:util'
import { fileURLToPath } from 'node:url'
import { TSX_LOADER, fireCount, getFreePort, installExitHooks, markdownTable, medianBy, sleep, startScriptFlags, textTable, trackChild } from './lib.js'

const BENCH_DIR = path.dirname(fileURLToPath(import.meta.url))
const ROOT = path.resolve(BENCH_DIR, '..')
const RUNS = intEnv('INSTR_RUNS', 2)
const WARM = intEnv('INSTR_WARM', 60_000)
const MEASURE = intEnv('INSTR_MEASURE', 20_000)
const ALT_FLAGS = (process.env.INSTR_ALT_FLAGS ?? '--no-concurrent-marking').split(/\s+/).filter(Boolean)
const RUNTIME_FN = 'Runtime_DefineKeyedOwnPropertyInLiteral'
const run = promisify(execFile)

function intEnv (name: string, def: number): number {
  const n = Number(process.env[name] ?? def)
  if (!Number.isInteger(n) || n < 1) throw new Error(`${name} must be a positive integer`)
  return n
}

interface Variant { name: string, script: string, path: string, readyPath: string, flags: string[] }

interface Count { variant: string, flags: string, instructions: number, mainThread: number, runtimeCalls: number, runtimeInstructions: number }

/** Sums a callgrind dump: all instructions, and the calls into (and inclusive cost of) RUNTIME_FN. */
function summarize (text: string): { thread: number, total: number, runtimeCalls: number, runtimeInstructions: number } {
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

async function waitReady (url: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (Date.now() < deadline) {
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(5000) })
      await res.arrayBuffer()
      if (res.ok) return
    } catch { /* not yet */ }
    await sleep(500)
  }
  throw new Error(`${url} did not answer 200 within ${timeoutMs / 1000} s under valgrind`)
}

async function count (v: Variant): Promise<Count> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'bench-instr-'))
  const port = await getFreePort()
  const out = path.join(dir, 'callgrind.out')
  // callgrind_control finds the process by USER and HOST: the same for both.
  const env = {
    PATH: process.env.PATH, HOME: process.env.HOME, USER: 'bench', LOGNAME: 'bench', HOST: '127.0.0.1', PORT: String(port),
    TSX_TSCONFIG_PATH: path.join(ROOT, 'tsconfig.json'),
    NODE_ENV: 'test', LOG_LEVEL: 'warn', DATABASE_PATH: path.join(dir, 'bench.db'), REDIS_URL: '',
    // Under valgrind the event loop is slow by design: no load shedding.
    MAX_EVENT_LOOP_DELAY_MS: '0', RATE_LIMIT_MAX: '1000000000', QUOTE_PROVIDER: 'simulated', JWT_SECRET: 'instructions-bench-secret-0123456789abcdef',
  }
  const child = spawn('valgrind', ['--tool=callgrind', '--separate-threads=yes', '--instr-atstart=no', `--callgrind-out-file=${out}`,
    process.execPath, ...v.flags, '--import', TSX_LOADER, v.script], { cwd: dir, env, stdio: ['ignore', 'ignore', 'pipe'] })
  trackChild(child)
  let stderr = ''
  child.stderr.on('data', (d: Buffer) => { stderr = (stderr + d.toString()).slice(-4000) })
  const control = async (...args: string[]): Promise<void> => { await run('callgrind_control', [...args, String(child.pid)], { env }) }
  try {
    const base = `http://127.0.0.1:${port}`
    await waitReady(base + v.readyPath, 180_000)
    await fireCount(base + v.path, WARM)
    await control('-i', 'on')
    await fireCount(base + v.path, MEASURE)
    await control('-i', 'off')
    await control('-d')
    await sleep(1000)
    const dumps = readdirSync(dir).filter((f) => f.startsWith('callgrind.out')).map((f) => summarize(readFileSync(path.join(dir, f), 'utf8')))
    const sum = (k: 'total' | 'runtimeCalls' | 'runtimeInstructions', only?: number): number =>
      dumps.reduce((a, d) => (only === undefined || d.thread === only ? a + d[k] : a), 0)
    if (sum('total') === 0) throw new Error(`${v.name}: callgrind counted nothing (dumps: ${dumps.length})\n${stderr}`)
    return {
      variant: v.name,
      flags: v.flags.join(' ') || '(none)',
      instructions: sum('total') / MEASURE,
      mainThread: sum('total', 1) / MEASURE,
      runtimeCalls: sum('runtimeCalls') / MEASURE,
      runtimeInstructions: sum('runtimeInstructions') / MEASURE,
    }
  } finally {
    child.kill('SIGKILL')
    rmSync(dir, { recursive: true, force: true })
  }
}

async function main (): Promise<void> {
  installExitHooks()
  const flags = startScriptFlags(ROOT)
  const bare = { name: 'bare Fastify GET /', script: path.join(BENCH_DIR, 'bare-server.ts'), path: '/', readyPath: '/' }
  const quote = { name: 'GET /api/stocks/AAPL hot (L1 hit, no Redis)', script: path.join(ROOT, 'src/server.ts'), path: '/api/stocks/AAPL', readyPath: '/api/health/live' }
  const variants: Variant[] = []
  for (const target of [bare, quote]) {
    for (const f of [flags, ALT_FLAGS]) {
      for (let i = 0; i < RUNS; i++) variants.push({ ...target, flags: f })
    }
  }
  const counts: Count[] = []
  for (let i = 0; i < variants.length; i += 2) {
    counts.push(...await Promise.all(variants.slice(i, i + 2).map(count)))
    process.stdout.write(`${counts.length}/${variants.length} processes counted\n`)
  }
  const bareRuns = counts.filter((c) => c.variant === bare.name && c.flags === (flags.join(' ') || '(none)'))
  const bareAll = medianBy(bareRuns, (c) => c.instructions).instructions
  const bareMain = medianBy(bareRuns, (c) => c.mainThread).mainThread
  const n = (x: number): string => Math.round(x).toLocaleString('en-US')
  const header = ['target', 'node flags', 'instructions / request, main thread', 'bare ÷ this', 'all threads', 'bare ÷ this', `${RUNTIME_FN} calls / request`, 'their instructions / request']
  const rows = counts.map((c) => [c.variant, c.flags, n(c.mainThread), (bareMain / c.mainThread).toFixed(2), n(c.instructions), (bareAll / c.instructions).toFixed(2),
    c.runtimeCalls.toFixed(1), n(c.runtimeInstructions)])
  process.stdout.write(`\n${textTable(header, rows, [0, 1])}\n`)
  const md = [
    '# Instructions per request (callgrind)',
    '',
    `Run ${new Date().toISOString()}, Node ${process.version}, \`npm run bench:instructions\`: ${RUNS} fresh process(es) per row group; ${WARM} requests uninstrumented, then ${MEASURE} counted, 10 connections. User-space instructions only; "main thread" is the JavaScript thread, "all threads" adds V8's helper threads (garbage collection, compilation). "bare ÷ this" divides by the median of the bare route with the start script's flags (${flags.join(' ') || 'none'}).`,
    '',
    markdownTable(header, rows, [0, 1]),
    '',
  ].join('\n')
  const resultsDir = path.join(BENCH_DIR, 'results')
  writeFileSync(path.join(resultsDir, 'instructions.md'), md)
  writeFileSync(path.join(resultsDir, 'instructions.json'), JSON.stringify({ date: new Date().toISOString(), node: process.version, runs: RUNS, warm: WARM, measure: MEASURE, startFlags: flags, counts }, null, 2) + '\n')
}

main().catch((err: unknown) => {
  process.stderr.write(`${err instanceof Error ? err.stack ?? err.message : String(err)}\n`)
  process.exit(1)
})
