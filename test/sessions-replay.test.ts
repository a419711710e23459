/**
 * Sessions created while Redis is away, or while it refuses writes, are written into Redis
 * when it returns, so that the other instance accepts their tokens: two app instances on one
 * private redis-server and one database file. Logged-out ones are not brought back.
 */
import t from 'tap'
import type { FastifyInstance } from 'fastify'
import { build, waitFor, type TapTest } from './helper.js'
import { getFreePort, skipUnlessRedis, startRedis, type RedisProcess } from './helpers/redis-server.js'
import { bearer, login, me, register } from './auth-helpers.js'
import { portfolioEnv, tempDatabase } from './portfolio-helpers.js'

const redisOpts = skipUnlessRedis()
/** Generous: the machine may be very busy; nothing here is a timing claim. */
const DEADLINE_MS = 20_000

async function twoInstances (t: TapTest, extra: Record<string, string> = {}): Promise<{ a: FastifyInstance, b: FastifyInstance, redis: RedisProcess, logsA: Awaited<ReturnType<typeof build>>['logs'] }> {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  const db = tempDatabase(t)
  const env = portfolioEnv(redis.url, db, { SESSION_FALLBACK: 'deny', LOG_LEVEL: 'info', ...extra })
  const { app: a, logs: logsA } = await build(t, env)
  const { app: b } = await build(t, env)
  return { a, b, redis, logsA }
}

const status = async (app: FastifyInstance, token: string): Promise<number> => (await me(app, token)).statusCode

t.test('a login on A while Redis is down: B accepts its token once Redis is back; logged-out ones stay out', redisOpts, async (t) => {
  const { a, b, redis } = await twoInstances(t)
  await register(a, 'down@example.com')
  await register(a, 'gone@example.com')
  const kept = await login(a, 'gone@example.com')

  await redis.kill()
  const s = await login(a, 'down@example.com')
  t.equal(a.redisState.available, false, 'A is on its fallback')
  t.equal(await status(a, s.token), 200, 'A accepts it from memory')
  const out = await login(a, 'down@example.com')
  t.equal((await a.inject({ method: 'POST', url: '/api/auth/logout', headers: bearer(out.token) })).statusCode, 204, 'one logged out during the outage')
  const everywhere = await login(a, 'gone@example.com')
  t.equal((await a.inject({ method: 'DELETE', url: '/api/auth/sessions', headers: bearer(everywhere.token) })).statusCode, 200, 'and a user logged out everywhere')
  t.equal(a.sessions.pendingReplays, 3, 'three sessions wait for Redis (the logged-out ones are skipped when it returns)')

  await redis.restart()
  await waitFor(async () => (await status(b, s.token)) === 200, DEADLINE_MS)
  t.pass('B accepts the token of the session made on A during the outage')
  // B may answer before A has read Redis's reply: A's side is waited for as well.
  await waitFor(() => a.sessions.stats().replayed === 1 && a.sessions.pendingReplays === 0, DEADLINE_MS)
  const pttl = Number(await redis.command('PTTL', `session:${s.sid}`))
  t.ok(pttl > 0 && pttl <= 3600_000, `written with its remaining TTL (${pttl} ms)`)
  t.not(await redis.command('ZSCORE', `user_sessions:${s.userId}`, s.sid), '', 'and indexed for logout everywhere')
  t.equal(await redis.command('EXISTS', `session:${out.sid}`, `session:${everywhere.sid}`), '0', 'the logged-out sessions were not written')
  t.equal(await status(b, out.token), 401)
  t.equal(await status(b, everywhere.token), 401)
  t.equal(await status(a, out.token), 401)
  t.equal(a.sessions.pendingReplays, 0)
  t.equal(a.sessions.stats().replayed, 1)
  t.equal(a.store.memory.getSync(`session:${s.sid}`), null, 'A dropped its in-process copy: Redis is authoritative for it now')
  t.equal(kept.sid.length > 0 && await redis.command('EXISTS', `session:${kept.sid}`), '0', '(Redis came back empty: the session made before the outage is gone)')

  // Redis has it now: a logout on B ends it on A too (A does not find it in its memory).
  t.equal((await b.inject({ method: 'POST', url: '/api/auth/logout', headers: bearer(s.token) })).statusCode, 204)
  t.equal(await status(a, s.token), 401, 'logged out on B, refused on A')
})

