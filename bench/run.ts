/**
 * `npm run bench [-- name…]`: measures the bare Fastify route, then each scenario against
 * the real service (a child process, with its own private redis-servers), then the bare
 * route again; prints the table and writes bench/results/latest.{json,md}. Both servers
 * run compiled: it runs `npm run build` first (buildForBench in lib.ts says why).
 *
 * BENCH_DURATION (s, default 10) and BENCH_WARMUP (s, default 2, not measured) set the
 * load time per target; BENCH_RUNS (default 3) is how many fresh processes measure each
 * scenario with a target, and the bare route at each end (the median run counts: one
 * process can run ~20% slower than the next for its whole life on this kind of machine).
 * Both servers get the node flags of the package.json start script; BENCH_NODE_ARGS adds
 * more to the service (e.g. --cpu-prof).
 * Exit code 1 when a scenario could not run; a missed target is reported, not an error.
 */
import { execFileSync } from 'node:child_process'
import { mkdtempSync, mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import {
  type BenchContext, type Cell, type Measurement, type RedisProcess, type Scenario, type ServerProcess, type StandaloneBench,
  type BenchBuild, StartError, buildForBench, errorText, fmt, getFreePort, installExitHooks, load, markdownTable, medianBy, onCleanup, runCleanups,
  startRedis, startScriptFlags, startServer, textTable, toAutocannonRequests, withTimeout,
} from './lib.js'

const BENCH_DIR = path.dirname(fileURLToPath(import.meta.url))
const ROOT = path.resolve(BENCH_DIR, '..')
const SCENARIO_DIR = path.join(BENCH_DIR, 'scenarios')
const RESULTS_DIR = path.join(BENCH_DIR, 'results')

const DURATION_S = envNumber('BENCH_DURATION', 10)
const WARMUP_S = envNumber('BENCH_WARMUP', 2)
const RUNS = Math.max(1, Math.round(envNumber('BENCH_RUNS', 3)))
const DEFAULT_CONNECTIONS = 50
const SETUP_TIMEOUT_MS = 60_000
/**
 * The node flags `npm start` gives the service (package.json, also the Dockerfile's CMD and
 * render.yaml): both servers run with them, so the service is measured as it ships and the
 * bare route on the same runtime settings.
 */
const START_NODE_FLAGS = startScriptFlags(ROOT)
const SERVICE_NODE_ARGS = [...START_NODE_FLAGS, ...(process.env.BENCH_NODE_ARGS ?? '').split(/\s+/).filter(Boolean)]

function envNumber (name: string, def: number): number {
  const raw = process.env[name]
  if (raw === undefined || raw.trim() === '') return def
  const n = Number(raw)
  if (!Number.isFinite(n) || n < 0) {
    process.stderr.write(`bench: ${name} must be a number of seconds ≥ 0 (got ${JSON.stringify(raw)})\n`)
    process.exit(2)
  }
  return n
}

const log = (msg: string): void => { process.stderr.write(`${msg}\n`) }

/**
 * Where the processes run. Pinned (the default when there are at least 2 CPUs and `taskset`
 * works): every server, the bare one and the service alike, on CPU 0; this process (the load
 * generator) and the redis-servers it starts, which inherit its affinity, on the others. The
 * server then has a core to itself, as in production, instead of sharing one with the load
 * generator wherever the scheduler puts them (unpinned, the runs of one scenario spread over
 * 0.69–0.85× of the bare route; pinned, 0.80–0.83× in the same check). Fresh processes
 * still differ in speed for their whole life, pinned or not: hence several runs and the
 * median. BENCH_PIN=0 turns it off.
 */
interface CpuPlan { server: string, load: string }

function cpuPlan (): CpuPlan | null {
  const setting = (process.env.BENCH_PIN ?? '').trim().toLowerCase()
  if (['0', 'false', 'no', 'off'].includes(setting)) return null
  const count = os.availableParallelism()
  const plan = { server: '0', load: count > 2 ? `1-${count - 1}` : '1' }
  try {
    if (count < 2) throw new Error('only one CPU')
    execFileSync('taskset', ['-a', '-cp', plan.load, String(process.pid)], { stdio: 'ignore' })
    return plan
  } catch (err) {
    log(`bench: not pinning (${errorText(err)}); servers and the load generator share the CPUs`)
    return null
  }
}

const PIN = cpuPlan()

// ---------------------------------------------------------------------------
// Scenario discovery
// ---------------------------------------------------------------------------

interface LoadedScenario { file: string, scenario: Scenario }

/** The `standalone` exports of the selected files (see StandaloneBench in lib.ts). */
const standalones: Array<{ file: string, bench: StandaloneBench }> = []

async function loadScenarios (filters: string[]): Promise<LoadedScenario[]> {
  const files = readdirSync(SCENARIO_DIR).filter((f) => f.endsWith('.ts') && !f.endsWith('.d.ts')).sort()
  const wanted = files.filter((f) => filters.length === 0 || filters.some((a) => f.replace(/\.ts$/, '').toLowerCase().includes(a.toLowerCase())))
  if (wanted.length === 0) {
    log(`bench: no scenario file matches ${filters.join(' ')}; available: ${files.map((f) => f.replace(/\.ts$/, '')).join(', ')}`)
    process.exit(2)
  }
  const out: LoadedScenario[] = []
  for (const file of wanted) {
    const mod = await import(pathToFileURL(path.join(SCENARIO_DIR, file)).href) as { default?: unknown, standalone?: StandaloneBench }
    if (!Array.isArray(mod.default)) throw new Error(`bench/scenarios/${file}: default export must be an array of Scenario`)
    if (mod.standalone !== undefined) standalones.push({ file: file.replace(/\.ts$/, ''), bench: mod.standalone })
    for (const scenario of mod.default as Scenario[]) out.push({ file: file.replace(/\.ts$/, ''), scenario })
  }
  return out
}

// ---------------------------------------------------------------------------
// Temp dirs (removed at exit, also after Ctrl-C)
// ---------------------------------------------------------------------------

const tempDirs = new Set<string>()
process.on('exit', () => { for (const d of tempDirs) rmSync(d, { recursive: true, force: true }) })

function tempDir (): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'aic-bench-'))
  tempDirs.add(dir)
  return dir
}

