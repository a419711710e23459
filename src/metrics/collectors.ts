/**
 * The Prometheus families of the service, on a registry of their own (never prom-client's
 * global one, so two apps in one process never share series).
 *
 * Only the timings are recorded as they happen, as histograms: HTTP requests and Redis
 * commands (FastHistogram below, for the hot paths) and provider requests (prom-client's).
 * Everything else is read at scrape time from the counters each concern keeps anyway
 * (`stats()`), so the request paths carry no other metrics code. Label values come from
 * small fixed sets (route patterns, never raw URLs; cache, job, command and reason names),
 * so the series count is bounded.
 *
 * Names: `aic_*` for the service's own families; the Redis INFO figures use the names of
 * oliver006/redis_exporter (`redis_connected_clients`, `redis_memory_used_bytes`, …) so
 * existing dashboards and alerts work; process_* and nodejs_* are prom-client's defaults.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client'
import type { RedisInfo } from '../debug/redis-info.js'

// ---------------------------------------------------------------------------------------
// What the families read (each concern's stats, structurally typed; null: not registered)
// ---------------------------------------------------------------------------------------

export interface CacheCountersView {
  hitsL1: number, hitsL2: number, misses: number, staleServes: number, loads: number, loadErrors: number, earlyRefreshes: number
}
export interface CacheStatsView {
  caches: Record<string, CacheCountersView>
  l1: { entries: number, bytes: number }
  invalidation: { published: number, received: number, pending: number }
}
export interface LocksStatsView {
  acquisitions: number, contentions: number, timeouts: number, unavailable: number, extensions: number,
  extensionFailures: number, lost: number, fallbackAcquisitions: number, held: number
}
export interface RateLimitStatsView {
  redisHits: number, memoryHits: number
  limited: { global: number, admin: number, login: number, loginEmail: number, register: number }
}
export interface JobStatsView {
  name: string, runs: number, skips: number, failures: number, ranElsewhere: number, running: boolean, lastDurationMs: number | null
}
export interface PortfolioStatsView {
  reads: number, staleCopies: number, uncached: number, trades: number, removals: number, replays: number,
  keyMismatches: number, conflicts: number, lockLost: number, invalidateFailures: number
}
export interface ProviderStatsView {
  requests: number, failures: number
  breaker: { state: string, opens: number, rejected: number }
}
export interface AuthStatsView {
  authenticated: number
  rejected: Record<string, number>
  forbidden: number
  accounts: { registered: number, loginSucceeded: number, loginFailed: number }
}
export interface SessionStatsView {
  accepted: Record<string, number>
  rejected: Record<string, number>
  tombstonesDropped: number
}
export interface SheddingStatsView {
  enabled: boolean
  active: boolean
  shed: Record<string, number>
}
export interface RedisStateView {
  readonly status: string
  readonly mode: string
  readonly activations: number
}
export interface RedisInfoView {
  readonly up: boolean
  readonly latest: RedisInfo | null
  readonly at: number
  readonly db: number
}

export interface MetricsSources {
  redisState: RedisStateView
  /** null when Redis is not configured (no redis_* samples then). */
  redisInfo: RedisInfoView | null
  cache: () => CacheStatsView | null
  locks: () => LocksStatsView | null
  rateLimit: () => RateLimitStatsView | null
  jobs: () => JobStatsView[] | null
  portfolio: () => PortfolioStatsView | null
  /** The provider in use, and its HTTP figures (null for the simulated provider). */
  provider: () => { name: string, stats: ProviderStatsView | null } | null
  auth: () => AuthStatsView | null
  sessions: () => SessionStatsView | null
  shedding: () => SheddingStatsView | null
  now?: () => number
}

export const REDIS_STATUSES = ['disabled', 'connecting', 'connected', 'disconnected'] as const
export const HTTP_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]
export const REDIS_BUCKETS = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1]
export const PROVIDER_BUCKETS = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]
/** Distinct Redis command names kept as labels; any beyond are counted as "other". */
const MAX_COMMAND_LABELS = 64
/** The label of requests that matched no route (404s), instead of their raw URL. */
export const UNMATCHED_ROUTE = 'unmatched'

type Labels = Record<string, string>
type Sample = readonly [labels: Labels, value: number]

// ---------------------------------------------------------------------------------------
// Lazy families: values read in collect(), at scrape time
// ---------------------------------------------------------------------------------------

