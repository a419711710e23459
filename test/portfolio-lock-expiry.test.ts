/**
 * A lock holder frozen past its lock's TTL (a GC pause or SIGSTOP: here a child process
 * whose event loop is blocked, so nothing extends its lock) right before its commit: the
 * lock expires, another instance takes it and commits, and the frozen holder's commit is
 * refused by the portfolio's version check when it wakes up. And split locks: an instance
 * cut off from Redis writes under its in-process lock while another writes under the Redis
 * lock; the same version check refuses the stale commit.
 */
import { fork } from 'node:child_process'
import { once } from 'node:events'
import { fileURLToPath } from 'node:url'
import t from 'tap'
import { build, waitFor } from './helper.js'
import { registerAndLogin } from './auth-helpers.js'
import { skipUnlessRedis, startRedis } from './helpers/redis-server.js'
import { getPortfolio, portfolioEnv, postTrade, sharesOf, tempDatabase } from './portfolio-helpers.js'

const redisOpts = skipUnlessRedis()

// Margins are seconds, not milliseconds: on a busy machine the other writer's request can take
// a second or two, and it must still land while the child is frozen. The child boots tsx
// and the app, which can take tens of seconds there.
const BOOT_MS = 60_000
const PAUSE_MS = 5000

t.test('a holder frozen past its lock TTL (1 s TTL, 5 s pause) is refused by the version check; the other write stands', redisOpts, async (t) => {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  const db = tempDatabase(t)
  const env = portfolioEnv(redis.url, db, { PORTFOLIO_LOCK_TTL_MS: '1000', LOCK_WAIT_MS: '4000' })
  const { app } = await build(t, env)
  const user = await registerAndLogin(app, 'paused@example.com')
  t.equal((await postTrade(app, user.token, { ticker: 'PAUSE', side: 'buy', shares: 1, price: 100 })).statusCode, 201)

  const child = fork(fileURLToPath(new URL('./portfolio-paused-writer.ts', import.meta.url)), [], {
    execArgv: ['--import', 'tsx'],
    env: { ...process.env, ...env, USER_ID: user.userId, TICKER: 'PAUSE', PAUSE_MS: String(PAUSE_MS) },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  })
  t.teardown(() => { if (child.exitCode === null) child.kill('SIGKILL') })
  const messages: Array<{ type: string, at: number, [k: string]: unknown }> = []
  child.on('message', (m) => { messages.push(m as (typeof messages)[number]) })
  await waitFor(() => messages.some((m) => m.type === 'holding'), BOOT_MS)
  const heldAt = (messages.find((m) => m.type === 'holding')?.at) ?? 0
  t.equal(await redis.command('EXISTS', `lock:portfolio:${user.userId}`), '1', 'the frozen instance holds the lock')

  // This instance waits for the lock, which expires while the holder is frozen.
  const write = await postTrade(app, user.token, { ticker: 'PAUSE', side: 'buy', shares: 2, price: 100 })
  const wroteAt = Date.now()
  t.equal(write.statusCode, 201, 'the other writer got the lock after its TTL and committed')
  t.ok(wroteAt - heldAt < PAUSE_MS, `…while the holder was still frozen (${wroteAt - heldAt} ms after it froze)`)

  await waitFor(() => messages.some((m) => m.type === 'done'), PAUSE_MS + 30_000)
  const done = messages.find((m) => m.type === 'done') as unknown as { outcome: { ok: boolean, statusCode?: number, message?: string }, stats: { conflicts: number, lockLost: number } }
  t.match(done.outcome, { ok: false, statusCode: 409, message: /changed while this request was applied/ }, "the frozen holder's write was refused")
  t.equal(done.stats.conflicts, 1, 'by the version check')
  t.equal(done.stats.lockLost, 0, '(the lost-lock signal could not fire: the process was frozen until the commit)')
  await once(child, 'exit')

  const { view } = await getPortfolio(app, user.token)
  t.equal(sharesOf(view, 'PAUSE'), 3, "1 + 2: the other writer's data stands, the frozen holder's 7 are not there")
  t.equal(view.version, 2)
  const log = await app.portfolio.transactions(user.userId)
  t.same(log.map((x) => x.shares), [2, 1])
})

t.test('split locks: an instance cut off from Redis writes under its in-process lock while another takes the Redis lock; the version check refuses the stale commit', redisOpts, async (t) => {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  const db = tempDatabase(t)
  const { app } = await build(t, portfolioEnv(redis.url, db))
  const user = await registerAndLogin(app, 'split@example.com')
  t.equal((await postTrade(app, user.token, { ticker: 'SPLIT', side: 'buy', shares: 1, price: 100 })).statusCode, 201)

  // The child's Redis is a port nobody listens on: it runs on its fallbacks, with in-process locks.
  // Port 1: privileged, so no redis-server another test file starts meanwhile can take it.
  const unreachable = 'redis://127.0.0.1:1'
  const child = fork(fileURLToPath(new URL('./portfolio-paused-writer.ts', import.meta.url)), [], {
    execArgv: ['--import', 'tsx'],
    env: { ...process.env, ...portfolioEnv(unreachable, db), USER_ID: user.userId, TICKER: 'SPLIT', PAUSE_MS: String(PAUSE_MS) },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  })
  t.teardown(() => { if (child.exitCode === null) child.kill('SIGKILL') })
  const messages: Array<{ type: string, at: number, [k: string]: unknown }> = []
  child.on('message', (m) => { messages.push(m as (typeof messages)[number]) })
  await waitFor(() => messages.some((m) => m.type === 'holding'), BOOT_MS)

  const write = await postTrade(app, user.token, { ticker: 'SPLIT', side: 'buy', shares: 2, price: 100 })
  t.equal(write.statusCode, 201, 'this instance takes the Redis lock and commits meanwhile')

  await waitFor(() => messages.some((m) => m.type === 'done'), PAUSE_MS + 30_000)
  const done = messages.find((m) => m.type === 'done') as unknown as { outcome: { ok: boolean, statusCode?: number, message?: string }, stats: { conflicts: number }, locks: { fallbackAcquisitions: number } }
  t.ok(done.locks.fallbackAcquisitions >= 1, 'the child wrote under an in-process lock')
  t.match(done.outcome, { ok: false, statusCode: 409, message: /changed while this request was applied/ }, "the child's stale write was refused")
  t.equal(done.stats.conflicts, 1, 'by the version check')
  await once(child, 'exit')

  const { view } = await getPortfolio(app, user.token)
  t.equal(sharesOf(view, 'SPLIT'), 3, '1 + 2: no lost update, the stale 7 are not there')
  t.equal(view.version, 2)
})
