/**
 * GET /docs/json is a valid OpenAPI document (checked by @seriousme/openapi-schema-validator)
 * that lists every route Fastify registered (read from the router itself, printRoutes), each
 * with its responses; routes that answer 401 without a token declare the bearer scheme;
 * the implicit 429/503 answers are documented where they can happen. GET /docs serves the UI.
 */
import t from 'tap'
import type { FastifyInstance } from 'fastify'
import { Validator } from '@seriousme/openapi-schema-validator'
import { build } from './helper.js'
import { AUTH_ENV } from './auth-helpers.js'

interface Operation {
  responses?: Record<string, { description?: string, content?: Record<string, { schema?: unknown }> }>
  security?: Array<Record<string, string[]>>
  parameters?: unknown[]
}
interface OpenApiDoc {
  openapi: string
  info: { title: string, version: string }
  paths: Record<string, Record<string, Operation>>
  components: { securitySchemes?: Record<string, Record<string, string>> }
}

/**
 * Every (method, path) in Fastify's router, from `printRoutes({ commonPrefix: false })`:
 * a tree whose lines are `<indent>├── <segment> (GET, HEAD)`, each segment continuing its
 * parent's path.
 */
function routesOf (app: FastifyInstance): Array<{ method: string, url: string }> {
  const routes: Array<{ method: string, url: string }> = []
  const stack: string[] = []
  for (const line of app.printRoutes({ commonPrefix: false }).split('\n')) {
    const m = /^((?:[│ ] {3})*)[├└]── (.+?)(?: \(([A-Z, ]+)\))?$/.exec(line)
    if (!m) continue
    const depth = (m[1] ?? '').length / 4
    stack.length = depth
    const url = (stack[depth - 1] ?? '') + (m[2] ?? '')
    stack[depth] = url
    for (const method of (m[3] ?? '').split(',').map((s) => s.trim()).filter(Boolean)) routes.push({ method, url })
  }
  return routes
}

const toOpenApiPath = (url: string): string => url.replace(/:([A-Za-z0-9_]+)/g, '{$1}')

async function docOf (app: FastifyInstance): Promise<OpenApiDoc> {
  const res = await app.inject('/docs/json')
  if (res.statusCode !== 200) throw new Error(`/docs/json answered ${res.statusCode}`)
  return res.json<OpenApiDoc>()
}

t.test('/docs/json is a valid OpenAPI 3 document listing every registered route with its responses', async (t) => {
  const { app } = await build(t, { ...AUTH_ENV, LOG_LEVEL: 'warn' })
  const doc = await docOf(app)

  const validator = new Validator()
  const result = await validator.validate(doc as unknown as Parameters<Validator['validate']>[0])
  t.equal(result.valid, true, `valid OpenAPI: ${JSON.stringify(result.errors ?? null)}`)
  t.match(doc.openapi, /^3\.1\./)
  t.equal(doc.info.title, 'AI Capital API')

  // `/` only redirects to the UI.
  const registered = routesOf(app).filter((r) => r.method !== 'HEAD' && r.url !== '/' && r.url !== '/docs' && !r.url.startsWith('/docs/'))
  t.ok(registered.length >= 19, `the router lists the service's routes (${registered.length})`)
  for (const expected of ['GET /api/health/live', 'GET /api/stocks/:ticker', 'POST /api/portfolio/transactions', 'GET /metrics', 'DELETE /api/portfolio/positions/:ticker']) {
    t.ok(registered.some((r) => `${r.method} ${r.url}` === expected), `parsed from the router: ${expected}`)
  }

  const documented = new Set<string>()
  for (const [path, item] of Object.entries(doc.paths)) {
    for (const method of Object.keys(item)) documented.add(`${method.toUpperCase()} ${path}`)
  }
  for (const route of registered) {
    const key = `${route.method} ${toOpenApiPath(route.url)}`
    t.ok(documented.has(key), `documented: ${key}`)
    const op = doc.paths[toOpenApiPath(route.url)]?.[route.method.toLowerCase()]
    const responses = op?.responses ?? {}
    const success = Object.entries(responses).filter(([code]) => /^2\d\d$/.test(code))
    t.ok(success.length > 0, `${key}: a 2xx response is declared`)
    for (const [code, response] of success) {
      const hasBody = response.content !== undefined && Object.values(response.content).every((c) => c.schema !== undefined)
      t.ok(hasBody || code === '204', `${key} ${code}: has a schema (not the generator's empty default)`)
    }
  }
  t.equal(documented.size, registered.length, 'and nothing else is documented')
})

