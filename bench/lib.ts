/**
 * The benchmark harness's parts: scenario types, child processes (the service, the bare
 * Fastify baseline, private redis-servers), one autocannon measurement, RSS/CPU readings
 * from /proc, and the result table. `bench/run.ts` puts them together.
 *
 * Honesty rules: the service and the baseline run as separate processes on loopback, one
 * at a time (the machine is small); the load generator runs here. Every wait has a
 * timeout, and every process we start is killed when the harness exits, also on Ctrl-C.
 */
import { spawn, execFileSync, type ChildProcess } from 'node:child_process'
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import path from 'node:path'
import { randomBytes } from 'node:crypto'
import pg from 'pg'
import { getFreePort, startRedis, type RedisProcess } from '../test/helpers/redis-server.js'

export { getFreePort, startRedis, type RedisProcess }

// ---------------------------------------------------------------------------
// Scenario types
// ---------------------------------------------------------------------------

/** One request autocannon sends; `path` is relative to the service's base URL. */
export interface RequestSpec {
  method?: 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE' | 'HEAD' | 'OPTIONS'
  path: string
  headers?: Record<string, string>
  /** A string is sent as is; an object is sent as JSON (content-type set for you). */
  body?: string | object
}

export interface Target {
  /** Minimum req/s ÷ bare req/s. */
  minRatio?: number
  /** Maximum p99 ÷ bare p99. */
  maxP99Ratio?: number
  note?: string
}

export interface BenchContext {
  baseUrl: string
  /** URL of the scenario's private Redis ('up'), or of the dead port ('down'). */
  redisUrl?: string
  /** redis-cli against the private Redis (only with redis: 'up'). */
  redis?: { command (...args: string[]): Promise<string> }
  /** URLs of the extra servers from `redisMasters` (also in REDLOCK_URLS). */
  redisMasterUrls?: string[]
  /** Free for setup → requests hand-over (a token, ids…). */
  state: Record<string, unknown>
}

export interface Scenario {
  /** Shown in the table, e.g. 'GET /api/health (redis up)'. */
  name: string
  /** Printed as pass/fail against the bare route; never throws. */
  target?: Target
  /** Env for the service process, merged over the harness defaults. */
  env?: Record<string, string>
  /**
   * What answers the load: the service (the default), or the bare server (bench/bare-server.ts)
   * for a reference row that measures plain Fastify doing part of the service's work. A bare
   * scenario runs without Redis and without `env`.
   */
  server?: 'service' | 'bare'
  /** 'up': private redis-server; 'down': REDIS_URL to a port with nothing listening; 'none' (default): no REDIS_URL. */
  redis?: 'none' | 'up' | 'down'
  /** Extra independent redis-servers; their URLs comma-joined in REDLOCK_URLS. */
  redisMasters?: number
  /** After the service is up, before the warmup. Throwing marks the scenario failed. */
  setup?: (ctx: BenchContext) => Promise<void>
  /**
   * After the measured load, while the service still runs: check what the load did (e.g.
   * count Redis commands). Throwing fails the verdict; a returned string goes in the details.
   */
  after?: (ctx: BenchContext, m: Measurement) => Promise<string | void>
  /** What to send; an array is sent in sequence by each connection. */
  requests: (ctx: BenchContext) => RequestSpec | RequestSpec[]
  /** Concurrent connections (default 50). */
  connections?: number
  /** Set when non-2xx answers are the point (e.g. rate limiting); otherwise they fail the scenario. */
  allowNon2xx?: boolean
}

/**
 * A scenario file may also export `standalone`: a measurement that runs on its own, with
 * its own processes and report, outside the load table (e.g. counts per request). The
 * harness builds the servers, runs it, and runs the bare baseline only when some Scenario
 * was selected too. It resolves false when it could not measure everything (exit code 1).
 */
export interface StandaloneBench {
  name: string
  /** `serverCpus`: the CPUs the harness pins servers to (a `taskset -c` list), null when it does not pin. */
  run (opts: { build: BenchBuild, root: string, resultsDir: string, serverCpus: string | null }): Promise<boolean>
}

// ---------------------------------------------------------------------------
// Cleanup: every child dies with the harness
// ---------------------------------------------------------------------------

const liveChildren = new Set<ChildProcess>()
const cleanups = new Set<() => Promise<void>>()
let hooksInstalled = false

