/**
 * Login brute force: failed attempts are limited per address + email (LOGIN_RATE_LIMIT_MAX
 * per 15 minutes) and per email (LOGIN_EMAIL_RATE_LIMIT_MAX per hour). Each attempt counts
 * when it arrives, before the handler (so the right password past the limit is still a 429,
 * and parallel guesses cannot overrun it); a successful login resets both counts, so good
 * logins in a row are never refused.
 * First on a stand-in route (the real app, plus a route that declares the login limits in
 * its own config and accepts RIGHT for any email), then on the real login route.
 */
import t from 'tap'
import type { FastifyInstance, LightMyRequestResponse } from 'fastify'
import { Type } from 'typebox'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import { buildApp } from '../src/app.js'
import { loadConfig } from '../src/config.js'
import { loginAttemptLimits } from '../routes/auth.js'
import { LogCapture, TEST_ENV, type TapTest } from './helper.js'
import { skipUnlessRedis, startRedis } from './helpers/redis-server.js'

const RIGHT = 'correct horse battery'
const STAND_IN = '/api/test/login'

interface StandIn { app: FastifyInstance, handled: () => number }

/** The whole app plus a login stand-in with the login limits in its config. */
async function standInApp (t: TapTest, env: Record<string, string>): Promise<StandIn> {
  const config = loadConfig({ ...TEST_ENV, LOG_LEVEL: 'warn', ...env })
  const app = await buildApp(config, { logStream: new LogCapture() })
  let handled = 0
  app.withTypeProvider<TypeBoxTypeProvider>().post(STAND_IN, {
    config: { attemptLimits: loginAttemptLimits(config) },
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

function login (app: FastifyInstance, email: string, password: string, remoteAddress = '198.51.100.1', url = STAND_IN): Promise<LightMyRequestResponse> {
  return app.inject({ method: 'POST', url, payload: { email, password }, remoteAddress })
}

async function statuses (app: FastifyInstance, n: number, email: string, password: string | ((i: number) => string), address: string | ((i: number) => string)): Promise<number[]> {
  const out: number[] = []
  for (let i = 0; i < n; i++) {
    out.push((await login(app, email, typeof password === 'string' ? password : password(i), typeof address === 'string' ? address : address(i))).statusCode)
  }
  return out
}

t.test('stand-in login route', skipUnlessRedis(), async (t) => {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  const env = { REDIS_URL: redis.url, LOGIN_RATE_LIMIT_MAX: '5', LOGIN_EMAIL_RATE_LIMIT_MAX: '8' }

  t.test('the 6th failed attempt within 15 minutes is a 429, even with the right password', async (t) => {
    const { app, handled } = await standInApp(t, env)
    t.same(await statuses(app, 5, 'victim@example.com', (i) => `guess-${i}`, '198.51.100.1'), [401, 401, 401, 401, 401])
    const sixth = await login(app, 'victim@example.com', RIGHT)
    t.equal(sixth.statusCode, 429)
    t.same(sixth.json(), { statusCode: 429, error: 'Too Many Requests', message: 'Too many login attempts, retry in 15 minutes' })
    const retryAfter = Number(sixth.headers['retry-after'])
    t.ok(retryAfter > 800 && retryAfter <= 900, `Retry-After ${retryAfter} s`)
    t.equal(sixth.headers['x-ratelimit-limit'], '5')
    t.equal(sixth.headers['x-ratelimit-remaining'], '0')
    t.equal(handled(), 5, 'the handler never saw the 6th attempt')

    const other = await login(app, 'someone-else@example.com', RIGHT)
    t.equal(other.statusCode, 200, 'another email from the same address is another pair')
    const elsewhere = await login(app, 'victim@example.com', RIGHT, '203.0.113.9')
    t.equal(elsewhere.statusCode, 200, 'the owner from another address can still log in')
    // Pair (new address): 1 of 5 used. Email: 5 failures counted before (the refused 6th was not), now 6 of 8.
    t.equal(elsewhere.headers['x-ratelimit-limit'], '8', 'the headers show the tightest limit that applies')
    t.equal(elsewhere.headers['x-ratelimit-remaining'], '2')
    t.equal(await redis.command('--scan', '--pattern', 'rate_limit:login-email:*'), '', 'the success reset the per-email count')
    t.equal((await login(app, 'victim@example.com', RIGHT)).statusCode, 429, 'but not the pair of the address that failed')
  })

  t.test('good logins in a row are never refused', async (t) => {
    const { app } = await standInApp(t, env)
    t.same(await statuses(app, 10, 'ok@example.com', RIGHT, '198.51.100.2'), Array(10).fill(200), '10 good logins, twice the limit: all 200')
    const mixed = []
    for (let round = 0; round < 3; round++) {
      mixed.push(...await statuses(app, 4, 'ok@example.com', 'typo-typo', '198.51.100.2'))
      mixed.push((await login(app, 'ok@example.com', RIGHT, '198.51.100.2')).statusCode)
    }
    t.same(mixed, [401, 401, 401, 401, 200, 401, 401, 401, 401, 200, 401, 401, 401, 401, 200], 'a success forgives the failures before it')
  })

  t.test('failures in parallel cannot overrun the limit: each attempt counts as it arrives', async (t) => {
    const { app, handled } = await standInApp(t, env)
    const all = await Promise.all(Array.from({ length: 12 }, (_v, i) => login(app, 'parallel@example.com', `guess-${i}`, '198.51.100.12')))
    const codes = all.map((r) => r.statusCode)
    t.equal(codes.filter((c) => c === 401).length, 5, 'five attempts reached the password check')
    t.equal(codes.filter((c) => c === 429).length, 7)
    t.equal(handled(), 5)
  })

  t.test('the per-email limit stops a guess spread over many addresses, and then refuses the owner too', async (t) => {
    const { app } = await standInApp(t, { ...env, LOGIN_EMAIL_RATE_LIMIT_MAX: '3' })
    t.same(await statuses(app, 5, 'Target@Example.com ', 'nope-nope', (i) => `203.0.113.${20 + i}`), [401, 401, 401, 429, 429])
    const last = await login(app, 'target@example.com', RIGHT, '203.0.113.99')
    t.equal(last.statusCode, 429, 'the email is normalised: same account, same limit; a good password from a fresh address is refused while over')
    t.match(last.json().message, /^Too many login attempts for this account, retry in (59|60) minutes$/)
    t.ok(Number(last.headers['retry-after']) > 3000)
    t.equal(app.rateLimiter.stats().limited.loginEmail, 3)
  })

  t.test('a success from another address resets the per-email count, not the failing address\'s', async (t) => {
    const { app } = await standInApp(t, { ...env, LOGIN_RATE_LIMIT_MAX: '2', LOGIN_EMAIL_RATE_LIMIT_MAX: '4' })
    t.same(await statuses(app, 10, 'owner@example.com', 'wrong-pass', '198.51.100.3'), [401, 401, 429, 429, 429, 429, 429, 429, 429, 429])
    // The attacker's address used 2 of the account's 4 (refusals by the pair limit are not counted per email).
    t.equal((await login(app, 'owner@example.com', RIGHT, '198.51.100.4')).statusCode, 200)
    t.same(await statuses(app, 4, 'owner@example.com', 'wrong-again', (i) => `198.51.100.${50 + i}`), [401, 401, 401, 401], 'the per-email budget is whole again')
    t.equal((await login(app, 'owner@example.com', RIGHT, '198.51.100.60')).statusCode, 429, 'and used up again')
    t.equal((await login(app, 'owner@example.com', RIGHT, '198.51.100.3')).statusCode, 429, 'the attacker\'s pair is still over')
  })

  t.test('keys hold a hash of the email, never the email itself', async (t) => {
    const { app } = await standInApp(t, env)
    await login(app, 'hashed@example.com', 'wrong-password', '198.51.100.5')
    const keys = (await redis.command('--scan', '--pattern', 'rate_limit:login*')).split('\n')
    t.ok(keys.length >= 2)
    t.notOk(keys.some((k) => k.includes('@')), 'no email in any key')
    for (const key of keys) t.match(key, /^rate_limit:login:ip:[0-9.]+:[A-Za-z0-9_-]{22}$|^rate_limit:login-email:[A-Za-z0-9_-]{22}$/)
  })

  t.test('a body without an email is left to validation (400), and counted only by the global limit', async (t) => {
    const { app, handled } = await standInApp(t, { ...env, RATE_LIMIT_MAX: '100' })
    const r = await app.inject({ method: 'POST', url: STAND_IN, payload: { password: 'x' }, remoteAddress: '198.51.100.6' })
    t.equal(r.statusCode, 400)
    t.equal(handled(), 0)
    t.equal(r.headers['x-ratelimit-limit'], '100')
  })
})

t.test('stand-in login route without Redis: the login limits hold in process', async (t) => {
  const { app } = await standInApp(t, {})
  t.same(await statuses(app, 6, 'solo@example.com', 'wrong-pass', '198.51.100.1'), [401, 401, 401, 401, 401, 429])
  t.same(await statuses(app, 8, 'solo-ok@example.com', RIGHT, '198.51.100.1'), Array(8).fill(200), 'good logins are never refused')
})

t.test('the real login route', skipUnlessRedis(), async (t) => {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  const config = loadConfig({ ...TEST_ENV, LOG_LEVEL: 'warn', REDIS_URL: redis.url })
  const app = await buildApp(config, { logStream: new LogCapture() })
  await app.ready()
  t.teardown(() => app.close())
  const email = 'real-user@example.com'
  const password = 'a-long-enough-password'
  const registered = await app.inject({ method: 'POST', url: '/api/auth/register', payload: { email, password } })
  t.equal(registered.statusCode, 201)
  const realLogin = (pw: string, address = '198.51.100.1'): Promise<LightMyRequestResponse> => login(app, email, pw, address, '/api/auth/login')

  const good = []
  for (let i = 0; i < 6; i++) good.push((await realLogin(password)).statusCode)
  t.same(good, [200, 200, 200, 200, 200, 200], 'six good logins in a row (limit 5): all answered')
  const results = []
  for (let i = 0; i < 5; i++) results.push((await realLogin(i % 2 === 0 ? 'wrong-password' : password)).statusCode)
  t.same(results, [401, 200, 401, 200, 401], 'right and wrong, all answered')
  const wrong = []
  for (let i = 0; i < 5; i++) wrong.push((await realLogin('wrong-password')).statusCode)
  t.same(wrong, [401, 401, 401, 401, 429], 'the last success forgave one failure: four more, then the limit')
  const refused = await realLogin(password)
  t.equal(refused.statusCode, 429, 'over the limit, the right password is refused too')
  t.same(refused.json(), { statusCode: 429, error: 'Too Many Requests', message: 'Too many login attempts, retry in 15 minutes' })
  t.ok(Number(refused.headers['retry-after']) > 0)
  t.equal((await realLogin(password, '203.0.113.50')).statusCode, 200, 'from another address the owner gets in')
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

  // JSON bodies are not coerced: ["x"] is a 400, never a login. It still counts as an attempt
  // on "x", so the array form cannot be used to guess outside the budget.
  const arrays = []
  for (let i = 0; i < 3; i++) arrays.push(await attempt({ email: [email], password: i === 0 ? password : `wrong-guess-${i}` }, '198.51.100.7'))
  t.same(arrays, [400, 400, 400], 'the array form is refused by validation, even with the right password')
  t.equal(await attempt({ email, password }, '198.51.100.7'), 429, 'and it used up the address + email budget of the string form')
  t.equal(await attempt({ email: [email], password }, '198.51.100.7'), 429, 'the array form is refused by the limit too once over it')
  // Per email, across addresses: 5 attempts in all, whatever the form (the two refused above
  // were stopped by the address + email limit before the per-email one counted them).
  t.equal(await attempt({ email: [email], password: 'wrong-guess-x' }, '198.51.100.8'), 400)
  t.equal(await attempt({ email: [email], password: 'wrong-guess-y' }, '198.51.100.8'), 400)
  t.equal(await attempt({ email, password }, '198.51.100.9'), 429, 'the per-email limit counts the array form too')
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
  t.equal(first.headers['x-ratelimit-limit'], '3', 'the route\'s own limit is the one shown')
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
