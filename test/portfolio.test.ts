/**
 * The portfolio routes on one instance against a private redis-server: authentication and
 * isolation between users, the cache (X-Cache, the key's TTL, invalidation on write),
 * validation, sells and removals, Idempotency-Key, and the two jobs (prewarm, snapshot →
 * history) as the scheduler runs them.
 */
import t from 'tap'
import { build, waitFor, type TapTest } from './helper.js'
import { adminLogin, bearer, registerAndLogin } from './auth-helpers.js'
import { skipUnlessRedis, startRedis, type RedisProcess } from './helpers/redis-server.js'
import { startFakeFinnhub } from './quotes-fake-finnhub.js'
import { getPortfolio, portfolioEnv, postTrade, sharesOf, tempDatabase } from './portfolio-helpers.js'

const redisOpts = skipUnlessRedis()

async function privateRedis (t: TapTest): Promise<RedisProcess> {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  return redis
}

t.test('a token is required, and a user sees and changes only their own portfolio', redisOpts, async (t) => {
  const redis = await privateRedis(t)
  const { app } = await build(t, portfolioEnv(redis.url, ':memory:'))
  for (const [method, url] of [['GET', '/api/portfolio'], ['POST', '/api/portfolio/transactions'], ['DELETE', '/api/portfolio/positions/AAPL'], ['GET', '/api/portfolio/history']] as const) {
    const res = await app.inject({ method, url, ...(method === 'POST' ? { payload: { ticker: 'AAPL', side: 'buy', shares: 1, price: 1 } } : {}) })
    t.equal(res.statusCode, 401, `${method} ${url} without a token`)
  }

  const alice = await registerAndLogin(app, 'alice@example.com')
  const bob = await registerAndLogin(app, 'bob@example.com')
  t.equal((await postTrade(app, alice.token, { ticker: 'AAPL', side: 'buy', shares: 5, price: 100 })).statusCode, 201)

  const a = await getPortfolio(app, alice.token)
  const b = await getPortfolio(app, bob.token)
  t.equal(a.view.userId, alice.userId)
  t.equal(sharesOf(a.view, 'AAPL'), 5)
  t.equal(b.view.userId, bob.userId)
  t.same(b.view.positions, [], "bob does not see alice's position")
  t.equal(b.view.version, 0)
  // A body cannot name another user: unknown properties are dropped, the token decides.
  const sneaky = await app.inject({
    method: 'POST',
    url: '/api/portfolio/transactions',
    headers: bearer(bob.token),
    payload: { ticker: 'AAPL', side: 'sell', shares: 5, price: 100, userId: alice.userId },
  })
  t.equal(sneaky.statusCode, 422, "bob cannot sell alice's shares")
  t.equal((await app.inject({ method: 'DELETE', url: '/api/portfolio/positions/AAPL', headers: bearer(bob.token) })).statusCode, 404)
  t.equal(sharesOf((await getPortfolio(app, alice.token)).view, 'AAPL'), 5, "alice's position is untouched")
  t.equal(await redis.command('EXISTS', `portfolio:${alice.userId}`), '1')
  t.equal(await redis.command('EXISTS', `portfolio:${bob.userId}`), '1', 'one cache key per user')
})

