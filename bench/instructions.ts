/**
 * `npm run bench:instructions`: instructions per request, counted by callgrind (valgrind),
 * for the bare route; the bare route with the five headers a limited quote carries (a
 * reference: what they cost plain Fastify); the service's hot quote (an L1 hit) as
 * `npm start` runs it (dist/src/server.js), without Redis and with a private redis-server;
 * and the same server without the nextTick records its entry holds (dist/src/main.js
 * started directly; src/hold-tick-records.ts says why they matter). All compiled, with the
 * start script's node flags. Writes bench/results/instructions.{md,json}.
 *
 * Why: req/s and CPU time on a shared 2-core VM move by 20 % and more from one process to
 * the next; a count of instructions moves only when the work a process does moves. It
 * counts user space only (the kernel's side of a socket write is not in it) and is no
 * stand-in for time, so the targets stay with `npm run bench`. What it shows well is work
 * one build does and another does not, such as Node 20's `process.nextTick` falling to V8's
 * runtime (`Runtime_DefineKeyedOwnPropertyInLiteral`, about 30 calls a request) once a
 * full garbage collection has freed the records' hidden classes.
 *
 * Each process: INSTR_WARM requests uninstrumented (default 60000), then INSTR_MEASURE
 * counted (20000), 10 connections; INSTR_RUNS (default 2) fresh processes per row group.
 * Timers count too: under valgrind a process answers a few hundred requests a second, so a
 * once-a-second timer weighs ~100× more per request than at full speed. Needs valgrind and
 * callgrind_control; two processes run at a time. Takes about 7 minutes here.
 */
import { writeFileSync } from 'node:fs'
import path from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { RUNTIME_FN, countInstructions, type InstructionCount } from '../test/helpers/callgrind.js'
import { buildForBench, installExitHooks, markdownTable, medianBy, startRedis, startScriptFlags, textTable, trackChild } from './lib.js'

const BENCH_DIR = path.dirname(fileURLToPath(import.meta.url))
const ROOT = path.resolve(BENCH_DIR, '..')
/** The preload that adds the old hot-quote route (bench/scenarios/quotes.ts, compiled by buildForBench). */
const OLD_ROUTE_ENV = { NODE_OPTIONS: `--import ${pathToFileURL(path.join(ROOT, 'dist/bench/scenarios/quotes.js')).href}`, AIC_BENCH_OLD_QUOTE: '1' }
const RUNS = intEnv('INSTR_RUNS', 2)
const WARM = intEnv('INSTR_WARM', 60_000)
const MEASURE = intEnv('INSTR_MEASURE', 20_000)

function intEnv (name: string, def: number): number {
  const n = Number(process.env[name] ?? def)
  if (!Number.isInteger(n) || n < 1) throw new Error(`${name} must be a positive integer`)
  return n
}

interface Variant {
  name: string
  nodeArgs: string[]
  path: string
  readyPath: string
  /** Give the service a private redis-server (REDIS_URL) and count the limiter's script calls. */
  redis?: boolean
  /** More service environment. */
  env?: Record<string, string>
}

interface Count extends InstructionCount {
  variant: string
  /** With Redis: the rate limiter's script calls (EVALSHA and EVAL) per request, warm-up included. */
  scriptCalls: number | null
}

/** The service's environment: no Redis, nothing but the hot quote to answer. */
const SERVICE_ENV = {
  NODE_ENV: 'test', LOG_LEVEL: 'warn', DATABASE_PATH: ':memory:', REDIS_URL: '', SCHEDULER_ENABLED: 'false',
  // Under valgrind the event loop is slow by design: no load shedding.
  MAX_EVENT_LOOP_DELAY_MS: '0', RATE_LIMIT_MAX: '1000000000', QUOTE_PROVIDER: 'simulated',
}

async function count (v: Variant): Promise<Count> {
  const redis = v.redis === true ? await startRedis() : null
  try {
    const env = { ...SERVICE_ENV, ...v.env, ...(redis === null ? {} : { REDIS_URL: redis.url }) }
    const counted = await countInstructions({
      name: v.name, nodeArgs: v.nodeArgs, path: v.path, readyPath: v.readyPath, env, warm: WARM, measure: MEASURE, onChild: trackChild,
      ...(redis === null ? {} : { onReady: async () => { await redis.command('CONFIG', 'RESETSTAT') } }),
    })
    const scriptCalls = redis === null ? null : scriptCallsIn(await redis.command('INFO', 'commandstats')) / (WARM + MEASURE)
    return { variant: v.name, ...counted, scriptCalls }
  } finally {
    await redis?.stop()
  }
}

