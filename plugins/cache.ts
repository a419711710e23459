/**
 * Adds `cache`, the two-tier cache (L1 in this process, L2 in Redis through the store seam;
 * L1 only while Redis is away), and `quotes`, stock quotes behind it under `stock:<TICKER>`.
 *
 * Other concerns reuse the cache under their own key prefix; counters are kept per prefix
 * (`stock:` → quotes, `portfolio:` → portfolios) and read with `cache.stats()`.
 */
import fp from 'fastify-plugin'
import type { FastifyBaseLogger } from 'fastify'
import type { Config } from '../src/config.js'
import type { RedisState } from '../src/engines/redis/state.js'
import type { ResilientStore } from '../src/engines/store/resilient-store.js'
import { createTwoTierCache } from '../src/engines/cache/two-tier-cache.js'
import { createQuoteProvider } from '../src/quotes/index.js'
import { FinnhubProvider } from '../src/quotes/finnhub.js'
import { createQuoteService } from '../src/quotes/quote-service.js'
import { registerCacheMetrics, registerQuoteProviderMetrics } from '../src/metrics/cache-collectors.js'

declare module 'fastify' {
  interface FastifyInstance {
    cache: ReturnType<typeof createCacheFromConfig>
    quotes: ReturnType<typeof createQuotesFromConfig>
  }
}

export const CACHE_NAMES = [['stock:', 'quotes'], ['portfolio:', 'portfolios']] as const

export function createCacheFromConfig (config: Config, deps: { store: ResilientStore, state: RedisState, log: FastifyBaseLogger }) {
  const client = deps.state.client
  return createTwoTierCache({
    store: deps.store,
    state: deps.state,
    log: deps.log,
    l1: { enabled: config.CACHE_L1_ENABLED, maxEntries: config.CACHE_L1_MAX_ENTRIES, maxBytes: config.CACHE_L1_MAX_BYTES },
    keyPrefix: config.REDIS_KEY_PREFIX,
    // Same options as the shared client; resubscribing is done by the cache on each 'ready'.
    createSubscriber: () => client?.duplicate({ autoResubscribe: false }) ?? null,
    lockTtlMs: config.CACHE_LOCK_TTL_MS,
    loaderTimeoutMs: config.CACHE_LOADER_TIMEOUT_MS,
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
  if (config.QUOTE_PROVIDER === 'simulated') {
    log.info('QUOTE_PROVIDER=simulated: quotes are synthetic and labelled source "simulated"')
  }
}, { name: 'cache', fastify: '5.x', dependencies: ['config', 'metrics', 'redis'] })
