/**
 * Login brute force: 5 attempts per 15 minutes per address + email and a per-email limit,
 * counted before the handler runs (so the right password after the limit is still a 429).
 * First on a stand-in route registered at /api/auth/login in a minimal app (the limits
 * attach by URL through onRoute), then on the real login route of the whole app.
 */
import t from 'tap'
import Fastify, { type FastifyInstance, type LightMyRequestResponse } from 'fastify'
import { Type } from 'typebox'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import { buildApp } from '../src/app.js'
import { loadConfig } from '../src/config.js'
import { trustProxyOption } from '../src/rate-limit/trust-proxy.js'
import configPlugin from '../plugins/config.js'
import metricsPlugin from '../plugins/metrics.js'
import redisPlugin from '../plugins/redis.js'
import rateLimitPlugin from '../plugins/rate-limit.js'
import { LogCapture, TEST_ENV, type TapTest } from './helper.js'
import { skipUnlessRedis, startRedis } from './helpers/redis-server.js'

const RIGHT = 'correct horse battery'

interface StandIn { app: FastifyInstance, handled: () => number }

/** config → redis → rate-limit, then a login route that accepts RIGHT for any email. */
async function standInApp (t: TapTest, env: Record<string, string>): Promise<StandIn> {
  const config = loadConfig({ ...TEST_ENV, ...env })
  const app = Fastify({ logger: false, trustProxy: trustProxyOption(config.TRUST_PROXY) }).withTypeProvider<TypeBoxTypeProvider>()
  await app.register(configPlugin, { config })
  await app.register(metricsPlugin)
  await app.register(redisPlugin)
  await app.register(rateLimitPlugin)
  let handled = 0
  app.post('/api/auth/login', {
    schema: { body: Type.Object({ email: Type.String({ maxLength: 254 }), password: Type.String() }) },
  }, async (request, reply) => {
    handled++
    if (request.body.password !== RIGHT) return reply.code(401).send({ statusCode: 401, error: 'Unauthorized', message: 'Invalid email or password' })
    return { token: 'stand-in' }
  })
  await app.ready()
  t.teardown(() => app.close())
  return { app, handled: () => handled }
}

function login (app: FastifyInstance, email: string, password: string, remoteAddress = '198.51.100.1'): Promise<LightMyRequestResponse> {
  return app.inject({ method: 'POST', url: '/api/auth/login', payload: { email, password }, remoteAddress })
}