/**
 * What Redis being up adds to the hot quote, put per limiter script call: under valgrind a
 * process answers about a thousand requests a second, so the limiter's 20 ms hold gathers a
 * few dozen hits a call instead of the hundreds it gathers at full speed, and its per-call
 * cost weighs that much more per request. Null without both rows.
 */
function perScriptCall (counts: Count[], upName: string | undefined, noneName: string | undefined): string | null {
  const up = counts.filter((c) => c.variant === upName)
  const none = counts.filter((c) => c.variant === noneName)
  if (up.length === 0 || none.length === 0) return null
  const upMain = medianBy(up, (c) => c.mainThread).mainThread
  const noneMain = medianBy(none, (c) => c.mainThread).mainThread
  const calls = medianBy(up, (c) => c.scriptCalls ?? 0).scriptCalls ?? 0
  const extra = upMain - noneMain
  const round = (x: number): string => Math.round(x).toLocaleString('en-US')
  return `Redis up adds ${round(extra)} instructions a request on the JavaScript thread (medians) with ${calls.toFixed(3)} limiter script calls a request (${calls > 0 ? (1 / calls).toFixed(0) : '—'} hits a call): ` +
    `${calls > 0 ? round(extra / calls) : '—'} instructions a script call, if the calls account for all of it. At full speed a call carries hundreds of hits (\`redis-cli INFO commandstats\` against the requests sent), so the same calls cost that many times less a request.`
}

/**
 * The rate-limit store target (ours ≥ 0.9× the library's in-memory store) as instructions:
 * the library's store's main-thread instructions a request ÷ ours, Redis down (no REDIS_URL)
 * and Redis up (its script calls included, at valgrind's small batches). Above 1: ours does
 * less work a request. Null without the rows.
 */
function libraryStoreRatio (counts: Count[], targets: Variant[]): string | null {
  const median = (name: string | undefined): number | null => {
    const rows = counts.filter((c) => c.variant === name)
    return rows.length === 0 ? null : medianBy(rows, (c) => c.mainThread).mainThread
  }
  const library = median(targets.find((t) => t.env?.RATE_LIMIT_STORE === 'memory')?.name)
  const down = median(targets.find((t) => t.path === '/api/stocks/AAPL' && t.redis !== true && t.env === undefined && t.nodeArgs.includes('-e') === false)?.name)
  const up = median(targets.find((t) => t.redis === true)?.name)
  if (library === null || (down === null && up === null)) return null
  const part = (label: string, ours: number | null): string => ours === null ? '' : ` ${label}: ${(library / ours).toFixed(3)}`
  return `Rate-limit store, main-thread instructions a request, the library's in-memory store ÷ ours (≥ 0.9 meets the target):${part('Redis down', down)}${part(', Redis up', up)}.`
}

/** `label: a ÷ b` of two targets' median main-thread instructions; null without both rows. */
function ratioLine (counts: Count[], label: string, a: string | undefined, b: string | undefined): string | null {
  const median = (name: string | undefined): number | null => {
    const rows = counts.filter((c) => c.variant === name)
    return rows.length === 0 ? null : medianBy(rows, (c) => c.mainThread).mainThread
  }
  const x = median(a)
  const y = median(b)
  return x === null || y === null ? null : `${label}: ${(x / y).toFixed(3)}.`
}

/** EVALSHA + EVAL calls in an `INFO commandstats` answer. */
function scriptCallsIn (info: string): number {
  let calls = 0
  for (const m of info.matchAll(/^cmdstat_(?:evalsha|eval):calls=(\d+)/gm)) calls += Number(m[1])
  return calls
}

