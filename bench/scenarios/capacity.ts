/**
 * `npm run bench -- capacity`: what one request of each route costs the shared services, as
 * counts that do not depend on the machine's speed, and the buy route's throughput on both
 * primary stores, in one run of about a minute (docs/capacity.md turns them into instances).
 *
 * For each store (SQLite, then PostgreSQL: a private database `aic_capacity_<random>` on the
 * machine's server at 127.0.0.1:5432, dropped at exit; `BENCH_PG_URL` names another admin
 * URL), one service process with a private redis-server. Each route is sent CAPACITY_REQUESTS
 * times, one request at a time and CAPACITY_PACE_MS apart (longer than any batch the service
 * holds, so every request is its own batch: the counts are the low-traffic worst case, and
 * they repeat exactly). Around the requests:
 *
 *   aic_db_queries_total (GET /metrics) → CONFIG RESETSTAT → the requests → CAPACITY_SETTLE_MS
 *   for deferred work → INFO commandstats stats → aic_db_queries_total
 *
 * - Redis commands: INFO commandstats without INFO and CONFIG. A script counts once (EVALSHA)
 *   plus once for each command it runs (redis.call), as commandstats counts them.
 * - Redis bytes in and out: total_net_input_bytes / total_net_output_bytes, all clients (the
 *   service's command connection and its pub/sub subscriber).
 * - Database round trips: the store's own statement count (BEGIN and COMMIT included).
 * Each figure has the same window with no request subtracted (the measuring commands' own
 * bytes, a scrape's own statements), measured until two in a row agree. A window whose
 * counts differ between its requests (a late timer on a busy machine merged two batches) is
 * measured again, slower. One more request of each route runs under MONITOR: its Redis calls
 * (round trips; a script is one), in order.
 *
 * Then the buy route under load (50 users, one connection each, as bench/scenarios/database.ts)
 * on the same service, pinned as the harness pins servers: req/s, the service's CPU per buy,
 * and the Redis commands and statements a buy under load (batches are shared).
 *
 *   npm run bench -- capacity
 *   CAPACITY_DURATION=10 npm run bench -- capacity     # longer throughput runs (default 5 s + 2 s warmup)
 */
import { randomBytes } from 'node:crypto'
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { startMonitor } from '../../test/helpers/monitor.js'
import {
  type BenchContext, type Cell, type RedisProcess, type Scenario, type ServerProcess, type StandaloneBench,
  USER_SCENARIO_ENV, errorText, fmt, load, markdownTable, post, privateDatabase, registerUsers, sleep, startRedis, startServer, textTable, toAutocannonRequests,
} from '../lib.js'

const REQUESTS = envInt('CAPACITY_REQUESTS', 20)
const PACE_MS = envInt('CAPACITY_PACE_MS', 40)
const SETTLE_MS = envInt('CAPACITY_SETTLE_MS', 300)
const DURATION_S = envInt('CAPACITY_DURATION', 5)
const WARMUP_S = envInt('CAPACITY_WARMUP', 2)
const USERS = 50
const PASSWORD = 'bench-password-1'

/** The service as the other user scenarios run it, without the background work that would land in a window. */
const ENV: Record<string, string> = {
  ...USER_SCENARIO_ENV,
  SCHEDULER_ENABLED: 'false',
  REDIS_INFO_INTERVAL_MS: '3600000',
  IDEMPOTENCY_PURGE_INTERVAL_MS: '86400000',
  // 50 connections start on one user's lock under load: wait for it rather than answer 409.
  LOCK_WAIT_MS: '10000',
  // The counts and the store are measured, not the load shedder (which a busy machine trips).
  MAX_EVENT_LOOP_DELAY_MS: '0',
}

function envInt (name: string, def: number): number {
  const raw = process.env[name]
  if (raw === undefined || raw.trim() === '') return def
  const n = Number(raw)
  if (!Number.isInteger(n) || n < 0) throw new Error(`${name} must be a whole number ≥ 0 (got ${JSON.stringify(raw)})`)
  return n
}

