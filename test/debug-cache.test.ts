/**
 * GET /api/debug/cache and POST /api/debug/cache/invalidate: admin only; the counters, the L1
 * and the invalidation traffic; an invalidation by key or prefix clears Redis and another
 * instance's L1; names outside the caches (sessions, counters) are refused; while Redis is
 * frozen the invalidation is pending and reaches Redis when it returns; without Redis it is local.
 */
import t from 'tap'
import type { FastifyInstance } from 'fastify'
import { build, waitFor, type TapTest } from './helper.js'
import { skipUnlessRedis, startRedis } from './helpers/redis-server.js'
import { AUTH_ENV, adminLogin, bearer, registerAndLogin } from './auth-helpers.js'

const redisOpts = skipUnlessRedis()
const ENV = { ...AUTH_ENV, LOG_LEVEL: 'warn', RATE_LIMIT_MAX: '100000', ADMIN_RATE_LIMIT_MAX: '100000' }

function invalidate (app: FastifyInstance, token: string, payload: object) {
  return app.inject({ method: 'POST', url: '/api/debug/cache/invalidate', headers: bearer(token), payload })
}

async function xCache (app: FastifyInstance, ticker: string): Promise<string> {
  const res = await app.inject(`/api/stocks/${ticker}`)
  if (res.statusCode !== 200) throw new Error(`quote ${ticker}: ${res.statusCode} ${res.body}`)
  return String(res.headers['x-cache'])
}

async function admin (t: TapTest, env: Record<string, string> = {}): Promise<{ app: FastifyInstance, token: string }> {
  const { app } = await build(t, { ...ENV, ...env })
  return { app, token: (await adminLogin(app)).token }
}

t.test('both endpoints: 401 without a token, 403 for a user', async (t) => {
  const { app, token } = await admin(t)
  const user = await registerAndLogin(app, 'not-admin@example.com')
  for (const [method, url] of [['GET', '/api/debug/cache'], ['POST', '/api/debug/cache/invalidate']] as const) {
    const payload = method === 'POST' ? { key: 'stock:AAPL' } : undefined
    t.equal((await app.inject({ method, url, payload })).statusCode, 401, `${method} ${url} without a token`)
    t.equal((await app.inject({ method, url, payload, headers: bearer(user.token) })).statusCode, 403, `${method} ${url} for a user`)
    t.equal((await app.inject({ method, url, payload, headers: bearer(token) })).statusCode, 200, `${method} ${url} for an admin`)
  }
})

t.test('only cache keys can be named, by key or by prefix, one at a time', async (t) => {
  const { app, token } = await admin(t)
  for (const [payload, message] of [
    [{ prefix: 'session:' }, /must start with stock: or portfolio:/],
    [{ key: 'rate_limit:ip:127.0.0.1' }, /must start with stock: or portfolio:/],
    [{ prefix: '' }, /^prefix: must be 1 to 256 characters$/],
    [{ key: 'stock:AAPL', prefix: 'stock:' }, /exactly one of key and prefix/],
    [{}, /exactly one of key and prefix/],
  ] as const) {
    const res = await invalidate(app, token, payload)
    t.equal(res.statusCode, 400, JSON.stringify(payload))
    t.match(res.json(), { statusCode: 400, error: 'Bad Request', message })
  }
})

