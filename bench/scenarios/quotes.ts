/**
 * GET /api/stocks/:ticker through the two-tier cache (simulated provider, so the figures are
 * the cache's and not an upstream's). Targets from the issue, as ratios to the bare route:
 * an L1 hit ≥ 0.9×; with L1 off, a hit served from Redis ≥ 0.7×; Redis down, an L1 hit
 * ≥ 0.9× with p99 ≤ 2×. The churn scenario asks for far more tickers than L1 may hold, to
 * show the RSS stays flat while L1 evicts. The first row is a reference on the bare server:
 * its route with the five headers every limited quote carries.
 *
 * The route is cached by its `config.cache` option (the hook answers L1 hits). Until the
 * comparison is recorded, the route as it was before that option (its handler answered L1
 * hits itself, serialising each quote once through a WeakMap) runs beside it as
 * `GET /bench/old-quote/:ticker`, and the decorated route's row prints its ratio to it
 * (target ≥ 0.95×). Like bench/scenarios/locks.ts this file doubles as a preload for the
 * service (AIC_BENCH_OLD_QUOTE=1): it adds that route right after the app registers its own
 * stock routes, so the same hooks (rate limit, shedding) run on both.
 */
import { execFileSync } from 'node:child_process'
import diagnostics from 'node:diagnostics_channel'
import { existsSync } from 'node:fs'
import type { FastifyInstance, FastifyPluginAsync, FastifyReply } from 'fastify'
import type { BenchContext, Measurement, RequestSpec, Scenario } from '../lib.js'
import { ageOf } from '../../src/engines/cache/entry.js'
// Type only: the harness loads the monitor when it runs the cold-key comparison; this file is
// also the service's compiled preload, where test/ does not exist.
import type { Monitor } from '../../test/helpers/monitor.js'
import { QuoteSchema, TICKER_PATTERN } from '../../src/quotes/schemas.js'

const OLD_ROUTE = '/bench/old-quote'

if (process.env.AIC_BENCH_OLD_QUOTE === '1') {
  diagnostics.subscribe('fastify.initialization', (message) => {
    const { fastify } = message as { fastify: FastifyInstance }
    type Register = (plugin: FastifyPluginAsync, ...rest: unknown[]) => unknown
    const register = fastify.register.bind(fastify) as Register
    // After routes/stocks.ts, whose default export is the function named `stocks`.
    ;(fastify as unknown as { register: Register }).register = (plugin, ...rest) => {
      const queued = register(plugin, ...rest)
      if (plugin.name === 'stocks') {
        register(oldQuoteRoute)
        if (process.env.AIC_BENCH_BENTO === '1') register(bentoQuoteRoute)
      }
      return queued
    }
  })
}

/** The hot-quote route as it was: the L1 fast path in the handler, serialisation kept per quote object. */
async function oldQuoteRoute (fastify: FastifyInstance): Promise<void> {
  const serialized = new WeakMap<object, string>()
  const send = (reply: FastifyReply, quote: object, cache: string, age: number): void => {
    let json = serialized.get(quote)
    if (json === undefined) {
      json = reply.serialize(quote) as string
      serialized.set(quote, json)
    }
    void reply.header('x-cache', cache).header('age', String(age)).type('application/json; charset=utf-8').send(json)
  }
  fastify.get(`${OLD_ROUTE}/:ticker`, {
    schema: {
      params: { type: 'object', properties: { ticker: { type: 'string', pattern: TICKER_PATTERN } }, required: ['ticker'], additionalProperties: false },
      response: { 200: QuoteSchema },
    },
  }, function quote (request, reply) {
    const symbol = (request.params as { ticker: string }).ticker.toUpperCase()
    const entry = fastify.cache.peek(`stock:${symbol}`, 'quotes')
    if (entry !== undefined) {
      send(reply, entry.value as object, 'HIT', ageOf(entry, Date.now()))
      return
    }
    return fastify.quotes.get(symbol).then((r) => { send(reply, r.quote, r.cache, r.age) })
  })
}

/**
 * bentocache 1.6 (memory L1 + Redis L2 + its Redis bus), from bench/peers (it wants ioredis 5,
 * the service runs 6): from the compiled preload in dist/bench/scenarios, or from the
 * harness in bench/scenarios.
 */