function removeTempDir (dir: string): void {
  rmSync(dir, { recursive: true, force: true })
  tempDirs.delete(dir)
}

// ---------------------------------------------------------------------------
// Targets
// ---------------------------------------------------------------------------

interface RunResult {
  file: string
  name: string
  redis: 'none' | 'up' | 'down'
  redisMasters: number
  connections: number
  target: Scenario['target'] | null
  allowNon2xx: boolean
  ok: boolean
  error: string | null
  /** Service output tail when it failed. */
  output: string | null
  /** First request's status and body, checked before the load. */
  sample: { status: number, body: string } | null
  measurement: Measurement | null
  /** Outcome of the scenario's `after` check. */
  check: { ok: boolean, note: string } | null
  /** How the service ended after SIGTERM: '0' = graceful shutdown worked, 'SIGKILL' = it did not stop within 5 s. */
  exit: string | null
  /** req/s of every run (fresh processes), in run order. */
  runs: number[]
  /** Each run of a scenario with a target against the bare run measured just before it, in run order (empty for the others). */
  pairs: Pair[]
  /** The index in `pairs` of the run with the median ratio, the one the row shows (-1 without pairs). */
  medianPair: number
}

/** One run of a scenario with a target against the bare run measured right before it. */
interface Pair {
  bareReqPerSec: number
  ratio: number
  p99Ratio: number
  cpuRatio: number | null
}

interface Bare { m: Measurement, runs: number[] }

