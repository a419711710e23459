/**
 * Accounts, tokens and sessions through the HTTP API, against a private redis-server:
 * the register → login → me → logout flow, logout everywhere, identical failures for
 * unknown emails and wrong passwords, bad input (never a 5xx), and forged tokens.
 */
import { generateKeyPairSync, createSign, randomBytes } from 'node:crypto'
import t from 'tap'
import type { FastifyInstance } from 'fastify'
import { build, type TapTest } from './helper.js'
import { skipUnlessRedis, startRedis, type RedisProcess } from './helpers/redis-server.js'
import {
  AUTH_ENV, JWT_AUDIENCE, JWT_ISSUER, JWT_SECRET, PASSWORD, b64url, bearer, decodePayload, hs256, login, me, register, registerAndLogin,
} from './auth-helpers.js'

const redisOpts = skipUnlessRedis()

async function withRedis (t: TapTest): Promise<{ app: FastifyInstance, redis: RedisProcess }> {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  const { app } = await build(t, { ...AUTH_ENV, REDIS_URL: redis.url })
  return { app, redis }
}

t.test('register → login → me → logout → me is 401', redisOpts, async (t) => {
  const { app, redis } = await withRedis(t)
  const reg = await app.inject({ method: 'POST', url: '/api/auth/register', payload: { email: 'Ann@Example.com', password: PASSWORD } })
  t.equal(reg.statusCode, 201)
  const user = reg.json()
  t.match(user, { email: 'ann@example.com', role: 'user' })
  t.match(user.id, /^[0-9a-f-]{36}$/)
  t.same(Object.keys(user).sort(), ['email', 'id', 'role'], 'no hash or other field leaks')

  const res = await app.inject({ method: 'POST', url: '/api/auth/login', payload: { email: 'ANN@example.com', password: PASSWORD } })
  t.equal(res.statusCode, 200)
  const body = res.json()
  t.equal(body.tokenType, 'Bearer')
  t.equal(body.expiresIn, 900, 'JWT_EXPIRES_IN 15m, in seconds')
  t.same(body.user, user)
  const header = JSON.parse(Buffer.from(body.token.split('.')[0], 'base64url').toString())
  t.equal(header.alg, 'HS256')
  const claims = decodePayload(body.token)
  t.match(claims, { sub: user.id, role: 'user', iss: JWT_ISSUER, aud: JWT_AUDIENCE })
  t.match(claims.sid, /^[A-Za-z0-9_-]{22}$/, '128-bit session id')
  t.equal(Number(claims.exp) - Number(claims.iat), 900)
  t.equal(await redis.command('EXISTS', `session:${String(claims.sid)}`), '1')

  const who = await me(app, body.token)
  t.equal(who.statusCode, 200)
  t.same(Object.keys(who.body).sort(), ['accessTokenExpiresAt', 'email', 'id', 'role', 'session', 'sessionExpiresAt'])
  t.match(who.body, { id: user.id, email: 'ann@example.com', role: 'user', session: { id: claims.sid } })
  const expiresAt = Date.parse(String((who.body.session as { expiresAt: string }).expiresAt))
  t.ok(expiresAt > Date.now() + 3590_000 && expiresAt <= Date.now() + 3600_000, 'session expiresAt ≈ now + SESSION_TTL_SECONDS')

  const out = await app.inject({ method: 'POST', url: '/api/auth/logout', headers: bearer(body.token) })
  t.equal(out.statusCode, 204)
  t.equal(out.body, '')
  t.equal(await redis.command('EXISTS', `session:${String(claims.sid)}`), '0', 'the session key is gone')
  const after = await me(app, body.token)
  t.equal(after.statusCode, 401, 'the same token is refused at once')
  t.same(after.body, { statusCode: 401, error: 'Unauthorized', message: 'Session expired or revoked' })
  t.equal((await app.inject({ method: 'POST', url: '/api/auth/logout', headers: bearer(body.token) })).statusCode, 401, 'logging out twice is a 401')
})

t.test('logging out everywhere revokes every session of the user, and only theirs', redisOpts, async (t) => {
  const { app, redis } = await withRedis(t)
  await register(app, 'bob@example.com')
  const sessions = [await login(app, 'bob@example.com'), await login(app, 'bob@example.com'), await login(app, 'bob@example.com')]
  const other = await registerAndLogin(app, 'eve@example.com')
  const userId = sessions[0]?.userId ?? ''
  t.equal(await redis.command('ZCARD', `user_sessions:${userId}`), '3', 'the per-user index lists the three sessions')
  const indexTtl = Number(await redis.command('PTTL', `user_sessions:${userId}`))
  t.ok(indexTtl > 0 && indexTtl <= 3600_000, 'the index has its own TTL')
  for (const s of sessions) t.equal((await me(app, s.token)).statusCode, 200)

  const res = await app.inject({ method: 'DELETE', url: '/api/auth/sessions', headers: bearer(sessions[1]?.token ?? '') })
  t.equal(res.statusCode, 200)
  t.same(res.json(), { revoked: 3 })
  for (const s of sessions) {
    t.equal((await me(app, s.token)).statusCode, 401, `session ${s.sid} refused`)
    t.equal(await redis.command('EXISTS', `session:${s.sid}`), '0')
  }
  t.equal(await redis.command('EXISTS', `user_sessions:${userId}`), '0', 'the index is gone too')
  t.equal((await me(app, other.token)).statusCode, 200, "another user's session is untouched")
  t.equal((await me(app, (await login(app, 'bob@example.com')).token)).statusCode, 200, 'logging in again works')
})