t.test('stand-in login route', skipUnlessRedis(), async (t) => {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  const env = { REDIS_URL: redis.url, LOGIN_RATE_LIMIT_MAX: '5', LOGIN_EMAIL_RATE_LIMIT_MAX: '8' }

  t.test('the 6th attempt within 15 minutes is a 429, even with the right password', async (t) => {
    const { app, handled } = await standInApp(t, env)
    const wrong = []
    for (let i = 0; i < 5; i++) wrong.push((await login(app, 'victim@example.com', `guess-${i}`)).statusCode)
    t.same(wrong, [401, 401, 401, 401, 401])
    const sixth = await login(app, 'victim@example.com', RIGHT)
    t.equal(sixth.statusCode, 429)
    t.match(sixth.json(), { statusCode: 429, error: 'Too Many Requests', message: 'Too many login attempts, retry in 15 minutes' })
    const retryAfter = Number(sixth.headers['retry-after'])
    t.ok(retryAfter > 880 && retryAfter <= 900, `Retry-After ${retryAfter} s`)
    t.equal(sixth.headers['x-ratelimit-limit'], '5')
    t.equal(sixth.headers['x-ratelimit-remaining'], '0')
    t.equal(handled(), 5, 'the handler never saw the 6th attempt')

    const other = await login(app, 'someone-else@example.com', RIGHT)
    t.equal(other.statusCode, 200, 'another email from the same address is another pair')
    const elsewhere = await login(app, 'victim@example.com', RIGHT, '203.0.113.9')
    t.equal(elsewhere.statusCode, 200, 'the owner from another address can still log in')
    // Pair (new address): 1 of 5 used. Email: 5 counted before (the refused 6th was not), now 6 of 8.
    t.equal(elsewhere.headers['x-ratelimit-limit'], '8', 'the headers show the tightest limit that applies')
    t.equal(elsewhere.headers['x-ratelimit-remaining'], '2')
  })

  t.test('successful attempts count too', async (t) => {
    const { app } = await standInApp(t, env)
    const results = []
    for (let i = 0; i < 6; i++) results.push((await login(app, 'ok@example.com', RIGHT, '198.51.100.2')).statusCode)
    t.same(results, [200, 200, 200, 200, 200, 429])
  })

  t.test('the per-email limit stops a guess spread over many addresses', async (t) => {
    const { app } = await standInApp(t, { ...env, LOGIN_EMAIL_RATE_LIMIT_MAX: '3' })
    const results = []
    for (let i = 0; i < 5; i++) results.push((await login(app, 'Target@Example.com ', 'nope-nope', `203.0.113.${20 + i}`)).statusCode)
    t.same(results, [401, 401, 401, 429, 429])
    const last = await login(app, 'target@example.com', RIGHT, '203.0.113.99')
    t.equal(last.statusCode, 429, 'the email is normalised: same account, same limit')
    t.match(last.json().message, /^Too many login attempts for this account, retry in (59|60) minutes$/)
    t.equal(app.rateLimiter.stats().limited.loginEmail, 3)
  })

  t.test('an address already over its limit does not use up the account budget', async (t) => {
    const { app } = await standInApp(t, { ...env, LOGIN_RATE_LIMIT_MAX: '2', LOGIN_EMAIL_RATE_LIMIT_MAX: '4' })
    for (let i = 0; i < 10; i++) await login(app, 'owner@example.com', 'wrong-pass', '198.51.100.3')
    // The attacker's address used 2 of the account's 4; the owner still has 2.
    t.equal((await login(app, 'owner@example.com', RIGHT, '198.51.100.4')).statusCode, 200)
    t.equal((await login(app, 'owner@example.com', RIGHT, '198.51.100.4')).statusCode, 200)
    t.equal((await login(app, 'owner@example.com', RIGHT, '198.51.100.5')).statusCode, 429)
  })

  t.test('keys hold a hash of the email, never the address itself', async (t) => {
    const keys = (await redis.command('--scan', '--pattern', 'rate_limit:login*')).split('\n')
    t.ok(keys.length >= 4)
    t.notOk(keys.some((k) => k.includes('@')), 'no email in any key')
    for (const key of keys) t.match(key, /^rate_limit:(login:ip:[0-9.]+|login-email):[A-Za-z0-9_-]{22}$|^rate_limit:login-email:[A-Za-z0-9_-]{22}$/)
  })

  t.test('a body without an email is left to validation (400), and counted only by the global limit', async (t) => {
    const { app, handled } = await standInApp(t, { ...env, RATE_LIMIT_MAX: '100' })
    const r = await app.inject({ method: 'POST', url: '/api/auth/login', payload: { password: 'x' }, remoteAddress: '198.51.100.6' })
    t.equal(r.statusCode, 400)
    t.equal(handled(), 0)
    t.equal(r.headers['x-ratelimit-limit'], '100')
  })
})

t.test('stand-in login route without Redis: the login limits hold in process', async (t) => {
  const { app } = await standInApp(t, {})
  const results = []
  for (let i = 0; i < 6; i++) results.push((await login(app, 'solo@example.com', RIGHT)).statusCode)
  t.same(results, [200, 200, 200, 200, 200, 429])
})

t.test('the real login route', skipUnlessRedis(), async (t) => {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  const config = loadConfig({ ...TEST_ENV, DATABASE_PATH: ':memory:', LOG_LEVEL: 'warn', REDIS_URL: redis.url })
  const app = await buildApp(config, { logStream: new LogCapture() })
  await app.ready()
  t.teardown(() => app.close())
  t.ok(app.hasRoute({ method: 'POST', url: '/api/auth/login' }), 'the app registers the login route')
  const email = 'real-user@example.com'
  const password = 'a-long-enough-password'
  const registered = await app.inject({ method: 'POST', url: '/api/auth/register', payload: { email, password } })
  t.equal(registered.statusCode, 201)

  const results = []
  for (let i = 0; i < 5; i++) results.push((await login(app, email, i % 2 === 0 ? 'wrong-password' : password)).statusCode)
  t.same(results, [401, 200, 401, 200, 401], 'five attempts, right and wrong, all answered')
  const sixth = await login(app, email, password)
  t.equal(sixth.statusCode, 429, 'the 6th attempt is refused even with the right password')
  t.same(sixth.json(), { statusCode: 429, error: 'Too Many Requests', message: 'Too many login attempts, retry in 15 minutes' })
  t.ok(Number(sixth.headers['retry-after']) > 0)
  t.equal((await login(app, email, password, '203.0.113.50')).statusCode, 200, 'from another address the owner gets in')
})