const log = (msg: string): void => { process.stderr.write(`${msg}\n`) }

// ---------------------------------------------------------------------------
// Counting
// ---------------------------------------------------------------------------

/** What a window of requests cost, in total. */
export interface Counts {
  /** Redis commands, scripts' inner commands included, INFO and CONFIG excluded. */
  commands: number
  /** EVAL/EVALSHA/FCALL calls (also in `commands`). */
  scripts: number
  bytesIn: number
  bytesOut: number
  dbQueries: number
  /** Commands by name (commandstats' names, e.g. `evalsha`, `client|setname`). */
  by: Record<string, number>
}

const SCRIPT_COMMANDS = new Set(['eval', 'evalsha', 'eval_ro', 'evalsha_ro', 'fcall', 'fcall_ro'])

/** The Redis part of `Counts` from one `INFO commandstats stats` answer since a CONFIG RESETSTAT. */
export function parseRedisInfo (info: string): Omit<Counts, 'dbQueries'> {
  const by: Record<string, number> = {}
  for (const m of info.matchAll(/^cmdstat_([a-z_|-]+):calls=(\d+)/gm)) {
    const name = m[1] as string
    const top = name.split('|')[0] as string
    if (top === 'info' || top === 'config') continue
    by[name] = Number(m[2])
  }
  const stat = (field: string): number => {
    const m = new RegExp(`^${field}:(\\d+)`, 'm').exec(info)
    if (m === null) throw new Error(`INFO has no ${field}`)
    return Number(m[1])
  }
  const counts = Object.values(by)
  return {
    commands: counts.reduce((a, b) => a + b, 0),
    scripts: Object.entries(by).filter(([name]) => SCRIPT_COMMANDS.has(name)).reduce((a, [, n]) => a + n, 0),
    bytesIn: stat('total_net_input_bytes'),
    bytesOut: stat('total_net_output_bytes'),
    by,
  }
}

/** `after` minus the empty window's counts. */
export function minus (after: Counts, empty: Counts): Counts {
  const by: Record<string, number> = { ...after.by }
  for (const [name, n] of Object.entries(empty.by)) by[name] = (by[name] ?? 0) - n
  for (const [name, n] of Object.entries(by)) if (n === 0) delete by[name]
  return {
    commands: after.commands - empty.commands,
    scripts: after.scripts - empty.scripts,
    bytesIn: after.bytesIn - empty.bytesIn,
    bytesOut: after.bytesOut - empty.bytesOut,
    dbQueries: after.dbQueries - empty.dbQueries,
    by,
  }
}

/** The statements the service has sent to its store, from its /metrics. */
export function parseDbQueries (metrics: string): number {
  const m = /^aic_db_queries_total\{store="[a-z]+"\} (\d+)/m.exec(metrics)
  if (m === null) throw new Error('/metrics has no aic_db_queries_total')
  return Number(m[1])
}

interface Service { baseUrl: string, redis: RedisProcess, pid: number }

async function dbQueries (svc: Service): Promise<number> {
  const res = await fetch(`${svc.baseUrl}/metrics`, { signal: AbortSignal.timeout(5000) })
  return parseDbQueries(await res.text())
}

/** One window: the counts of what `send` makes the service do (n requests, paced), before subtracting the empty window. */
async function window (svc: Service, n: number, send: (i: number, paceMs: number) => Promise<void>, paceMs = PACE_MS): Promise<Counts> {
  const db0 = await dbQueries(svc)
  await svc.redis.command('CONFIG', 'RESETSTAT')
  for (let i = 0; i < n; i++) {
    await send(i, paceMs)
    await sleep(paceMs)
  }
  await sleep(SETTLE_MS)
  const info = await svc.redis.command('INFO', 'commandstats', 'stats')
  const db1 = await dbQueries(svc)
  return { ...parseRedisInfo(info), dbQueries: db1 - db0 }
}

// ---------------------------------------------------------------------------
// The routes
// ---------------------------------------------------------------------------