t.test('register: duplicates (after normalisation) are 409', async (t) => {
  const { app } = await build(t, AUTH_ENV)
  await register(app, 'dup@example.com')
  for (const email of ['dup@example.com', 'DUP@Example.COM']) {
    const res = await app.inject({ method: 'POST', url: '/api/auth/register', payload: { email, password: PASSWORD } })
    t.equal(res.statusCode, 409, email)
    t.same(res.json(), { statusCode: 409, error: 'Conflict', message: 'An account with this email already exists' })
  }
  // Concurrent registrations of one address: exactly one wins, the rest are 409 (never 500).
  const codes = await Promise.all(Array.from({ length: 5 }, () =>
    app.inject({ method: 'POST', url: '/api/auth/register', payload: { email: 'race@example.com', password: PASSWORD } }).then((r) => r.statusCode)))
  t.same(codes.sort(), [201, 409, 409, 409, 409])
})

t.test('login: unknown email and wrong password get the same 401, in similar time', async (t) => {
  const { app } = await build(t, AUTH_ENV)
  await register(app, 'tim@example.com')
  const attempt = async (email: string, password: string): Promise<{ ms: number, status: number, body: string }> => {
    const started = performance.now()
    const res = await app.inject({ method: 'POST', url: '/api/auth/login', payload: { email, password } })
    return { ms: performance.now() - started, status: res.statusCode, body: res.body }
  }
  const unknown = await attempt('nobody@example.com', PASSWORD)
  const wrong = await attempt('tim@example.com', 'wrong password')
  t.equal(unknown.status, 401)
  t.equal(wrong.status, 401)
  t.equal(unknown.body, wrong.body, 'byte-identical answers')
  t.same(JSON.parse(wrong.body), { statusCode: 401, error: 'Unauthorized', message: 'Invalid email or password' })

  // Both paths run one scrypt; without the dummy hash the unknown email would answer in
  // well under a millisecond against ~tens of ms. Medians of alternating samples.
  const a: number[] = []
  const b: number[] = []
  for (let i = 0; i < 9; i++) {
    const x = await attempt(`nobody${i}@example.com`, PASSWORD)
    const y = await attempt('tim@example.com', `wrong password ${i}`)
    t.same([x.status, y.status], [401, 401])
    a.push(x.ms)
    b.push(y.ms)
  }
  const median = (xs: number[]): number => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)] ?? NaN
  const ratio = median(a) / median(b)
  // Without the dummy hash the ratio is about 0.02; a busy machine moves single samples by
  // tens of ms, so the bounds are wide and still far from that.
  t.ok(ratio > 0.2 && ratio < 5, `median unknown/wrong = ${ratio.toFixed(2)} (${median(a).toFixed(1)} ms vs ${median(b).toFixed(1)} ms)`)
})

t.test('bad input is a 4xx, never a 5xx', async (t) => {
  const { app } = await build(t, AUTH_ENV)
  const post = (url: string, payload: string, headers: Record<string, string> = { 'content-type': 'application/json' }) =>
    app.inject({ method: 'POST', url, payload, headers })
  const cases: Array<[string, Awaited<ReturnType<typeof post>>, number]> = [
    ['malformed JSON', await post('/api/auth/register', '{"email": "a@b.co", "password": '), 400],
    ['malformed JSON at login', await post('/api/auth/login', '{not json'), 400],
    ['invalid email', await post('/api/auth/register', JSON.stringify({ email: 'not-an-email', password: PASSWORD })), 400],
    ['email with spaces', await post('/api/auth/register', JSON.stringify({ email: 'a b@c.de', password: PASSWORD })), 400],
    ['short password', await post('/api/auth/register', JSON.stringify({ email: 'short@example.com', password: 'short' })), 400],
    ['129-character password', await post('/api/auth/register', JSON.stringify({ email: 'long@example.com', password: 'x'.repeat(129) })), 400],
    ['missing password', await post('/api/auth/register', JSON.stringify({ email: 'a@b.co' })), 400],
    ['password not a string', await post('/api/auth/login', JSON.stringify({ email: 'a@b.co', password: { $gt: '' } })), 400],
    ['array body', await post('/api/auth/login', '[]'), 400],
    ['empty body', await post('/api/auth/login', ''), 400],
    ['2 MB body', await post('/api/auth/register', JSON.stringify({ email: 'big@example.com', password: PASSWORD, pad: 'x'.repeat(2 * 1024 * 1024) })), 413],
    ['text/plain body', await post('/api/auth/login', 'email=a', { 'content-type': 'text/plain' }), 415],
    ['unknown content type', await post('/api/auth/login', 'x', { 'content-type': 'application/x-nope' }), 415],
  ]
  for (const [name, res, expected] of cases) {
    t.equal(res.statusCode, expected, name)
    const body = res.json<{ statusCode: number, error: string, message: string }>()
    t.equal(body.statusCode, expected, `${name}: error shape`)
    t.type(body.message, 'string')
  }
  t.equal(await app.db.users.count(), 0, 'nothing was created')
})

