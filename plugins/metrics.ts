/**
 * Adds `GET /metrics` (Prometheus text format, prom-client on a registry of its own) and
 * `metrics`, the families of src/metrics/collectors.ts wired to the concerns' stats.
 *
 * What it costs the request paths: one onResponse hook that observes the request's duration
 * (labelled by route pattern, never by raw URL). Redis command and provider latencies come
 * from diagnostics channels (src/metrics/tracing.ts); every counter is read from the
 * concerns at scrape time; Redis INFO is read on a timer (REDIS_INFO_INTERVAL_MS), never
 * per scrape. METRICS_ENABLED=false registers nothing at all.
 *
 * With METRICS_TOKEN set the route requires `Authorization: Bearer <METRICS_TOKEN>`
 * (compared in constant time; 401 otherwise). The route is exempt from rate limiting (a
 * scraper must never be refused) and from load shedding (see plugins/under-pressure.ts).
 */
import { createHash, timingSafeEqual } from 'node:crypto'
import fp from 'fastify-plugin'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { UnauthorizedError } from '../src/errors.js'
import { ErrorSchema } from '../src/schemas.js'
import { createMetrics, type MetricsSources } from '../src/metrics/collectors.js'
import { RedisInfoSampler } from '../src/metrics/redis-info-sampler.js'
import { traceHttpRequests, traceRedisCommands } from '../src/metrics/tracing.js'

declare module 'fastify' {
  interface FastifyInstance {
    metrics: ReturnType<typeof createMetricsFromApp>
  }
}

export const METRICS_URL = '/metrics'

/** An optional decorator (a concern registered after this plugin, or not at all). */
function optional<T> (fastify: FastifyInstance, name: string): T | null {
  return fastify.hasDecorator(name) ? (fastify as unknown as Record<string, T>)[name] ?? null : null
}

/**
 * The metrics for an app whose concerns are registered: sources read through the
 * decorators, resolved at each scrape (scheduler and portfolio come after this plugin).
 */
export function createMetricsFromApp (fastify: FastifyInstance, sampler: RedisInfoSampler | null) {
  type Stats<T> = { stats (): T }
  const sources: MetricsSources = {
    redisState: fastify.redisState,
    redisInfo: sampler,
    cache: () => optional<Stats<ReturnType<FastifyInstance['cache']['stats']>>>(fastify, 'cache')?.stats() ?? null,
    locks: () => optional<Stats<ReturnType<FastifyInstance['locks']['stats']>>>(fastify, 'locks')?.stats() ?? null,
    rateLimit: () => optional<Stats<ReturnType<FastifyInstance['rateLimiter']['stats']>>>(fastify, 'rateLimiter')?.stats() ?? null,
    jobs: () => optional<FastifyInstance['scheduler']>(fastify, 'scheduler')?.jobs() ?? null,
    portfolio: () => optional<Stats<ReturnType<FastifyInstance['portfolio']['stats']>>>(fastify, 'portfolio')?.stats() ?? null,
    provider: () => {
      const quotes = optional<FastifyInstance['quotes']>(fastify, 'quotes')
      return quotes === null ? null : { name: quotes.provider, stats: quotes.providerStats() }
    },
    auth: () => optional<FastifyInstance['authStats']>(fastify, 'authStats')?.() ?? null,
    sessions: () => optional<Stats<ReturnType<FastifyInstance['sessions']['stats']>>>(fastify, 'sessions')?.stats() ?? null,
    shedding: () => optional<FastifyInstance['loadShedding']>(fastify, 'loadShedding')?.stats() ?? null,
  }
  return createMetrics(sources)
}

/** `Bearer <token>` → true when it is the token, in constant time (both sides hashed to one length). */
export function tokenChecker (token: string): (header: string | undefined) => boolean {
  const expected = createHash('sha256').update(token).digest()
  return (header) => {
    const match = /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(header ?? '')
    const given = createHash('sha256').update(match?.[1] ?? '').digest()
    return timingSafeEqual(given, expected) && match !== null
  }
}

export default fp(async function metricsPlugin (fastify) {
  const config = fastify.config
  const log = fastify.log.child({ component: 'metrics' })
  if (!config.METRICS_ENABLED) {
    log.info('METRICS_ENABLED=false: no /metrics route and no request timing')
    return
  }
  const client = fastify.redisState.client
  const sampler = client === null
    ? null
    : new RedisInfoSampler({ state: fastify.redisState, intervalMs: config.REDIS_INFO_INTERVAL_MS, db: Number(client.options.db ?? 0) })
  const metrics = createMetricsFromApp(fastify, sampler)
  fastify.decorate('metrics', metrics)

  const stops = [traceRedisCommands((command, seconds, ok) => metrics.observeRedisCommand(command, seconds, ok))]
  if (config.QUOTE_PROVIDER === 'finnhub') {
    const origin = new URL(config.FINNHUB_BASE_URL).origin
    stops.push(traceHttpRequests(origin, (outcome, seconds) => metrics.observeProvider('finnhub', outcome, seconds)))
  }
  fastify.addHook('onReady', async () => { sampler?.start() })
  fastify.addHook('onClose', async () => {
    for (const stop of stops) stop()
    await sampler?.stop()
  })

  fastify.addHook('onResponse', function observeRequest (request, reply, done) {
    metrics.observeHttp(request.method, request.routeOptions.url, reply.statusCode, reply.elapsedTime / 1000)
    done()
  })

  const token = config.METRICS_TOKEN
  const authorized = token === undefined ? null : tokenChecker(token)
  if (token === undefined && config.NODE_ENV === 'production') {
    log.warn('METRICS_TOKEN is not set: GET /metrics is open to anyone who can reach the service')
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
}, { name: 'metrics', fastify: '5.x', dependencies: ['config', 'redis', 'cache', 'locks', 'rate-limit'] })