t.test('GET: X-Cache MISS then HIT, portfolio:<id> with PTTL in (0, 300000]; a write invalidates it', redisOpts, async (t) => {
  const redis = await privateRedis(t)
  const { app } = await build(t, portfolioEnv(redis.url, ':memory:'))
  const user = await registerAndLogin(app, 'cache@example.com')
  t.equal((await postTrade(app, user.token, { ticker: 'MSFT', side: 'buy', shares: 2, price: 300 })).statusCode, 201)
  t.equal(await redis.command('EXISTS', `portfolio:${user.userId}`), '0', 'the write left nothing cached')

  const first = await getPortfolio(app, user.token)
  t.equal(first.status, 200)
  t.equal(first.cache, 'MISS')
  const pttl = Number(await redis.command('PTTL', `portfolio:${user.userId}`))
  t.ok(pttl > 0 && pttl <= 300_000, `PTTL ${pttl} in (0, 300000]`)
  const second = await getPortfolio(app, user.token)
  t.equal(second.cache, 'HIT')
  t.same(second.view, first.view, 'the cached view')

  // Priced with the cached quote, the same one /api/stocks answers.
  const quote = (await app.inject({ method: 'GET', url: '/api/stocks/MSFT' })).json<{ price: number }>()
  t.match(first.view.positions[0], { ticker: 'MSFT', shares: 2, avgCost: 300, price: quote.price, value: Math.round(2 * quote.price * 100) / 100 })
  t.equal(first.view.totals.cost, 600)

  t.equal((await postTrade(app, user.token, { ticker: 'MSFT', side: 'sell', shares: 1, price: 310 })).statusCode, 201)
  t.equal(await redis.command('EXISTS', `portfolio:${user.userId}`), '0', 'the write dropped the L2 copy')
  const third = await getPortfolio(app, user.token)
  t.equal(third.cache, 'MISS', 'and the L1 copy')
  t.equal(sharesOf(third.view, 'MSFT'), 1)
  t.equal(third.view.version, 2)
})

t.test('writes: validation, selling more than held, removing a position', redisOpts, async (t) => {
  const redis = await privateRedis(t)
  const { app } = await build(t, portfolioEnv(redis.url, ':memory:'))
  const user = await registerAndLogin(app, 'writes@example.com')
  const bad = [
    { ticker: 'AA PL', side: 'buy', shares: 1, price: 1 },
    { ticker: 'ABCDEFGHIJK', side: 'buy', shares: 1, price: 1 },
    { ticker: 'AAPL', side: 'hold', shares: 1, price: 1 },
    { ticker: 'AAPL', side: 'buy', shares: 0, price: 1 },
    { ticker: 'AAPL', side: 'buy', shares: -1, price: 1 },
    { ticker: 'AAPL', side: 'buy', shares: 1e9 + 1, price: 1 },
    { ticker: 'AAPL', side: 'buy', shares: 1.0000001, price: 1 },
    { ticker: 'AAPL', side: 'buy', shares: 1, price: 0 },
    { ticker: 'AAPL', side: 'buy', shares: 0.5, price: 5e-324 }, // two of these averaged to 0, a 500 from SQLite
    { ticker: 'AAPL', side: 'buy', shares: 1, price: 9e-7 },
    { ticker: 'AAPL', side: 'buy', shares: 1, price: 'abc' },
    { ticker: 'AAPL', side: 'buy', shares: 1 },
  ]
  for (const payload of bad) {
    const res = await app.inject({ method: 'POST', url: '/api/portfolio/transactions', headers: bearer(user.token), payload })
    t.equal(res.statusCode, 400, `400 for ${JSON.stringify(payload)}`)
    t.match(res.json(), { statusCode: 400, error: 'Bad Request', message: String })
  }
  const badKey = await postTrade(app, user.token, { ticker: 'AAPL', side: 'buy', shares: 1, price: 1 }, 'x'.repeat(256))
  t.equal(badKey.statusCode, 400, 'an Idempotency-Key longer than 255 characters')
  t.equal((await getPortfolio(app, user.token)).view.version, 0, 'nothing was written')

  const maxBuy = await postTrade(app, user.token, { ticker: 'aapl', side: 'buy', shares: 1e9, price: 0.5 })
  t.equal(maxBuy.statusCode, 201, 'shares = 1e9 is allowed; the ticker is upper-cased')
  t.equal(sharesOf(maxBuy.json(), 'AAPL'), 1e9)

  t.equal((await postTrade(app, user.token, { ticker: 'AAPL', side: 'sell', shares: 999_999_995, price: 1 })).statusCode, 201)
  const oversell = await postTrade(app, user.token, { ticker: 'AAPL', side: 'sell', shares: 5.000001, price: 1 })
  t.equal(oversell.statusCode, 422)
  t.match(oversell.json(), { statusCode: 422, error: 'Unprocessable Entity', message: /Cannot sell/ })
  t.equal((await postTrade(app, user.token, { ticker: 'NVDA', side: 'sell', shares: 1, price: 1 })).statusCode, 422, 'selling what is not held')

  const fractional = await postTrade(app, user.token, { ticker: 'NVDA', side: 'buy', shares: 0.123456, price: 10 })
  t.equal(fractional.statusCode, 201)
  const sellAll = await postTrade(app, user.token, { ticker: 'AAPL', side: 'sell', shares: 5, price: 1 })
  t.equal(sellAll.statusCode, 201)
  t.same(sellAll.json<{ positions: Array<{ ticker: string }> }>().positions.map((p) => p.ticker), ['NVDA'], 'selling everything closes the position')

  const removed = await app.inject({ method: 'DELETE', url: '/api/portfolio/positions/nvda', headers: bearer(user.token) })
  t.equal(removed.statusCode, 200)
  t.match(removed.json(), { positions: [], version: 5 })
  const again = await app.inject({ method: 'DELETE', url: '/api/portfolio/positions/NVDA', headers: bearer(user.token) })
  t.equal(again.statusCode, 404)
  t.equal((await app.inject({ method: 'DELETE', url: '/api/portfolio/positions/no%20pe', headers: bearer(user.token) })).statusCode, 400)

  const log = await app.portfolio.transactions(user.userId)
  t.same(log.map((x) => [x.version, x.kind, x.ticker, x.shares]), [
    [5, 'remove', 'NVDA', 0.123456], [4, 'sell', 'AAPL', 5], [3, 'buy', 'NVDA', 0.123456], [2, 'sell', 'AAPL', 999_999_995], [1, 'buy', 'AAPL', 1e9],
  ], 'the transaction log')
})

