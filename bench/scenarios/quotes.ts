/**
 * GET /api/stocks/:ticker through the two-tier cache (simulated provider, so the figures are
 * the cache's and not an upstream's). Targets from the issue, as ratios to the bare route:
 * an L1 hit ≥ 0.9×; with L1 off, a hit served from Redis ≥ 0.7×; Redis down, an L1 hit
 * ≥ 0.9× with p99 ≤ 2×. The churn scenario asks for far more tickers than L1 may hold, to
 * show the RSS stays flat while L1 evicts. The first row is a reference on the bare server:
 * its route with the five headers every limited quote carries.
 */
import type { BenchContext, RequestSpec, Scenario } from '../lib.js'
import { sleep } from '../lib.js'

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
async function expectHit (ctx: BenchContext, ticker: string): Promise<void> {
  const first = await fetch(`${ctx.baseUrl}/api/stocks/${ticker}`)
  await first.arrayBuffer()
  if (first.status !== 200) throw new Error(`GET /api/stocks/${ticker} answered ${first.status}`)
  const second = await fetch(`${ctx.baseUrl}/api/stocks/${ticker}`)
  await second.arrayBuffer()
  if (second.headers.get('x-cache') !== 'HIT') throw new Error(`expected X-Cache: HIT, got ${String(second.headers.get('x-cache'))}`)
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
    name: 'GET /api/stocks/AAPL hot, L1 hit (redis up)',
    redis: 'up',
    env: { ...BASE_ENV },
    target: { minRatio: 0.9, note: 'an in-process LRU hit; Redis is not read' },
    setup: async (ctx) => {
      await expectRedis(ctx, 'connected')
      await expectHit(ctx, 'AAPL')
      const stored = await ctx.redis?.command('EXISTS', 'stock:AAPL')
      if (stored !== '1') throw new Error('stock:AAPL is not in Redis: not measuring the two-tier path')
    },
    requests: one('AAPL'),
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