/**
 * A family whose samples are read when it is scraped. prom-client's Counter and Gauge always
 * show a label-less series (as 0 after a reset), while a figure we do not have (Redis INFO
 * while Redis is away) must be absent: a counter that drops to 0 and comes back reads as a
 * reset and a burst to rate(). So these implement the registry's metric contract directly
 * (`get()` returning name, help, type and values), which the registry formats as usual.
 */
class LazyFamily {
  readonly aggregator = 'sum' as const
  constructor (
    readonly name: string,
    readonly help: string,
    readonly type: 'counter' | 'gauge',
    /** Documentation only: the label names every sample carries. */
    readonly labelNames: readonly string[],
    readonly read: () => Sample[] | null,
  ) {}

  async get () {
    const samples = this.read() ?? []
    return {
      name: this.name,
      help: this.help,
      type: this.type,
      aggregator: this.aggregator,
      values: samples.map(([labels, value]) => ({ labels, value: this.type === 'counter' ? Math.max(0, value) : value })),
    }
  }

  /** Registry.resetMetrics() calls this; the figures belong to the concerns. */
  reset (): void {}
}

function lazyCounter (registry: Registry, name: string, help: string, labelNames: string[], read: () => Sample[] | null): void {
  registry.registerMetric(new LazyFamily(name, help, 'counter', labelNames, read) as unknown as Counter)
}

function lazyGauge (registry: Registry, name: string, help: string, labelNames: string[], read: () => Sample[] | null): void {
  registry.registerMetric(new LazyFamily(name, help, 'gauge', labelNames, read) as unknown as Gauge)
}

/** One label set of a FastHistogram: per-bucket counts (not cumulative), sum and count. */
export class HistogramSeries {
  readonly counts: Float64Array
  sum = 0
  count = 0
  constructor (readonly labels: Labels, readonly bounds: readonly number[]) {
    this.counts = new Float64Array(bounds.length + 1)
  }

  observe (value: number): void {
    const bounds = this.bounds
    let i = 0
    while (i < bounds.length && value > (bounds[i] as number)) i++
    this.counts[i]!++
    this.sum += value
    this.count++
  }
}

/**
 * A histogram for the hot paths. prom-client's validates and hashes the labels on every
 * observe (also through `labels()`); here a caller keeps the series object for its label
 * set, and an observe is a bucket search and three additions. Exposed in the same format
 * (_bucket with le, _sum, _count) through the registry's metric contract.
 */
export class FastHistogram {
  readonly type = 'histogram' as const
  readonly aggregator = 'sum' as const
  readonly #series = new Map<string, HistogramSeries>()

  constructor (readonly name: string, readonly help: string, readonly labelNames: readonly string[], readonly bounds: readonly number[]) {}

  /** The series for these label values (in labelNames order), created on first use. */
  series (values: readonly string[]): HistogramSeries {
    const key = values.join('\u0000')
    let series = this.#series.get(key)
    if (series === undefined) {
      const labels: Labels = {}
      this.labelNames.forEach((name, i) => { labels[name] = values[i] ?? '' })
      series = new HistogramSeries(labels, this.bounds)
      this.#series.set(key, series)
    }
    return series
  }

  get size (): number {
    return this.#series.size
  }

  async get () {
    const values: Array<{ metricName: string, labels: Labels, value: number }> = []
    for (const series of this.#series.values()) {
      let cumulative = 0
      this.bounds.forEach((bound, i) => {
        cumulative += series.counts[i] as number
        values.push({ metricName: `${this.name}_bucket`, labels: { ...series.labels, le: String(bound) }, value: cumulative })
      })
      values.push({ metricName: `${this.name}_bucket`, labels: { ...series.labels, le: '+Inf' }, value: series.count })
      values.push({ metricName: `${this.name}_sum`, labels: series.labels, value: series.sum })
      values.push({ metricName: `${this.name}_count`, labels: series.labels, value: series.count })
    }
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values }
  }

  /**
   * Zeroes every series in place. Callers keep series objects for their label sets, so
   * dropping them would leave those callers observing into series nobody exposes.
   */
  reset (): void {
    for (const series of this.#series.values()) {
      series.counts.fill(0)
      series.sum = 0
      series.count = 0
    }
  }
}

function fastHistogram (registry: Registry, name: string, help: string, labelNames: string[], bounds: number[]): FastHistogram {
  const histogram = new FastHistogram(name, help, labelNames, bounds)
  registry.registerMetric(histogram as unknown as Histogram)
  return histogram
}

const one = (value: number): Sample[] => [[{}, value]]
const map = <T>(value: T | null, fn: (v: T) => Sample[]): Sample[] | null => (value === null ? null : fn(value))