async function main (): Promise<void> {
  installExitHooks()
  const flags = startScriptFlags(ROOT)
  const built = buildForBench(ROOT)
  const quote = { path: '/api/stocks/AAPL', readyPath: '/api/health/live' }
  const targets: Variant[] = [
    { name: 'bare Fastify GET /', nodeArgs: [...flags, built.bare], path: '/', readyPath: '/' },
    { name: 'bare Fastify GET / with the 5 headers a limited quote carries', nodeArgs: [...flags, built.bare], path: '/with-headers', readyPath: '/' },
    { name: 'hot quote (L1 hit, no Redis), as npm start runs it', nodeArgs: [...flags, built.server], ...quote },
    { name: 'hot quote (L1 hit), Redis up', nodeArgs: [...flags, built.server], ...quote, redis: true },
    // Issue 17's rate-limit target, without the noise: the same limited route with
    // @fastify/rate-limit's own in-process store instead of ours.
    { name: 'hot quote (L1 hit), the library\'s in-memory store (RATE_LIMIT_STORE=memory)', nodeArgs: [...flags, built.server], ...quote, env: { RATE_LIMIT_STORE: 'memory' } },
    // Issue 17's decorator target: the route cached by its config.cache option against the
    // route as it was (its handler answered L1 hits), in the same process set-up: the old
    // route is added by bench/scenarios/quotes.ts as a preload (AIC_BENCH_OLD_QUOTE).
    { name: 'hot quote through the caching decorator (old route loaded too)', nodeArgs: [...flags, built.server], ...quote, env: OLD_ROUTE_ENV },
    { name: 'the hot-quote route before config.cache (GET /bench/old-quote/AAPL)', nodeArgs: [...flags, built.server], path: '/bench/old-quote/AAPL', readyPath: '/api/health/live', env: OLD_ROUTE_ENV },
    { name: 'hot quote, without the held nextTick records', nodeArgs: [...flags, '--input-type=module', '-e', `import(${JSON.stringify(pathToFileURL(built.main).href)}).then((m) => m.main())`], ...quote },
  ]
  // INSTR_TARGETS: a regular expression; only the targets whose name matches (the bare route
  // is always counted, as every ratio's reference).
  const only = process.env.INSTR_TARGETS === undefined ? null : new RegExp(process.env.INSTR_TARGETS)
  const chosen = targets.filter((t, i) => i === 0 || only === null || only.test(t.name))
  const variants = chosen.flatMap((t) => Array.from({ length: RUNS }, () => t))
  const counts: Count[] = []
  for (let i = 0; i < variants.length; i += 2) {
    counts.push(...await Promise.all(variants.slice(i, i + 2).map(count)))
    process.stdout.write(`${counts.length}/${variants.length} processes counted\n`)
  }
  const bareRuns = counts.filter((c) => c.variant === targets[0]?.name)
  const bareAll = medianBy(bareRuns, (c) => c.instructions).instructions
  const bareMain = medianBy(bareRuns, (c) => c.mainThread).mainThread
  const n = (x: number): string => Math.round(x).toLocaleString('en-US')
  const header = ['target', 'instructions / request, main thread', 'bare ÷ this', 'all threads', 'bare ÷ this', `${RUNTIME_FN} calls / request`, 'their instructions / request', 'limiter script calls / request']
  const rows = counts.map((c) => [c.variant, n(c.mainThread), (bareMain / c.mainThread).toFixed(2), n(c.instructions), (bareAll / c.instructions).toFixed(2),
    c.runtimeCalls.toFixed(1), n(c.runtimeInstructions), c.scriptCalls === null ? '—' : c.scriptCalls.toFixed(3)])
  const perCall = perScriptCall(counts, targets.find((t) => t.redis === true)?.name, targets.find((t) => t.path === quote.path && t.redis !== true)?.name)
  const storeRatio = libraryStoreRatio(counts, targets)
  const decoratorRatio = ratioLine(counts, 'Caching decorator, main-thread instructions a request, the old route ÷ the decorated one (≥ 0.95 meets the target)',
    targets.find((t) => t.path === '/bench/old-quote/AAPL')?.name, targets.find((t) => t.env === OLD_ROUTE_ENV && t.path === quote.path)?.name)
  process.stdout.write(`\n${textTable(header, rows, [0])}\n`)
  if (perCall !== null) process.stdout.write(`\n${perCall}\n`)
  if (storeRatio !== null) process.stdout.write(`\n${storeRatio}\n`)
  if (decoratorRatio !== null) process.stdout.write(`\n${decoratorRatio}\n`)
  const md = [
    '# Instructions per request (callgrind)',
    '',
    `Run ${new Date().toISOString()}, Node ${process.version}, \`npm run bench:instructions\`: ${RUNS} fresh process(es) per target, compiled (\`npm run build\`), node flags: ${flags.join(' ') || 'none'}; ${WARM} requests uninstrumented, then ${MEASURE} counted, 10 connections. User-space instructions only; "main thread" is the JavaScript thread, "all threads" adds V8's helper threads (garbage collection, compilation). "bare ÷ this" divides by the median of the bare route.`,
    '',
    markdownTable(header, rows, [0]),
    '',
    ...(perCall === null ? [] : [perCall, '']),
    ...(storeRatio === null ? [] : [storeRatio, '']),
    ...(decoratorRatio === null ? [] : [decoratorRatio, '']),
  ].join('\n')
  const resultsDir = path.join(BENCH_DIR, 'results')
  writeFileSync(path.join(resultsDir, 'instructions.md'), md)
  writeFileSync(path.join(resultsDir, 'instructions.json'), JSON.stringify({ date: new Date().toISOString(), node: process.version, runs: RUNS, warm: WARM, measure: MEASURE, startFlags: flags, counts }, null, 2) + '\n')
}

main().catch((err: unknown) => {
  process.stderr.write(`${err instanceof Error ? err.stack ?? err.message : String(err)}\n`)
  process.exit(1)
})
