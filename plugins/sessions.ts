/**
 * Adds `sessions`: server-side sessions in Redis (`session:<sid>`, sliding TTL, a per-user
 * index for logout-everywhere) through the resilient store, with the in-process store while
 * Redis is away and SESSION_FALLBACK deciding about tokens whose session cannot be checked.
 * When Redis comes back, logouts made during the outage are replayed into it, then the
 * sessions created in memory meanwhile are written into it. Registers the session metrics.
 */
import fp from 'fastify-plugin'
import { durationToSeconds } from '../src/auth/duration.js'
import { createSessionStore, type SessionFallbackPolicy } from '../src/auth/sessions.js'
import { registerSessionMetrics } from '../src/metrics/auth-collectors.js'

declare module 'fastify' {
  interface FastifyInstance {
    sessions: ReturnType<typeof createSessionStore>
  }
}

export default fp(async function sessionsPlugin (fastify) {
  const { config, redisState, store, metrics } = fastify
  const log = fastify.log.child({ component: 'sessions' })
  const sessions = createSessionStore({
    store,
    state: redisState,
    ttlSeconds: config.SESSION_TTL_SECONDS,
    fallback: config.SESSION_FALLBACK as SessionFallbackPolicy,
    tokenTtlSeconds: durationToSeconds(config.JWT_EXPIRES_IN),
    maxTombstones: config.FALLBACK_MAX_ENTRIES,
    log,
  })
  registerSessionMetrics(metrics, sessions)
  fastify.decorate('sessions', sessions)

  const onUp = (): void => {
    sessions.reconcile().catch((err: unknown) => log.warn({ reason: redisState.describe(err) }, 'replaying outage logouts and sessions into Redis failed'))
  }
  redisState.on('up', onUp)
  fastify.addHook('onClose', async () => {
    redisState.off('up', onUp)
    sessions.close()
  })
}, { name: 'sessions', fastify: '5.x', dependencies: ['config', 'metrics', 'redis', 'auth'] })
