/**
 * CORS (plugins/cors.ts): closed by default; with CORS_ORIGINS, the listed origins get the
 * CORS headers with credentials, others none; a preflight is a 204 (not a 404); and the
 * answers a browser most needs to read, a 429 and a shed 503, carry the headers too.
 */
import t from 'tap'
import type { LightMyRequestResponse } from 'fastify'
import { build, waitFor, type TapTest } from './helper.js'
import { AUTH_ENV, bearer, registerAndLogin } from './auth-helpers.js'
import { corsOriginsProblem } from '../src/cors-origins.js'

const APP = 'https://app.example.com'
const DEV = 'http://localhost:5173'
const ORIGINS = `${APP}, ${DEV}/`

function corsHeaders (res: LightMyRequestResponse): string[] {
  return Object.keys(res.headers).filter((h) => h.startsWith('access-control-'))
}

function assertCors (t: TapTest, res: LightMyRequestResponse, origin: string, what: string): void {
  t.equal(res.headers['access-control-allow-origin'], origin, `${what}: the origin is reflected`)
  t.equal(res.headers['access-control-allow-credentials'], 'true', `${what}: credentials allowed`)
  t.match(String(res.headers.vary), /Origin/i, `${what}: Vary: Origin`)
  const exposed = String(res.headers['access-control-expose-headers']).split(/,\s*/).map((h) => h.toLowerCase())
  for (const h of ['retry-after', 'x-cache', 'age', 'x-ratelimit-limit', 'x-ratelimit-remaining', 'x-ratelimit-reset']) {
    t.ok(exposed.includes(h), `${what}: ${h} is exposed`)
  }
}

t.test('closed by default: no CORS header for any origin, and a preflight is a 404', async (t) => {
  const { app } = await build(t, { LOG_LEVEL: 'warn' })
  const res = await app.inject({ url: '/api/health', headers: { origin: APP } })
  t.equal(res.statusCode, 200)
  t.same(corsHeaders(res), [], 'not one access-control-* header')
  const preflight = await app.inject({ method: 'OPTIONS', url: '/api/portfolio', headers: { origin: APP, 'access-control-request-method': 'GET' } })
  t.equal(preflight.statusCode, 404)
  t.same(corsHeaders(preflight), [])
})

t.test('an allowed origin gets the headers with credentials; another origin gets none', async (t) => {
  const { app } = await build(t, { ...AUTH_ENV, CORS_ORIGINS: ORIGINS, LOG_LEVEL: 'warn' })
  const ok = await app.inject({ url: '/api/stocks/AAPL', headers: { origin: APP } })
  t.equal(ok.statusCode, 200)
  assertCors(t, ok, APP, 'GET from the app')
  const dev = await app.inject({ url: '/api/health', headers: { origin: DEV } })
  assertCors(t, dev, DEV, 'the second origin (listed with a trailing slash)')

  for (const origin of ['https://evil.example.com', 'https://app.example.com.evil.net', 'http://app.example.com', 'null']) {
    const refused = await app.inject({ url: '/api/health', headers: { origin } })
    t.equal(refused.statusCode, 200, `${origin}: the answer itself is unchanged`)
    t.same(corsHeaders(refused), [], `${origin}: no access-control-* header (the browser blocks the read)`)
  }
  t.same(corsHeaders(await app.inject('/api/health')), [], 'no Origin header: none either')

  const { token } = await registerAndLogin(app, 'cors@example.com')
  const me = await app.inject({ url: '/api/auth/me', headers: { origin: APP, ...bearer(token) } })
  t.equal(me.statusCode, 200)
  assertCors(t, me, APP, 'an authenticated call')
  const unauthorized = await app.inject({ url: '/api/auth/me', headers: { origin: APP } })
  t.equal(unauthorized.statusCode, 401)
  assertCors(t, unauthorized, APP, 'a 401, which the front end must read to log in again')
})