function peersRoot (): URL {
  const here = new URL('.', import.meta.url)
  return here.pathname.includes('/dist/bench/') ? new URL('../../../bench/peers/', here) : new URL('../peers/', here)
}

interface BentoLike {
  getOrSet (options: { key: string, ttl: string, grace?: string | false, factory: () => Promise<unknown> }): Promise<unknown>
  disconnect (): Promise<void>
}

async function createBento (redisUrl: string): Promise<BentoLike> {
  const base = new URL('node_modules/bentocache/build/', peersRoot())
  const { BentoCache, bentostore } = await import(new URL('index.js', base).href) as { BentoCache: new (options: object) => BentoLike, bentostore: () => { useL1Layer (d: unknown): { useL2Layer (d: unknown): { useBus (d: unknown): unknown } } } }
  const { memoryDriver } = await import(new URL('src/drivers/memory.js', base).href) as { memoryDriver: (o: object) => unknown }
  const { redisDriver, redisBusDriver } = await import(new URL('src/drivers/redis.js', base).href) as { redisDriver: (o: object) => unknown, redisBusDriver: (o: object) => unknown }
  const url = new URL(redisUrl)
  const connection = { host: url.hostname, port: Number(url.port || 6379) }
  return new BentoCache({
    default: 'quotes',
    stores: {
      // Its default L1 (entries serialised), with our L1's bounds. (`serialize: false` fails in
      // 1.6.1 when concurrent callers of a cold key find the L2 copy: "reading 'deserialize'".)
      quotes: bentostore().useL1Layer(memoryDriver({ maxItems: 10_000, maxSize: '32mb' })).useL2Layer(redisDriver({ connection })).useBus(redisBusDriver({ connection })),
    },
  })
}

/** The harness installs bench/peers on first use (its node_modules are git-ignored). */
function ensurePeers (): void {
  const root = peersRoot()
  if (existsSync(new URL('node_modules/bentocache/package.json', root))) return
  execFileSync('npm', ['install', '--no-audit', '--no-fund', '--loglevel=error'], { cwd: root.pathname, stdio: 'inherit' })
}

if (process.env.AIC_BENCH_OLD_QUOTE !== '1') ensurePeers()

const BENTO_ROUTE = '/bench/bento-quote'

/** The hot-quote route cached by bentocache instead of config.cache (same schema, same one-serialisation-per-object). */
async function bentoQuoteRoute (fastify: FastifyInstance): Promise<void> {
  const redisUrl = process.env.REDIS_URL
  if (redisUrl === undefined) throw new Error('the bentocache route needs REDIS_URL')
  const bento = await createBento(redisUrl)
  fastify.addHook('onClose', async () => { await bento.disconnect() })
  const serialized = new WeakMap<object, string>()
  fastify.get(`${BENTO_ROUTE}/:ticker`, {
    schema: {
      params: { type: 'object', properties: { ticker: { type: 'string', pattern: TICKER_PATTERN } }, required: ['ticker'], additionalProperties: false },
      response: { 200: QuoteSchema },
    },
  }, async function quote (request, reply) {
    const symbol = (request.params as { ticker: string }).ticker.toUpperCase()
    const value = await bento.getOrSet({ key: `bento:stock:${symbol}`, ttl: '20s', grace: '5m', factory: () => fastify.quotes.fetch(symbol) }) as object
    let json = serialized.get(value)
    if (json === undefined) {
      json = reply.serialize(value) as string
      serialized.set(value, json)
    }
    return reply.type('application/json; charset=utf-8').send(json)
  })
}

/** This file as the harness's buildForBench compiled it (dist/bench/scenarios/quotes.js). */
const COMPILED_SELF = new URL('../../dist/bench/scenarios/quotes.js', import.meta.url).href
const OLD_ROUTE_ENV = { NODE_OPTIONS: `--import ${COMPILED_SELF}`, AIC_BENCH_OLD_QUOTE: '1' }

/** The old route's figure, kept for the decorated route's row in the same run. */
let oldRoute: Measurement | undefined

function sleep (ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms))
}

interface Health { status: string, redis: { status: string, mode: string } }

/** The limiter counts every request; the bench must measure the cache, not 429s. */
const BASE_ENV = { RATE_LIMIT_MAX: '1000000000', QUOTE_PROVIDER: 'simulated' }