function killChildrenSync (): void {
  for (const child of liveChildren) {
    try {
      if (child.pid !== undefined) process.kill(child.pid, 'SIGKILL')
    } catch {
      /* already gone */
    }
  }
  liveChildren.clear()
}

/** Kills `child` with the harness (installExitHooks), like the servers startServer starts. */
export function trackChild (child: ChildProcess): void {
  liveChildren.add(child)
  child.on('exit', () => liveChildren.delete(child))
}

/**
 * 'exit' for normal ends and crashes; SIGINT/SIGTERM (Ctrl-C) kill the children and exit.
 * The redis helper installs its own hooks (they kill the redis-servers and hand the
 * signal on to us).
 */
export function installExitHooks (): void {
  if (hooksInstalled) return
  hooksInstalled = true
  process.on('exit', killChildrenSync)
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.on(sig, () => {
      process.stderr.write(`\nbench: ${sig}, killing child processes\n`)
      killChildrenSync()
      process.exit(sig === 'SIGINT' ? 130 : 143)
    })
  }
}

/** Register an async cleanup for `runCleanups` (e.g. a redis-server to stop). */
export function onCleanup (fn: () => Promise<void>): () => void {
  cleanups.add(fn)
  return () => cleanups.delete(fn)
}

export async function runCleanups (): Promise<void> {
  const fns = [...cleanups]
  cleanups.clear()
  await Promise.allSettled(fns.map(async (fn) => withTimeout(fn(), 10_000, 'cleanup')))
}

// ---------------------------------------------------------------------------
// Small utilities
// ---------------------------------------------------------------------------

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))

export interface BenchBuild {
  /** dist/src/server.js: what `npm start` runs. */
  server: string
  /** dist/src/main.js: the same server without the entry's held nextTick records. */
  main: string
  /** dist/bench/bare-server.js: bench/bare-server.ts, compiled. */
  bare: string
}

/** Bench files that run inside a server process, transpiled to dist/<same path>.js. */
const SERVER_SIDE_FILES = ['bench/bare-server.ts', 'bench/scenarios/locks.ts', 'bench/scenarios/quotes.ts']

/** Where buildForBench puts the transpiled `file` (a path relative to the repository). */
function compiledPath (root: string, file: string): string {
  return path.join(root, 'dist', file.replace(/\.ts$/, '.js'))
}

/**
 * Both servers run compiled, as the service ships: `npm run build`'s tsc (dist/), and the
 * bench files that run inside a server (SERVER_SIDE_FILES) transpiled next to it. Under tsx,
 * one callgrind count of the hot quote had 61 000 instructions a request of young-generation
 * garbage collection on the JavaScript thread, against 200 for the compiled build: a cost
 * production never pays.
 */
export function buildForBench (root: string): BenchBuild {
  const require = createRequire(import.meta.url)
  execFileSync(process.execPath, [require.resolve('typescript/bin/tsc'), '-p', 'tsconfig.build.json'], { cwd: root, stdio: 'inherit' })
  const ts = require('typescript') as typeof import('typescript')
  for (const file of SERVER_SIDE_FILES) {
    const source = readFileSync(path.join(root, file), 'utf8')
    const { outputText } = ts.transpileModule(source, { fileName: path.basename(file), compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2023 } })
    const out = compiledPath(root, file)
    mkdirSync(path.dirname(out), { recursive: true })
    writeFileSync(out, outputText)
  }
  return { server: path.join(root, 'dist/src/server.js'), main: path.join(root, 'dist/src/main.js'), bare: compiledPath(root, 'bench/bare-server.ts') }
}

/** The item with the median value (the lower middle one for an even count). */
export function medianBy<T> (items: T[], value: (item: T) => number): T {
  const sorted = [...items].sort((a, b) => value(a) - value(b))
  return sorted[Math.floor((sorted.length - 1) / 2)] as T
}

/**
 * The node flags of the package.json start script (`node [--flags] <file>`), which the
 * Dockerfile and render.yaml repeat: the benchmarks run both servers with them.
 */
export function startScriptFlags (root: string): string[] {
  const pkg = JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8')) as { scripts?: Record<string, string> }
  const start = /^node\s+((?:--\S+\s+)*)\S+$/.exec(pkg.scripts?.start ?? '')
  if (!start) throw new Error(`package.json start script is not "node [--flags] <file>": ${String(pkg.scripts?.start)}`)
  return (start[1] ?? '').split(/\s+/).filter(Boolean)
}