async function measureBareRuns (label: string): Promise<Bare> {
  const all: Measurement[] = []
  for (let i = 0; i < RUNS; i++) {
    // The load generator runs in this process: the very first load also warms it (JIT), so
    // the first baseline gets a longer warmup than the rest, or it reads low.
    const warmupS = label === 'start' && i === 0 ? Math.max(WARMUP_S, 5) : WARMUP_S
    all.push(await measureBare(RUNS > 1 ? `${label}, run ${i + 1} of ${RUNS}` : label, warmupS))
  }
  return { m: medianBy(all, (m) => m.reqPerSec), runs: all.map((m) => m.reqPerSec) }
}

/**
 * A scenario with a target runs RUNS times, each in fresh processes and each right after a
 * bare run of its own: its ratio is to that bare run, so a machine that gets slower or
 * faster during the bench (seen here: the bare route 6 % apart between the start and the
 * end) does not move it. The run with the median ratio is reported. The others run once,
 * against the mean of the start and end baselines.
 */
async function runScenarioRuns (loaded: LoadedScenario): Promise<RunResult> {
  const t = loaded.scenario.target
  const targeted = t?.minRatio !== undefined || t?.maxP99Ratio !== undefined
  const n = targeted ? RUNS : 1
  const all: RunResult[] = []
  const pairs: Pair[] = []
  const runs = (): number[] => all.flatMap((x) => x.measurement ? [x.measurement.reqPerSec] : [])
  for (let i = 0; i < n; i++) {
    const bare = targeted ? await measureBare(`paired, run ${i + 1} of ${n}`) : null
    const r = await runScenario(loaded)
    all.push(r)
    if (!r.ok) return { ...r, runs: runs(), pairs, medianPair: -1 }
    if (bare !== null && r.measurement !== null) {
      pairs.push(pairOf(bare, r.measurement))
      log(`    ratio to the bare run before it: ${fmt(pairs[pairs.length - 1]?.ratio, 2)}`)
    }
  }
  if (!targeted) return { ...all[0] as RunResult, runs: runs(), pairs }
  const medianPair = pairs.indexOf(medianBy(pairs, (p) => p.ratio))
  return { ...all[medianPair] as RunResult, runs: runs(), pairs, medianPair }
}

function pairOf (bare: Measurement, m: Measurement): Pair {
  return {
    bareReqPerSec: bare.reqPerSec,
    ratio: m.reqPerSec / bare.reqPerSec,
    p99Ratio: m.p99 / bare.p99,
    cpuRatio: bare.serverCpuUsPerReq !== null && m.serverCpuUsPerReq !== null ? bare.serverCpuUsPerReq / m.serverCpuUsPerReq : null,
  }
}

/**
 * A row's ratios: with pairs, those of the median run to its own bare
 * run, and the range of the req/s ratio over the runs; otherwise to the mean baseline.
 */
function ratiosOf (r: RunResult, base: Baseline): { ratio: number, p99Ratio: number, cpuRatio: number | null, range: [number, number] | null } | null {
  const m = r.measurement
  if (m === null) return null
  const median = r.pairs[r.medianPair]
  if (median !== undefined) {
    const all = r.pairs.map((p) => p.ratio)
    return { ratio: median.ratio, p99Ratio: median.p99Ratio, cpuRatio: median.cpuRatio, range: all.length > 1 ? [Math.min(...all), Math.max(...all)] : null }
  }
  return {
    ratio: m.reqPerSec / base.reqPerSec,
    p99Ratio: m.p99 / base.p99,
    cpuRatio: base.cpuUsPerReq !== null && m.serverCpuUsPerReq !== null ? base.cpuUsPerReq / m.serverCpuUsPerReq : null,
    range: null,
  }
}

