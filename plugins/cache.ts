/**
 * Adds `cache`, the two-tier cache (L1 in this process, L2 in Redis through the store seam;
 * L1 only while Redis is away), `quotes`, stock quotes behind it under `stock:<TICKER>`, and
 * the caching decorator: a route that declares
 *
 *   config: { cache: { key: (request) => 'stock:AAPL', ttl: 20, grace: 300 } }
 *
 * has its handler's result cached (the handler returns the value; it runs once per key across
 * instances), answered with `X-Cache: HIT | MISS | STALE` and `Age`. A fresh L1 copy is
 * answered from a preHandler hook, synchronously, with the payload serialised once per entry.
 * Invalidation: `fastify.cache.invalidate(key)` / `invalidatePrefix(prefix)`.
 *
 * The cache's own errors are mapped to HTTP here (a load abandoned at its timeout: 504), and
 * upstream failures (5xx) are what the cache records for CACHE_FAILURE_TTL_MS.
 */
import fp from 'fastify-plugin'
import type { FastifyBaseLogger, FastifyReply, FastifyRequest, RouteHandlerMethod, preHandlerHookHandler } from 'fastify'
import type { Config } from '../src/config.js'
import { BadGatewayError, GatewayTimeoutError, ServiceUnavailableError, isServiceError } from '../src/errors.js'
import type { CacheEntry } from '../src/engines/cache/entry.js'
import { ageOf } from '../src/engines/cache/entry.js'
import { CacheLoadTimeoutError } from '../src/engines/cache/errors.js'
import { createTwoTierCache } from '../src/engines/cache/two-tier-cache.js'
import { noCache, type CachePolicy, type CacheResult, type CacheStatus, type FailureCodec } from '../src/engines/cache/types.js'
import type { RedisState } from '../src/engines/redis/state.js'
import type { ResilientStore } from '../src/engines/store/resilient-store.js'
import { createQuoteProvider } from '../src/quotes/index.js'
import { FinnhubProvider } from '../src/quotes/finnhub.js'
import { createQuoteService } from '../src/quotes/quote-service.js'
import { registerCacheMetrics, registerQuoteProviderMetrics } from '../src/metrics/cache-collectors.js'

/** A route's caching: its key, how long the value lives, and optional checks. */
export interface RouteCacheOptions extends CachePolicy {
  /** The cache key for a request (after validation and the route's onRequest guards). Include a prefix: `stock:AAPL`. */
  key: (request: FastifyRequest) => string
  /** A value the handler returned is cached only when this says so (default: always). */
  cacheable?: (value: never) => boolean
  /**
   * A cached value is answered only if this confirms it is still current (a version check);
   * otherwise the key is invalidated and loaded again. 'stale': it cannot be confirmed now (the
   * database is away), so it is answered marked STALE. Routes with it skip the synchronous fast path.
   */
  accept?: (value: never, request: FastifyRequest) => Promise<boolean | 'stale'>
}

declare module 'fastify' {
  interface FastifyInstance {
    cache: ReturnType<typeof createCacheFromConfig>
    quotes: ReturnType<typeof createQuotesFromConfig>
  }
  interface FastifyContextConfig {
    /** Two-tier caching of the handler's result (plugins/cache.ts). */
    cache?: RouteCacheOptions
  }
}

export const CACHE_NAMES = [['stock:', 'quotes'], ['portfolio:', 'portfolios']] as const

/** Upstream failures (5xx, timeouts) are recorded and rebuilt as the same answer on every instance; nothing else is. */
export const failureCodec: FailureCodec = {
  encode (error) {
    const mapped = httpErrorOf(error)
    const status = (mapped as { statusCode?: number }).statusCode
    if (!isServiceError(mapped) || status === undefined || status < 500) return undefined
    return JSON.stringify({ status, message: (mapped as Error).message })
  },
  decode (encoded) {
    let failure: { status?: unknown, message?: unknown } = {}
    try {
      failure = JSON.parse(encoded) as typeof failure
    } catch {}
    const message = typeof failure.message === 'string' ? failure.message : 'The upstream failed a moment ago; try again shortly'
    if (failure.status === 502) return new BadGatewayError(message)
    if (failure.status === 504) return new GatewayTimeoutError(message)
    return new ServiceUnavailableError(message)
  },
}

/** The cache's errors as the app answers them. */
export function httpErrorOf (err: unknown): unknown {
  if (err instanceof CacheLoadTimeoutError) return new GatewayTimeoutError(`No answer within ${err.timeoutMs} ms; try again shortly`)
  return err
}

export function createCacheFromConfig (config: Config, deps: { store: ResilientStore, state: RedisState, log: FastifyBaseLogger }) {
  return createTwoTierCache({
    store: deps.store,
    state: deps.state,
    log: deps.log,
    l1: { enabled: config.CACHE_L1_ENABLED, maxEntries: config.CACHE_L1_MAX_ENTRIES, maxBytes: config.CACHE_L1_MAX_BYTES },
    keyPrefix: config.REDIS_KEY_PREFIX,
    // Same options as the shared client (and its Sentinel restart); resubscribing is done by the cache on each 'ready'.
    createSubscriber: () => deps.state.duplicate({ autoResubscribe: false }),
    lockTtlMs: config.CACHE_LOCK_TTL_MS,
    loaderTimeoutMs: config.CACHE_LOADER_TIMEOUT_MS,
    failureTtlMs: config.CACHE_FAILURE_TTL_MS,
    failureCodec,
    names: CACHE_NAMES,
  })
}