t.test('Idempotency-Key: a retry gets the first response without a second effect; another body is a 422', redisOpts, async (t) => {
  const redis = await privateRedis(t)
  const db = tempDatabase(t)
  const { app } = await build(t, portfolioEnv(redis.url, db))
  const user = await registerAndLogin(app, 'idem@example.com')
  const trade = { ticker: 'TSLA', side: 'buy' as const, shares: 3, price: 200 }

  const first = await postTrade(app, user.token, trade, 'order-1')
  t.equal(first.statusCode, 201)
  t.notOk(first.headers['idempotent-replayed'])
  const retry = await postTrade(app, user.token, { ...trade, ticker: 'tsla' }, 'order-1')
  t.equal(retry.statusCode, 201)
  t.equal(retry.headers['idempotent-replayed'], 'true')
  t.equal(retry.body, first.body, 'byte-identical response')
  t.equal((await app.portfolio.transactions(user.userId)).length, 1, 'one transaction')
  t.equal(sharesOf((await getPortfolio(app, user.token)).view, 'TSLA'), 3)

  const other = await postTrade(app, user.token, { ...trade, shares: 4 }, 'order-1')
  t.equal(other.statusCode, 422)
  t.match(other.json(), { message: /different request/ })
  t.equal((await app.portfolio.transactions(user.userId)).length, 1, 'still one transaction')

  // Keys are per user: the same key from someone else is their own first request.
  const eve = await registerAndLogin(app, 'eve@example.com')
  const eves = await postTrade(app, eve.token, trade, 'order-1')
  t.equal(eves.statusCode, 201)
  t.notOk(eves.headers['idempotent-replayed'])
  t.equal(eves.json<{ userId: string }>().userId, eve.userId, "eve does not get alice's stored response")

  // Durable: kept in the primary store for IDEMPOTENCY_TTL_SECONDS, not in Redis.
  const row = await app.db.kysely.selectFrom('idempotency_keys').select(['created_at', 'expires_at'])
    .where('user_id', '=', user.userId).where('key', '=', 'order-1').executeTakeFirstOrThrow()
  t.equal(Date.parse(row.expires_at) - Date.parse(row.created_at), 86_400_000, 'kept 24 h')
  await redis.restart() // comes back empty
  const { app: fresh } = await build(t, portfolioEnv(redis.url, db))
  await waitFor(() => fresh.redisState.available, 5000)
  const afterRestart = await postTrade(fresh, user.token, trade, 'order-1')
  t.equal(afterRestart.statusCode, 401, 'sessions were in the Redis that restarted empty')
  const again = await (await import('./auth-helpers.js')).login(fresh, 'idem@example.com')
  const replay = await postTrade(fresh, again.token, trade, 'order-1')
  t.equal(replay.statusCode, 201)
  t.equal(replay.body, first.body, 'a new instance after a Redis restart still answers the first response')
  t.equal((await fresh.portfolio.transactions(user.userId)).length, 1)
})