async function measureBare (label: string, warmupS = WARMUP_S): Promise<Measurement> {
  const dir = tempDir()
  let server: ServerProcess | undefined
  try {
    server = await startServer({
      name: 'bare server',
      args: [...START_NODE_FLAGS, build().bare],
      env: baseEnv(),
      cwd: dir,
      readyPath: '/',
      ...(PIN ? { cpus: PIN.server } : {}),
    })
    const requests = toAutocannonRequests({ method: 'GET', path: '/' })
    if (warmupS > 0) await load({ baseUrl: server.baseUrl, requests, connections: DEFAULT_CONNECTIONS, durationS: warmupS })
    const m = await load({ baseUrl: server.baseUrl, requests, connections: DEFAULT_CONNECTIONS, durationS: DURATION_S, pid: server.pid })
    log(`  bare (${label}): ${fmt(m.reqPerSec)} req/s, p50 ${fmt(m.p50, 2)} ms, p99 ${fmt(m.p99, 2)} ms`)
    return m
  } finally {
    await server?.stop()
    removeTempDir(dir)
  }
}

/** The few variables a Node process needs; nothing else from the harness's environment. */
function baseEnv (): Record<string, string | undefined> {
  const { PATH, HOME, LANG, TZ } = process.env
  return { PATH, HOME, LANG, TZ }
}

async function runScenario ({ file, scenario }: LoadedScenario): Promise<RunResult> {
  const redisMode = scenario.redis ?? 'none'
  const connections = scenario.connections ?? DEFAULT_CONNECTIONS
  const result: RunResult = {
    file,
    name: scenario.name,
    redis: redisMode,
    redisMasters: scenario.redisMasters ?? 0,
    connections,
    target: scenario.target ?? null,
    allowNon2xx: scenario.allowNon2xx === true,
    ok: false,
    error: null,
    output: null,
    sample: null,
    measurement: null,
    check: null,
    exit: null,
    runs: [],
    pairs: [],
    medianPair: -1,
  }
  const dir = tempDir()
  const redisServers: RedisProcess[] = []
  const unregister = onCleanup(async () => { await Promise.allSettled(redisServers.map(async (r) => r.stop())) })
  let service: ServerProcess | undefined
  try {
    const ctx: BenchContext = { baseUrl: '', state: {} }
    let redisUrl = ''
    if (redisMode === 'up') {
      const redis = await startRedis()
      redisServers.push(redis)
      redisUrl = redis.url
      ctx.redis = { command: async (...args: string[]) => redis.command(...args) }
    } else if (redisMode === 'down') {
      redisUrl = `redis://127.0.0.1:${await getFreePort()}`
    }
    if (redisUrl) ctx.redisUrl = redisUrl
    const masterUrls: string[] = []
    for (let i = 0; i < (scenario.redisMasters ?? 0); i++) {
      const master = await startRedis()
      redisServers.push(master)
      masterUrls.push(master.url)
    }
    if (masterUrls.length > 0) ctx.redisMasterUrls = masterUrls

    const env = {
      ...baseEnv(),
      NODE_ENV: 'test',
      LOG_LEVEL: 'warn',
      DATABASE_PATH: path.join(dir, 'bench.db'),
      // set even when empty: empty means "unset" to the config, and wins over any .env
      REDIS_URL: redisUrl,
      REDLOCK_URLS: masterUrls.join(','),
      ...scenario.env,
    }
    const pin = PIN ? { cpus: PIN.server } : {}
    if (scenario.server === 'bare') {
      if (redisMode !== 'none' || masterUrls.length > 0 || scenario.env !== undefined) throw new Error('a bare-server scenario takes no Redis and no env')
      service = await startServer({ name: 'bare server', args: [...START_NODE_FLAGS, build().bare], env: baseEnv(), cwd: dir, readyPath: '/', ...pin })
    } else {
      service = await startServer({ name: 'service', args: [...SERVICE_NODE_ARGS, build().server], env, cwd: dir, readyPath: '/api/health/live', ...pin })
    }
    ctx.baseUrl = service.baseUrl

    if (scenario.setup) await withTimeout(scenario.setup(ctx), SETUP_TIMEOUT_MS, 'setup')
    const requests = toAutocannonRequests(scenario.requests(ctx))
    const first = requests[0]
    if (first === undefined) throw new Error('requests() returned no request')

    const res = await fetch(service.baseUrl + first.path, {
      method: first.method,
      ...(first.headers ? { headers: first.headers } : {}),
      ...(first.body !== undefined ? { body: first.body } : {}),
      signal: AbortSignal.timeout(5000),
    })
    result.sample = { status: res.status, body: (await res.text()).slice(0, 500) }
    if ((res.status < 200 || res.status >= 300) && scenario.allowNon2xx !== true) {
      throw new Error(`first request ${first.method} ${first.path} answered ${res.status}: ${result.sample.body}`)
    }

    if (WARMUP_S > 0) await load({ baseUrl: service.baseUrl, requests, connections, durationS: WARMUP_S })
    result.measurement = await load({ baseUrl: service.baseUrl, requests, connections, durationS: DURATION_S, pid: service.pid })
    result.ok = true
    const m = result.measurement
    if (scenario.after) {
      try {
        result.check = { ok: true, note: (await withTimeout(scenario.after(ctx, m), SETUP_TIMEOUT_MS, 'after')) ?? 'passed' }
      } catch (err) {
        result.check = { ok: false, note: errorText(err) }
      }
    }
    log(`  ${scenario.name}: ${fmt(m.reqPerSec)} req/s, p50 ${fmt(m.p50, 2)} ms, p99 ${fmt(m.p99, 2)} ms, RSS ${fmt(m.rssMb, 1)} MB` +
      (result.check ? `; check ${result.check.ok ? 'passed' : 'FAILED'}: ${result.check.note}` : ''))
  } catch (err) {
    result.error = errorText(err)
    result.output = err instanceof StartError ? err.output : service?.output() || null
    log(`  ${scenario.name}: FAILED: ${result.error}`)
    if (result.output) log(`  --- service output (tail) ---\n${indent(result.output)}\n  ---`)
  } finally {
    if (service) {
      try {
        result.exit = await service.stop()
      } catch (err) {
        log(`  ${scenario.name}: could not stop the service: ${errorText(err)}`)
      }
    }
    await Promise.allSettled(redisServers.map(async (r) => r.stop()))
    unregister()
    removeTempDir(dir)
  }
  return result
}

