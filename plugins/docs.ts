/**
 * The OpenAPI document, generated from the route schemas by `@fastify/swagger`, and Swagger
 * UI to read it: `GET /docs` (UI) and `GET /docs/json` (OpenAPI 3.1). Registered before
 * every plugin and route file that adds routes, since the document is built from the routes
 * seen after it. DOCS_ENABLED=false leaves both out. `GET /` redirects (302) to the UI.
 *
 * The UI's Content-Security-Policy is the library's strict one without
 * `upgrade-insecure-requests`: over plain HTTP on a host other than localhost, that directive
 * makes the browser fetch the UI's scripts and styles over HTTPS, which fails, and the page
 * stays blank. Everything else in it (same-origin scripts and styles only) is kept.
 *
 * Responses every route can give without declaring them are added to the document only
 * (the route schemas used for serialisation are not touched): 429 on rate-limited routes,
 * and 503 (load shedding) on routes that are not exempt from it. OpenAPI 3.1 because
 * the schemas are JSON Schema with `type: "null"` (3.0 has no null type).
 */
import fp from 'fastify-plugin'
import swagger, { type SwaggerOptions } from '@fastify/swagger'
import swaggerUi from '@fastify/swagger-ui'
import type { RouteOptions } from 'fastify'
import { ErrorSchema } from '../src/schemas.js'
import { VERSION } from '../src/version.js'

export const DOCS_PREFIX = '/docs'

/** The CSP header without `upgrade-insecure-requests`, which breaks the UI over plain HTTP. */
export function cspForPlainHttp (header: string | number | string[]): string {
  const value = Array.isArray(header) ? header.join('; ') : String(header)
  return value.split(';').map((d) => d.trim()).filter((d) => d !== '' && d.toLowerCase() !== 'upgrade-insecure-requests').join('; ') + ';'
}

export const SECURITY_SCHEMES = {
  bearerAuth: {
    type: 'http',
    scheme: 'bearer',
    bearerFormat: 'JWT',
    description: 'The token from POST /api/auth/login. Revoked at once by logout.',
  },
  metricsToken: {
    type: 'http',
    scheme: 'bearer',
    description: 'METRICS_TOKEN, when the service sets it (otherwise /metrics is open).',
  },
} as const

const TAGS = [
  { name: 'health', description: 'Liveness, readiness and Redis health' },
  { name: 'stocks', description: 'Quotes through the two-tier cache (header X-Cache: HIT | MISS | STALE)' },
  { name: 'auth', description: 'Accounts, JWT login and sessions' },
  { name: 'portfolio', description: 'Portfolios: cached reads, locked and idempotent writes' },
  { name: 'debug', description: 'Admin views of Redis, locks and jobs' },
  { name: 'operations', description: 'Prometheus metrics' },
]

type RouteSchema = NonNullable<RouteOptions['schema']> & { response?: Record<string, unknown>, hide?: boolean }

/** Adds the implicit 429 and 503 answers to a route's documented responses. */
export function documentImplicitResponses (route: Pick<RouteOptions, 'config'> & { url: string }, schema: RouteSchema | undefined, sheddingEnabled: boolean): RouteSchema | undefined {
  if (schema === undefined || schema.hide === true) return schema
  const config = route.config
  const response = { ...schema.response }
  if (config?.rateLimit !== false && response['429'] === undefined) {
    response['429'] = { ...ErrorSchema, description: 'Rate limit exceeded (see Retry-After and X-RateLimit-*).' }
  }
  if (sheddingEnabled && config?.shed !== false && response['503'] === undefined) {
    response['503'] = { ...ErrorSchema, description: 'Overloaded (load shedding) or a dependency is unavailable; see Retry-After.' }
  }
  return { ...schema, response }
}

export function openApiOptions (sheddingEnabled: boolean): SwaggerOptions {
  return {
    openapi: {
      openapi: '3.1.0',
      info: {
        title: 'AI Capital API',
        version: VERSION,
        description: 'The Redis layer of AI Capital: quotes, portfolios, accounts and sessions, with graceful degradation when Redis is away. ' +
          'Errors are `{ statusCode, error, message }`. Quotes from the `simulated` provider are synthetic and labelled so.',
      },
      components: { securitySchemes: { ...SECURITY_SCHEMES } },
      tags: TAGS,
    },
    transform: ({ schema, url, route }) => ({
      schema: documentImplicitResponses({ ...route, url }, schema as RouteSchema | undefined, sheddingEnabled) as typeof schema,
      url,
    }),
  }
}

export default fp(async function docsPlugin (fastify) {
  if (!fastify.config.DOCS_ENABLED) return
  const c = fastify.config
  const shedding = c.MAX_EVENT_LOOP_DELAY_MS > 0 || c.MAX_HEAP_USED_BYTES > 0 || c.MAX_RSS_BYTES > 0
  await fastify.register(swagger, openApiOptions(shedding))
  await fastify.register(swaggerUi, {
    routePrefix: DOCS_PREFIX,
    uiConfig: { docExpansion: 'list', deepLinking: false },
    staticCSP: true,
    transformStaticCSP: cspForPlainHttp,
  })
  fastify.get('/', { schema: { hide: true } }, async (_request, reply) => reply.redirect(DOCS_PREFIX, 302))
}, { name: 'docs', fastify: '5.x', dependencies: ['config'] })
