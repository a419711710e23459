/**
 * The per-user session index `user_sessions:<userId>`: a sorted set scored by expiry. A login
 * costs the same Redis commands whatever the user's session count (INFO commandstats); the
 * score slides with the session; logout everywhere reads it; an index of the older type (a
 * set) is converted on first use, and one of a foreign type does not break login.
 */
import t from 'tap'
import type { FastifyInstance } from 'fastify'
import { build, type TapTest } from './helper.js'
import { skipUnlessRedis, startRedis, type RedisProcess } from './helpers/redis-server.js'
import { AUTH_ENV, bearer, login, me, register } from './auth-helpers.js'

const redisOpts = skipUnlessRedis()

async function setup (t: TapTest): Promise<{ app: FastifyInstance, redis: RedisProcess }> {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  // Nothing else talks to this Redis in the background: no jobs.
  const { app } = await build(t, { ...AUTH_ENV, REDIS_URL: redis.url, SCHEDULER_ENABLED: 'false' })
  return { app, redis }
}

/** Calls per command since the server started (INFO commandstats), INFO itself left out. */
async function commandStats (redis: RedisProcess): Promise<Map<string, number>> {
  const stats = new Map<string, number>()
  for (const line of (await redis.command('INFO', 'commandstats')).split('\n')) {
    const m = /^cmdstat_([^:]+):calls=(\d+)/.exec(line.trim())
    if (m !== null && m[1] !== 'info') stats.set(m[1] as string, Number(m[2]))
  }
  return stats
}

/** The commands one login sends to Redis, by name (scripts count as the one EVALSHA). */
async function loginCost (app: FastifyInstance, redis: RedisProcess, email: string): Promise<{ total: number, byName: Record<string, number> }> {
  const before = await commandStats(redis)
  await login(app, email)
  const after = await commandStats(redis)
  const byName: Record<string, number> = {}
  let total = 0
  for (const [name, calls] of after) {
    const delta = calls - (before.get(name) ?? 0)
    if (delta > 0) { byName[name] = delta; total += delta }
  }
  return { total, byName }
}

const members = async (redis: RedisProcess, key: string): Promise<string[]> =>
  (await redis.command('ZRANGE', key, '0', '-1')).split('\n').filter(Boolean).sort()

t.test('a login costs the same Redis commands with 20 live sessions as with 1, and logout everywhere ends them all', redisOpts, async (t) => {
  const { app, redis } = await setup(t)
  await register(app, 'one@example.com')
  await register(app, 'many@example.com')
  const firstOne = await login(app, 'one@example.com') // (loads the script once)
  await login(app, 'many@example.com')
  const withOne = await loginCost(app, redis, 'one@example.com')
  for (let i = 0; i < 19; i++) await login(app, 'many@example.com')
  t.equal(await redis.command('ZCARD', `user_sessions:${firstOne.userId}`), '2')
  const withTwenty = await loginCost(app, redis, 'many@example.com')
  t.comment(`login with 1 live session: ${JSON.stringify(withOne.byName)}; with 20: ${JSON.stringify(withTwenty.byName)}`)
  t.same(withTwenty.byName, withOne.byName, 'the same commands, whatever the count')
  t.equal(withTwenty.total, withOne.total, `${withTwenty.total} commands per login either way (the login limits' counters included)`)
  // commandstats counts the commands a script runs too: the session's part is the one script
  // (TYPE, SET, TIME, ZREMRANGEBYSCORE, ZADD, PTTL), the rest is the login limits' counter script.
  t.match(withTwenty.byName, { zremrangebyscore: 1, zadd: 1 }, 'the index trimmed by score and the session added, once')
  for (const name of ['sadd', 'smembers', 'scard', 'exists', 'multi', 'exec', 'zrange']) t.notOk(name in withTwenty.byName, `no ${name}`)

  const many = await login(app, 'many@example.com')
  const index = `user_sessions:${many.userId}`
  t.equal(await redis.command('ZCARD', index), '22')
  const res = await app.inject({ method: 'DELETE', url: '/api/auth/sessions', headers: bearer(many.token) })
  t.same(res.json(), { revoked: 22 }, 'logout everywhere finds every session through the index')
  t.equal(await redis.command('EXISTS', index), '0', 'and empties it')
  t.equal((await me(app, many.token)).statusCode, 401)
  t.equal((await me(app, firstOne.token)).statusCode, 200, 'another user is unaffected')
})

