/**
 * Token lifetimes and refresh: login and /me state both lifetimes; POST /api/auth/refresh
 * hands out a new token for the same session and the old one is refused from then on (with
 * Redis, without it, and while it is away, as documented in src/auth/sessions.ts).
 */
import t from 'tap'
import type { FastifyInstance } from 'fastify'
import { build, waitFor, type TapTest } from './helper.js'
import { skipUnlessRedis, startRedis, type RedisProcess } from './helpers/redis-server.js'
import { tempDatabase } from './portfolio-helpers.js'
import { AUTH_ENV, JWT_AUDIENCE, JWT_ISSUER, JWT_SECRET, bearer, decodePayload, hs256, login, me, register } from './auth-helpers.js'

const redisOpts = skipUnlessRedis()

interface TokenAnswer {
  token: string
  tokenType: string
  expiresIn: number
  accessTokenExpiresIn: number
  accessTokenExpiresAt: string
  sessionExpiresAt: string
  user: { id: string, email: string, role: string }
}

async function refresh (app: FastifyInstance, token: string): Promise<{ statusCode: number, body: TokenAnswer & { message?: string }, headers: Record<string, unknown> }> {
  const res = await app.inject({ method: 'POST', url: '/api/auth/refresh', headers: bearer(token) })
  return { statusCode: res.statusCode, body: res.json(), headers: res.headers }
}

async function loginBody (app: FastifyInstance, email: string): Promise<TokenAnswer> {
  const res = await app.inject({ method: 'POST', url: '/api/auth/login', payload: { email, password: 'correct horse battery' } })
  if (res.statusCode !== 200) throw new Error(`login: ${res.statusCode} ${res.body}`)
  return res.json()
}

/** An instance on a private Redis, and a factory for more instances sharing its Redis and database. */
async function withRedis (t: TapTest, env: Record<string, string> = {}): Promise<{ app: FastifyInstance, redis: RedisProcess, another: () => Promise<FastifyInstance> }> {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  const shared = { ...AUTH_ENV, DATABASE_PATH: tempDatabase(t), REDIS_URL: redis.url, REDIS_COMMAND_TIMEOUT_MS: '300', ...env }
  const { app } = await build(t, shared)
  return { app, redis, another: async () => (await build(t, shared)).app }
}

t.test('login and /me state both lifetimes plainly, and the token carries a token id', async (t) => {
  const { app } = await build(t, { ...AUTH_ENV, JWT_EXPIRES_IN: '15m', SESSION_TTL_SECONDS: '3600' })
  await register(app, 'life@example.com')
  const before = Date.now()
  const body = await loginBody(app, 'life@example.com')
  const claims = decodePayload(body.token)
  t.equal(body.expiresIn, 900, 'expiresIn is kept')
  t.equal(body.accessTokenExpiresIn, 900)
  t.equal(Date.parse(body.accessTokenExpiresAt), Number(claims.exp) * 1000, 'accessTokenExpiresAt is the token\'s exp')
  const sessionEnds = Date.parse(body.sessionExpiresAt)
  t.ok(sessionEnds >= before + 3600_000 - 2000 && sessionEnds <= Date.now() + 3600_000, 'the session ends an hour from now (sliding)')
  t.match(claims.jti, /^[A-Za-z0-9_-]{16}$/, 'a token id')

  const who = await me(app, body.token)
  t.equal(who.statusCode, 200)
  t.equal(who.body.accessTokenExpiresAt, body.accessTokenExpiresAt, '/me: the token\'s expiry')
  t.equal(who.body.sessionExpiresAt, (who.body.session as { expiresAt: string }).expiresAt, '/me: the session\'s, also in session.expiresAt')
  t.ok(Date.parse(String(who.body.sessionExpiresAt)) - Date.parse(String(who.body.accessTokenExpiresAt)) > 40 * 60_000, 'the session outlives the token')

  const doc = (await app.inject('/docs/json')).json<{ paths: Record<string, Record<string, { responses: Record<string, { content: Record<string, { schema: { properties: Record<string, { description?: string }> } }> }> }>> }>()
  const loginProps = doc.paths['/api/auth/login']?.post?.responses['200']?.content['application/json']?.schema.properties ?? {}
  for (const field of ['accessTokenExpiresIn', 'accessTokenExpiresAt', 'sessionExpiresAt', 'expiresIn']) {
    t.ok((loginProps[field]?.description ?? '').length > 20, `the schema describes ${field}`)
  }
})

