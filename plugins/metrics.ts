/**
 * Adds `metrics`: the app's Prometheus registry (prom-client, a registry of its own) and the
 * request timing. Registered right after config, so that every plugin after it registers
 * the families of its own concern (src/metrics/*-collectors.ts); GET /metrics is in
 * routes/metrics.ts. METRICS_ENABLED=false: registrations are ignored and nothing is timed.
 *
 * What it costs the request paths: one onResponse hook that observes the request's duration
 * (labelled by route pattern, never by raw URL). Everything else is read at scrape time.
 */
import fp from 'fastify-plugin'
import { createMetrics } from '../src/metrics/collectors.js'

declare module 'fastify' {
  interface FastifyInstance {
    metrics: ReturnType<typeof createMetrics>
  }
}

export default fp(async function metricsPlugin (fastify) {
  const metrics = createMetrics({ enabled: fastify.config.METRICS_ENABLED })
  fastify.decorate('metrics', metrics)
  if (!metrics.enabled) {
    fastify.log.child({ component: 'metrics' }).info('METRICS_ENABLED=false: no /metrics route and no request timing')
    return
  }
  fastify.addHook('onResponse', function observeRequest (request, reply, done) {
    metrics.observeHttp(request.method, request.routeOptions.url, reply.statusCode, reply.elapsedTime / 1000)
    done()
  })
}, { name: 'metrics', fastify: '5.x', dependencies: ['config'] })