interface RouteRow {
  route: string
  store: string
  per: Counts
  n: number
  /** One more request under MONITOR: the commands it sent itself (a script is one), in order, as `command key-prefix`. */
  calls: string[]
}

/** `evalsha session:` for `EVALSHA <sha> 1 session:abc …`: the command and the first key up to its last colon. */
function callName (args: string[]): string {
  const name = (args[0] ?? '').toLowerCase()
  const key = name.startsWith('eval') || name.startsWith('fcall') ? (Number(args[2]) > 0 ? args[3] : undefined) : args[1]
  const prefix = key === undefined ? '' : key.includes(':') ? key.slice(0, key.lastIndexOf(':') + 1) : key
  return prefix === '' ? name : `${name} ${prefix}`
}

/** The Redis calls (round trips) one request sends, from MONITOR; `before` runs first, unwatched. */
async function trace (svc: Service, send: () => Promise<void>, before?: () => Promise<void>): Promise<string[]> {
  if (before !== undefined) await before()
  await sleep(SETTLE_MS)
  const monitor = await startMonitor(svc.redis.port)
  try {
    await send()
    await sleep(SETTLE_MS)
  } finally {
    monitor.stop()
  }
  return monitor.lines.filter((l) => l.source !== 'lua').map((l) => callName(l.args))
}

async function expectStatus (res: Response, status: number, what: string): Promise<Response> {
  if (res.status !== status) throw new Error(`${what} answered ${res.status}: ${(await res.text()).slice(0, 300)}`)
  return res
}

async function get (svc: Service, url: string, token?: string): Promise<Response> {
  return fetch(svc.baseUrl + url, { ...(token !== undefined ? { headers: { authorization: `Bearer ${token}` } } : {}), signal: AbortSignal.timeout(10_000) })
}