export async function withTimeout<T> (promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} timed out after ${ms} ms`)), ms)
  })
  try {
    return await Promise.race([promise, timeout])
  } finally {
    clearTimeout(timer)
  }
}

export function errorText (err: unknown): string {
  return err instanceof Error ? err.message : String(err)
}

// ---------------------------------------------------------------------------
// Child processes
// ---------------------------------------------------------------------------

const OUTPUT_TAIL_CHARS = 4000

export interface ServerProcess {
  readonly pid: number
  readonly baseUrl: string
  /** Last few KB of stdout+stderr (pino writes to stdout). */
  output (): string
  /** SIGTERM, then SIGKILL after `graceMs`; resolves with how it ended ('0', '1', 'SIGKILL'…). */
  stop (graceMs?: number): Promise<string>
}

export interface StartServerOptions {
  /** Label in error messages. */
  name: string
  /** Arguments to `node` (e.g. ['--import', 'tsx', 'src/server.ts']). */
  args: string[]
  /** Full environment of the child (PORT and HOST are set here). */
  env: Record<string, string | undefined>
  cwd: string
  /** Path polled until it answers 200. */
  readyPath: string
  readyTimeoutMs?: number
  /** CPUs the process may run on (a `taskset -c` list); unset: wherever the kernel puts it. */
  cpus?: string
}

function exited (child: ChildProcess): boolean {
  return child.exitCode !== null || child.signalCode !== null
}

function waitExit (child: ChildProcess): Promise<void> {
  if (exited(child)) return Promise.resolve()
  return new Promise((resolve) => child.once('exit', () => resolve()))
}

async function startServerOnce (opts: StartServerOptions, port: number): Promise<ServerProcess> {
  const baseUrl = `http://127.0.0.1:${port}`
  // taskset execs node in place: the child's pid is the server's, for the CPU and RSS readings.
  const [command, args] = opts.cpus === undefined
    ? [process.execPath, opts.args]
    : ['taskset', ['-c', opts.cpus, process.execPath, ...opts.args]]
  const child = spawn(command, args, {
    cwd: opts.cwd,
    env: { ...opts.env, HOST: '127.0.0.1', PORT: String(port) },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  trackChild(child)
  let out = ''
  const collect = (d: Buffer): void => {
    out = (out + d.toString('utf8')).slice(-OUTPUT_TAIL_CHARS)
  }
  child.stdout?.on('data', collect)
  child.stderr?.on('data', collect)
  let spawnError: Error | undefined
  child.on('error', (err) => { spawnError = err })

  const proc: ServerProcess = {
    pid: child.pid ?? -1,
    baseUrl,
    output: () => out.trim(),
    async stop (graceMs = 5000) {
      if (!exited(child)) {
        child.kill('SIGTERM')
        const graceful = await Promise.race([waitExit(child).then(() => true), sleep(graceMs).then(() => false)])
        if (!graceful) {
          child.kill('SIGKILL')
          await withTimeout(waitExit(child), 5000, `${opts.name} exit after SIGKILL`)
        }
      }
      liveChildren.delete(child)
      return child.exitCode !== null ? String(child.exitCode) : String(child.signalCode)
    },
  }

  const deadline = Date.now() + (opts.readyTimeoutMs ?? 20_000)
  while (Date.now() < deadline) {
    if (spawnError) throw new Error(`${opts.name}: spawn failed: ${spawnError.message}`)
    if (exited(child)) {
      await sleep(50) // let the pipes deliver the last lines
      throw new StartError(`${opts.name} exited during start (code ${child.exitCode}, signal ${child.signalCode})`, out)
    }
    try {
      const res = await fetch(baseUrl + opts.readyPath, { signal: AbortSignal.timeout(1000) })
      await res.arrayBuffer()
      if (res.status === 200) return proc
    } catch {
      /* not listening yet */
    }
    await sleep(100)
  }
  await proc.stop(1000)
  throw new StartError(`${opts.name} not ready on ${baseUrl}${opts.readyPath} after ${opts.readyTimeoutMs ?? 20_000} ms`, out)
}

/** A start failure, carrying the child's output tail. */
export class StartError extends Error {
  readonly output: string
  constructor (message: string, output: string) {
    super(message)
    this.output = output.trim() || '(no output)'
    this.name = 'StartError'
  }
}

/**
 * Start a Node server as a child on a free loopback port and wait until `readyPath`
 * answers 200. A lost free-port race (EADDRINUSE) is retried with another port.
 */
export async function startServer (opts: StartServerOptions): Promise<ServerProcess> {
  installExitHooks()
  for (let attempt = 1; ; attempt++) {
    const port = await getFreePort()
    try {
      return await startServerOnce(opts, port)
    } catch (err) {
      if (attempt < 3 && err instanceof StartError && /EADDRINUSE/.test(err.output)) continue
      throw err
    }
  }
}

// ---------------------------------------------------------------------------
// /proc readings
// ---------------------------------------------------------------------------

/** VmRSS and VmHWM (peak RSS over the process's life) in MB; null when unreadable. */
export function readRss (pid: number): { rssMb: number, hwmMb: number } | null {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8')
    const kb = (field: string): number => Number(new RegExp(`^${field}:\\s+(\\d+)\\s+kB`, 'm').exec(status)?.[1] ?? NaN)
    const rss = kb('VmRSS')
    const hwm = kb('VmHWM')
    if (Number.isNaN(rss)) return null
    return { rssMb: rss / 1024, hwmMb: hwm / 1024 }
  } catch {
    return null
  }
}

