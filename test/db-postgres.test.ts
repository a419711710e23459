/**
 * PostgreSQL as the shared store, each test on a private database of the machine's server
 * (dropped afterwards): migrations that several instances start at once apply once; the
 * health report; a server that freezes (a TCP proxy holding every byte) or refuses
 * connections: cached reads answer STALE, writes a 503 with Retry-After and nothing
 * written, readiness 503 only meanwhile; two instances with separate working directories
 * sharing users, sessions and portfolios; three instances buying concurrently; one
 * Idempotency-Key raced over two instances that share no lock.
 */
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import type { FastifyInstance } from 'fastify'
import { build, waitFor, type TapTest } from './helper.js'
import { login, register, registerAndLogin, bearer } from './auth-helpers.js'
import { getPortfolio, portfolioEnv, postTrade, sharesOf } from './portfolio-helpers.js'
import { skipUnlessRedis, startRedis, type RedisProcess } from './helpers/redis-server.js'
import { startProxy, type TcpProxy } from './helpers/tcp-proxy.js'
import { createTestDatabase, queryDatabase, skipUnlessPostgres, skipUnlessPostgresBinaries, startPostgresServer, urlVia, type TestDatabase } from './helpers/postgres.js'
import { openDatabase, migrations, type Migration } from '../src/db/index.js'

const pgOpts = skipUnlessPostgres()
const bothOpts = pgOpts.skip !== undefined ? pgOpts : skipUnlessRedis()