/** Counts per request of every route on one running service. */
async function countRoutes (svc: Service, store: string): Promise<RouteRow[]> {
  const ctx: BenchContext = { baseUrl: svc.baseUrl, state: {} }
  const email = `capacity-${randomBytes(4).toString('hex')}@example.com`
  await expectStatus(await post(ctx, '/api/auth/register', { email, password: PASSWORD }), 201, 'register')
  const token = (await (await expectStatus(await post(ctx, '/api/auth/login', { email, password: PASSWORD }), 200, 'login')).json() as { token: string }).token
  const buyBody = { ticker: 'AAPL', side: 'buy', shares: 1, price: 100 }

  const hotQuote = async (): Promise<void> => {
    const res = await expectStatus(await get(svc, '/api/stocks/AAPL'), 200, 'GET /api/stocks/AAPL')
    await res.arrayBuffer()
    if (res.headers.get('x-cache') !== 'HIT') throw new Error(`hot quote: X-Cache ${String(res.headers.get('x-cache'))}, expected HIT`)
  }
  let cold = 0
  const coldQuote = async (): Promise<void> => {
    // A ticker no instance has asked for: a miss in L1 and in Redis.
    const ticker = `CQ${(cold++).toString(36).toUpperCase()}`
    const res = await expectStatus(await get(svc, `/api/stocks/${ticker}`), 200, `GET /api/stocks/${ticker}`)
    await res.arrayBuffer()
    if (res.headers.get('x-cache') !== 'MISS') throw new Error(`cold quote: X-Cache ${String(res.headers.get('x-cache'))}, expected MISS`)
  }
  const me = async (): Promise<void> => { await (await expectStatus(await get(svc, '/api/auth/me', token), 200, 'GET /api/auth/me')).arrayBuffer() }
  const login = async (): Promise<void> => { await (await expectStatus(await post(ctx, '/api/auth/login', { email, password: PASSWORD }), 200, 'login')).arrayBuffer() }
  const buy = async (): Promise<void> => { await (await expectStatus(await post(ctx, '/api/portfolio/transactions', buyBody, token), 201, 'buy')).arrayBuffer() }
  const read = async (expectCache?: string): Promise<void> => {
    const res = await expectStatus(await get(svc, '/api/portfolio', token), 200, 'GET /api/portfolio')
    await res.arrayBuffer()
    if (expectCache !== undefined && res.headers.get('x-cache') !== expectCache) throw new Error(`portfolio read: X-Cache ${String(res.headers.get('x-cache'))}, expected ${expectCache}`)
  }

  // The cache's invalidation subscriber is connected (its SUBSCRIBE is not a request's).
  const subscribed = Date.now() + 10_000
  while (!/\s[1-9]\d*$/.test(await svc.redis.command('PUBSUB', 'NUMSUB', 'cache:invalidate'))) {
    if (Date.now() > subscribed) throw new Error('the service never subscribed to cache:invalidate')
    await sleep(100)
  }

  // Warm every path once (scripts loaded, the portfolio created, the quote cached), so the
  // windows count the steady state, not the first use.
  await hotQuote().catch(async () => { await hotQuote() })
  await coldQuote()
  await me()
  await buy()
  await read()
  /** Reads until the view is cached (after a write, once its own invalidation has come back over pub/sub). */
  const cacheView = async (): Promise<void> => {
    const until = Date.now() + 10_000
    while (!await read('HIT').then(() => true, () => false)) {
      if (Date.now() > until) throw new Error('GET /api/portfolio never answered X-Cache: HIT')
      await sleep(50)
    }
  }
  await cacheView()

  // The empty window, until two in a row agree (the subscriber's SUBSCRIBE may still land).
  let empty = await window(svc, 0, async () => {})
  for (let tries = 0; ; tries++) {
    const again = await window(svc, 0, async () => {})
    if (JSON.stringify(empty) === JSON.stringify(again)) break
    if (tries === 4) throw new Error(`the empty window does not repeat: ${JSON.stringify(empty)} then ${JSON.stringify(again)} (background work in the service?)`)
    empty = again
  }

  const rows: RouteRow[] = []
  /**
   * A window whose counts are the same for every request. On a busy machine a timer can fire
   * late and two requests' deferred work share a batch (a fraction per request): then the
   * window is measured again, up to twice, with twice the pace.
   */
  const steady = async (n: number, send: (i: number, paceMs: number) => Promise<void>): Promise<Counts> => {
    let total = minus(await window(svc, n, send), empty)
    for (let pace = PACE_MS * 2, tries = 0; !whole(total, n) && tries < 2; pace *= 2, tries++) {
      log(`capacity: ${store}: a count was not the same for every request, measuring again ${pace} ms apart`)
      total = minus(await window(svc, n, send, pace), empty)
    }
    return total
  }
  const measure = async (route: string, n: number, send: (i: number) => Promise<void>): Promise<Counts> => {
    const total = await steady(n, send)
    rows.push({ route, store, n, per: perRequest(total, n), calls: await trace(svc, async () => { await send(n) }) })
    return total
  }
  await measure('GET /api/stocks/AAPL (hot quote, L1 hit)', REQUESTS, hotQuote)
  await measure('GET /api/stocks/:ticker (cold quote, L1 and L2 miss)', REQUESTS, coldQuote)
  await measure('GET /api/auth/me', REQUESTS, me)
  await measure('POST /api/auth/login', Math.max(1, Math.round(REQUESTS / 2)), login)
  const buys = await measure('POST /api/portfolio/transactions (buy)', REQUESTS, buy)
  await cacheView()
  await measure('GET /api/portfolio (cached)', REQUESTS, async () => { await read('HIT') })
  // A read right after a write (which invalidated the view): the pair, minus the buys alone.
  const pairs = await steady(REQUESTS, async (_i, paceMs) => { await buy(); await sleep(paceMs); await read('MISS') })
  rows.push({
    route: 'GET /api/portfolio (first read after a write)',
    store,
    n: REQUESTS,
    per: perRequest(minus(pairs, buys), REQUESTS),
    calls: await trace(svc, async () => { await read('MISS') }, buy),
  })
  return rows
}