let clockTicks: number | undefined
function ticksPerSecond (): number {
  if (clockTicks === undefined) {
    try {
      clockTicks = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100
    } catch {
      clockTicks = 100
    }
  }
  return clockTicks
}

/** User+system CPU seconds a process has used so far; null when unreadable. */
export function readCpuSeconds (pid: number): number | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    // the command name may contain spaces; fields after ')' are fixed
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    const utime = Number(fields[11])
    const stime = Number(fields[12])
    if (Number.isNaN(utime) || Number.isNaN(stime)) return null
    return (utime + stime) / ticksPerSecond()
  } catch {
    return null
  }
}

// ---------------------------------------------------------------------------
// Load: autocannon
// ---------------------------------------------------------------------------

/** The part of autocannon's options and results we use (the package ships no types). */
interface AutocannonOptions {
  url: string
  connections: number
  /** Seconds of load. */
  duration: number
  requests: Array<{ method: string, path: string, headers?: Record<string, string>, body?: string }>
  timeout?: number
}
interface AutocannonHistogram { average: number, mean: number, stddev: number, min: number, max: number, p50: number, p90: number, p99: number, total?: number }
interface AutocannonResult {
  duration: number
  errors: number
  timeouts: number
  non2xx: number
  '2xx': number
  statusCodeStats: Record<string, { count: number }>
  requests: AutocannonHistogram & { total: number, sent: number }
  latency: AutocannonHistogram
  throughput: AutocannonHistogram
}
interface AutocannonInstance {
  on (event: 'response', fn: (client: unknown, statusCode: number, resBytes: number, responseTime: number) => void): void
  on (event: 'done', fn: (result: AutocannonResult) => void): void
  stop (): void
}
type Autocannon = (opts: AutocannonOptions, cb: (err: Error | null, result: AutocannonResult) => void) => AutocannonInstance

const autocannon = createRequire(import.meta.url)('autocannon') as Autocannon

export interface Measurement {
  /** Mean of autocannon's per-second samples (all responses). */
  reqPerSec: number
  /** 2xx responses ÷ measured seconds. */
  okPerSec: number
  /** Latency percentiles of 2xx responses in ms, from our own sub-millisecond samples. */
  p50: number
  p90: number
  p99: number
  max: number
  /** autocannon's own (whole-millisecond) percentiles, for reference. */
  autocannonP50: number
  autocannonP99: number
  durationS: number
  total: number
  ok: number
  non2xx: number
  errors: number
  timeouts: number
  statusCodes: Record<string, number>
  /** CPU use during the measurement in % of one core. */
  serverCpuPct: number | null
  /**
   * Server CPU time per answered request, in µs. Unlike req/s this barely depends on how
   * much CPU other processes leave us, so it is the steadier figure on a busy machine.
   */
  serverCpuUsPerReq: number | null
  loadgenCpuPct: number
  /** RSS at the end of the load and the largest sample during it. */
  rssMb: number | null
  rssPeakMb: number | null
}

