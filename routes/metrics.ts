/**
 * GET /metrics: the Prometheus text format of `fastify.metrics` (plugins/metrics.ts). Absent
 * with METRICS_ENABLED=false.
 *
 * With METRICS_TOKEN set the route requires `Authorization: Bearer <METRICS_TOKEN>`
 * (compared in constant time; 401 otherwise). The route is exempt from rate limiting (a
 * scraper must never be refused) and from load shedding (see plugins/under-pressure.ts).
 */
import { createHash, timingSafeEqual } from 'node:crypto'
import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify'
import { UnauthorizedError } from '../src/errors.js'
import { ErrorSchema } from '../src/schemas.js'

export const METRICS_URL = '/metrics'

/** `Bearer <token>` → true when it is the token, in constant time (both sides hashed to one length). */
export function tokenChecker (token: string): (header: string | undefined) => boolean {
  const expected = createHash('sha256').update(token).digest()
  return (header) => {
    const match = /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(header ?? '')
    const given = createHash('sha256').update(match?.[1] ?? '').digest()
    return timingSafeEqual(given, expected) && match !== null
  }
}

const metricsRoutes: FastifyPluginAsync = async (fastify) => {
  const { metrics, config } = fastify
  if (!metrics.enabled) return

  const token = config.METRICS_TOKEN
  const authorized = token === undefined ? null : tokenChecker(token)
  if (token === undefined && config.NODE_ENV === 'production') {
    fastify.log.child({ component: 'metrics' }).warn('METRICS_TOKEN is not set: GET /metrics is open to anyone who can reach the service')
  }

  async function requireMetricsToken (request: FastifyRequest, reply: FastifyReply): Promise<void> {
    if (authorized !== null && !authorized(request.headers.authorization)) {
      void reply.header('www-authenticate', 'Bearer realm="metrics"')
      throw new UnauthorizedError('GET /metrics needs Authorization: Bearer <METRICS_TOKEN>')
    }
  }

  fastify.get(METRICS_URL, {
    onRequest: authorized === null ? [] : [requireMetricsToken],
    config: { rateLimit: false, shed: false },
    schema: {
      tags: ['operations'],
      summary: 'Prometheus metrics (text exposition format 0.0.4)',
      description: 'HTTP, Redis (state, command latency, INFO figures under redis_exporter names), caches, locks, rate limiting, quote provider, jobs, portfolio and auth. Exempt from rate limiting and load shedding.',
      security: authorized === null ? [] : [{ metricsToken: [] }],
      response: {
        200: { description: 'The metrics', content: { 'text/plain': { schema: { type: 'string' } } } },
        401: ErrorSchema,
      },
    },
  }, async (_request, reply) => {
    const text = await metrics.scrape()
    return reply.type(metrics.registry.contentType).send(text)
  })
}

export default metricsRoutes
