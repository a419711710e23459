/**
 * Several instances on one PostgreSQL database, each with a working directory of its own:
 * two share users, sessions and portfolios (with one Redis); three buy concurrently and
 * the shares equal the acknowledged buys; one Idempotency-Key raced over two instances that
 * share no lock applies once.
 */
import t from 'tap'
import type { FastifyInstance } from 'fastify'
import { login, register, registerAndLogin, bearer } from './auth-helpers.js'
import { getPortfolio, postTrade, sharesOf } from './portfolio-helpers.js'
import { skipUnlessRedis } from './helpers/redis-server.js'
import { createTestDatabase, queryDatabase, skipUnlessPostgres } from './helpers/postgres.js'
import { instance, privateRedis } from './db-postgres-helpers.js'

const pgOpts = skipUnlessPostgres()
const bothOpts = pgOpts.skip !== undefined ? pgOpts : skipUnlessRedis()

t.test('two instances with separate working directories share users, sessions and portfolios through PostgreSQL and Redis', bothOpts, async (t) => {
  const db = await createTestDatabase(t)
  const redis = await privateRedis(t)
  const { app: a, dir: dirA } = await instance(t, db.url, redis.url)
  const { app: b, dir: dirB } = await instance(t, db.url, redis.url)
  t.not(dirA, dirB)

  const registered = await register(a, 'shared@example.com')
  const onB = await login(b, 'shared@example.com')
  t.equal(onB.userId, registered.id, 'a user registered on A logs in on B')
  const again = await b.inject({ method: 'POST', url: '/api/auth/register', payload: { email: 'shared@example.com', password: 'password-123' } })
  t.equal(again.statusCode, 409, 'the same email cannot register again on B')

  const onA = await login(a, 'shared@example.com')
  const write = await postTrade(b, onA.token, { ticker: 'MSFT', side: 'buy', shares: 2, price: 300 })
  t.equal(write.statusCode, 201, "A's token works on B for a portfolio write (no FOREIGN KEY failure)")
  t.equal(sharesOf((await getPortfolio(a, onA.token)).view, 'MSFT'), 2, 'and A sees it')
  const me = await b.inject({ method: 'GET', url: '/api/auth/me', headers: bearer(onA.token) })
  t.equal(me.statusCode, 200)

  const logout = await a.inject({ method: 'POST', url: '/api/auth/logout', headers: bearer(onA.token) })
  t.ok(logout.statusCode < 300, `logout on A (${logout.statusCode})`)
  t.equal((await b.inject({ method: 'GET', url: '/api/auth/me', headers: bearer(onA.token) })).statusCode, 401, 'the logout holds on B')
})

t.test('three instances on one PostgreSQL and one Redis: concurrent buys leave shares = acknowledged buys', bothOpts, async (t) => {
  const db = await createTestDatabase(t)
  const redis = await privateRedis(t)
  const apps = [] as FastifyInstance[]
  // A long lock wait so that most buys get their turn; the invariant holds whatever the count.
  for (let i = 0; i < 3; i++) apps.push((await instance(t, db.url, redis.url, { LOCK_WAIT_MS: '15000' })).app)
  const user = await registerAndLogin(apps[0] as FastifyInstance, 'three@example.com')
  const results = await Promise.all(Array.from({ length: 45 }, (_v, i) =>
    postTrade(apps[i % 3] as FastifyInstance, user.token, { ticker: 'NVDA', side: 'buy', shares: 1, price: 100 + i })))
  const created = results.filter((r) => r.statusCode === 201).length
  const others = results.filter((r) => r.statusCode !== 201)
  t.ok(others.every((r) => r.statusCode === 409 && r.headers['retry-after'] !== undefined), `the rest are retryable 409s (${others.map((r) => r.statusCode).join(',') || 'none'})`)
  t.ok(created >= 1, `${created} of 45 acknowledged`)
  for (const app of apps) {
    const { view } = await getPortfolio(app, user.token)
    t.equal(sharesOf(view, 'NVDA'), created, 'shares = acknowledged buys on every instance')
    t.equal(view.version, created)
  }
  const rows = await queryDatabase<{ n: string }>(db.url, 'SELECT count(*) AS n FROM portfolio_transactions')
  t.equal(Number(rows[0]?.n), created, 'one log entry per acknowledged buy')
  const versions = results.filter((r) => r.statusCode === 201).map((r) => r.json<{ version: number }>().version)
  t.equal(new Set(versions).size, created, 'every 201 answered a different version')
})

t.test('one Idempotency-Key sent 12 times at once to two instances that share no lock: applied once', pgOpts, async (t) => {
  // No Redis: each instance's locks are its own, so only the store (version check and the
  // key's unique constraint) stands between the two instances' writes.
  const db = await createTestDatabase(t)
  const { app: a } = await instance(t, db.url, undefined)
  const { app: b } = await instance(t, db.url, undefined)
  const user = await registerAndLogin(a, 'raced-key@example.com')
  const token = (await login(b, 'raced-key@example.com')).token
  const trade = { ticker: 'META', side: 'buy' as const, shares: 2, price: 50 }
  const results = await Promise.all(Array.from({ length: 12 }, (_v, i) => postTrade(i % 2 === 0 ? a : b, i % 2 === 0 ? user.token : token, trade, 'same-key')))
  const ok = results.filter((r) => r.statusCode === 201)
  const others = results.filter((r) => r.statusCode !== 201)
  t.ok(ok.length >= 1, `${ok.length} answered 201`)
  t.ok(others.every((r) => r.statusCode === 409), `the rest are retryable 409s (${others.map((r) => r.statusCode).join(',') || 'none'})`)
  t.equal(new Set(ok.map((r) => r.json<{ version: number }>().version)).size, 1, 'every 201 carries the one response')
  t.equal(ok.filter((r) => r.headers['idempotent-replayed'] === undefined).length, 1, 'exactly one was not a replay')
  const rows = await queryDatabase<{ n: string }>(db.url, 'SELECT count(*) AS n FROM portfolio_transactions')
  t.equal(Number(rows[0]?.n), 1, 'one transaction in the store')
  for (const r of others) {
    const retried = await postTrade(b, token, trade, 'same-key')
    t.equal(retried.headers['idempotent-replayed'], 'true', `a retry of a ${r.statusCode} replays`)
  }
  t.equal(sharesOf((await getPortfolio(b, token)).view, 'META'), 2)
})