export function createMetrics (sources: MetricsSources, options: { defaultMetrics?: boolean } = {}) {
  const registry = new Registry()
  const now = sources.now ?? Date.now
  if (options.defaultMetrics !== false) collectDefaultMetrics({ register: registry })

  // --- HTTP -------------------------------------------------------------------------------
  const http = fastHistogram(registry, 'aic_http_request_duration_seconds',
    'Time to answer an HTTP request, by method, route pattern (unmatched for 404s) and status code.',
    ['method', 'route', 'status_code'], HTTP_BUCKETS)
  // route → method → status → series: the route and method strings are the same objects on
  // every request (hashed once), so no key is built per request.
  const httpSeries = new Map<string, Map<string, Map<number, HistogramSeries>>>()

  lazyCounter(registry, 'aic_http_requests_shed_total', 'Requests answered 503 by load shedding, by the bound that was passed.', ['reason'],
    () => map(sources.shedding(), (s) => Object.entries(s.shed).map(([reason, n]) => [{ reason }, n] as const)))
  lazyGauge(registry, 'aic_load_shedding_active', '1 while requests are being shed (an episode is on), else 0.', [],
    () => map(sources.shedding(), (s) => one(s.active ? 1 : 0)))

  // --- Redis: state, fallback, command latency ----------------------------------------------
  lazyGauge(registry, 'aic_redis_state', 'Redis connection state: 1 for the current one, 0 for the others.', ['state'],
    () => REDIS_STATUSES.map((state) => [{ state }, sources.redisState.status === state ? 1 : 0] as const))
  lazyGauge(registry, 'aic_redis_fallback_active', '1 while the service runs on its in-process fallbacks (Redis configured but away, or not configured).', [],
    () => one(sources.redisState.mode === 'fallback' ? 1 : 0))
  lazyCounter(registry, 'aic_redis_fallback_activations_total', 'Switches from Redis to the in-process fallbacks.', [],
    () => one(sources.redisState.activations))
  const redisCommands = fastHistogram(registry, 'aic_redis_command_duration_seconds',
    'Redis command round trips (every ioredis client of the process), by command and outcome.',
    ['command', 'outcome'], REDIS_BUCKETS)
  const commandSeries = new Map<string, HistogramSeries>()

  // --- Redis INFO (sampled on a timer), redis_exporter names ---------------------------------
  const info = sources.redisInfo
  const fromInfo = (read: (i: RedisInfo) => Sample[]) => (): Sample[] | null =>
    info !== null && info.up && info.latest !== null ? read(info.latest) : null
  if (info !== null) {
    lazyGauge(registry, 'redis_up', '1 when the last INFO (read every REDIS_INFO_INTERVAL_MS) succeeded and Redis is in use, else 0.', [],
      () => one(info.up ? 1 : 0))
    lazyGauge(registry, 'aic_redis_info_age_seconds', 'Age of the INFO figures behind the redis_* metrics.', [],
      () => (info.latest === null ? null : one((now() - info.at) / 1000)))
  } else {
    // Declared so that the families exist; no samples without a configured Redis.
    lazyGauge(registry, 'redis_up', '1 when the last INFO succeeded and Redis is in use, else 0. No sample: Redis is not configured.', [], () => null)
  }
  lazyGauge(registry, 'redis_connected_clients', 'Client connections (INFO connected_clients).', [], fromInfo((i) => one(i.connectedClients)))
  lazyGauge(registry, 'redis_memory_used_bytes', 'Memory used by Redis (INFO used_memory).', [], fromInfo((i) => one(i.usedMemory)))
  lazyGauge(registry, 'redis_memory_max_bytes', 'maxmemory (0: no limit).', [], fromInfo((i) => one(i.maxmemory)))
  lazyCounter(registry, 'redis_keyspace_hits_total', 'Successful key lookups (INFO keyspace_hits).', [], fromInfo((i) => one(i.keyspaceHits)))
  lazyCounter(registry, 'redis_keyspace_misses_total', 'Failed key lookups (INFO keyspace_misses).', [], fromInfo((i) => one(i.keyspaceMisses)))
  lazyGauge(registry, 'redis_instantaneous_ops_per_sec', 'Commands per second (INFO instantaneous_ops_per_sec).', [], fromInfo((i) => one(i.instantaneousOpsPerSec)))
  lazyCounter(registry, 'redis_evicted_keys_total', 'Keys evicted because of maxmemory.', [], fromInfo((i) => one(i.evictedKeys)))
  lazyCounter(registry, 'redis_expired_keys_total', 'Keys removed by expiry.', [], fromInfo((i) => one(i.expiredKeys)))
  lazyGauge(registry, 'redis_db_keys', 'Keys in the database this service uses.', ['db'],
    fromInfo((i) => [[{ db: `db${info?.db ?? 0}` }, i.keys]]))
  lazyGauge(registry, 'redis_uptime_in_seconds', 'Seconds since the Redis server started.', [], fromInfo((i) => one(i.uptimeSeconds)))

  // --- Caches (quotes, portfolios) ------------------------------------------------------------
  const perCache = (read: (c: CacheCountersView) => number) => () =>
    map(sources.cache(), (s) => Object.entries(s.caches).map(([cache, c]) => [{ cache }, read(c)] as const))
  lazyCounter(registry, 'aic_cache_hits_total', 'Lookups answered fresh from the cache, by cache and layer (l1: in process, l2: Redis).', ['cache', 'layer'],
    () => map(sources.cache(), (s) => Object.entries(s.caches).flatMap(([cache, c]) => [[{ cache, layer: 'l1' }, c.hitsL1], [{ cache, layer: 'l2' }, c.hitsL2]] as const)))
  lazyCounter(registry, 'aic_cache_misses_total', 'Lookups that found nothing fresh (a load, a wait for another instance\'s load, or a stale serve followed).', ['cache'], perCache((c) => c.misses))
  lazyCounter(registry, 'aic_cache_stale_serves_total', 'Lookups answered with an expired value because the load failed or was slow.', ['cache'], perCache((c) => c.staleServes))
  lazyCounter(registry, 'aic_cache_loads_total', 'Loader calls made by this instance (early refreshes included).', ['cache'], perCache((c) => c.loads))
  lazyCounter(registry, 'aic_cache_load_errors_total', 'Loader calls that failed or timed out.', ['cache'], perCache((c) => c.loadErrors))
  lazyCounter(registry, 'aic_cache_early_refreshes_total', 'Loads started before expiry (XFetch).', ['cache'], perCache((c) => c.earlyRefreshes))
  lazyGauge(registry, 'aic_cache_l1_entries', 'Entries in the in-process cache (all caches).', [], () => map(sources.cache(), (s) => one(s.l1.entries)))
  lazyGauge(registry, 'aic_cache_l1_bytes', 'Estimated size of the in-process cache.', [], () => map(sources.cache(), (s) => one(s.l1.bytes)))
  lazyCounter(registry, 'aic_cache_invalidations_published_total', 'Invalidations sent to the other instances.', [], () => map(sources.cache(), (s) => one(s.invalidation.published)))
  lazyCounter(registry, 'aic_cache_invalidations_received_total', 'Invalidations received from the other instances.', [], () => map(sources.cache(), (s) => one(s.invalidation.received)))
  lazyGauge(registry, 'aic_cache_invalidations_pending', 'Invalidations made while Redis was away, waiting to be replayed.', [], () => map(sources.cache(), (s) => one(s.invalidation.pending)))

  // --- Locks ------------------------------------------------------------------------------------
  const locks = (read: (l: LocksStatsView) => number) => () => map(sources.locks(), (l) => one(read(l)))
  lazyCounter(registry, 'aic_lock_acquisitions_total', 'Locks taken (all backends).', [], locks((l) => l.acquisitions))
  lazyCounter(registry, 'aic_lock_contentions_total', 'Acquisitions that found the lock busy at least once.', [], locks((l) => l.contentions))
  lazyCounter(registry, 'aic_lock_failures_total', 'Locks not obtained: timeout (still busy after LOCK_WAIT_MS, 409) or unavailable (too few masters, 503).', ['reason'],
    () => map(sources.locks(), (l) => [[{ reason: 'timeout' }, l.timeouts], [{ reason: 'unavailable' }, l.unavailable]]))
  lazyCounter(registry, 'aic_lock_extensions_total', 'Automatic extensions of held locks.', [], locks((l) => l.extensions))
  lazyCounter(registry, 'aic_lock_extension_failures_total', 'Extensions that failed.', [], locks((l) => l.extensionFailures))
  lazyCounter(registry, 'aic_lock_lost_total', 'Holders whose lock expired or was taken over while they worked.', [], locks((l) => l.lost))
  lazyCounter(registry, 'aic_lock_fallback_acquisitions_total', 'Locks taken in process because the main Redis was away.', [], locks((l) => l.fallbackAcquisitions))
  lazyGauge(registry, 'aic_locks_held_local', 'In-process locks held now.', [], locks((l) => l.held))

  // --- Rate limiting ------------------------------------------------------------------------------
  lazyCounter(registry, 'aic_rate_limit_rejections_total', 'Requests refused with 429, by limit.', ['limit'],
    () => map(sources.rateLimit(), (r) => [
      [{ limit: 'global' }, r.limited.global], [{ limit: 'admin' }, r.limited.admin],
      [{ limit: 'login' }, r.limited.login], [{ limit: 'login_email' }, r.limited.loginEmail],
      [{ limit: 'register' }, r.limited.register],
    ]))
  lazyCounter(registry, 'aic_rate_limit_hits_total', 'Hits counted by the limiter, by where they were counted.', ['store'],
    () => map(sources.rateLimit(), (r) => [[{ store: 'redis' }, r.redisHits], [{ store: 'memory' }, r.memoryHits]]))

  // --- Quote provider -------------------------------------------------------------------------------
  const quotes = (read: (c: CacheCountersView) => number) => () => {
    const p = sources.provider()
    const c = sources.cache()?.caches['quotes']
    return p === null ? null : [[{ provider: p.name }, c === undefined ? 0 : read(c)] as const]
  }
  lazyCounter(registry, 'aic_quote_provider_calls_total', 'Quotes asked of the provider by this instance (the quotes cache\'s loads).', ['provider'], quotes((c) => c.loads))
  lazyCounter(registry, 'aic_quote_provider_errors_total', 'Provider calls that failed (unknown symbol, upstream error, timeout, open circuit).', ['provider'], quotes((c) => c.loadErrors))
  const providerHttp = (read: (s: ProviderStatsView) => number) => () => {
    const p = sources.provider()
    return p === null || p.stats === null ? null : [[{ provider: p.name }, read(p.stats)] as const]
  }
  lazyCounter(registry, 'aic_quote_provider_http_requests_total', 'HTTP requests sent to the provider (retries included).', ['provider'], providerHttp((s) => s.requests))
  lazyCounter(registry, 'aic_quote_provider_http_failures_total', 'Provider calls that failed upstream after their retries.', ['provider'], providerHttp((s) => s.failures))
  lazyGauge(registry, 'aic_quote_provider_circuit_open', '1 while the provider\'s circuit breaker is open (calls fail fast), else 0.', ['provider'], providerHttp((s) => (s.breaker.state === 'open' ? 1 : 0)))
  lazyCounter(registry, 'aic_quote_provider_circuit_opens_total', 'Times the circuit breaker opened.', ['provider'], providerHttp((s) => s.breaker.opens))
  const providerLatency = new Histogram({
    name: 'aic_quote_provider_request_duration_seconds',
    help: 'HTTP requests to the quote provider, until the response head (or the error), by outcome.',
    labelNames: ['provider', 'outcome'],
    buckets: PROVIDER_BUCKETS,
    registers: [registry],
  })

  // --- Jobs ------------------------------------------------------------------------------------------
  const jobs = (read: (j: JobStatsView) => number | null) => () =>
    map(sources.jobs(), (list) => list.flatMap((j) => {
      const value = read(j)
      return value === null ? [] : [[{ job: j.name }, value] as const]
    }))
  lazyCounter(registry, 'aic_job_runs_total', 'Ticks this instance ran.', ['job'], jobs((j) => j.runs))
  lazyCounter(registry, 'aic_job_skips_total', 'Ticks this instance skipped (Redis unavailable, previous run still going, late).', ['job'], jobs((j) => j.skips))
  lazyCounter(registry, 'aic_job_failures_total', 'Runs that threw.', ['job'], jobs((j) => j.failures))
  lazyCounter(registry, 'aic_job_ran_elsewhere_total', 'Ticks another instance had already taken.', ['job'], jobs((j) => j.ranElsewhere))
  lazyGauge(registry, 'aic_job_running', '1 while the job runs on this instance.', ['job'], jobs((j) => (j.running ? 1 : 0)))
  lazyGauge(registry, 'aic_job_last_duration_seconds', 'Duration of the job\'s last run on this instance.', ['job'], jobs((j) => (j.lastDurationMs === null ? null : j.lastDurationMs / 1000)))

  // --- Portfolio -------------------------------------------------------------------------------------
  const portfolio = (read: (p: PortfolioStatsView) => number) => () => map(sources.portfolio(), (p) => one(read(p)))
  lazyCounter(registry, 'aic_portfolio_reads_total', 'GET /api/portfolio answers.', [], portfolio((p) => p.reads))
  lazyCounter(registry, 'aic_portfolio_writes_total', 'Committed writes, by kind.', ['kind'],
    () => map(sources.portfolio(), (p) => [[{ kind: 'trade' }, p.trades], [{ kind: 'removal' }, p.removals]]))
  lazyCounter(registry, 'aic_portfolio_idempotent_replays_total', 'Retries answered from the stored response (Idempotency-Key).', [], portfolio((p) => p.replays))
  lazyCounter(registry, 'aic_portfolio_idempotency_mismatches_total', 'Idempotency-Key reused with a different request (422).', [], portfolio((p) => p.keyMismatches))
  lazyCounter(registry, 'aic_portfolio_conflicts_total', 'Commits refused by the version check.', [], portfolio((p) => p.conflicts))
  lazyCounter(registry, 'aic_portfolio_lock_lost_total', 'Writes abandoned because the lock was lost before the commit.', [], portfolio((p) => p.lockLost))
  lazyCounter(registry, 'aic_portfolio_stale_copies_total', 'Cached portfolio views refused because the stored version had moved on.', [], portfolio((p) => p.staleCopies))
  lazyCounter(registry, 'aic_portfolio_invalidate_failures_total', 'Cache invalidations after a write that failed.', [], portfolio((p) => p.invalidateFailures))

  // --- Auth and sessions --------------------------------------------------------------------------------
  lazyCounter(registry, 'aic_auth_logins_total', 'Login attempts that reached the password check, by outcome.', ['outcome'],
    () => map(sources.auth(), (a) => [[{ outcome: 'success' }, a.accounts.loginSucceeded], [{ outcome: 'failure' }, a.accounts.loginFailed]]))
  lazyCounter(registry, 'aic_auth_rejections_total', 'Requests refused 401 by authentication, by reason.', ['reason'],
    () => map(sources.auth(), (a) => Object.entries(a.rejected).map(([reason, n]) => [{ reason }, n] as const)))
  lazyCounter(registry, 'aic_auth_forbidden_total', 'Requests refused 403 (admin role required).', [], () => map(sources.auth(), (a) => one(a.forbidden)))
  lazyCounter(registry, 'aic_session_checks_total', 'Tokens whose session was accepted, by where it was checked (fallback: Redis away, policy allow).', ['source'],
    () => map(sources.sessions(), (s) => Object.entries(s.accepted).map(([source, n]) => [{ source }, n] as const)))
  lazyCounter(registry, 'aic_session_rejections_total', 'Tokens refused because of their session, by reason.', ['reason'],
    () => map(sources.sessions(), (s) => Object.entries(s.rejected).map(([reason, n]) => [{ reason }, n] as const)))
  lazyCounter(registry, 'aic_session_outage_logouts_dropped_total', 'Logouts made while Redis was away and dropped before they reached it (more than FALLBACK_MAX_ENTRIES).', [],
    () => map(sources.sessions(), (s) => one(s.tombstonesDropped)))

  return {
    registry,

    /** Records one answered request (the hot path: three lookups of strings and a number, and an observe). */
    observeHttp (method: string, route: string | undefined, statusCode: number, seconds: number): void {
      const r = route ?? UNMATCHED_ROUTE
      let byMethod = httpSeries.get(r)
      if (byMethod === undefined) {
        byMethod = new Map()
        httpSeries.set(r, byMethod)
      }
      let byStatus = byMethod.get(method)
      if (byStatus === undefined) {
        byStatus = new Map()
        byMethod.set(method, byStatus)
      }
      let series = byStatus.get(statusCode)
      if (series === undefined) {
        series = http.series([method, r, String(statusCode)])
        byStatus.set(statusCode, series)
      }
      series.observe(seconds)
    },

    observeRedisCommand (command: string, seconds: number, ok: boolean): void {
      const key = ok ? command : `${command} error`
      let series = commandSeries.get(key)
      if (series === undefined) {
        const name = redisCommands.size < MAX_COMMAND_LABELS ? command : 'other'
        series = redisCommands.series([name, ok ? 'ok' : 'error'])
        commandSeries.set(key, series)
      }
      series.observe(seconds)
    },

    observeProvider (provider: string, outcome: string, seconds: number): void {
      providerLatency.observe({ provider, outcome }, seconds)
    },

    async scrape (): Promise<string> {
      return registry.metrics()
    },
  }
}

export type Metrics = ReturnType<typeof createMetrics>