function indent (text: string): string {
  return text.split('\n').map((l) => `    ${l}`).join('\n')
}

// ---------------------------------------------------------------------------
// Report
// ---------------------------------------------------------------------------

interface Baseline { reqPerSec: number, p99: number, cpuUsPerReq: number | null }

function targetText (t: Scenario['target'] | null): string {
  if (!t) return '—'
  const parts: string[] = []
  if (t.minRatio !== undefined) parts.push(`≥ ${t.minRatio}× req/s`)
  if (t.maxP99Ratio !== undefined) parts.push(`p99 ≤ ${t.maxP99Ratio}×`)
  return parts.join(', ') || '—'
}

function verdict (r: RunResult, base: Baseline): string {
  if (!r.ok || r.measurement === null) return 'FAILED (see details)'
  const m = r.measurement
  const problems: string[] = []
  if (m.errors > 0 || m.timeouts > 0) problems.push(`${m.errors} errors, ${m.timeouts} timeouts`)
  if (m.non2xx > 0 && !r.allowNon2xx) problems.push(`${m.non2xx} non-2xx`)
  if (r.check?.ok === false) problems.push('after-load check failed')
  const t = r.target
  const ratios = ratiosOf(r, base)
  if (t?.minRatio !== undefined && ratios !== null && ratios.ratio < t.minRatio) problems.push('req/s below target')
  if (t?.maxP99Ratio !== undefined && ratios !== null && ratios.p99Ratio > t.maxP99Ratio) problems.push('p99 above target')
  if (problems.length > 0) return `fail (${problems.join('; ')})`
  return t && (t.minRatio !== undefined || t.maxP99Ratio !== undefined) ? 'pass' : '—'
}

const HEADER = ['scenario', 'req/s', 'p50 ms', 'p99 ms', 'ratio', 'p99 ratio', 'RSS MB', 'CPU µs/req', 'CPU ratio', 'target', 'verdict']
const LEFT_COLUMNS = [0, 9, 10]