async function expectRedis (ctx: BenchContext, redisStatus: string): Promise<void> {
  const deadline = Date.now() + 5000
  let last: Health | undefined
  while (Date.now() < deadline) {
    const res = await fetch(`${ctx.baseUrl}/api/health`, { signal: AbortSignal.timeout(2000) })
    last = await res.json() as Health
    if (last.redis.status === redisStatus) return
    await sleep(100)
  }
  throw new Error(`health never reported redis ${redisStatus}; last answer: ${JSON.stringify(last)}`)
}

/** Warms the ticker and fails the scenario unless the next answer is the cache layer meant. */
async function expectHit (ctx: BenchContext, ticker: string, base = '/api/stocks'): Promise<void> {
  const first = await fetch(`${ctx.baseUrl}${base}/${ticker}`)
  await first.arrayBuffer()
  if (first.status !== 200) throw new Error(`GET ${base}/${ticker} answered ${first.status}`)
  const second = await fetch(`${ctx.baseUrl}${base}/${ticker}`)
  await second.arrayBuffer()
  if (second.headers.get('x-cache') !== 'HIT') throw new Error(`expected X-Cache: HIT, got ${String(second.headers.get('x-cache'))}`)
}

/** Our hot row's figure, for the bentocache row. */
let ours: Measurement | undefined

/** Commands Redis executed since the last CONFIG RESETSTAT (INFO commandstats), without INFO, CONFIG and MONITOR themselves. */
async function commandsSinceReset (ctx: BenchContext): Promise<{ total: number, by: string }> {
  const info = await ctx.redis?.command('INFO', 'commandstats') ?? ''
  const counts: Array<[string, number]> = []
  for (const m of info.matchAll(/cmdstat_([a-z|]+):calls=(\d+)/g)) {
    const name = (m[1] as string).split('|')[0]
    if (name !== 'info' && name !== 'config' && name !== 'monitor') counts.push([m[1] as string, Number(m[2])])
  }
  return { total: counts.reduce((n, [, c]) => n + c, 0), by: counts.map(([n, c]) => `${n} ${c}`).join(', ') }
}

/** Commands the clients sent (MONITOR lines not run by a script), without INFO and CONFIG. */
function clientCommands (monitor: Monitor): number {
  return monitor.lines.filter((line) => line.source !== 'lua' && !/^(info|config)$/i.test(line.args[0] ?? '')).length
}

/**
 * Cold keys across two instances: each of KEYS keys asked by 2 cache instances × 5 callers
 * at once (their own connections to the scenario's Redis), the loader taking 50 ms. Redis
 * commands per key from INFO commandstats (a script counts once, plus each command it runs),
 * the commands the clients sent (MONITOR, a script once), and loader calls per key.
 * `npx tsx bench/cold-keys.ts` runs this comparison alone.
 */