t.test('with Redis: a key invalidated on A leaves Redis and B\'s L1; counters and traffic are shown', redisOpts, async (t) => {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  const { app: a, token } = await admin(t, { REDIS_URL: redis.url })
  const { app: b } = await build(t, { ...ENV, REDIS_URL: redis.url })
  await waitFor(() => a.cache.stats().invalidation.subscribed && b.cache.stats().invalidation.subscribed, 5000)

  t.equal(await xCache(a, 'AAPL'), 'MISS')
  t.equal(await xCache(b, 'AAPL'), 'HIT', 'B read it from Redis')
  t.equal(await xCache(b, 'AAPL'), 'HIT', 'and holds it in L1')
  t.equal(await redis.command('EXISTS', 'stock:AAPL'), '1')
  await xCache(a, 'MSFT')
  const session = `session:${(await registerAndLogin(a, 'keeps-session@example.com')).sid}`

  const heard = b.cache.stats().invalidation.received
  const res = await invalidate(a, token, { key: 'stock:AAPL' })
  t.equal(res.statusCode, 200)
  t.match(res.json(), { key: 'stock:AAPL', propagation: 'redis' })
  t.equal(await redis.command('EXISTS', 'stock:AAPL'), '0', 'gone from Redis')
  await waitFor(() => b.cache.stats().invalidation.received > heard, 5000)
  t.equal(await xCache(b, 'AAPL'), 'MISS', 'gone from B\'s L1 too')
  t.equal(await xCache(a, 'MSFT'), 'HIT', 'another key is untouched')

  const prefix = await invalidate(a, token, { prefix: 'stock:' })
  t.match(prefix.json(), { prefix: 'stock:', propagation: 'redis' })
  t.equal(await redis.command('EXISTS', 'stock:AAPL', 'stock:MSFT'), '0', 'every quote gone from Redis')
  t.equal(await redis.command('EXISTS', session), '1', 'a session is not a cache key')

  const view = await a.inject({ url: '/api/debug/cache', headers: bearer(token) })
  t.equal(view.statusCode, 200)
  const body = view.json<{ caches: Record<string, Record<string, number>>, l1: Record<string, unknown>, invalidation: Record<string, unknown> }>()
  t.match(body.caches.quotes, { misses: 2, loads: 2 })
  t.ok((body.caches.quotes?.hitsL1 ?? 0) >= 1, 'the L1 hit on MSFT is counted')
  t.match(body.l1, { enabled: true, maxEntries: a.config.CACHE_L1_MAX_ENTRIES, maxBytes: a.config.CACHE_L1_MAX_BYTES })
  // Two landings (AAPL and MSFT, each announced with its value) and two invalidations.
  t.match(body.invalidation, { published: 4, subscribed: true, pending: 0 })
  t.match(body, { timestamp: /^\d{4}-\d\d-\d\dT/ })
})

t.test('Redis frozen: the invalidation is pending, this L1 is cleared at once, and Redis gets it on return', redisOpts, async (t) => {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  const { app, token } = await admin(t, { REDIS_URL: redis.url, REDIS_COMMAND_TIMEOUT_MS: '300' })
  t.equal(await xCache(app, 'NVDA'), 'MISS')
  t.equal(await redis.command('EXISTS', 'stock:NVDA'), '1')

  redis.pause()
  t.teardown(() => redis.resume())
  const res = await invalidate(app, token, { key: 'stock:NVDA' })
  t.equal(res.statusCode, 200)
  t.match(res.json(), { key: 'stock:NVDA', propagation: 'pending' })
  t.equal(app.cache.stats().invalidation.pending, 1)

  redis.resume()
  await waitFor(() => app.redisState.available, 5000)
  await waitFor(async () => (await redis.command('EXISTS', 'stock:NVDA')) === '0', 5000)
  t.pass('replayed into Redis when it came back')
  t.equal(app.cache.stats().invalidation.pending, 0)
})

t.test('without Redis the invalidation is local: the next request loads again', async (t) => {
  const { app, token } = await admin(t)
  t.equal(await xCache(app, 'IBM'), 'MISS')
  t.equal(await xCache(app, 'IBM'), 'HIT')
  t.match((await invalidate(app, token, { key: 'stock:IBM' })).json(), { key: 'stock:IBM', propagation: 'local' })
  t.equal(await xCache(app, 'IBM'), 'MISS')
  t.equal(app.cache.stats().invalidation.pending, 0, 'nothing to replay: there is no other copy')
})