export function toAutocannonRequests (specs: RequestSpec | RequestSpec[]): AutocannonOptions['requests'] {
  return (Array.isArray(specs) ? specs : [specs]).map((spec) => {
    const headers = { ...spec.headers }
    let body: string | undefined
    if (typeof spec.body === 'string') body = spec.body
    else if (spec.body !== undefined) {
      body = JSON.stringify(spec.body)
      if (!Object.keys(headers).some((h) => h.toLowerCase() === 'content-type')) headers['content-type'] = 'application/json'
    }
    return { method: spec.method ?? 'GET', path: spec.path, headers, ...(body !== undefined ? { body } : {}) }
  })
}

function percentile (sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return NaN
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))
  return sorted[i] ?? NaN
}

/** Run autocannon once. With `pid`, read the server's CPU and RSS around the run. */
export async function load (opts: {
  baseUrl: string
  requests: AutocannonOptions['requests']
  connections: number
  durationS: number
  pid?: number
}): Promise<Measurement> {
  let samples = new Float64Array(1 << 16)
  let n = 0
  let rssPeak: number | null = null
  const sampleRss = (): void => {
    if (opts.pid === undefined) return
    const r = readRss(opts.pid)
    if (r && (rssPeak === null || r.rssMb > rssPeak)) rssPeak = r.rssMb
  }
  const cpu0 = opts.pid !== undefined ? readCpuSeconds(opts.pid) : null
  const self0 = process.cpuUsage()
  const t0 = process.hrtime.bigint()
  const rssTimer = setInterval(sampleRss, 500)

  const run = new Promise<AutocannonResult>((resolve, reject) => {
    const instance = autocannon({
      url: opts.baseUrl,
      connections: opts.connections,
      duration: opts.durationS,
      requests: opts.requests,
      timeout: 10,
    }, (err, result) => (err ? reject(err) : resolve(result)))
    instance.on('response', (_client, statusCode, _bytes, responseTime) => {
      if (statusCode < 200 || statusCode >= 300) return
      if (n === samples.length) {
        const bigger = new Float64Array(samples.length * 2)
        bigger.set(samples)
        samples = bigger
      }
      samples[n++] = responseTime
    })
  })
  let result: AutocannonResult
  try {
    result = await withTimeout(run, (opts.durationS + 30) * 1000, 'autocannon run')
  } finally {
    clearInterval(rssTimer)
  }
  const wallS = Number(process.hrtime.bigint() - t0) / 1e9
  const self = process.cpuUsage(self0)
  const cpu1 = opts.pid !== undefined ? readCpuSeconds(opts.pid) : null
  sampleRss()
  const rssEnd = opts.pid !== undefined ? readRss(opts.pid)?.rssMb ?? null : null

  const sorted = samples.subarray(0, n).sort()
  const statusCodes: Record<string, number> = {}
  for (const [code, { count }] of Object.entries(result.statusCodeStats ?? {})) statusCodes[code] = Number(count)
  return {
    reqPerSec: result.requests.average,
    okPerSec: result['2xx'] / result.duration,
    p50: percentile(sorted, 50),
    p90: percentile(sorted, 90),
    p99: percentile(sorted, 99),
    max: percentile(sorted, 100),
    autocannonP50: result.latency.p50,
    autocannonP99: result.latency.p99,
    durationS: result.duration,
    total: result.requests.total,
    ok: result['2xx'],
    non2xx: result.non2xx,
    errors: result.errors,
    timeouts: result.timeouts,
    statusCodes,
    serverCpuPct: cpu0 !== null && cpu1 !== null ? ((cpu1 - cpu0) / wallS) * 100 : null,
    serverCpuUsPerReq: cpu0 !== null && cpu1 !== null && result.requests.total > 0 ? ((cpu1 - cpu0) * 1e6) / result.requests.total : null,
    loadgenCpuPct: ((self.user + self.system) / 1e6 / wallS) * 100,
    rssMb: rssEnd,
    rssPeakMb: rssPeak,
  }
}

// ---------------------------------------------------------------------------
// Tables
// ---------------------------------------------------------------------------

export type Cell = string | number | null | undefined

export function fmt (value: number | null | undefined, digits = 0): string {
  if (value === null || value === undefined || Number.isNaN(value)) return '—'
  return value.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits })
}

