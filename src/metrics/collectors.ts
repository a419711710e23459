/**
 * The service's metrics toolkit: a prom-client registry of its own (never prom-client's
 * global one, so two apps in one process never share series), offered by the metrics
 * plugin as `fastify.metrics`. Each plugin registers the families of its own concern
 * (src/metrics/*-collectors.ts); nothing here knows the concerns.
 *
 * Only the timings are recorded as they happen, as histograms (FastHistogram below, for
 * the hot paths). Everything else is read at scrape time from the counters each concern
 * keeps anyway (`stats()`), so the request paths carry no other metrics code. Label values
 * come from small fixed sets (route patterns, never raw URLs; cache, job, command and
 * reason names), so the series count is bounded.
 *
 * Names: `aic_*` for the service's own families; the Redis INFO figures use the names of
 * oliver006/redis_exporter (`redis_connected_clients`, `redis_memory_used_bytes`, …) so
 * existing dashboards and alerts work; process_* and nodejs_* are prom-client's defaults.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics, type Metric } from 'prom-client'

export const HTTP_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]
/** The label of requests that matched no route (404s), instead of their raw URL. */
export const UNMATCHED_ROUTE = 'unmatched'

export type Labels = Record<string, string>
export type Sample = readonly [labels: Labels, value: number]
/** Reads a family's samples at scrape time; null (or []) for none. */
export type ReadSamples = () => Sample[] | null

// ---------------------------------------------------------------------------------------
// Lazy families: values read at scrape time
// ---------------------------------------------------------------------------------------

/**
 * prom-client's Counter and Gauge always show a label-less series (as 0 after a reset),
 * while a figure we do not have (Redis INFO while Redis is away) must be absent: a counter
 * that drops to 0 and comes back reads as a reset and a burst to rate(). So these replace
 * the values of their `get()` with what `read` returns, in the registry's usual format.
 */
/** A family's `get()` result with its values replaced by the samples read now. */
function withSamples<T extends object> (base: T, samples: ReturnType<ReadSamples>, shown: (value: number) => number): T & { values: Array<{ labels: Labels, value: number }> } {
  return { ...base, values: (samples ?? []).map(([labels, value]) => ({ labels, value: shown(value) })) }
}

class LazyGauge extends Gauge<string> {
  readonly #read: ReadSamples
  constructor (name: string, help: string, labelNames: readonly string[], read: ReadSamples) {
    super({ name, help, labelNames, registers: [] })
    this.#read = read
  }

  override async get () {
    return withSamples(await super.get(), this.#read(), (value) => value)
  }
}

class LazyCounter extends Counter<string> {
  readonly #read: ReadSamples
  constructor (name: string, help: string, labelNames: readonly string[], read: ReadSamples) {
    super({ name, help, labelNames, registers: [] })
    this.#read = read
  }