export function createQuotesFromConfig (config: Config, cache: ReturnType<typeof createCacheFromConfig>, log: FastifyBaseLogger) {
  const provider = createQuoteProvider(config, (state, reason) => {
    if (state === 'open') log.warn({ provider: config.QUOTE_PROVIDER, reason }, 'quote provider circuit opened: failing fast')
    else log.info({ provider: config.QUOTE_PROVIDER, state, reason }, 'quote provider circuit ' + state)
  })
  const service = createQuoteService({
    cache,
    provider,
    ttlSeconds: config.QUOTE_TTL_SECONDS,
    graceSeconds: config.QUOTE_GRACE_SECONDS,
    ...(config.QUOTE_SOFT_TIMEOUT_MS > 0 ? { softTimeoutMs: config.QUOTE_SOFT_TIMEOUT_MS } : {}),
    batchConcurrency: config.QUOTE_BATCH_CONCURRENCY,
  })
  return {
    ...service,
    /** Provider figures for the metrics concern (null for the simulated provider). */
    providerStats: () => (provider instanceof FinnhubProvider ? provider.stats() : null),
  }
}

type Cache = ReturnType<typeof createCacheFromConfig>

/** Sends an entry's value with the cache headers; the serialised payload is kept on the entry. */
function sendEntry (reply: FastifyReply, entry: CacheEntry, status: CacheStatus): FastifyReply {
  let payload = entry.payload
  if (payload === undefined) {
    payload = reply.serialize(entry.value) as string
    entry.payload = payload
  }
  return reply.header('x-cache', status).header('age', String(ageOf(entry, Date.now()))).type('application/json; charset=utf-8').send(payload)
}

function checkRouteOptions (url: string, options: RouteCacheOptions): void {
  const problem = typeof options.key !== 'function'
    ? 'key must be a function of the request'
    : !(Number.isFinite(options.ttl) && options.ttl > 0)
        ? 'ttl must be a positive number of seconds'
        : options.grace !== undefined && !(Number.isFinite(options.grace) && options.grace >= 0)
          ? 'grace must be zero or a positive number of seconds'
          : null
  if (problem !== null) throw new Error(`route ${url}: config.cache.${problem}`)
}

/** The hook and handler a route with `config.cache` gets. */
function cachedRoute (cache: Cache, options: RouteCacheOptions, handler: RouteHandlerMethod) {
  const { key, cacheable, accept, ...policy } = options
  const isCacheable = cacheable as ((value: unknown) => boolean) | undefined
  const isCurrent = accept as ((value: unknown, request: FastifyRequest) => Promise<boolean | 'stale'>) | undefined

  /** A fresh L1 copy, answered synchronously. */
  const fastHit: preHandlerHookHandler = function (request, reply, done) {
    const entry = cache.peek(key(request), policy.name)
    if (entry === undefined) {
      done()
      return
    }
    sendEntry(reply, entry, 'HIT')
  }

  const cachedHandler: RouteHandlerMethod = async function (request, reply) {
    const cacheKey = key(request)
    const load = async (): Promise<unknown> => {
      const value: unknown = await handler.call(this, request, reply)
      return isCacheable !== undefined && !isCacheable(value) ? noCache(value) : value
    }
    try {
      let result: CacheResult<unknown> = await cache.get({ ...policy, key: cacheKey, load })
      const verdict = isCurrent === undefined ? true : await isCurrent(result.value, request)
      if (verdict === 'stale') return sendEntry(reply, result.entry, 'STALE')
      if (!verdict) {
        await cache.invalidate(cacheKey)
        result = await cache.get({ ...policy, key: cacheKey, load })
      }
      return sendEntry(reply, result.entry, result.cache)
    } catch (err) {
      throw httpErrorOf(err)
    }
  }

  return { fastHit: isCurrent === undefined ? fastHit : null, cachedHandler }
}

export default fp(async function cachePlugin (fastify) {
  const { config } = fastify
  const log = fastify.log.child({ component: 'cache' })
  const cache = createCacheFromConfig(config, { store: fastify.store, state: fastify.redisState, log })
  fastify.addHook('onClose', async () => { await cache.close() })
  let quotes: ReturnType<typeof createQuotesFromConfig>
  try {
    quotes = createQuotesFromConfig(config, cache, log)
  } catch (err) {
    await cache.close()
    throw err
  }
  fastify.decorate('cache', cache)
  fastify.decorate('quotes', quotes)
  registerCacheMetrics(fastify.metrics, cache)
  const origin = config.QUOTE_PROVIDER === 'finnhub' ? new URL(config.FINNHUB_BASE_URL).origin : undefined
  const stopProviderMetrics = registerQuoteProviderMetrics(fastify.metrics, { name: quotes.provider, cache, providerStats: quotes.providerStats, origin })
  fastify.addHook('onClose', async () => { stopProviderMetrics() })

  fastify.addHook('onRoute', (routeOptions) => {
    const options = routeOptions.config?.cache
    if (options === undefined) return
    checkRouteOptions(routeOptions.url, options)
    const { fastHit, cachedHandler } = cachedRoute(cache, options, routeOptions.handler)
    routeOptions.handler = cachedHandler
    if (fastHit !== null) {
      const existing = routeOptions.preHandler
      routeOptions.preHandler = existing === undefined ? [fastHit] : [...(Array.isArray(existing) ? existing : [existing]), fastHit]
    }
  })

  if (config.QUOTE_PROVIDER === 'simulated') {
    log.info('QUOTE_PROVIDER=simulated: quotes are synthetic and labelled source "simulated"')
  }
}, { name: 'cache', fastify: '5.x', dependencies: ['config', 'metrics', 'redis'] })