t.test('the index score slides with its session', redisOpts, async (t) => {
  const { app, redis } = await setup(t)
  await register(app, 'slide@example.com')
  const s = await login(app, 'slide@example.com')
  const index = `user_sessions:${s.userId}`
  // As if the session had last been extended ten minutes ago.
  await redis.command('PEXPIRE', `session:${s.sid}`, '3000000')
  await redis.command('ZADD', index, 'XX', String(Date.now() + 3000_000), s.sid)
  t.equal((await me(app, s.token)).statusCode, 200)
  const score = Number(await redis.command('ZSCORE', index, s.sid))
  t.ok(score > Date.now() + 3590_000 - 5000, `the score moved to the new expiry (${score - Date.now()} ms ahead)`)

  // A login whose trim comes after the old expiry keeps the extended session listed.
  const next = await login(app, 'slide@example.com')
  t.same(await members(redis, index), [s.sid, next.sid].sort())

  // A refresh extends it too.
  await redis.command('ZADD', index, 'XX', String(Date.now() + 3000_000), next.sid)
  const refreshed = await app.inject({ method: 'POST', url: '/api/auth/refresh', headers: bearer(next.token) })
  t.equal(refreshed.statusCode, 200)
  t.ok(Number(await redis.command('ZSCORE', index, next.sid)) > Date.now() + 3590_000 - 5000, 'a refresh moves the score as well')
})

t.test('an index of the older type (a set) is converted at login, with its dead ids dropped', redisOpts, async (t) => {
  const { app, redis } = await setup(t)
  await register(app, 'old@example.com')
  const a = await login(app, 'old@example.com')
  const b = await login(app, 'old@example.com')
  const index = `user_sessions:${a.userId}`
  // What an older version left: a set of ids (one of a session that has ended), with a TTL.
  await redis.command('DEL', index)
  await redis.command('SADD', index, a.sid, b.sid, 'ended-session-id-000000')
  await redis.command('PEXPIRE', index, '3600000')

  const c = await login(app, 'old@example.com')
  t.equal(await redis.command('TYPE', index), 'zset', 'converted')
  t.same(await members(redis, index), [a.sid, b.sid, c.sid].sort(), 'the live sessions kept, the ended one dropped')
  const ttlA = Number(await redis.command('PTTL', `session:${a.sid}`))
  const scoreA = Number(await redis.command('ZSCORE', index, a.sid))
  t.ok(Math.abs(scoreA - (Date.now() + ttlA)) < 5000, 'scored by the session\'s expiry')
  for (const s of [a, b, c]) t.equal((await me(app, s.token)).statusCode, 200)

  // Logout everywhere over an index of the older type converts it too.
  await redis.command('DEL', index)
  await redis.command('SADD', index, a.sid, b.sid, c.sid)
  const res = await app.inject({ method: 'DELETE', url: '/api/auth/sessions', headers: bearer(a.token) })
  t.same(res.json(), { revoked: 3 })
  for (const s of [a, b, c]) t.equal((await me(app, s.token)).statusCode, 401)
})

t.test('an index of a foreign type does not break login: the session is kept in memory', redisOpts, async (t) => {
  const { app, redis } = await setup(t)
  const user = await register(app, 'odd@example.com')
  await redis.command('SET', `user_sessions:${user.id}`, 'not an index')
  const s = await login(app, 'odd@example.com')
  t.equal((await me(app, s.token)).statusCode, 200)
  t.equal(await redis.command('GET', `user_sessions:${user.id}`), 'not an index', 'what is there is left alone')
  t.equal(await redis.command('EXISTS', `session:${s.sid}`), '0', 'nothing was half-written')
  t.equal(app.redisState.available, true)
})