/** Whether every count (bytes aside: keys differ in length) is a whole number per request. */
function whole (c: Counts, n: number): boolean {
  return [c.commands, c.scripts, c.dbQueries, ...Object.values(c.by)].every((v) => v % n === 0)
}

function perRequest (c: Counts, n: number): Counts {
  const by: Record<string, number> = {}
  for (const [name, v] of Object.entries(c.by)) by[name] = v / n
  return { commands: c.commands / n, scripts: c.scripts / n, bytesIn: c.bytesIn / n, bytesOut: c.bytesOut / n, dbQueries: c.dbQueries / n, by }
}

// ---------------------------------------------------------------------------
// Throughput of the buy route
// ---------------------------------------------------------------------------

interface Throughput { store: string, reqPerSec: number, cpuUsPerBuy: number | null, p50: number, p99: number, total: number, non2xx: number, errors: number, commandsPerBuy: number, scriptsPerBuy: number, dbPerBuy: number }

async function buyThroughput (svc: Service, store: string): Promise<Throughput> {
  const ctx: BenchContext = { baseUrl: svc.baseUrl, state: {} }
  const tokens = await registerUsers(ctx, USERS, PASSWORD)
  const requests = toAutocannonRequests(tokens.map((token) => ({
    method: 'POST' as const,
    path: '/api/portfolio/transactions',
    headers: { authorization: `Bearer ${token}` },
    body: { ticker: 'AAPL', side: 'buy', shares: 1, price: 100 },
  })))
  if (WARMUP_S > 0) await load({ baseUrl: svc.baseUrl, requests, connections: USERS, durationS: WARMUP_S })
  const db0 = await dbQueries(svc)
  await svc.redis.command('CONFIG', 'RESETSTAT')
  const m = await load({ baseUrl: svc.baseUrl, requests, connections: USERS, durationS: DURATION_S, pid: svc.pid })
  await sleep(SETTLE_MS)
  const redis = parseRedisInfo(await svc.redis.command('INFO', 'commandstats', 'stats'))
  const db1 = await dbQueries(svc)
  return {
    store,
    reqPerSec: m.reqPerSec,
    cpuUsPerBuy: m.serverCpuUsPerReq,
    p50: m.p50,
    p99: m.p99,
    total: m.total,
    non2xx: m.non2xx,
    errors: m.errors + m.timeouts,
    commandsPerBuy: redis.commands / Math.max(1, m.total),
    scriptsPerBuy: redis.scripts / Math.max(1, m.total),
    dbPerBuy: (db1 - db0) / Math.max(1, m.total),
  }
}

// ---------------------------------------------------------------------------
// One store: a service with a private redis-server
// ---------------------------------------------------------------------------

/** A private database on the machine's PostgreSQL, dropped at exit; null (with the reason) when none answers. */

async function withService<T> (opts: { server: string, cpus: string | null, kind: 'sqlite' | 'postgres', databaseUrl: string }, fn: (svc: Service) => Promise<T>): Promise<T> {
  const { server, kind, databaseUrl } = opts
  const dir = mkdtempSync(path.join(os.tmpdir(), 'aic-capacity-'))
  let redis: RedisProcess | undefined
  let service: ServerProcess | undefined
  try {
    redis = await startRedis()
    const { PATH, HOME, LANG, TZ } = process.env
    service = await startServer({
      name: 'service',
      args: [server],
      env: { PATH, HOME, LANG, TZ, NODE_ENV: 'test', LOG_LEVEL: 'warn', DATABASE_PATH: path.join(dir, 'capacity.db'), DATABASE_URL: databaseUrl, REDIS_URL: redis.url, REDLOCK_URLS: '', ...ENV },
      cwd: dir,
      readyPath: '/api/health/live',
      ...(opts.cpus !== null ? { cpus: opts.cpus } : {}),
    })
    const baseUrl = service.baseUrl
    const deadline = Date.now() + 10_000
    let health: { redis?: { status?: string }, database?: { kind?: string, status?: string } } | undefined
    while (Date.now() < deadline) {
      health = await (await fetch(`${baseUrl}/api/health`, { signal: AbortSignal.timeout(2000) })).json() as typeof health
      if (health?.redis?.status === 'connected' && health.database?.status === 'connected') break
      await sleep(100)
    }
    if (health?.redis?.status !== 'connected') throw new Error(`health never reported redis connected: ${JSON.stringify(health)}`)
    if (health.database?.kind !== kind || health.database.status !== 'connected') throw new Error(`the service is not on ${kind}: ${JSON.stringify(health.database)}`)
    return await fn({ baseUrl, redis, pid: service.pid })
  } catch (err) {
    if (service !== undefined) log(`  --- service output (tail) ---\n${service.output()}\n  ---`)
    throw err
  } finally {
    await service?.stop()
    await redis?.stop()
    rmSync(dir, { recursive: true, force: true })
  }
}