/** The ratio, and its range over the runs when there were several. */
function ratioCell (reqPerSec: number, runs: number[], base: Baseline): string {
  const ratio = fmt(reqPerSec / base.reqPerSec, 2)
  if (runs.length < 2) return ratio
  return `${ratio} (${fmt(Math.min(...runs) / base.reqPerSec, 2)}–${fmt(Math.max(...runs) / base.reqPerSec, 2)})`
}

function rows (start: Bare, end: Bare, base: Baseline, results: RunResult[]): Cell[][] {
  const bareRow = (label: string, { m, runs }: Bare): Cell[] => [
    `bare Fastify GET / (${label})`, fmt(m.reqPerSec), fmt(m.p50, 2), fmt(m.p99, 2),
    ratioCell(m.reqPerSec, runs, base), fmt(m.p99 / base.p99, 2), fmt(m.rssMb, 1),
    fmt(m.serverCpuUsPerReq, 1), cpuRatio(base, m), '—', 'baseline',
  ]
  return [
    bareRow('start', start),
    ...results.map((r): Cell[] => {
      const m = r.measurement
      const ratios = ratiosOf(r, base)
      return [
        r.name,
        fmt(m?.reqPerSec), fmt(m?.p50, 2), fmt(m?.p99, 2),
        ratios ? `${fmt(ratios.ratio, 2)}${ratios.range ? ` (${fmt(ratios.range[0], 2)}–${fmt(ratios.range[1], 2)})` : ''}` : '—',
        ratios ? fmt(ratios.p99Ratio, 2) : '—',
        m ? `${fmt(m.rssMb, 1)} (peak ${fmt(m.rssPeakMb, 1)})` : '—',
        fmt(m?.serverCpuUsPerReq, 1),
        ratios?.cpuRatio != null ? fmt(ratios.cpuRatio, 2) : '—',
        targetText(r.target),
        verdict(r, base),
      ]
    }),
    bareRow('end', end),
  ]
}

/** The commit measured, and whether the service's sources differed from it (the bench runs the working tree). */
function revision (): { commit: string, dirty: string[] } {
  try {
    const commit = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: ROOT, encoding: 'utf8' }).trim()
    const dirty = execFileSync('git', ['status', '--porcelain', '--', 'src', 'plugins', 'routes', 'package.json'], { cwd: ROOT, encoding: 'utf8' })
      .split('\n').filter(Boolean).map((l) => l.slice(3))
    return { commit, dirty }
  } catch {
    return { commit: 'unknown', dirty: [] }
  }
}

/** Bare CPU per request ÷ this target's: the req/s ratio both would reach with a core each to themselves. */
function cpuRatio (base: Baseline, m: Measurement): string {
  if (base.cpuUsPerReq === null || m.serverCpuUsPerReq === null) return '—'
  return fmt(base.cpuUsPerReq / m.serverCpuUsPerReq, 2)
}

function machine (): Record<string, unknown> {
  const cpus = os.cpus()
  return {
    cpuModel: cpus[0]?.model ?? 'unknown',
    cpuCount: cpus.length,
    totalMemMb: Math.round(os.totalmem() / 1048576),
    os: `${os.type()} ${os.release()} ${os.arch()}`,
    node: process.version,
  }
}