  override async get () {
    // A counter never goes below zero, whatever the source reads.
    return withSamples(await super.get(), this.#read(), (value) => Math.max(0, value))
  }
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
 * (_bucket with le, _sum, _count): a prom-client Histogram whose values are ours.
 */
export class FastHistogram extends Histogram<string> {
  readonly metricName: string
  readonly bounds: readonly number[]
  readonly #help: string
  readonly #labelNames: readonly string[]
  readonly #series = new Map<string, HistogramSeries>()

  constructor (name: string, help: string, labelNames: readonly string[], bounds: readonly number[]) {
    super({ name, help, labelNames, buckets: [...bounds], registers: [] })
    this.metricName = name
    this.#help = help
    this.#labelNames = labelNames
    this.bounds = bounds
  }

  /** The series for these label values (in labelNames order), created on first use. */
  series (values: readonly string[]): HistogramSeries {
    const key = values.join('\u0000')
    let series = this.#series.get(key)
    if (series === undefined) {
      const labels: Labels = {}
      this.#labelNames.forEach((name, i) => { labels[name] = values[i] ?? '' })
      series = new HistogramSeries(labels, this.bounds)
      this.#series.set(key, series)
    }
    return series
  }

  get size (): number {
    return this.#series.size
  }

  /**
   * What prom-client formats: the registry reads a histogram through this method, and
   * Histogram's own get() is this with the shared labels merged in (ours have none).
   */
  async getForPromString () {
    const name = this.metricName
    const values: Array<{ metricName: string, labels: Labels, sharedLabels: Labels, value: number }> = []
    const sharedLabels: Labels = {}
    for (const series of this.#series.values()) {
      let cumulative = 0
      this.bounds.forEach((bound, i) => {
        cumulative += series.counts[i] as number
        values.push({ metricName: `${name}_bucket`, labels: { ...series.labels, le: String(bound) }, sharedLabels, value: cumulative })
      })
      values.push({ metricName: `${name}_bucket`, labels: { ...series.labels, le: '+Inf' }, sharedLabels, value: series.count })
      values.push({ metricName: `${name}_sum`, labels: { ...series.labels }, sharedLabels, value: series.sum })
      values.push({ metricName: `${name}_count`, labels: { ...series.labels }, sharedLabels, value: series.count })
    }
    return { name, help: this.#help, type: 'histogram', aggregator: 'sum', values }
  }

  /**
   * Zeroes every series in place. Callers keep series objects for their label sets, so
   * dropping them would leave those callers observing into series nobody exposes.
   */
  override reset (): void {
    super.reset()
    // prom-client's constructor calls reset() before this class's fields exist.
    if (!(#series in this)) return
    for (const series of this.#series.values()) {
      series.counts.fill(0)
      series.sum = 0
      series.count = 0
    }
  }
}

/**
 * The registry and the HTTP timing: what the metrics plugin decorates `fastify.metrics`
 * with. Disabled (METRICS_ENABLED=false), every registration is a no-op and nothing is timed.
 */
export function createMetrics (options: { enabled?: boolean, defaultMetrics?: boolean } = {}) {
  const enabled = options.enabled ?? true
  const registry = new Registry()
  if (enabled && options.defaultMetrics !== false) collectDefaultMetrics({ register: registry })

  function register (metric: Metric): void {
    if (enabled) registry.registerMetric(metric)
  }

  /** A histogram for a hot path, registered; observe through its series(). */
  function histogram (name: string, help: string, labelNames: readonly string[], bounds: readonly number[]): FastHistogram {
    const h = new FastHistogram(name, help, labelNames, bounds)
    register(h)
    return h
  }

  const http = histogram('aic_http_request_duration_seconds',
    'Time to answer an HTTP request, by method, route pattern (unmatched for 404s) and status code.',
    ['method', 'route', 'status_code'], HTTP_BUCKETS)
  // route → method → status → series: the route and method strings are the same objects on
  // every request (hashed once), so no key is built per request.
  const httpSeries = new Map<string, Map<string, Map<number, HistogramSeries>>>()

  return {
    /** False with METRICS_ENABLED=false: registrations are ignored. */
    enabled,
    /** prom-client's registry of this app (register prom-client metrics with `register`). */
    registry,
    register,
    histogram,
    /** A counter whose samples `read` returns at scrape time. */
    counter (name: string, help: string, labelNames: readonly string[], read: ReadSamples): void {
      register(new LazyCounter(name, help, labelNames, read))
    },
    /** A gauge whose samples `read` returns at scrape time. */
    gauge (name: string, help: string, labelNames: readonly string[], read: ReadSamples): void {
      register(new LazyGauge(name, help, labelNames, read))
    },

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

    async scrape (): Promise<string> {
      return registry.metrics()
    },
  }
}

export type Metrics = ReturnType<typeof createMetrics>

/** One sample without labels. */
export const one = (value: number): Sample[] => [[{}, value]]

/** Samples from `value` when there is one (null: the family has no samples now). */
export const map = <T>(value: T | null | undefined, fn: (v: T) => Sample[]): Sample[] | null => (value === null || value === undefined ? null : fn(value))

/** One sample per entry of a `{ label value: count }` record. */
export const byLabel = (label: string, counts: Record<string, number>): Sample[] =>
  Object.entries(counts).map(([value, n]) => [{ [label]: value }, n] as const)