export async function coldKeyComparison (ctx: BenchContext): Promise<string> {
  const redisUrl = ctx.redisUrl
  if (redisUrl === undefined || ctx.redis === undefined) return 'no Redis'
  const KEYS = 20
  const quote = { ticker: 'COLD', price: 1, change: 0, changePercent: 0, open: 1, high: 1, low: 1, previousClose: 1, timestamp: new Date(0).toISOString(), source: 'simulated' }
  const { createRedisState } = await import('../../src/engines/redis/state.js')
  const { ResilientStore } = await import('../../src/engines/store/resilient-store.js')
  const { MemoryStore } = await import('../../src/engines/store/memory-store.js')
  const { createTwoTierCache } = await import('../../src/engines/cache/two-tier-cache.js')
  const quiet = { info () {}, warn () {}, error () {}, debug () {} }
  let loads = 0
  const load = async (): Promise<object> => {
    loads++
    await sleep(50)
    return quote
  }
  const run = async (ask: (instance: number, key: string) => Promise<unknown>, prefix: string): Promise<void> => {
    for (let i = 0; i < KEYS; i++) {
      await Promise.all([0, 1].flatMap((instance) => [1, 2, 3, 4, 5].map(() => ask(instance, `${prefix}${i}`))))
    }
  }

  const engines = await Promise.all([0, 1].map(async () => {
    const state = createRedisState({ url: redisUrl, log: quiet })
    await state.start()
    const cache = createTwoTierCache({ store: new ResilientStore(state, new MemoryStore()), state, log: quiet, createSubscriber: () => state.client?.duplicate({ autoResubscribe: false }) ?? null })
    return { state, cache }
  }))
  const deadline = Date.now() + 5000
  while (!engines.every((e) => e.cache.stats().invalidation.subscribed) && Date.now() < deadline) await sleep(20)
  const port = Number(new URL(redisUrl).port)
  const { startMonitor } = await import('../../test/helpers/monitor.js')
  let monitor = await startMonitor(port)
  await ctx.redis.command('CONFIG', 'RESETSTAT')
  await run((i, key) => engines[i]!.cache.wrap({ key, ttl: 20, grace: 300, load }), 'cold:ours:')
  const oursCommands = await commandsSinceReset(ctx)
  await sleep(200)
  monitor.stop()
  const oursSent = clientCommands(monitor)
  const oursLoads = loads
  for (const e of engines) {
    await e.cache.close()
    await e.state.close()
  }

  loads = 0
  const bentos = [await createBento(redisUrl), await createBento(redisUrl)]
  let bentoCommands: { total: number, by: string }
  try {
    await sleep(500)
    monitor = await startMonitor(port)
    await ctx.redis.command('CONFIG', 'RESETSTAT')
    await run((i, key) => bentos[i]!.getOrSet({ key, ttl: '20s', grace: '5m', factory: load }), 'cold:bento:')
    bentoCommands = await commandsSinceReset(ctx)
    await sleep(200)
    monitor.stop()
  } finally {
    for (const b of bentos) await b.disconnect()
  }
  const bentoLoads = loads
  const bentoSent = clientCommands(monitor)

  const per = (n: number): string => (n / KEYS).toFixed(1)
  return [
    `cold keys (${KEYS} keys × 2 instances × 5 callers, INFO commandstats): ours ${per(oursCommands.total)} commands (${per(oursSent)} sent by the clients) and ${per(oursLoads)} loader calls per key [${oursCommands.by}]`,
    `bentocache ${per(bentoCommands.total)} commands (${per(bentoSent)} sent by the clients) and ${per(bentoLoads)} loader calls per key [${bentoCommands.by}]`,
  ].join('; ')
}

const one = (ticker: string) => (): RequestSpec => ({ method: 'GET', path: `/api/stocks/${ticker}` })

const CHURN_TICKERS = Array.from({ length: 3000 }, (_v, i) => `T${i.toString(36).toUpperCase()}`)

