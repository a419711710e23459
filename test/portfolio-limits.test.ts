/**
 * Bounds on what one user can make the service store: positions per portfolio
 * (PORTFOLIO_MAX_POSITIONS) and idempotency records past their TTL, deleted on a timer on
 * every instance (IDEMPOTENCY_PURGE_INTERVAL_MS) whether or not the scheduler or Redis runs.
 */
import t from 'tap'
import type { FastifyInstance } from 'fastify'
import { build, waitFor } from './helper.js'
import { registerAndLogin } from './auth-helpers.js'
import { portfolioEnv, postTrade, sharesOf, tempDatabase, type Trade } from './portfolio-helpers.js'
import type { PortfolioView } from '../src/portfolio/valuation.js'

const buy = (ticker: string, shares = 1): Trade => ({ ticker, side: 'buy', shares, price: 10 })

t.test('PORTFOLIO_MAX_POSITIONS: a buy of a new ticker past it is a 422; existing positions still trade', async (t) => {
  const { app } = await build(t, portfolioEnv(undefined, ':memory:', { PORTFOLIO_MAX_POSITIONS: '3' }))
  const user = await registerAndLogin(app, 'collector@example.com')
  for (const ticker of ['AAA', 'BBB', 'CCC']) t.equal((await postTrade(app, user.token, buy(ticker))).statusCode, 201, ticker)
  const fourth = await postTrade(app, user.token, buy('DDD'))
  t.equal(fourth.statusCode, 422)
  t.same(fourth.json(), { statusCode: 422, error: 'Unprocessable Entity', message: 'A portfolio holds at most 3 positions: sell or remove one before buying DDD' })
  const more = await postTrade(app, user.token, buy('AAA', 2))
  t.equal(more.statusCode, 201, 'a position already held grows')
  t.equal(sharesOf(more.json<PortfolioView>(), 'AAA'), 3)
  t.equal((await postTrade(app, user.token, { ticker: 'BBB', side: 'sell', shares: 1, price: 10 })).statusCode, 201, 'selling all of one frees a slot')
  t.equal((await postTrade(app, user.token, buy('DDD'))).statusCode, 201)
  t.equal((await app.portfolio.state(user.userId)).positions.length, 3)
})

t.test('expired idempotency records are deleted on a timer, with the scheduler off and Redis unreachable', async (t) => {
  const db = tempDatabase(t)
  const { app } = await build(t, portfolioEnv('redis://127.0.0.1:1', db, { IDEMPOTENCY_PURGE_INTERVAL_MS: '1000', REDIS_CONNECT_TIMEOUT_MS: '200' }))
  t.equal(app.config.SCHEDULER_ENABLED, false)
  t.equal(app.redisState.available, false)
  const user = await registerAndLogin(app, 'retrier@example.com')
  for (const key of ['k-1', 'k-2']) t.equal((await postTrade(app, user.token, buy('AAA'), key)).statusCode, 201)
  const count = async (): Promise<number> => Number((await app.db.kysely.selectFrom('idempotency_keys').select((eb) => eb.fn.countAll().as('n')).executeTakeFirstOrThrow()).n)
  t.equal(await count(), 2)
  // As if a day had passed for one of them.
  await expire(app, 'k-1')
  await waitFor(async () => await count() === 1, 3000)
  t.pass('the expired record is gone')
  t.equal((await postTrade(app, user.token, buy('AAA'), 'k-2')).headers['idempotent-replayed'], 'true', 'the live one still replays')
})

t.test('IDEMPOTENCY_MAX_KEYS_PER_USER: a new key past it is a 429 with Retry-After, nothing written; replays and unkeyed writes go on', async (t) => {
  const { app } = await build(t, portfolioEnv(undefined, ':memory:', { IDEMPOTENCY_MAX_KEYS_PER_USER: '2', IDEMPOTENCY_TTL_SECONDS: '3600' }))
  const user = await registerAndLogin(app, 'many-keys@example.com')
  const other = await registerAndLogin(app, 'other-keys@example.com')
  for (const key of ['k-1', 'k-2']) t.equal((await postTrade(app, user.token, buy('AAA'), key)).statusCode, 201)
  const third = await postTrade(app, user.token, buy('AAA'), 'k-3')
  t.equal(third.statusCode, 429)
  t.match(third.json(), { statusCode: 429, error: 'Too Many Requests', message: /^At most 2 Idempotency-Keys are kept per user at a time; nothing was written, retry in 60 minutes or without a key$/ })
  const wait = Number(third.headers['retry-after'])
  t.ok(wait > 3500 && wait <= 3600, `Retry-After: when the first key expires (${wait} s)`)
  t.equal((await app.portfolio.state(user.userId)).version, 2, 'nothing was written')
  const retried = await postTrade(app, user.token, buy('AAA'), 'k-1')
  t.equal(retried.headers['idempotent-replayed'], 'true', 'a retry of a kept key still replays')
  t.equal((await postTrade(app, user.token, buy('AAA'))).statusCode, 201, 'a write without a key is not limited by it')
  t.equal((await postTrade(app, other.token, buy('AAA'), 'k-3')).statusCode, 201, 'the bound is per user')
  await expire(app, 'k-1')
  t.equal((await postTrade(app, user.token, buy('AAA'), 'k-3')).statusCode, 201, 'once one has expired, a new key is taken')
})

async function expire (app: FastifyInstance, key: string): Promise<void> {
  await app.db.kysely.updateTable('idempotency_keys').set({ expires_at: '2000-01-01T00:00:00.000Z' }).where('key', '=', key).execute()
}