// ---------------------------------------------------------------------------
// Report
// ---------------------------------------------------------------------------

const HEADER = ['route', 'store', 'Redis calls/req', 'Redis cmds/req', 'scripts/req', 'Redis B in/req', 'Redis B out/req', 'DB trips/req', 'Redis commands per request']

/** Whole numbers as they are; fractions (a count that is not the same for every request) with two decimals. */
function count (n: number): string {
  return Number.isInteger(n) ? String(n) : fmt(n, 2)
}

function byText (by: Record<string, number>): string {
  const parts = Object.entries(by).sort(([a], [b]) => a.localeCompare(b)).map(([name, n]) => `${name} ${count(n)}`)
  return parts.length > 0 ? parts.join(', ') : 'none'
}

function countRows (rows: RouteRow[]): Cell[][] {
  return rows.map((r) => [r.route, r.store, r.calls.length, count(r.per.commands), count(r.per.scripts), fmt(r.per.bytesIn), fmt(r.per.bytesOut), count(r.per.dbQueries), byText(r.per.by)])
}

const T_HEADER = ['buy route, 50 users', 'req/s', 'service CPU µs/buy', 'p50 ms', 'p99 ms', 'requests', 'non-2xx', 'errors', 'Redis cmds/buy', 'scripts/buy', 'DB trips/buy']

function throughputRows (rows: Throughput[]): Cell[][] {
  return rows.map((t) => [t.store, fmt(t.reqPerSec), fmt(t.cpuUsPerBuy), fmt(t.p50, 2), fmt(t.p99, 2), t.total, t.non2xx, t.errors, fmt(t.commandsPerBuy, 2), fmt(t.scriptsPerBuy, 2), fmt(t.dbPerBuy, 2)])
}