const scenarios: Scenario[] = [
  {
    // Reference: what the five headers a limited quote must carry (x-ratelimit-limit,
    // -remaining, -reset; x-cache, age) cost plain Fastify, so the hot quote's ratio can be
    // read against it. Same payload as the bare route.
    name: 'bare Fastify GET / with the 5 headers a limited quote carries (reference)',
    server: 'bare',
    setup: async (ctx) => {
      const res = await fetch(`${ctx.baseUrl}/with-headers`)
      await res.arrayBuffer()
      for (const h of ['x-ratelimit-limit', 'x-ratelimit-remaining', 'x-ratelimit-reset', 'x-cache', 'age']) {
        if (!res.headers.has(h)) throw new Error(`the bare server's /with-headers answered without ${h}`)
      }
    },
    requests: () => ({ method: 'GET', path: '/with-headers' }),
  },
  {
    // Reference for the next row: the route before config.cache, in the same service build.
    name: 'GET /bench/old-quote/AAPL hot, L1 hit (redis up; the route before config.cache)',
    redis: 'up',
    env: { ...BASE_ENV, ...OLD_ROUTE_ENV },
    setup: async (ctx) => {
      await expectRedis(ctx, 'connected')
      await expectHit(ctx, 'AAPL', OLD_ROUTE)
    },
    after: async (_ctx, m) => {
      oldRoute = m
      return `kept for the next row: ${m.reqPerSec.toFixed(0)} req/s`
    },
    requests: () => ({ method: 'GET', path: `${OLD_ROUTE}/AAPL` }),
  },
  {
    name: 'GET /api/stocks/AAPL hot, L1 hit (redis up)',
    redis: 'up',
    env: { ...BASE_ENV, ...OLD_ROUTE_ENV },
    target: { minRatio: 0.9, note: 'an in-process LRU hit, answered by the config.cache hook; Redis is not read' },
    setup: async (ctx) => {
      await expectRedis(ctx, 'connected')
      await expectHit(ctx, 'AAPL')
      const stored = await ctx.redis?.command('EXISTS', 'stock:AAPL')
      if (stored !== '1') throw new Error('stock:AAPL is not in Redis: not measuring the two-tier path')
    },
    after: async (_ctx, m) => {
      ours = m
      if (oldRoute === undefined) return 'the old route was not measured in this run'
      const ratio = m.reqPerSec / oldRoute.reqPerSec
      const line = `ratio to the route before config.cache: ${ratio.toFixed(3)} (${m.reqPerSec.toFixed(0)} / ${oldRoute.reqPerSec.toFixed(0)} req/s; target ≥ 0.95)`
      if (ratio < 0.95) throw new Error(line)
      return line
    },
    requests: one('AAPL'),
  },
  {
    // bentocache (memory + Redis + its bus) caching the same route, in the same run.
    name: 'GET /bench/bento-quote/AAPL hot, bentocache L1 hit (redis up)',
    redis: 'up',
    env: { ...BASE_ENV, ...OLD_ROUTE_ENV, AIC_BENCH_BENTO: '1' },
    setup: async (ctx) => {
      await expectRedis(ctx, 'connected')
      for (let i = 0; i < 2; i++) {
        const res = await fetch(`${ctx.baseUrl}${BENTO_ROUTE}/AAPL`)
        await res.arrayBuffer()
        if (res.status !== 200) throw new Error(`GET ${BENTO_ROUTE}/AAPL answered ${res.status}`)
      }
    },
    after: async (ctx, m) => {
      const l1 = ours === undefined
        ? 'our hot row was not measured in this run'
        : `L1 hit: ours/bentocache ${(ours.reqPerSec / m.reqPerSec).toFixed(3)} (${ours.reqPerSec.toFixed(0)} / ${m.reqPerSec.toFixed(0)} req/s; target ≥ 1)`
      return `${l1}; ${await coldKeyComparison(ctx)}`
    },
    requests: () => ({ method: 'GET', path: `${BENTO_ROUTE}/AAPL` }),
  },
  {
    name: 'GET /api/stocks/AAPL, L1 disabled: served from Redis',
    redis: 'up',
    env: { ...BASE_ENV, CACHE_L1_ENABLED: 'false' },
    target: { minRatio: 0.7, note: 'one GET per request (concurrent reads of one key share one GET)' },
    setup: async (ctx) => {
      await expectRedis(ctx, 'connected')
      await expectHit(ctx, 'AAPL')
    },
    requests: one('AAPL'),
  },
  {
    // Reference: 50 connections over 50 tickers, so concurrent requests rarely share a GET.
    name: 'GET /api/stocks/<50 tickers>, L1 disabled (reference)',
    redis: 'up',
    env: { ...BASE_ENV, CACHE_L1_ENABLED: 'false' },
    setup: async (ctx) => {
      await expectRedis(ctx, 'connected')
      for (const t of CHURN_TICKERS.slice(0, 50)) await expectHit(ctx, t)
    },
    requests: () => CHURN_TICKERS.slice(0, 50).map((t) => ({ method: 'GET' as const, path: `/api/stocks/${t}` })),
  },
  {
    name: 'GET /api/stocks/AAPL hot, redis down',
    redis: 'down',
    env: { ...BASE_ENV },
    target: { minRatio: 0.9, maxP99Ratio: 2, note: 'L1 + provider only, never a wait on Redis' },
    setup: async (ctx) => {
      await expectRedis(ctx, 'disconnected')
      await expectHit(ctx, 'AAPL')
    },
    requests: one('AAPL'),
  },
  {
    name: 'GET /api/stocks/<3000 tickers>, L1 max 500 entries (churn, redis up)',
    redis: 'up',
    env: { ...BASE_ENV, CACHE_L1_MAX_ENTRIES: '500', QUOTE_TTL_SECONDS: '2' },
    setup: async (ctx) => { await expectRedis(ctx, 'connected') },
    requests: () => CHURN_TICKERS.map((t) => ({ method: 'GET' as const, path: `/api/stocks/${t}` })),
  },
]

export default scenarios
