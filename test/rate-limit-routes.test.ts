/**
 * A route gets its limit, its exemptions and (under /api/debug) the admin guard from its
 * own options and place alone: new routes registered on the built app, no list to edit in
 * any plugin. `config: { rateLimit: {...} }` is a limit of its own, `rateLimit: false` no
 * limit, `shed: false` no load shedding; a route inside the debug prefix plugin is admin only
 * and under the admin limit.
 */
import t from 'tap'
import type { FastifyInstance } from 'fastify'
import { buildApp } from '../src/app.js'
import { loadConfig } from '../src/config.js'
import debugRoutes from '../routes/debug/index.js'
import { LogCapture, TEST_ENV, waitFor, type TapTest } from './helper.js'
import { AUTH_ENV, adminLogin, bearer, registerAndLogin } from './auth-helpers.js'

async function appWith (t: TapTest, env: Record<string, string>, routes: (app: FastifyInstance) => void | Promise<void>): Promise<FastifyInstance> {
  const config = loadConfig({ ...TEST_ENV, ...AUTH_ENV, LOG_LEVEL: 'warn', ...env })
  const app = await buildApp(config, { logStream: new LogCapture() })
  await routes(app)
  await app.ready()
  t.teardown(() => app.close())
  return app
}

t.test('a new route with only config.rateLimit is limited by it; rateLimit: false is not limited', async (t) => {
  const app = await appWith(t, { RATE_LIMIT_MAX: '100' }, (app) => {
    app.get('/api/test/own-limit', { config: { rateLimit: { max: 2, timeWindow: 60_000 } } }, async () => ({ ok: true }))
    app.get('/api/test/unlimited', { config: { rateLimit: false } }, async () => ({ ok: true }))
    app.get('/api/test/global', async () => ({ ok: true }))
  })
  const own = []
  for (let i = 0; i < 3; i++) own.push(await app.inject({ url: '/api/test/own-limit', remoteAddress: '198.51.100.1' }))
  t.same(own.map((r) => r.statusCode), [200, 200, 429])
  t.same(own.map((r) => r.headers['x-ratelimit-limit']), ['2', '2', '2'])
  t.same(own.map((r) => r.headers['x-ratelimit-remaining']), ['1', '0', '0'])
  const refused = own[2]
  t.match(refused?.json(), { statusCode: 429, error: 'Too Many Requests', message: /^Rate limit exceeded, retry in (1 minute|\d+ seconds)$/ })
  t.match(refused?.headers['retry-after'], /^\d+$/)
  t.equal(app.rateLimiter.stats().limited.global, 1, 'counted for the metrics')

  const global = await app.inject({ url: '/api/test/global', remoteAddress: '198.51.100.1' })
  t.equal(global.headers['x-ratelimit-limit'], '100', 'a route without options has the global limit')
  t.equal(global.headers['x-ratelimit-remaining'], '99', 'in its own bucket')

  const free = await Promise.all(Array.from({ length: 5 }, () => app.inject({ url: '/api/test/unlimited', remoteAddress: '198.51.100.1' })))
  t.same(free.map((r) => r.statusCode), [200, 200, 200, 200, 200])
  t.notOk('x-ratelimit-limit' in (free[0]?.headers ?? {}), 'no limit headers')
})

t.test('a new route with rateLimiter.limit({...}) gets its key, its message and its metric', async (t) => {
  const app = await appWith(t, {}, (app) => {
    app.post('/api/test/export', {
      config: {
        rateLimit: app.rateLimiter.limit({ name: 'register', max: 1, timeWindow: 3_600_000, key: (request) => `export:${request.ip}`, message: 'Too many exports' }),
      },
    }, async () => ({ ok: true }))
  })
  t.equal((await app.inject({ method: 'POST', url: '/api/test/export', remoteAddress: '198.51.100.2' })).statusCode, 200)
  const refused = await app.inject({ method: 'POST', url: '/api/test/export', remoteAddress: '198.51.100.2' })
  t.same(refused.json(), { statusCode: 429, error: 'Too Many Requests', message: 'Too many exports, retry in 60 minutes' })
  t.equal((await app.inject({ method: 'POST', url: '/api/test/export', remoteAddress: '198.51.100.3' })).statusCode, 200, 'keyed as the route says')
  t.equal(app.rateLimiter.stats().limited.register, 1)
})

t.test('a new route inside the debug prefix plugin is admin only and under the admin limit', async (t) => {
  const app = await appWith(t, { ADMIN_RATE_LIMIT_MAX: '4', RATE_LIMIT_MAX: '1000', SCHEDULER_ENABLED: 'false' }, async (app) => {
    // The debug plugin as the app registers it, with one more route in its scope.
    await app.register(async (scope) => {
      await debugRoutes(scope, {})
      scope.get('/new-view', async () => ({ secret: 'admin only' }))
    }, { prefix: '/api/debug-extra' })
  })
  const user = await registerAndLogin(app, 'plain-user@example.com')
  const admin = await adminLogin(app)
  const anonymous = await app.inject({ url: '/api/debug-extra/new-view', remoteAddress: '198.51.100.9' })
  t.equal(anonymous.statusCode, 401)
  t.equal(anonymous.headers['x-ratelimit-limit'], '4', 'the admin limit, counted before authentication')
  t.equal((await app.inject({ url: '/api/debug-extra/new-view', headers: bearer(user.token) })).statusCode, 403)
  const ok = await app.inject({ url: '/api/debug-extra/new-view', headers: bearer(admin.token) })
  t.equal(ok.statusCode, 200)
  t.same(ok.json(), { secret: 'admin only' })
  t.equal(ok.headers['x-ratelimit-limit'], '4')
  const codes = []
  for (let i = 0; i < 4; i++) codes.push((await app.inject({ url: '/api/debug-extra/new-view', headers: bearer(admin.token) })).statusCode)
  t.same(codes, [200, 200, 200, 429], 'the admin counts against the admin limit (per user)')
  t.equal(app.rateLimiter.stats().limited.admin, 1)
})

t.test('shed: false on a new route: answered under pressure while the others are shed', async (t) => {
  const app = await appWith(t, { MAX_HEAP_USED_BYTES: '1', PRESSURE_SAMPLE_INTERVAL_MS: '50' }, (app) => {
    app.get('/api/test/probe', { config: { shed: false, rateLimit: false } }, async () => ({ ok: true }))
    app.get('/api/test/ordinary', async () => ({ ok: true }))
  })
  await waitFor(() => app.isUnderPressure(), 5000)
  t.equal((await app.inject('/api/test/ordinary')).statusCode, 503, 'an ordinary route is shed')
  t.equal((await app.inject('/api/test/probe')).statusCode, 200, 'the route with shed: false is answered')
})
