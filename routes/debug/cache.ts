/**
 * Admin views of the two-tier cache: its counters per cache (quotes, portfolios), the L1's
 * size against its bounds and the invalidation traffic; and an invalidation by key or by
 * prefix, which clears L2 and every instance's L1 (through Redis pub/sub) as the services'
 * own invalidations do. Only keys of the caches can be named: a prefix such as `session:`
 * is refused, so the endpoint cannot be used to delete other data.
 */
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from 'typebox'
import { ErrorSchema } from '../../src/schemas.js'
import { BadRequestError } from '../../src/errors.js'
import { CACHE_NAMES } from '../../plugins/cache.js'

const Count = Type.Integer({ minimum: 0 })
const NAMESPACES = CACHE_NAMES.map(([prefix]) => prefix)

export const DebugCacheSchema = Type.Object({
  caches: Type.Record(Type.String(), Type.Object({
    hitsL1: Count,
    hitsL2: Count,
    misses: Count,
    staleServes: Count,
    loads: Count,
    loadErrors: Count,
    earlyRefreshes: Count,
  }), { description: 'Counters of this instance per cache (quotes: stock:*, portfolios: portfolio:*).' }),
  l1: Type.Object({
    enabled: Type.Boolean(),
    entries: Count,
    bytes: Count,
    maxEntries: Count,
    maxBytes: Count,
  }),
  invalidation: Type.Object({
    published: Count,
    received: Count,
    subscribed: Type.Boolean({ description: 'Listening for the other instances\' invalidations.' }),
    pending: Count,
  }, { description: 'pending: invalidations made while Redis was away, replayed when it returns.' }),
  timestamp: Type.String({ format: 'date-time' }),
})

const InvalidateBodySchema = Type.Object({
  key: Type.Optional(Type.String({ minLength: 1, maxLength: 256, description: `One cache key, e.g. stock:AAPL (${NAMESPACES.join(', ')}).` })),
  prefix: Type.Optional(Type.String({ minLength: 1, maxLength: 256, description: 'Every cache key starting with it, e.g. stock: for all quotes.' })),
}, { additionalProperties: false })

const InvalidatedSchema = Type.Object({
  key: Type.Optional(Type.String()),
  prefix: Type.Optional(Type.String()),
  propagation: Type.Union([Type.Literal('redis'), Type.Literal('pending'), Type.Literal('local')], {
    description: 'redis: removed from L2 and every instance told; pending: Redis is away, this L1 is cleared and the rest follows when Redis returns; local: no Redis configured, this instance is the only one.',
  }),
  timestamp: Type.String({ format: 'date-time' }),
})

const debugCache: FastifyPluginAsyncTypebox = async (fastify) => {
  const { cache, redisState } = fastify

  fastify.get('/cache', {
    schema: {
      tags: ['debug'],
      summary: 'Cache counters, L1 size and invalidation traffic on this instance (admin)',
      security: [{ bearerAuth: [] }],
      response: { 200: DebugCacheSchema, 401: ErrorSchema, 403: ErrorSchema },
    },
  }, async () => ({ ...cache.stats(), timestamp: new Date().toISOString() }))

  fastify.post('/cache/invalidate', {
    schema: {
      tags: ['debug'],
      summary: 'Invalidate one cache key or every key under a prefix, on every instance (admin)',
      security: [{ bearerAuth: [] }],
      body: InvalidateBodySchema,
      response: { 200: InvalidatedSchema, 400: ErrorSchema, 401: ErrorSchema, 403: ErrorSchema },
    },
  }, async (request) => {
    const { key, prefix } = request.body
    if ((key === undefined) === (prefix === undefined)) throw new BadRequestError('Give exactly one of key and prefix')
    const target = (key ?? prefix) as string
    if (!NAMESPACES.some((ns) => target.startsWith(ns))) {
      throw new BadRequestError(`Only cache keys can be invalidated: ${key !== undefined ? 'the key' : 'the prefix'} must start with ${NAMESPACES.join(' or ')}`)
    }
    const reached = key !== undefined ? await cache.invalidate(key) : await cache.invalidatePrefix(target)
    request.log.info({ key, prefix, reached }, 'cache invalidated by an admin')
    return {
      ...(key !== undefined ? { key } : { prefix: target }),
      propagation: reached ? 'redis' as const : redisState.client === null ? 'local' as const : 'pending' as const,
      timestamp: new Date().toISOString(),
    }
  })
}

export default debugCache
