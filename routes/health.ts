/**
 * Health for people and for orchestrators. `/api/health` reports Redis as the guide
 * describes; its PING is cached for about a second by the Redis state, so a flood of
 * health checks never becomes a flood of PINGs. `/live` says the process runs; `/ready`
 * says it should receive traffic (not while shutting down, nor while the primary store is unusable).
 * The database's probe is one `SELECT 1`, bounded and cached for a second, like the PING.
 */
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from 'typebox'
import { VERSION } from '../src/version.js'

export const HealthSchema = Type.Object({
  status: Type.Union([Type.Literal('OK'), Type.Literal('DEGRADED')]),
  timestamp: Type.String({ format: 'date-time' }),
  uptime: Type.Number({ description: 'Seconds since the process started.' }),
  version: Type.String(),
  redis: Type.Object({
    status: Type.Union([Type.Literal('connected'), Type.Literal('connecting'), Type.Literal('disconnected'), Type.Literal('disabled')]),
    responseTime: Type.Union([Type.Number(), Type.Null()], { description: 'PING round trip in ms; null when not measured.' }),
    mode: Type.Union([Type.Literal('redis'), Type.Literal('fallback')]),
  }),
  database: Type.Object({
    status: Type.Union([Type.Literal('connected'), Type.Literal('unreachable')]),
    responseTime: Type.Union([Type.Number(), Type.Null()], { description: 'SELECT 1 round trip in ms; null when it failed.' }),
    kind: Type.Union([Type.Literal('sqlite'), Type.Literal('postgres')]),
  }),
})

const ProbeSchema = Type.Object({ status: Type.String() })

const health: FastifyPluginAsyncTypebox = async (fastify) => {
  const { redisState, lifecycle, db } = fastify

  fastify.get('/api/health', {
    schema: { tags: ['health'], summary: 'Service and Redis health', response: { 200: HealthSchema } },
    config: { rateLimit: false },
  }, async () => {
    const [responseTime, database] = await Promise.all([
      redisState.status === 'disabled' ? null : redisState.ping(),
      db.probe(),
    ])
    const degraded = (redisState.status !== 'disabled' && redisState.mode !== 'redis') || !database.ok
    return {
      status: degraded ? 'DEGRADED' as const : 'OK' as const,
      timestamp: new Date().toISOString(),
      uptime: Math.round(process.uptime() * 1000) / 1000,
      version: VERSION,
      redis: { status: redisState.status, responseTime, mode: redisState.mode },
      database: { status: database.ok ? 'connected' as const : 'unreachable' as const, responseTime: database.responseTime, kind: db.kind },
    }
  })

  fastify.get('/api/health/live', {
    schema: { tags: ['health'], summary: 'Liveness: the process is up (503 MEMORY_STUCK: over its memory bound even after a full GC for PRESSURE_MEMORY_STUCK_MS; restart it)', response: { 200: ProbeSchema, 503: ProbeSchema } },
    config: { rateLimit: false, shed: false },
  }, async (_request, reply) => {
    if (fastify.hasDecorator('loadShedding') && fastify.loadShedding.stuck()) return reply.code(503).send({ status: 'MEMORY_STUCK' })
    return { status: 'OK' }
  })

  fastify.get('/api/health/ready', {
    schema: { tags: ['health'], summary: 'Readiness: should receive traffic', response: { 200: ProbeSchema, 503: ProbeSchema } },
    config: { rateLimit: false, shed: false },
  }, async (_request, reply) => {
    if (lifecycle.shuttingDown) return reply.code(503).send({ status: 'SHUTTING_DOWN' })
    if (!await db.healthy()) return reply.code(503).send({ status: 'DATABASE_UNAVAILABLE' })
    return { status: 'READY' }
  })
}

export default health