t.test('without Redis: refresh hands out a new token, and the old one is refused', async (t) => {
  const { app } = await build(t, AUTH_ENV)
  await register(app, 'mem@example.com')
  const first = await loginBody(app, 'mem@example.com')
  const second = await refresh(app, first.token)
  t.equal(second.statusCode, 200, JSON.stringify(second.body))
  t.not(second.body.token, first.token)
  t.match(second.body, { tokenType: 'Bearer', expiresIn: 900, accessTokenExpiresIn: 900, user: { email: 'mem@example.com', role: 'user' } })
  const a = decodePayload(first.token)
  const b = decodePayload(second.body.token)
  t.equal(b.sid, a.sid, 'the same session')
  t.not(b.jti, a.jti, 'a new token id')

  t.equal((await me(app, first.token)).statusCode, 401, 'the old token is refused')
  t.equal((await me(app, second.body.token)).statusCode, 200, 'the new one works')
  t.equal((await refresh(app, first.token)).statusCode, 401, 'the old token cannot refresh again')
  const third = await refresh(app, second.body.token)
  t.equal(third.statusCode, 200, 'the new one can')
  t.equal((await me(app, second.body.token)).statusCode, 401)
  t.equal(app.sessions.stats().rotated, 2)
  t.ok(app.sessions.stats().rejected.superseded >= 2, 'counted as superseded')

  t.equal((await app.inject({ method: 'POST', url: '/api/auth/logout', headers: bearer(third.body.token) })).statusCode, 204)
  t.equal((await refresh(app, third.body.token)).statusCode, 401, 'no refresh after logout')
  t.equal((await app.inject({ method: 'POST', url: '/api/auth/refresh' })).statusCode, 401, 'no refresh without a token')

  const now = Math.floor(Date.now() / 1000)
  const expired = hs256({ alg: 'HS256', typ: 'JWT' }, { sub: String(a.sub), role: 'user', sid: String(a.sid), jti: String(a.jti), iss: JWT_ISSUER, aud: JWT_AUDIENCE, iat: now - 1000, exp: now - 100 }, JWT_SECRET)
  const late = await refresh(app, expired)
  t.equal(late.statusCode, 401, 'an expired token cannot be refreshed')
  t.equal(late.body.message, 'Token expired')
})

t.test('with Redis: the rotation is in session:<sid>, the old token is refused, two refreshes with one token: one wins', redisOpts, async (t) => {
  const { app, redis, another } = await withRedis(t)
  await register(app, 'red@example.com')
  const first = await loginBody(app, 'red@example.com')
  const sid = String(decodePayload(first.token).sid)
  t.equal(JSON.parse(await redis.command('GET', `session:${sid}`)).tid, decodePayload(first.token).jti, 'the session records the current token id')

  await redis.command('PEXPIRE', `session:${sid}`, '600000')
  const second = await refresh(app, first.token)
  t.equal(second.statusCode, 200)
  t.equal(JSON.parse(await redis.command('GET', `session:${sid}`)).tid, decodePayload(second.body.token).jti, 'and the new one after a refresh')
  t.ok(Number(await redis.command('PTTL', `session:${sid}`)) > 3590_000, 'the refresh extended the session')
  t.equal((await me(app, first.token)).statusCode, 401, 'the old token is refused')
  t.equal((await me(app, second.body.token)).statusCode, 200)

  const other = await another()
  t.equal((await me(other, second.body.token)).statusCode, 200)
  t.equal((await me(other, first.token)).statusCode, 401, 'on every instance')

  const race = await Promise.all([refresh(app, second.body.token), refresh(other, second.body.token), refresh(app, second.body.token)])
  t.same(race.map((r) => r.statusCode).sort(), [200, 401, 401], 'of three refreshes with one token, one wins')
  const winner = race.find((r) => r.statusCode === 200)
  t.equal((await me(other, winner?.body.token ?? '')).statusCode, 200)
})