const refusals: Array<[string, (redis: RedisProcess, deadPort: number) => Promise<void>, (redis: RedisProcess) => Promise<void>]> = [
  ['full (maxmemory + noeviction: OOM)', async (redis) => {
    await redis.command('CONFIG', 'SET', 'maxmemory-policy', 'noeviction')
    await redis.command('CONFIG', 'SET', 'maxmemory', '1')
  }, async (redis) => { await redis.command('CONFIG', 'SET', 'maxmemory', '0') }],
  ['a replica of a dead master (READONLY)', async (redis, deadPort) => {
    await redis.command('REPLICAOF', '127.0.0.1', String(deadPort))
  }, async (redis) => { await redis.command('REPLICAOF', 'NO', 'ONE') }],
]

for (const [name, refuse, accept] of refusals) {
  t.test(`a login on A while Redis refuses writes, ${name}: B accepts its token once Redis takes writes again`, redisOpts, async (t) => {
    const { a, b, redis } = await twoInstances(t)
    await register(a, 'refused@example.com')
    const before = await login(a, 'refused@example.com')
    t.equal(await status(b, before.token), 200)

    await refuse(redis, await getFreePort())
    const s = await login(a, 'refused@example.com')
    t.equal(await status(a, s.token), 200, 'A accepts it from memory')
    t.equal(a.sessions.pendingReplays, 1, 'the refused write is queued for Redis')
    t.equal(await redis.command('EXISTS', `session:${s.sid}`), '0', 'Redis does not have it')

    await accept(redis)
    await waitFor(async () => (await status(b, s.token)) === 200, DEADLINE_MS)
    t.pass('B accepts it once Redis takes writes again')
    await waitFor(() => a.sessions.pendingReplays === 0, DEADLINE_MS)
    t.pass('A\'s queue is empty')
    t.equal(await status(b, before.token), 200, 'the session made before is untouched')
  })
}

t.test('a session Redis refuses on replay stays queued (logged once) and is written on a later return', redisOpts, async (t) => {
  const { a, b, redis, logsA } = await twoInstances(t)
  const user = await register(a, 'broken-index@example.com')
  // Another writer left a string where the user's session index belongs: the login's script
  // is refused (WRONGTYPE) while Redis stays in use.
  await redis.command('SET', `user_sessions:${user.id}`, 'not an index')
  const s = await login(a, 'broken-index@example.com')
  t.equal(a.redisState.available, true, 'a refusal of one command does not take A off Redis')
  t.equal(a.sessions.pendingReplays, 1)
  const refusedLine = (): number => logsA.lines.filter((l) => /could not be written into Redis/.test(String(l.msg))).length
  // The queued session is offered again shortly while Redis stays in use; still refused.
  await waitFor(() => refusedLine() === 1, DEADLINE_MS)
  t.equal(a.sessions.stats().replayRefused, 1)
  t.equal(await status(b, s.token), 401, 'B cannot know it yet')
  // A second outage return: still refused, not logged again.
  redis.pause()
  t.teardown(() => redis.resume())
  await waitFor(async () => { await me(a, s.token); return !a.redisState.available }, DEADLINE_MS)
  redis.resume()
  await waitFor(() => a.sessions.stats().replayRefused === 2, DEADLINE_MS)
  t.pass('offered again when Redis returned, refused again')
  t.equal(a.sessions.pendingReplays, 1, 'still queued')
  t.equal(refusedLine(), 1, 'logged once')

  await redis.command('DEL', `user_sessions:${user.id}`)
  redis.pause()
  await waitFor(async () => { await me(a, s.token); return !a.redisState.available }, DEADLINE_MS)
  redis.resume()
  await waitFor(async () => (await status(b, s.token)) === 200, DEADLINE_MS)
  t.pass('written on the next return once the index is usable')
  await waitFor(() => a.sessions.pendingReplays === 0, DEADLINE_MS)
  t.pass('A\'s queue is empty')
})