t.test('an email sent as a one-element array is counted as the email it is validated as', skipUnlessRedis(), async (t) => {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  const config = loadConfig({ ...TEST_ENV, LOG_LEVEL: 'warn', REDIS_URL: redis.url, LOGIN_RATE_LIMIT_MAX: '3', LOGIN_EMAIL_RATE_LIMIT_MAX: '5' })
  const app = await buildApp(config, { logStream: new LogCapture() })
  await app.ready()
  t.teardown(() => app.close())
  const email = 'array-victim@example.com'
  const password = 'a-long-enough-password'
  t.equal((await app.inject({ method: 'POST', url: '/api/auth/register', payload: { email, password } })).statusCode, 201)
  const attempt = (payload: object, remoteAddress: string): Promise<number> =>
    app.inject({ method: 'POST', url: '/api/auth/login', payload, remoteAddress }).then((res) => res.statusCode)

  // The validator unwraps ["x"] into "x" (coerceTypes: 'array'), so the login itself works that way.
  t.equal(await attempt({ email: [email], password }, '198.51.100.7'), 200, 'the array form logs in')
  const wrong = []
  for (let i = 0; i < 2; i++) wrong.push(await attempt({ email: [email], password: `wrong-guess-${i}` }, '198.51.100.7'))
  t.same(wrong, [401, 401])
  t.equal(await attempt({ email, password }, '198.51.100.7'), 429, 'the string form shares the address + email budget')
  t.equal(await attempt({ email: [email], password }, '198.51.100.7'), 429, 'and so does the array form, even with the right password')
  // Per email, across addresses: 5 attempts in all, whatever the form (the two refused above
  // were stopped by the address + email limit before this one counted them).
  t.equal(await attempt({ email: [email], password: 'wrong-guess-x' }, '198.51.100.8'), 401)
  t.equal(await attempt({ email: [email], password: 'wrong-guess-y' }, '198.51.100.8'), 401)
  t.equal(await attempt({ email: [email], password }, '198.51.100.9'), 429, 'the per-email limit counts the array form too')
})

t.test('registration: every attempt counts per address, so probing for accounts and bulk sign-ups stop', async (t) => {
  const config = loadConfig({ ...TEST_ENV, LOG_LEVEL: 'warn', REGISTER_RATE_LIMIT_MAX: '3' })
  const app = await buildApp(config, { logStream: new LogCapture() })
  await app.ready()
  t.teardown(() => app.close())
  const register = (email: string, remoteAddress = '198.51.100.40', password = 'a-long-enough-password'): Promise<LightMyRequestResponse> =>
    app.inject({ method: 'POST', url: '/api/auth/register', payload: { email, password }, remoteAddress })

  const first = await register('first@example.com')
  t.equal(first.statusCode, 201)
  t.equal(first.headers['x-ratelimit-limit'], '3', 'the tighter limit is the one shown')
  t.equal(first.headers['x-ratelimit-remaining'], '2')
  t.equal((await register('first@example.com')).statusCode, 409, 'an existing account')
  t.equal((await register('bad', '198.51.100.40', 'short')).statusCode, 400, 'a malformed attempt counts too')
  const fourth = await register('other@example.com')
  t.equal(fourth.statusCode, 429)
  t.same(fourth.json(), { statusCode: 429, error: 'Too Many Requests', message: 'Too many registrations from this address, retry in 60 minutes' })
  t.ok(Number(fourth.headers['retry-after']) > 3500)
  t.equal((await register('first@example.com')).statusCode, 429, 'nor can it probe for accounts')
  t.equal((await register('other@example.com', '203.0.113.60')).statusCode, 201, 'another address registers')
  t.equal(app.rateLimiter.stats().limited.register, 2)
  t.match((await app.inject('/metrics')).body, /^aic_rate_limit_rejections_total\{limit="register"\} 2$/m)
})