export const standalone: StandaloneBench = {
  name: 'capacity: counts per request and the buy route on both stores',
  async run ({ build, resultsDir, serverCpus }) {
    const started = Date.now()
    const stores: Array<{ store: string, kind: 'sqlite' | 'postgres', url: string }> = [{ store: 'SQLite', kind: 'sqlite', url: '' }]
    const pgTarget = await privateDatabase('aic_capacity')
    if ('url' in pgTarget) stores.push({ store: 'PostgreSQL', kind: 'postgres', url: pgTarget.url })
    else log(`capacity: no PostgreSQL rows: ${pgTarget.skip}`)

    const counted: RouteRow[] = []
    const throughput: Throughput[] = []
    let ok = true
    for (const s of stores) {
      try {
        log(`capacity: ${s.store}: counting ${REQUESTS} requests a route, then the buy route under load (${WARMUP_S} s + ${DURATION_S} s)`)
        await withService({ server: build.server, cpus: serverCpus, kind: s.kind, databaseUrl: s.url }, async (svc) => {
          counted.push(...await countRoutes(svc, s.store))
          throughput.push(await buyThroughput(svc, s.store))
        })
      } catch (err) {
        ok = false
        log(`capacity: ${s.store}: FAILED: ${errorText(err)}`)
      }
    }
    // Group the rows by route, the stores side by side.
    const order = [...new Set(counted.map((r) => r.route))]
    const sorted = order.flatMap((route) => counted.filter((r) => r.route === route))
    const table = textTable(HEADER, countRows(sorted), [0, 1, 8])
    const tput = textTable(T_HEADER, throughputRows(throughput), [0])
    const sqlite = throughput.find((t) => t.store === 'SQLite')
    const postgres = throughput.find((t) => t.store === 'PostgreSQL')
    const ratio = sqlite !== undefined && postgres !== undefined ? `PostgreSQL ÷ SQLite: ${fmt(postgres.reqPerSec / sqlite.reqPerSec, 2)}` : 'no ratio (a store is missing)'
    // The calls do not depend on the store: one store's list, and a warning if the other differs.
    const first = counted.filter((r) => r.store === counted[0]?.store)
    const callLines = first.map((r) => `- ${r.route}: ${r.calls.length} (${r.calls.join(' → ') || 'none'})`)
    for (const r of counted) {
      const same = first.find((f) => f.route === r.route)
      // The order may differ (a batch leaves a little earlier or later); the calls may not.
      if (same !== undefined && [...same.calls].sort().join() !== [...r.calls].sort().join()) callLines.push(`- ${r.route} on ${r.store} differs: ${r.calls.join(' → ')}`)
    }
    const loadavg = os.loadavg().map((n) => n.toFixed(2)).join(' / ')
    process.stdout.write(`\n${table}\n\nRedis calls of one request (MONITOR; a script is one call), ${first[0]?.store ?? '—'}:\n${callLines.join('\n')}\n\n${tput}\n${ratio}\nload average ${loadavg}\n\n`)

    const date = new Date().toISOString()
    const cpu = os.cpus()[0]?.model ?? 'unknown'
    const md = [
      '# Capacity counts',
      '',
      `Run ${date} on ${os.cpus().length} × ${cpu}, Node ${process.version}, with \`npm run bench -- capacity\` (bench/scenarios/capacity.ts), ${fmt((Date.now() - started) / 1000)} s.`,
      `Counts: ${REQUESTS} requests a route (login ${Math.max(1, Math.round(REQUESTS / 2))}), one at a time, ${PACE_MS} ms apart, each window closed ${SETTLE_MS} ms after its last answer; the empty window's counts subtracted. A script counts once plus once for each command it runs. Bytes are all the service's Redis connections (commands and the pub/sub subscriber).`,
      '',
      markdownTable(HEADER, countRows(sorted), [0, 1, 8]),
      '',
      `Redis calls (round trips) of one request, from MONITOR (a script is one call, with the prefix of its first key), on ${first[0]?.store ?? '—'}:`,
      '',
      ...callLines,
      '',
      `Buy route under load: 50 users, one connection each, ${WARMUP_S} s warmup then ${DURATION_S} s measured; ${serverCpus !== null ? `the service pinned to CPU ${serverCpus}, the load generator and Redis on the others (as the other scenarios run)` : 'unpinned'}, PostgreSQL wherever the scheduler puts it, all on one machine.`,
      '',
      markdownTable(T_HEADER, throughputRows(throughput), [0]),
      '',
      `${ratio}. Load average (1 / 5 / 15 min) at the end: ${loadavg}.`,
      '',
    ].join('\n')
    mkdirSync(resultsDir, { recursive: true })
    writeFileSync(path.join(resultsDir, 'capacity.md'), md)
    writeFileSync(path.join(resultsDir, 'capacity.json'), `${JSON.stringify({ date, requests: REQUESTS, paceMs: PACE_MS, settleMs: SETTLE_MS, durationS: DURATION_S, warmupS: WARMUP_S, counts: sorted, throughput }, null, 2)}\n`)
    log('capacity: wrote bench/results/capacity.md and capacity.json')
    return ok && stores.length === 2
  },
}

/** No load-table rows: everything is in `standalone`. */
const scenarios: Scenario[] = []
export default scenarios
