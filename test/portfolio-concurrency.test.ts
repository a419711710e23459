/**
 * Portfolio writes across instances: two apps on one private redis-server and one SQLite
 * file (WAL), as two containers share them. No lost update under 50 concurrent buys; a
 * write is visible at once on the other instance; concurrent retries with one
 * Idempotency-Key have one effect; Redis killed in the middle of writes. (A holder frozen
 * past its lock's TTL: portfolio-lock-expiry.test.ts.)
 */
import t from 'tap'
import type { FastifyInstance } from 'fastify'
import { build, waitFor, type TapTest } from './helper.js'
import { login, registerAndLogin } from './auth-helpers.js'
import { skipUnlessRedis, startRedis, type RedisProcess } from './helpers/redis-server.js'
import { startProxy } from './helpers/tcp-proxy.js'
import { getPortfolio, portfolioEnv, postTrade, sharesOf, tempDatabase } from './portfolio-helpers.js'

const redisOpts = skipUnlessRedis()

async function privateRedis (t: TapTest): Promise<RedisProcess> {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  return redis
}

/** Two instances on one Redis and one database file. */
async function twoInstances (t: TapTest, extra: Record<string, string> = {}): Promise<{ a: FastifyInstance, b: FastifyInstance, redis: RedisProcess, db: string }> {
  const redis = await privateRedis(t)
  const db = tempDatabase(t)
  const { app: a } = await build(t, portfolioEnv(redis.url, db, extra))
  const { app: b } = await build(t, portfolioEnv(redis.url, db, extra))
  return { a, b, redis, db }
}

t.test('50 concurrent buys of 1 share for one user over two instances: final shares = number of 201s (≥ 45)', redisOpts, async (t) => {
  const { a, b } = await twoInstances(t)
  const user = await registerAndLogin(a, 'many@example.com')
  const results = await Promise.all(Array.from({ length: 50 }, (_v, i) =>
    postTrade(i % 2 === 0 ? a : b, user.token, { ticker: 'AAPL', side: 'buy', shares: 1, price: 100 + i })))
  const created = results.filter((r) => r.statusCode === 201).length
  const others = results.filter((r) => r.statusCode !== 201)
  t.ok(others.every((r) => r.statusCode === 409 && r.headers['retry-after'] !== undefined), `the rest are retryable 409s (${others.map((r) => r.statusCode).join(',') || 'none'})`)
  t.ok(created >= 45, `${created} of 50 succeeded`)

  for (const app of [a, b]) {
    const { view } = await getPortfolio(app, user.token)
    t.equal(sharesOf(view, 'AAPL'), created, 'shares = number of 201s: no lost update')
    t.equal(view.version, created, 'one version per committed write')
  }
  const log = await a.portfolio.transactions(user.userId, 100)
  t.equal(log.length, created)
  t.same(log.map((x) => x.version).sort((x, y) => x - y), Array.from({ length: created }, (_v, i) => i + 1), 'versions 1..n, none skipped or doubled')
  const versions = results.filter((r) => r.statusCode === 201).map((r) => r.json<{ version: number }>().version)
  t.equal(new Set(versions).size, created, 'every 201 answered a different version')
  t.equal(a.portfolio.stats().conflicts + b.portfolio.stats().conflicts, 0, 'the locks serialised the writers (no commit needed refusing)')
})

t.test('a buy through instance A is visible at once through instance B', redisOpts, async (t) => {
  const { a, b, redis } = await twoInstances(t)
  const user = await registerAndLogin(a, 'visible@example.com')
  await postTrade(a, user.token, { ticker: 'AMZN', side: 'buy', shares: 1, price: 10 })
  t.equal((await getPortfolio(b, user.token)).cache, 'MISS')
  t.equal((await getPortfolio(b, user.token)).cache, 'HIT', 'B holds a cached copy (L1)')

  for (let i = 2; i <= 6; i++) {
    const write = await postTrade(a, user.token, { ticker: 'AMZN', side: 'buy', shares: 1, price: 10 })
    t.equal(write.statusCode, 201)
    // Immediately, without waiting for the pub/sub message to reach B.
    const seen = await getPortfolio(b, user.token)
    t.equal(sharesOf(seen.view, 'AMZN'), i, `B sees ${i} shares right after A's write`)
    t.equal(seen.view.version, i)
  }
  t.equal(await redis.command('EXISTS', `portfolio:${user.userId}`), '1')
  t.equal((await getPortfolio(a, user.token)).view.version, 6)
})