function markdown (meta: Record<string, unknown>, table: string, results: RunResult[], loadavg: { start: number[], end: number[] }): string {
  const m = meta.machine as { cpuModel: string, cpuCount: number, node: string, os: string }
  const rev = meta.revision as { commit: string, dirty: string[] }
  const lines = [
    '# Benchmark results',
    '',
    `Run ${String(meta.date)} on ${m.cpuCount} × ${m.cpuModel} (${m.os}), Node ${m.node}.`,
    `Service at commit ${rev.commit}${rev.dirty.length > 0 ? ` plus uncommitted changes to ${rev.dirty.join(', ')}` : ''}.`,
    `Each target: ${WARMUP_S} s warmup (not measured), then ${DURATION_S} s of autocannon on loopback, ${DEFAULT_CONNECTIONS} connections unless noted; one target at a time.`,
    'Both servers ran compiled (`npm run build`; the bare server transpiled from bench/bare-server.ts): the service as `node dist/src/server.js`, as `npm start` runs it.',
    `Node flags: ${START_NODE_FLAGS.length > 0 ? START_NODE_FLAGS.join(' ') : 'none'} for both servers (the package.json start script's)${SERVICE_NODE_ARGS.length > START_NODE_FLAGS.length ? `, plus ${SERVICE_NODE_ARGS.slice(START_NODE_FLAGS.length).join(' ')} for the service` : ''}.`,
    PIN
      ? `Servers (bare and service) pinned to CPU ${PIN.server}; the load generator and the redis-servers to CPU ${PIN.load} (BENCH_PIN=0: unpinned).`
      : 'Unpinned: servers, the load generator and the redis-servers share the CPUs wherever the scheduler puts them.',
    `Scenarios with a target ran ${RUNS} time(s), each in fresh processes (a new service and redis-server) right after a bare run of its own, and each run's ratios are to that bare run; the row is the run with the median ratio, and the ratio column gives the range over the runs in brackets. The others ran once, against the mean of the bare runs at the start and the end.`,
    `The bare route (plain Fastify 5, no logger, no plugins) is also measured at the start and at the end${RUNS > 1 ? `, ${RUNS} fresh processes each (the median counts)` : ''}.`,
    `Load average (1 min) at start ${loadavg.start.map((n) => n.toFixed(2)).join(' / ')}, at end ${loadavg.end.map((n) => n.toFixed(2)).join(' / ')}.`,
    '',
    table,
    '',
    'ratio = req/s ÷ bare req/s; p99 ratio = p99 ÷ bare p99. Latencies are of 2xx answers, from sub-millisecond samples. RSS is the service process at the end of the load (peak sampled every 0.5 s during it).',
    'CPU µs/req = the server process\'s CPU time ÷ requests answered; CPU ratio = bare µs/req ÷ this µs/req. It hardly depends on what else runs on the machine, so when the load average is high or the baseline drifts, trust the CPU ratio more than the req/s ratio.',
    '',
    '## Details',
    '',
  ]
  for (const r of results) {
    const x = r.measurement
    lines.push(`- **${r.name}** (\`bench/scenarios/${r.file}.ts\`, redis ${r.redis}${r.redisMasters ? ` + ${r.redisMasters} masters` : ''}, ${r.connections} connections)` +
      (x ? `: ${x.total} requests, ${x.non2xx} non-2xx, ${x.errors} errors; service CPU ${fmt(x.serverCpuPct)}%, load generator CPU ${fmt(x.loadgenCpuPct)}%; exit after SIGTERM: ${String(r.exit)}` : `: **did not run**: ${r.error ?? ''}`))
    if (r.target?.note) lines.push(`  - target: ${r.target.note}`)
    if (r.pairs.length > 0) {
      lines.push(`  - runs (req/s, ratio to the bare run just before): ${r.pairs.map((p, i) => `${fmt(r.runs[i])} / ${fmt(p.bareReqPerSec)} = ${fmt(p.ratio, 2)}${i === r.medianPair ? ' (shown)' : ''}`).join('; ')}`)
    }
    if (r.check) lines.push(`  - after-load check ${r.check.ok ? 'passed' : '**failed**'}: ${r.check.note}`)
    if (r.sample) lines.push(`  - first answer (${r.sample.status}): \`${r.sample.body.replace(/`/g, "'")}\``)
    if (r.output) lines.push('  - service output (tail):', '', '    ```', ...r.output.split('\n').map((l) => `    ${l}`), '    ```')
  }
  return `${lines.join('\n')}\n`
}

// ---------------------------------------------------------------------------
// Main
// ---------------------------------------------------------------------------

let built: BenchBuild | undefined
/** The compiled servers (main() builds them before anything is measured). */
function build (): BenchBuild {
  if (built === undefined) throw new Error('bench: the servers were not built')
  return built
}