function cellText (c: Cell): string {
  return c === null || c === undefined ? '—' : String(c)
}

/** Plain-text table: the `left` columns left-aligned, the rest (numbers) right-aligned. */
export function textTable (header: string[], rows: Cell[][], left: number[] = [0]): string {
  const all = [header, ...rows.map((r) => r.map(cellText))]
  const widths = header.map((_h, i) => Math.max(...all.map((r) => (r[i] ?? '').length)))
  const line = (r: string[]): string => r.map((c, i) => (left.includes(i) ? c.padEnd(widths[i] ?? 0) : c.padStart(widths[i] ?? 0))).join('  ').trimEnd()
  return [line(header), widths.map((w) => '-'.repeat(w)).join('  '), ...all.slice(1).map(line)].join('\n')
}

export function markdownTable (header: string[], rows: Cell[][], left: number[] = [0]): string {
  const esc = (s: string): string => s.replace(/\|/g, '\\|')
  return [
    `| ${header.map(esc).join(' | ')} |`,
    `| ${header.map((_h, i) => (left.includes(i) ? '---' : '---:')).join(' | ')} |`,
    ...rows.map((r) => `| ${r.map((c) => esc(cellText(c))).join(' | ')} |`),
  ].join('\n')
}

/** A JSON POST to the service under test, with an optional bearer token. */
export async function post (ctx: BenchContext, path: string, body: object, token?: string): Promise<Response> {
  return fetch(ctx.baseUrl + path, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(token !== undefined ? { authorization: `Bearer ${token}` } : {}) },
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(10_000),
  })
}

/** Registers and logs in `bench-<i>@example.com` for i < count, ten at a time; their tokens, by i. */
export async function registerUsers (ctx: BenchContext, count: number, password: string): Promise<string[]> {
  const tokens: string[] = new Array<string>(count)
  for (let start = 0; start < count; start += 10) {
    await Promise.all(Array.from({ length: Math.min(10, count - start) }, async (_v, k) => {
      const i = start + k
      const email = `bench-${i}@example.com`
      const reg = await post(ctx, '/api/auth/register', { email, password })
      if (reg.status !== 201) throw new Error(`register ${email}: ${reg.status} ${await reg.text()}`)
      const login = await post(ctx, '/api/auth/login', { email, password })
      if (login.status !== 200) throw new Error(`login ${email}: ${login.status} ${await login.text()}`)
      tokens[i] = (await login.json() as { token: string }).token
    }))
  }
  return tokens
}

/** What the user-driven scenarios start the service with: a fixed secret, limits out of the way. */
export const USER_SCENARIO_ENV = {
  JWT_SECRET: 'bench-secret-bench-secret-bench-secret-0123',
  RATE_LIMIT_MAX: '1000000000',
  LOGIN_RATE_LIMIT_MAX: '1000000',
  REGISTER_RATE_LIMIT_MAX: '1000000',
  LOGIN_EMAIL_RATE_LIMIT_MAX: '1000000',
}

/** The PostgreSQL server the database scenarios create their private databases on. */
const PG_ADMIN_URL = process.env.BENCH_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres'

/**
 * A private database `<prefix>_<random>` on BENCH_PG_URL's server, dropped at the bench's
 * cleanup; or the reason to skip when no server answers.
 */
export async function privateDatabase (prefix: string): Promise<{ url: string } | { skip: string }> {
  const name = `${prefix}_${randomBytes(5).toString('hex')}`
  const admin = new pg.Client({ connectionString: PG_ADMIN_URL, connectionTimeoutMillis: 3000 })
  try {
    await admin.connect()
    await admin.query(`CREATE DATABASE ${name}`)
  } catch (err) {
    return { skip: `PostgreSQL at ${PG_ADMIN_URL.replace(/:[^:@/]*@/, ':***@')} unavailable: ${errorText(err)}` }
  } finally {
    await admin.end().catch(() => {})
  }
  onCleanup(async () => {
    const dropper = new pg.Client({ connectionString: PG_ADMIN_URL, connectionTimeoutMillis: 3000 })
    await dropper.connect()
    try {
      await dropper.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)
    } finally {
      await dropper.end()
    }
  })
  const url = new URL(PG_ADMIN_URL)
  url.pathname = `/${name}`
  return { url: url.toString() }
}