t.test('a session from before token ids (no tid, a token without jti) still works, and rotates', redisOpts, async (t) => {
  const { app, redis } = await withRedis(t)
  const user = await register(app, 'old@example.com')
  const sid = 'B'.repeat(22)
  await redis.command('SET', `session:${sid}`, JSON.stringify({ userId: user.id, email: user.email, role: 'user', createdAt: new Date().toISOString(), ip: '127.0.0.1', userAgent: null }), 'PX', '3600000')
  const now = Math.floor(Date.now() / 1000)
  const legacy = hs256({ alg: 'HS256', typ: 'JWT' }, { sub: user.id, role: 'user', sid, iss: JWT_ISSUER, aud: JWT_AUDIENCE, iat: now, exp: now + 600 }, JWT_SECRET)
  t.equal((await me(app, legacy)).statusCode, 200, 'accepted as before')
  const fresh = await refresh(app, legacy)
  t.equal(fresh.statusCode, 200)
  t.equal((await me(app, legacy)).statusCode, 401, 'refused once refreshed')
  t.equal((await me(app, fresh.body.token)).statusCode, 200)
})

t.test('Redis away (SESSION_FALLBACK=allow): what refresh and rotated tokens do', redisOpts, async (t) => {
  const { app, redis, another } = await withRedis(t, { SESSION_FALLBACK: 'allow' })
  const other = await another()
  await register(app, 'away@example.com')
  const kept = await loginBody(app, 'away@example.com')
  const replaced = await loginBody(app, 'away@example.com')
  const current = await refresh(app, replaced.token)
  t.equal(current.statusCode, 200)

  await redis.kill()
  await waitFor(async () => { await me(app, kept.token); return !app.redisState.available }, 5000)
  await waitFor(async () => { await me(other, kept.token); return !other.redisState.available }, 5000)

  const unavailable = await refresh(app, kept.token)
  t.equal(unavailable.statusCode, 503, 'a session held in Redis cannot be rotated now')
  t.equal(unavailable.headers['retry-after'], '5')
  t.match(unavailable.body.message, /current token stays valid until it expires/)
  t.equal((await me(app, kept.token)).statusCode, 200, 'and the token keeps working (allow)')

  t.equal((await me(app, replaced.token)).statusCode, 401, 'this instance remembers the rotation it made: the replaced token is refused')
  t.equal((await me(app, current.body.token)).statusCode, 200, 'the current one is accepted')
  t.equal((await me(other, replaced.token)).statusCode, 200, 'another instance cannot know: it accepts the replaced token until it expires (documented)')

  const outage = await loginBody(app, 'away@example.com')
  const rotated = await refresh(app, outage.token)
  t.equal(rotated.statusCode, 200, 'a session made during the outage lives in memory and rotates there')
  t.equal((await me(app, outage.token)).statusCode, 401)
  t.equal((await me(app, rotated.body.token)).statusCode, 200)

  await redis.restart()
  await waitFor(() => app.redisState.available, 5000)
  t.equal((await me(app, rotated.body.token)).statusCode, 200, 'and keeps working when Redis is back')
  t.equal((await me(app, outage.token)).statusCode, 401)
})

t.test('SESSION_FALLBACK=deny: no token is accepted unchecked, so none refreshes while Redis is away', redisOpts, async (t) => {
  const { app, redis } = await withRedis(t, { SESSION_FALLBACK: 'deny' })
  await register(app, 'deny@example.com')
  const s = await login(app, 'deny@example.com')
  await redis.kill()
  t.equal((await refresh(app, s.token)).statusCode, 401)
})