t.test('a portfolio with a ticker that cannot be priced is answered, marked, and not cached', redisOpts, async (t) => {
  const redis = await privateRedis(t)
  const fake = await startFakeFinnhub()
  t.teardown(() => fake.close())
  const { app } = await build(t, portfolioEnv(redis.url, ':memory:', {
    QUOTE_PROVIDER: 'finnhub', FINNHUB_API_KEY: 'test-key', FINNHUB_BASE_URL: fake.url, FINNHUB_RETRIES: '0', FINNHUB_BREAKER_THRESHOLD: '1000',
  }))
  const user = await registerAndLogin(app, 'unpriced@example.com')
  fake.modes.set('DOWN', 'fail')
  t.equal((await postTrade(app, user.token, { ticker: 'UP', side: 'buy', shares: 1, price: 10 })).statusCode, 201)
  const write = await postTrade(app, user.token, { ticker: 'DOWN', side: 'buy', shares: 1, price: 10 })
  t.equal(write.statusCode, 201, 'a missing quote does not block a write')

  const first = await getPortfolio(app, user.token)
  t.same(first.view.unpriced, ['DOWN'])
  t.match(first.view.positions, [{ ticker: 'DOWN', price: null, value: null }, { ticker: 'UP', price: Number }])
  t.same(first.view.totals, { cost: 20, value: null, gain: null, gainPercent: null })
  t.equal((await getPortfolio(app, user.token)).cache, 'MISS', 'not cached while a quote is missing')
  t.equal(await redis.command('EXISTS', `portfolio:${user.userId}`), '0')

  fake.modes.delete('DOWN')
  // The quote's failure is remembered for CACHE_FAILURE_TTL_MS (3 s): priced once it has passed.
  await waitFor(async () => (await getPortfolio(app, user.token)).view.unpriced.length === 0, 15_000, 200)
  const priced = await getPortfolio(app, user.token)
  t.same(priced.view.unpriced, [])
  t.type(priced.view.totals.value, 'number')
  t.equal((await getPortfolio(app, user.token)).cache, 'HIT', 'cached again once complete')
})

t.test('a write does not hold the lock while a quote is fetched from the provider', redisOpts, async (t) => {
  const redis = await privateRedis(t)
  const fake = await startFakeFinnhub()
  t.teardown(() => fake.close())
  const { app } = await build(t, portfolioEnv(redis.url, ':memory:', {
    QUOTE_PROVIDER: 'finnhub', FINNHUB_API_KEY: 'test-key', FINNHUB_BASE_URL: fake.url, FINNHUB_RETRIES: '0', FINNHUB_TIMEOUT_MS: '5000',
  }))
  const user = await registerAndLogin(app, 'slow@example.com')
  t.equal((await postTrade(app, user.token, { ticker: 'FAST', side: 'buy', shares: 1, price: 10 })).statusCode, 201, 'FAST is cached now')
  fake.delayMs = 1500
  const order: string[] = []
  const slow = postTrade(app, user.token, { ticker: 'SLOW', side: 'buy', shares: 1, price: 10 }).then((r) => { order.push('slow'); return r })
  await waitFor(() => fake.callsFor('SLOW') > 0, 5000)
  const fast = await postTrade(app, user.token, { ticker: 'FAST', side: 'buy', shares: 1, price: 10 })
  order.push('fast')
  t.equal(fast.statusCode, 201)
  t.equal((await slow).statusCode, 201)
  t.same(order, ['fast', 'slow'], 'the second write did not wait for the first one\'s provider call')
  const { view } = await getPortfolio(app, user.token)
  t.equal(view.version, 3)
  t.equal(sharesOf(view, 'FAST') + sharesOf(view, 'SLOW'), 3)
})

