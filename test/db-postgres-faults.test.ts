/**
 * PostgreSQL down or frozen, on a private database behind a TCP proxy that holds every
 * byte (frozen) or refuses connections, and on a private server frozen with SIGSTOP:
 * cached portfolio reads answer STALE, writes a 503 with Retry-After and nothing written,
 * readiness 503 only meanwhile, every request bounded by the timeouts; all well after.
 */
import t from 'tap'
import type { FastifyInstance } from 'fastify'
import { waitFor, type TapTest } from './helper.js'
import { registerAndLogin } from './auth-helpers.js'
import { getPortfolio, postTrade, sharesOf } from './portfolio-helpers.js'
import { startProxy, type TcpProxy } from './helpers/tcp-proxy.js'
import { createTestDatabase, queryDatabase, skipUnlessPostgres, skipUnlessPostgresBinaries, startPostgresServer, urlVia, type TestDatabase } from './helpers/postgres.js'
import { instance } from './db-postgres-helpers.js'

const pgOpts = skipUnlessPostgres()

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

