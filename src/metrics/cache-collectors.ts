/**
 * The cache and quote-provider families, for the cache plugin to register: the caches'
 * counters from `cache.stats()` at scrape time, and the provider's figures (its calls are
 * the quotes cache's loads; its HTTP requests are timed from fetch's diagnostics channel).
 */
import { Histogram } from 'prom-client'
import type { CacheCounters, CacheStats } from '../engines/cache/types.js'
import type { FinnhubStats } from '../quotes/finnhub.js'
import { one, type Metrics, type Sample } from './collectors.js'
import { traceHttpRequests } from './tracing.js'

export const PROVIDER_BUCKETS = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]

export function registerCacheMetrics (metrics: Metrics, cache: { stats (): CacheStats }): void {
  const { counter, gauge } = metrics
  const perCache = (read: (c: CacheCounters) => number) => (): Sample[] =>
    Object.entries(cache.stats().caches).map(([name, c]) => [{ cache: name }, read(c)] as const)
  counter('aic_cache_hits_total', 'Lookups answered fresh from the cache, by cache and layer (l1: in process, l2: Redis).', ['cache', 'layer'],
    () => Object.entries(cache.stats().caches).flatMap(([name, c]) => [[{ cache: name, layer: 'l1' }, c.hitsL1], [{ cache: name, layer: 'l2' }, c.hitsL2]] as const))
  counter('aic_cache_misses_total', 'Lookups that found nothing fresh (a load, a wait for another instance\'s load, or a stale serve followed).', ['cache'], perCache((c) => c.misses))
  counter('aic_cache_stale_serves_total', 'Lookups answered with an expired value because the load failed or was slow.', ['cache'], perCache((c) => c.staleServes))
  counter('aic_cache_loads_total', 'Loader calls made by this instance (early refreshes included).', ['cache'], perCache((c) => c.loads))
  counter('aic_cache_load_errors_total', 'Loader calls that failed or timed out.', ['cache'], perCache((c) => c.loadErrors))
  counter('aic_cache_early_refreshes_total', 'Loads started before expiry (XFetch).', ['cache'], perCache((c) => c.earlyRefreshes))
  gauge('aic_cache_l1_entries', 'Entries in the in-process cache (all caches).', [], () => one(cache.stats().l1.entries))
  gauge('aic_cache_l1_bytes', 'Estimated size of the in-process cache.', [], () => one(cache.stats().l1.bytes))
  counter('aic_cache_invalidations_published_total', 'Invalidations sent to the other instances.', [], () => one(cache.stats().invalidation.published))
  counter('aic_cache_invalidations_received_total', 'Invalidations received from the other instances.', [], () => one(cache.stats().invalidation.received))
  gauge('aic_cache_invalidations_pending', 'Invalidations made while Redis was away, waiting to be replayed.', [], () => one(cache.stats().invalidation.pending))
}

export interface QuoteProviderSource {
  /** QUOTE_PROVIDER: the `provider` label. */
  name: string
  /** The cache whose `quotes` counters are the provider calls. */
  cache: { stats (): CacheStats }
  /** The provider's HTTP figures; null for the simulated provider. */
  providerStats (): FinnhubStats | null
  /** The provider's origin (e.g. https://finnhub.io): its HTTP requests are timed. */
  origin?: string | undefined
}

/** Registers the provider families; returns the function that stops timing its requests. */
export function registerQuoteProviderMetrics (metrics: Metrics, source: QuoteProviderSource): () => void {
  if (!metrics.enabled) return () => {}
  const { counter, gauge } = metrics
  const labels = { provider: source.name }
  const quotes = (read: (c: CacheCounters) => number) => (): Sample[] => {
    const c = source.cache.stats().caches['quotes']
    return [[labels, c === undefined ? 0 : read(c)]]
  }
  counter('aic_quote_provider_calls_total', 'Quotes asked of the provider by this instance (the quotes cache\'s loads).', ['provider'], quotes((c) => c.loads))
  counter('aic_quote_provider_errors_total', 'Provider calls that failed (unknown symbol, upstream error, timeout, open circuit).', ['provider'], quotes((c) => c.loadErrors))
  const http = (read: (s: FinnhubStats) => number) => (): Sample[] | null => {
    const stats = source.providerStats()
    return stats === null ? null : [[labels, read(stats)]]
  }
  counter('aic_quote_provider_http_requests_total', 'HTTP requests sent to the provider (retries included).', ['provider'], http((s) => s.requests))
  counter('aic_quote_provider_http_failures_total', 'Provider calls that failed upstream after their retries.', ['provider'], http((s) => s.failures))
  gauge('aic_quote_provider_circuit_open', '1 while the provider\'s circuit breaker is open (calls fail fast), else 0.', ['provider'], http((s) => (s.breaker.state === 'open' ? 1 : 0)))
  counter('aic_quote_provider_circuit_opens_total', 'Times the circuit breaker opened.', ['provider'], http((s) => s.breaker.opens))
  const latency = new Histogram({
    name: 'aic_quote_provider_request_duration_seconds',
    help: 'HTTP requests to the quote provider, until the response head (or the error), by outcome.',
    labelNames: ['provider', 'outcome'],
    buckets: PROVIDER_BUCKETS,
    registers: [],
  })
  metrics.register(latency)
  if (source.origin === undefined) return () => {}
  return traceHttpRequests(source.origin, (outcome, seconds) => { latency.observe({ provider: source.name, outcome }, seconds) })
}