async function main (): Promise<number> {
  installExitHooks()
  const scenarios = await loadScenarios(process.argv.slice(2))
  log('bench: building the service (npm run build) and the bare server')
  built = buildForBench(ROOT)
  let standalonesOk = true
  for (const { file, bench } of standalones) {
    log(`bench: ${bench.name} (bench/scenarios/${file}.ts)`)
    if (!await bench.run({ build: built, root: ROOT, resultsDir: RESULTS_DIR, serverCpus: PIN?.server ?? null })) standalonesOk = false
  }
  if (scenarios.length === 0) return standalonesOk ? 0 : 1
  const loadStart = os.loadavg()
  if ((loadStart[0] ?? 0) > 0.5) log(`bench: warning: load average is ${loadStart[0]?.toFixed(2)}; other work on this machine will skew the figures`)
  log(`bench: ${scenarios.length} scenario(s), ${WARMUP_S} s warmup + ${DURATION_S} s each (${RUNS} runs for those with a target, each after a bare run), plus the bare route at both ends`)
  const date = new Date().toISOString()

  const startRuns = await measureBareRuns('start')
  const results: RunResult[] = []
  for (const s of scenarios) results.push(await runScenarioRuns(s))
  const endRuns = await measureBareRuns('end')
  const start = startRuns.m
  const end = endRuns.m
  const loadEnd = os.loadavg()

  const base: Baseline = {
    reqPerSec: (start.reqPerSec + end.reqPerSec) / 2,
    p99: (start.p99 + end.p99) / 2,
    cpuUsPerReq: start.serverCpuUsPerReq !== null && end.serverCpuUsPerReq !== null ? (start.serverCpuUsPerReq + end.serverCpuUsPerReq) / 2 : null,
  }
  const tableRows = rows(startRuns, endRuns, base, results)
  process.stdout.write(`\n${textTable(HEADER, tableRows, LEFT_COLUMNS)}\n\n`)
  const drift = Math.abs(start.reqPerSec - end.reqPerSec) / base.reqPerSec
  if (drift > 0.1) log(`bench: warning: the bare route drifted ${(drift * 100).toFixed(0)}% between start and end; ratios are uncertain`)

  const meta = { date, machine: machine(), revision: revision(), durationS: DURATION_S, warmupS: WARMUP_S, runs: RUNS, defaultConnections: DEFAULT_CONNECTIONS, serviceNodeArgs: SERVICE_NODE_ARGS, bareNodeArgs: START_NODE_FLAGS, pinned: PIN }
  const json = {
    ...meta,
    loadavg: { start: loadStart, end: loadEnd },
    baseline: { start, end, startRuns: startRuns.runs, endRuns: endRuns.runs, mean: base, drift },
    scenarios: results.map((r) => {
      const ratios = ratiosOf(r, base)
      return {
        ...r,
        ratio: ratios?.ratio ?? null,
        ratioRange: ratios?.range ?? null,
        cpuRatio: ratios?.cpuRatio ?? null,
        p99Ratio: ratios?.p99Ratio ?? null,
        verdict: verdict(r, base),
      }
    }),
  }
  mkdirSync(RESULTS_DIR, { recursive: true })
  writeFileSync(path.join(RESULTS_DIR, 'latest.json'), `${JSON.stringify(json, null, 2)}\n`)
  writeFileSync(path.join(RESULTS_DIR, 'latest.md'), markdown(meta, markdownTable(HEADER, tableRows, LEFT_COLUMNS), results, { start: loadStart, end: loadEnd }))
  log(`bench: wrote ${path.relative(ROOT, path.join(RESULTS_DIR, 'latest.json'))} and latest.md`)
  return results.every((r) => r.ok) && standalonesOk ? 0 : 1
}

main().then(async (code) => {
  await runCleanups()
  process.exit(code)
}, async (err: unknown) => {
  log(`bench: ${err instanceof Error ? err.stack ?? err.message : String(err)}`)
  await runCleanups()
  process.exit(1)
})