t.test("B never serves its cached copy after A's write, even when the invalidation cannot reach B (B's Redis link held)", redisOpts, async (t) => {
  const redis = await privateRedis(t)
  const db = tempDatabase(t)
  const link = await startProxy({ port: redis.port })
  t.teardown(() => link.close())
  const { app: a } = await build(t, portfolioEnv(redis.url, db))
  const { app: b } = await build(t, portfolioEnv(link.url, db, { REDIS_COMMAND_TIMEOUT_MS: '200' }))
  const user = await registerAndLogin(a, 'partition@example.com')
  await postTrade(a, user.token, { ticker: 'NFLX', side: 'buy', shares: 1, price: 10 })
  await getPortfolio(b, user.token)
  t.equal((await getPortfolio(b, user.token)).cache, 'HIT', 'B holds version 1 in its L1')

  link.blackhole() // B's connections (commands and the invalidation channel) stop delivering
  t.equal((await postTrade(a, user.token, { ticker: 'NFLX', side: 'buy', shares: 1, price: 10 })).statusCode, 201)
  const seen = await getPortfolio(b, user.token)
  t.equal(seen.status, 200)
  t.equal(sharesOf(seen.view, 'NFLX'), 2, "B answers A's write, not its cached copy")
  t.equal(seen.view.version, 2)
  t.ok(b.portfolio.stats().staleCopies >= 1, 'B found its copy outdated by the version in the primary store')
  link.flush()
})

t.test('one Idempotency-Key sent 10 times at once over two instances: one transaction, one response', redisOpts, async (t) => {
  const { a, b } = await twoInstances(t)
  const user = await registerAndLogin(a, 'retry@example.com')
  const trade = { ticker: 'META', side: 'buy' as const, shares: 2, price: 50 }
  const results = await Promise.all(Array.from({ length: 10 }, (_v, i) => postTrade(i % 2 === 0 ? a : b, user.token, trade, 'same-key')))
  const ok = results.filter((r) => r.statusCode === 201)
  t.ok(ok.length >= 9, `${ok.length} of 10 answered 201`)
  t.equal(new Set(ok.map((r) => r.body)).size, 1, 'every 201 carries the same body')
  t.equal(ok.filter((r) => r.headers['idempotent-replayed'] === undefined).length, 1, 'exactly one was not a replay')
  t.equal((await a.portfolio.transactions(user.userId)).length, 1, 'one transaction')
  t.equal(sharesOf((await getPortfolio(b, user.token)).view, 'META'), 2)
})

t.test('Redis killed during writes on one instance: writes keep succeeding, the data is intact after Redis returns', redisOpts, async (t) => {
  const redis = await privateRedis(t)
  const { app } = await build(t, portfolioEnv(redis.url, ':memory:'))
  const statuses: number[] = []
  /** Three clients buying in a loop until `until` holds. */
  const writeUntil = async (token: string, until: () => boolean): Promise<void> => {
    await Promise.all(Array.from({ length: 3 }, async () => {
      while (!until()) {
        const res = await postTrade(app, token, { ticker: 'KILL', side: 'buy', shares: 1, price: 10 })
        statuses.push(res.statusCode)
        if (res.statusCode !== 201) t.comment(`non-201: ${res.statusCode} ${res.body}`)
      }
    }))
  }

  const user = await registerAndLogin(app, 'outage@example.com')
  let atKill = -1
  let killed: Promise<void> | null = null
  await writeUntil(user.token, () => {
    if (atKill < 0 && statuses.length >= 20) {
      atKill = statuses.length
      killed = redis.kill('SIGKILL') // while the other clients' writes are in flight
    }
    return atKill >= 0 && statuses.length >= atKill + 30
  })
  await killed
  t.equal(app.redisState.available, false, 'the instance ran on its fallbacks')
  t.ok(app.locks.stats().fallbackAcquisitions > 0, 'writes took the in-process lock')
  const duringOutage = statuses.length - atKill

  await redis.restart() // back, and empty
  await waitFor(() => app.redisState.available, 10_000)
  // Sessions lived in the Redis that restarted empty: a new login (the sessions concern's rule).
  const again = await login(app, 'outage@example.com')
  const atReturn = statuses.length
  await writeUntil(again.token, () => statuses.length >= atReturn + 20)

  const created = statuses.filter((s) => s === 201).length
  t.equal(created, statuses.length, `every write succeeded (${atKill} before the kill, ${duringOutage} during the outage, ${statuses.length - atReturn} after)`)
  const { view, cache } = await getPortfolio(app, again.token)
  t.equal(sharesOf(view, 'KILL'), created, 'shares = successful writes')
  t.equal(view.version, created)
  t.equal((await app.portfolio.transactions(user.userId, 1000)).length, created, 'one log entry per write')
  t.equal(cache, 'MISS')
  t.equal(await redis.command('EXISTS', `portfolio:${user.userId}`), '1', 'cached in the returned Redis again')
  t.equal((await getPortfolio(app, again.token)).cache, 'HIT')
})