t.test('jobs: registered with the scheduler; quotes-prewarm loads the held tickers; portfolio-snapshot feeds /history', redisOpts, async (t) => {
  const redis = await privateRedis(t)
  const { app } = await build(t, portfolioEnv(redis.url, ':memory:', { SCHEDULER_ENABLED: 'true', QUOTES_PREWARM_INTERVAL_MS: '1000' }))
  const jobs = Object.fromEntries(app.scheduler.jobs().map((j) => [j.name, j]))
  t.match(jobs['quotes-prewarm'], { schedule: 'every 1000 ms' })
  t.match(jobs['portfolio-snapshot'], { schedule: 'cron 0 22 * * * (UTC)' })
  const admin = await adminLogin(app)
  const listed = (await app.inject({ method: 'GET', url: '/api/debug/jobs', headers: bearer(admin.token) })).json<{ jobs: Array<{ name: string }> }>()
  t.same(listed.jobs.map((j) => j.name).sort(), ['portfolio-snapshot', 'quotes-prewarm'])

  const user = await registerAndLogin(app, 'jobs@example.com')
  const other = await registerAndLogin(app, 'jobs2@example.com')
  await postTrade(app, user.token, { ticker: 'AMD', side: 'buy', shares: 4, price: 50 })
  await postTrade(app, other.token, { ticker: 'INTC', side: 'buy', shares: 10, price: 20 })
  await postTrade(app, other.token, { ticker: 'AMD', side: 'buy', shares: 1, price: 50 })
  // The write priced the portfolio (quotes cached); drop them to see the job load them.
  const prewarmRuns = (): number => app.scheduler.jobs().find((j) => j.name === 'quotes-prewarm')?.runs ?? 0
  const before = prewarmRuns()
  await app.cache.invalidatePrefix('stock:')
  t.equal(await redis.command('EXISTS', 'stock:AMD', 'stock:INTC'), '0')

  // Two more runs: the second one began after the invalidation for sure.
  await waitFor(() => prewarmRuns() >= before + 2, 5000)
  t.equal(await redis.command('EXISTS', 'stock:AMD', 'stock:INTC'), '2', 'the scheduled prewarm loaded every held ticker')
  const run = await app.portfolio.jobs.prewarm(new AbortController().signal)
  t.same(run, { tickers: 2, loaded: 0, warm: 2, failed: 0, aborted: false }, 'a second run finds them warm')

  const stopped = new AbortController()
  stopped.abort()
  t.match(await app.portfolio.jobs.snapshot(stopped.signal), { portfolios: 0, aborted: true }, 'an aborted run stores nothing')
  t.same((await app.inject({ method: 'GET', url: '/api/portfolio/history', headers: bearer(user.token) })).json(), { userId: user.userId, snapshots: [] })

  const snap = await app.portfolio.jobs.snapshot(new AbortController().signal)
  t.match(snap, { portfolios: 2, unpriced: 0, aborted: false })
  const view = (await getPortfolio(app, user.token)).view
  const history = await app.inject({ method: 'GET', url: '/api/portfolio/history?days=7', headers: bearer(user.token) })
  t.equal(history.statusCode, 200)
  const body = history.json<{ userId: string, snapshots: Array<Record<string, unknown>> }>()
  t.equal(body.userId, user.userId)
  t.equal(body.snapshots.length, 1, "one snapshot: today's, for this user only")
  t.match(body.snapshots[0], { date: new Date().toISOString().slice(0, 10), version: 1, positions: 1, cost: 200, value: view.totals.value })
  t.equal((await app.portfolio.jobs.snapshot(new AbortController().signal)).portfolios, 2)
  t.equal(history.json<{ snapshots: unknown[] }>().snapshots.length, 1)
  t.equal((await app.inject({ method: 'GET', url: '/api/portfolio/history', headers: bearer(user.token) })).json<{ snapshots: unknown[] }>().snapshots.length, 1, 'a second run the same day replaces the row')
  t.equal((await app.inject({ method: 'GET', url: '/api/portfolio/history?days=0', headers: bearer(user.token) })).statusCode, 400)
})

t.test('a bad PORTFOLIO_SNAPSHOT_CRON stops the boot with a message naming it', async (t) => {
  await t.rejects(build(t, portfolioEnv(undefined, ':memory:', { PORTFOLIO_SNAPSHOT_CRON: '61 * * * * *' })), /PORTFOLIO_SNAPSHOT_CRON/)
})
