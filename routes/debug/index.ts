/**
 * Everything under /api/debug: operators' views of Redis, the locks, the jobs and the
 * cache. One plugin, registered with the prefix, and two hooks for every route in it: the
 * admin limit (ADMIN_RATE_LIMIT_MAX per client, first, so refused tokens count too) and the
 * admin guard (a valid token of an admin). A route added here is limited and guarded by
 * being here; it declares neither.
 */
import type { FastifyPluginAsync } from 'fastify'
import redisRoutes from './redis.js'
import locksRoutes from './locks.js'
import cacheRoutes from './cache.js'

const debug: FastifyPluginAsync = async (fastify) => {
  fastify.addHook('onRequest', fastify.rateLimit(fastify.rateLimiter.admin))
  fastify.addHook('onRequest', fastify.requireAdmin)
  await fastify.register(redisRoutes)
  await fastify.register(locksRoutes)
  await fastify.register(cacheRoutes)
}

export default debug