t.test('a preflight from an allowed origin is a 204 with the allowed methods and headers', async (t) => {
  const { app } = await build(t, { ...AUTH_ENV, CORS_ORIGINS: ORIGINS, RATE_LIMIT_MAX: '1', LOG_LEVEL: 'warn' })
  const preflight = await app.inject({
    method: 'OPTIONS',
    url: '/api/portfolio/transactions',
    headers: { origin: APP, 'access-control-request-method': 'POST', 'access-control-request-headers': 'authorization, content-type, idempotency-key' },
  })
  t.equal(preflight.statusCode, 204)
  t.equal(preflight.headers['content-length'], '0')
  assertCors(t, preflight, APP, 'the preflight')
  t.match(String(preflight.headers['access-control-allow-methods']), /POST/)
  t.match(String(preflight.headers['access-control-allow-methods']), /DELETE/)
  const allowed = String(preflight.headers['access-control-allow-headers']).split(/,\s*/).map((h) => h.toLowerCase())
  t.same(allowed.sort(), ['authorization', 'cache-control', 'content-type', 'idempotency-key'])
  t.equal(preflight.headers['access-control-max-age'], '600')

  const again = await app.inject({ method: 'OPTIONS', url: '/api/stocks/AAPL', headers: { origin: APP, 'access-control-request-method': 'GET' } })
  t.equal(again.statusCode, 204, 'preflights do not use up the rate limit (RATE_LIMIT_MAX=1)')

  const refused = await app.inject({ method: 'OPTIONS', url: '/api/portfolio', headers: { origin: 'https://evil.example.com', 'access-control-request-method': 'GET' } })
  t.equal(refused.statusCode, 404, 'a preflight from another origin: the usual 404')
  t.same(corsHeaders(refused), [])
})

t.test('a 429 carries the CORS headers (a route, and an unknown URL)', async (t) => {
  const { app } = await build(t, { CORS_ORIGINS: ORIGINS, RATE_LIMIT_MAX: '1', LOG_LEVEL: 'warn' })
  t.equal((await app.inject({ url: '/api/stocks/AAPL', headers: { origin: APP } })).statusCode, 200)
  const limited = await app.inject({ url: '/api/stocks/AAPL', headers: { origin: APP } })
  t.equal(limited.statusCode, 429)
  t.ok(Number(limited.headers['retry-after']) > 0)
  assertCors(t, limited, APP, 'the 429')
  const unknown = await app.inject({ url: '/no/such/route', headers: { origin: APP } })
  t.equal(unknown.statusCode, 429, 'unknown URLs count against the same limit')
  assertCors(t, unknown, APP, 'the 404 handler\'s 429')
})

t.test('a shed 503 carries the CORS headers', async (t) => {
  const { app } = await build(t, { CORS_ORIGINS: ORIGINS, MAX_HEAP_USED_BYTES: '1', MAX_EVENT_LOOP_DELAY_MS: '0', PRESSURE_SAMPLE_INTERVAL_MS: '50', LOG_LEVEL: 'warn' })
  await waitFor(() => app.isUnderPressure(), 5000)
  const shed = await app.inject({ url: '/api/stocks/AAPL', headers: { origin: APP } })
  t.equal(shed.statusCode, 503)
  t.ok(Number(shed.headers['retry-after']) > 0)
  assertCors(t, shed, APP, 'the shed 503')
  t.same(corsHeaders(await app.inject({ url: '/api/stocks/AAPL', headers: { origin: 'https://evil.example.com' } })), [], 'and none for another origin')
})

t.test('CORS_ORIGINS is validated: exact origins only', async (t) => {
  t.equal(corsOriginsProblem('https://a.example.com,http://localhost:3000'), null)
  t.match(corsOriginsProblem('*'), /wildcards are not allowed/)
  t.match(corsOriginsProblem('https://*.example.com'), /wildcards/)
  t.match(corsOriginsProblem('https://a.example.com/app'), /no path/)
  t.match(corsOriginsProblem('a.example.com'), /not an origin|http/)
  t.match(corsOriginsProblem('ftp://a.example.com'), /http/)
  t.match(corsOriginsProblem(' , '), /empty/)
})