t.test('forged, expired and misdirected tokens are all 401', redisOpts, async (t) => {
  const { app } = await withRedis(t)
  const real = await registerAndLogin(app, 'mallory@example.com')
  const now = Math.floor(Date.now() / 1000)
  const header = { alg: 'HS256', typ: 'JWT' }
  const claims = { sub: real.userId, role: 'user', sid: real.sid, jti: decodePayload(real.token).jti, iss: JWT_ISSUER, aud: JWT_AUDIENCE, iat: now, exp: now + 600 }

  // Control: a hand-made token with the right secret and claims is accepted, so each 401
  // below is caused by the one thing that differs.
  t.equal((await me(app, hs256(header, claims, JWT_SECRET))).statusCode, 200, 'control token accepted')

  const { publicKey, privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 })
  const publicPem = publicKey.export({ type: 'spki', format: 'pem' })
  const rs256 = (() => {
    const input = `${b64url({ alg: 'RS256', typ: 'JWT' })}.${b64url(claims)}`
    return `${input}.${createSign('RSA-SHA256').update(input).sign(privateKey).toString('base64url')}`
  })()
  const [h, p, s] = real.token.split('.')
  const tamperedRole = `${h}.${b64url({ ...decodePayload(real.token), role: 'admin' })}.${s}`
  const { exp: _exp, ...noExp } = claims

  const forged: Array<[string, string]> = [
    ['alg none, no signature', `${b64url({ alg: 'none', typ: 'JWT' })}.${b64url(claims)}.`],
    ['alg none, with the real signature', `${b64url({ alg: 'none', typ: 'JWT' })}.${p}.${s}`],
    ['alg NONE', `${b64url({ alg: 'NONE' })}.${b64url(claims)}.`],
    ['another secret', hs256(header, claims, 'another-secret-another-secret-another-secret')],
    ['HS256 keyed with an RSA public key', hs256(header, claims, publicPem)],
    ['RS256 (algorithm not allowed)', rs256],
    ['no exp', hs256(header, noExp, JWT_SECRET)],
    ['expired', hs256(header, { ...claims, iat: now - 1000, exp: now - 10 }, JWT_SECRET)],
    ['nbf in the future', hs256(header, { ...claims, nbf: now + 3600 }, JWT_SECRET)],
    ['wrong iss', hs256(header, { ...claims, iss: 'someone-else' }, JWT_SECRET)],
    ['no iss', hs256(header, { ...claims, iss: undefined }, JWT_SECRET)],
    ['wrong aud', hs256(header, { ...claims, aud: 'other-audience' }, JWT_SECRET)],
    ['valid signature, session that does not exist', hs256(header, { ...claims, sid: randomBytes(16).toString('base64url') }, JWT_SECRET)],
    ['valid signature, session id of a bad shape', hs256(header, { ...claims, sid: 'x*' }, JWT_SECRET)],
    ['valid signature, session of another user', hs256(header, { ...claims, sub: '00000000-0000-0000-0000-000000000000' }, JWT_SECRET)],
    ['valid signature, role differs from the session', hs256(header, { ...claims, role: 'admin' }, JWT_SECRET)],
    ['valid signature, unknown role', hs256(header, { ...claims, role: 'root' }, JWT_SECRET)],
    ['tampered role (payload edited, signature kept)', tamperedRole],
    ['signature stripped', `${h}.${p}.`],
    ['garbage', 'not.a.token'],
    ['two parts', `${h}.${p}`],
  ]
  for (const [name, token] of forged) {
    const res = await app.inject({ method: 'GET', url: '/api/auth/me', headers: bearer(token) })
    t.equal(res.statusCode, 401, name)
    t.equal(res.json<{ error: string }>().error, 'Unauthorized', `${name}: error shape`)
  }
  const headers: Array<[string, Record<string, string>]> = [
    ['no Authorization header', {}],
    ['empty Authorization header', { authorization: '' }],
    ['Basic scheme', { authorization: `Basic ${Buffer.from('a:b').toString('base64')}` }],
    ['Bearer without a token', { authorization: 'Bearer ' }],
    ['token without Bearer', { authorization: real.token }],
  ]
  for (const [name, hdrs] of headers) t.equal((await app.inject({ method: 'GET', url: '/api/auth/me', headers: hdrs })).statusCode, 401, name)

  t.equal((await me(app, real.token)).statusCode, 200, 'the real token still works afterwards')
})