t.test('the bearer scheme is declared, and every route that answers 401 without a token says so', async (t) => {
  const { app } = await build(t, { ...AUTH_ENV, METRICS_TOKEN: 'metrics-token-0123456789abcdef', LOG_LEVEL: 'warn' })
  const doc = await docOf(app)
  t.same(doc.components.securitySchemes?.bearerAuth, {
    type: 'http', scheme: 'bearer', bearerFormat: 'JWT', description: doc.components.securitySchemes?.bearerAuth?.description,
  })
  t.equal(doc.components.securitySchemes?.metricsToken?.scheme, 'bearer')

  let guarded = 0
  for (const route of routesOf(app).filter((r) => r.method !== 'HEAD' && !r.url.startsWith('/docs'))) {
    const url = route.url.replace(/:[A-Za-z0-9_]+/g, 'AAPL')
    const res = await app.inject({ method: route.method as 'GET', url, ...(route.method === 'POST' ? { payload: {} } : {}) })
    const op = doc.paths[toOpenApiPath(route.url)]?.[route.method.toLowerCase()]
    const schemes = (op?.security ?? []).flatMap((s) => Object.keys(s))
    if (res.statusCode === 401) {
      guarded++
      t.ok(schemes.length > 0, `${route.method} ${route.url} answers 401 without a token and declares ${schemes.join(', ')}`)
      t.ok(op?.responses?.['401'] !== undefined, `${route.method} ${route.url} documents its 401`)
      for (const s of schemes) t.ok(doc.components.securitySchemes?.[s] !== undefined, `scheme ${s} is defined`)
    } else {
      t.same(schemes, [], `${route.method} ${route.url} (${res.statusCode} without a token) declares no security`)
    }
  }
  t.ok(guarded >= 10, `${guarded} guarded routes checked`)
})

t.test('implicit answers are documented: 429 where rate limited, 503 where load shedding applies', async (t) => {
  const { app } = await build(t, { ...AUTH_ENV, MAX_EVENT_LOOP_DELAY_MS: '1000', LOG_LEVEL: 'warn' })
  const doc = await docOf(app)
  t.ok(doc.paths['/api/stocks/{ticker}']?.get?.responses?.['429'], 'a rate-limited route')
  t.ok(doc.paths['/api/stocks/{ticker}']?.get?.responses?.['503'], 'a route that may be shed')
  t.notOk(doc.paths['/api/health/live']?.get?.responses?.['429'], 'probes are not rate limited')
  // Its only 503 is MEMORY_STUCK (a probe answer: `status`), never the shed error body.
  t.notOk(JSON.stringify(doc.paths['/api/health/live']?.get?.responses?.['503'] ?? {}).includes('statusCode'), 'nor shed')
  t.notOk(doc.paths['/metrics']?.get?.responses?.['429'])

  const { app: unbounded } = await build(t, { ...AUTH_ENV, MAX_EVENT_LOOP_DELAY_MS: '0', LOG_LEVEL: 'warn' })
  const plain = await docOf(unbounded)
  t.notOk(plain.paths['/api/health']?.get?.responses?.['503'], 'no 503 documented when no bound is set')
  t.ok(plain.paths['/api/portfolio']?.get?.responses?.['503'], 'unless the route declares it itself')
})

t.test('GET /docs serves Swagger UI; DOCS_ENABLED=false removes both', async (t) => {
  const { app } = await build(t, { LOG_LEVEL: 'warn' })
  const ui = await app.inject('/docs')
  t.equal(ui.statusCode, 200)
  t.match(ui.headers['content-type'], /text\/html/)
  t.match(ui.body, /swagger/i)

  const csp = String(ui.headers['content-security-policy'])
  t.match(csp, /script-src 'self'/, 'a CSP is sent')
  t.notMatch(csp, /upgrade-insecure-requests/, 'without upgrade-insecure-requests, which blanks the UI over plain HTTP')
  const root = await app.inject('/')
  t.equal(root.statusCode, 302, '/ redirects')
  t.equal(root.headers.location, '/docs', 'to the UI')

  const { app: off } = await build(t, { DOCS_ENABLED: 'false', LOG_LEVEL: 'warn' })
  t.equal((await off.inject('/')).statusCode, 404, 'no redirect to a UI that is not there')
  t.equal((await off.inject('/docs')).statusCode, 404)
  t.equal((await off.inject('/docs/json')).statusCode, 404)
})

t.test('the docs are rate limited like any route', async (t) => {
  const { app } = await build(t, { ...AUTH_ENV, RATE_LIMIT_MAX: '3' })
  for (let i = 1; i <= 3; i++) {
    const res = await app.inject({ method: 'GET', url: '/docs/json' })
    t.equal(res.statusCode, 200)
    t.equal(res.headers['x-ratelimit-limit'], '3')
    t.equal(res.headers['x-ratelimit-remaining'], String(3 - i))
  }
  const refused = await app.inject({ method: 'GET', url: '/docs' })
  t.equal(refused.statusCode, 429, 'the 4th request in the window, to the UI')
  t.ok(Number(refused.headers['retry-after']) > 0, 'with Retry-After')
})
