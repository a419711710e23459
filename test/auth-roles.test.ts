/**
 * Role checks while the session cannot be read: under SESSION_FALLBACK=allow a token whose
 * session Redis cannot confirm is accepted, but an admin route also checks the role against
 * the user's stored record, so a token claiming a role its user does not have opens nothing.
 */
import t from 'tap'
import { build, waitFor } from './helper.js'
import { skipUnlessRedis, startRedis } from './helpers/redis-server.js'
import { AUTH_ENV, JWT_SECRET, adminLogin, bearer, decodePayload, hs256, me, registerAndLogin } from './auth-helpers.js'

const redisOpts = skipUnlessRedis()

t.test('during an outage (allow), requireAdmin checks the stored role, not the token\'s', redisOpts, async (t) => {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  const { app } = await build(t, { ...AUTH_ENV, REDIS_URL: redis.url, SESSION_FALLBACK: 'allow' })
  const admin = await adminLogin(app, 'boss@example.com')
  const demoted = await adminLogin(app, 'former-boss@example.com')
  const user = await registerAndLogin(app, 'plain@example.com')
  // The user's own token with the role changed, signed with the real secret (a leaked secret,
  // or an insider): its session never had the admin role.
  const forged = hs256({ alg: 'HS256', typ: 'JWT' }, { ...decodePayload(user.token), role: 'admin' }, JWT_SECRET)
  const debug = (token: string): Promise<number> => app.inject({ method: 'GET', url: '/api/debug/redis', headers: bearer(token) }).then((r) => r.statusCode)

  t.equal(await debug(admin.token), 200, 'an admin passes')
  t.equal(await debug(forged), 401, 'with Redis up, the session refuses the forged role')

  await redis.kill()
  await waitFor(async () => { await me(app, user.token); return !app.redisState.available }, 10_000)
  t.equal((await me(app, forged)).statusCode, 200, 'the forged token is accepted as a user (allow: signature and expiry only)')
  t.equal(await debug(forged), 403, 'but it does not pass requireAdmin: the stored role is user')
  t.equal(await debug(user.token), 403, 'nor does the user\'s own token')
  t.equal(await debug(admin.token), 200, 'an admin still passes')
  await app.db.users.setRole(demoted.userId, 'user')
  t.equal(await debug(demoted.token), 403, 'an admin demoted in the database does not, although the token says admin')
  t.ok(app.sessions.stats().accepted.fallback > 0, 'those checks were made without the session')
})