/** A working directory of its own (its ./data), as a second machine has. */
function workDir (t: TapTest): string {
  const dir = mkdtempSync(join(tmpdir(), 'aic-instance-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  return dir
}

async function privateRedis (t: TapTest): Promise<RedisProcess> {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  return redis
}

/** An app on PostgreSQL (and Redis when given), with its own SQLite path that must stay unused. */
async function instance (t: TapTest, databaseUrl: string, redisUrl: string | undefined, extra: Record<string, string> = {}): Promise<{ app: FastifyInstance, dir: string }> {
  const dir = workDir(t)
  const { app } = await build(t, portfolioEnv(redisUrl, join(dir, 'data', 'ai-capital.db'), { DATABASE_URL: databaseUrl, ...extra }))
  return { app, dir }
}

t.test('migrations started by several instances at once apply once, under the advisory lock', pgOpts, async (t) => {
  const db = await createTestDatabase(t)
  const stores = await Promise.all(Array.from({ length: 4 }, () => openDatabase({ url: db.url })))
  t.teardown(() => Promise.all(stores.map((s) => s.close())))
  const all = migrations.map((m) => m.version)
  const applied = stores.map((s) => s.migrations.applied)
  t.equal(applied.filter((a) => a.length > 0).length, 1, `one migrator applied them (${JSON.stringify(applied)})`)
  t.same(applied.flat().sort((a, b) => a - b), all, 'each migration exactly once')
  t.ok(stores.every((s) => s.migrations.current === all.at(-1)), 'every instance sees the schema current')
  const rows = await queryDatabase<{ version: number }>(db.url, 'SELECT version FROM schema_migrations ORDER BY version')
  t.same(rows.map((r) => r.version), all)
})

t.test('a failing migration rolls back the whole run on PostgreSQL and fails the open with its name', pgOpts, async (t) => {
  const db = await createTestDatabase(t)
  const last = migrations.at(-1)?.version ?? 0
  const broken: Migration[] = [
    ...migrations,
    { version: last + 1, name: 'good-one', up: 'CREATE TABLE good (id INTEGER PRIMARY KEY)' },
    { version: last + 2, name: 'bad-one', up: 'CREATE TABLE half (id INTEGER PRIMARY KEY); THIS IS NOT SQL' },
  ]
  await t.rejects(openDatabase({ url: db.url, migrations: broken }), new RegExp(`migration ${last + 2} \\(bad-one\\) failed`))
  const tables = await queryDatabase<{ tablename: string }>(db.url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
  t.same(tables, [], 'nothing of the run was kept (not even schema_migrations)')
  const store = await openDatabase({ url: db.url })
  t.teardown(() => store.close())
  t.same(store.migrations.applied, migrations.map((m) => m.version), 'a fixed build migrates from scratch')
})

t.test('health reports PostgreSQL; an unreachable DATABASE_URL fails the boot naming it, without the password', pgOpts, async (t) => {
  const db = await createTestDatabase(t)
  const { app } = await instance(t, db.url, undefined)
  t.equal(app.db.kind, 'postgres')
  const health = (await app.inject('/api/health')).json()
  t.match(health, { status: 'OK', database: { status: 'connected', kind: 'postgres', responseTime: Number } })
  t.equal((await app.inject('/api/health/ready')).statusCode, 200)

  const closed = await startProxy({ port: db.port })
  closed.refuse(true)
  t.teardown(() => closed.close())
  const failed = await build(t, portfolioEnv(undefined, ':memory:', { DATABASE_URL: `postgres://postgres:hunter2-secret@127.0.0.1:${closed.port}/${db.name}`, DATABASE_CONNECT_TIMEOUT_MS: '500' }))
    .then(() => null, (err: unknown) => err as Error)
  t.match(failed?.message, /^DATABASE_URL: cannot open the database at postgres:\/\/postgres:\*\*\*@127\.0\.0\.1:/, 'the boot fails naming the variable')
  t.notMatch(failed?.message, /hunter2/, 'the password is not in the message')
})

/** One instance on PostgreSQL through a proxy that can freeze or refuse; a user with a cached portfolio. */
async function behindProxy (t: TapTest): Promise<{ app: FastifyInstance, proxy: TcpProxy, db: TestDatabase, token: string, userId: string }> {
  const db = await createTestDatabase(t)
  const proxy = await startProxy({ port: db.port })
  t.teardown(() => proxy.close())
  const { app } = await instance(t, urlVia(db, proxy.port), undefined, {
    DATABASE_CONNECT_TIMEOUT_MS: '2000',
    DATABASE_STATEMENT_TIMEOUT_MS: '2000',
  })
  const user = await registerAndLogin(app, 'frozen@example.com')
  t.equal((await postTrade(app, user.token, { ticker: 'AAPL', side: 'buy', shares: 3, price: 10 })).statusCode, 201)
  await getPortfolio(app, user.token)
  t.equal((await getPortfolio(app, user.token)).cache, 'HIT', 'the portfolio is cached')
  return { app, proxy, db, token: user.token, userId: user.userId }
}

async function outageChecks (t: TapTest, app: FastifyInstance, token: string): Promise<void> {
  const started = Date.now()
  const read = await getPortfolio(app, token)
  t.equal(read.status, 200, 'the cached portfolio still answers')
  t.equal(read.cache, 'STALE', 'marked STALE')
  t.equal(sharesOf(read.view, 'AAPL'), 3)

  const write = await postTrade(app, token, { ticker: 'AAPL', side: 'buy', shares: 1, price: 10 }, 'during-outage')
  t.equal(write.statusCode, 503, 'a write is a 503')
  t.ok(Number(write.headers['retry-after']) >= 1, `with Retry-After (${String(write.headers['retry-after'])})`)
  t.match(write.json(), { message: /database is not answering; nothing was changed/ })

  const ready = await app.inject('/api/health/ready')
  t.equal(ready.statusCode, 503)
  t.same(ready.json(), { status: 'DATABASE_UNAVAILABLE' })
  t.match((await app.inject('/api/health')).json(), { status: 'DEGRADED', database: { status: 'unreachable', kind: 'postgres', responseTime: null } })
  t.equal((await app.inject('/api/health/live')).statusCode, 200, 'liveness is not about the database')
  // Bounded by the connect/statement timeouts (2 s + 1 s per step), not by the outage: a
  // generous ceiling, far below "hangs until the server returns".
  t.ok(Date.now() - started < 30_000, `the four requests took ${Date.now() - started} ms`)
}

async function afterRecovery (t: TapTest, app: FastifyInstance, db: TestDatabase, token: string, userId: string): Promise<void> {
  await waitFor(async () => (await app.inject('/api/health/ready')).statusCode === 200, 30_000, 200)
  t.pass('ready again once the database answers')
  const rows = await queryDatabase<{ version: number }>(db.url, 'SELECT version FROM portfolios WHERE user_id = $1', [userId])
  t.same(rows, [{ version: 1 }], 'the refused write left nothing: not half-written')
  const keys = await queryDatabase(db.url, 'SELECT key FROM idempotency_keys')
  t.same(keys, [], 'and no idempotency record')
  const retry = await postTrade(app, token, { ticker: 'AAPL', side: 'buy', shares: 1, price: 10 }, 'during-outage')
  t.equal(retry.statusCode, 201, 'the retry applies')
  t.equal(sharesOf((await getPortfolio(app, token)).view, 'AAPL'), 4)
}

t.test('PostgreSQL frozen (every byte held): STALE reads, 503 writes with Retry-After, ready 503; all well after', pgOpts, async (t) => {
  const { app, proxy, db, token, userId } = await behindProxy(t)
  proxy.blackhole()
  await outageChecks(t, app, token)
  proxy.reset() // the held connections die (the client gave up on them); new ones flow again
  proxy.flush()
  await afterRecovery(t, app, db, token, userId)
})

t.test('PostgreSQL refusing connections: the same, and quickly', pgOpts, async (t) => {
  const { app, proxy, db, token, userId } = await behindProxy(t)
  proxy.refuse(true)
  proxy.reset()
  await outageChecks(t, app, token)
  proxy.refuse(false)
  await afterRecovery(t, app, db, token, userId)
})

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

t.test('a private PostgreSQL server frozen with SIGSTOP: requests end within the timeouts; thawed, it serves again', skipUnlessPostgresBinaries(), async (t) => {
  const server = await startPostgresServer(t)
  const { app } = await instance(t, server.url, undefined, { DATABASE_CONNECT_TIMEOUT_MS: '2000', DATABASE_STATEMENT_TIMEOUT_MS: '2000' })
  const user = await registerAndLogin(app, 'sigstop@example.com')
  t.equal((await postTrade(app, user.token, { ticker: 'IBM', side: 'buy', shares: 1, price: 10 })).statusCode, 201)
  await getPortfolio(app, user.token)

  server.signalAll('SIGSTOP')
  t.teardown(() => server.signalAll('SIGCONT'))
  const read = await getPortfolio(app, user.token)
  t.equal(read.cache, 'STALE', 'the cached portfolio answers STALE')
  const write = await postTrade(app, user.token, { ticker: 'IBM', side: 'buy', shares: 1, price: 10 })
  t.equal(write.statusCode, 503, 'a write is a 503, not a hang')
  t.equal((await app.inject('/api/health/ready')).statusCode, 503)

  server.signalAll('SIGCONT')
  await waitFor(async () => (await app.inject('/api/health/ready')).statusCode === 200, 30_000, 200)
  const after = await postTrade(app, user.token, { ticker: 'IBM', side: 'buy', shares: 1, price: 10 })
  t.equal(after.statusCode, 201, 'writes again once thawed')
  t.equal(sharesOf((await getPortfolio(app, user.token)).view, 'IBM'), 2, 'the frozen write left nothing behind')
})
