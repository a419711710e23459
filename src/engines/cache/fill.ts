/**
 * The fill: getting a value that is not fresh here, with one loader call per key across
 * every instance.
 *
 * - In process, concurrent misses for a key join one flight.
 * - Across instances, the flight claims the value key itself, in one command:
 *   `SET <key> ~fill:<token> NX GET PX <lockTtl>` (the value key lives exactly its ttl, so a
 *   key past its ttl is claimed even while its grace copy is there). No reply: the key is
 *   ours, load it and land the value over the placeholder (one script on the value key and its
 *   grace copy: `SET XX GET PX ttl`, and only if it replaced our placeholder the grace copy is
 *   written and the value published, in the same step). An entry: an L2 hit (its PTTL is read
 *   next). A placeholder: another instance is loading; wait for its message, which carries the
 *   value, so nothing more is read. Messages can be lost (a subscriber reconnecting): a waiter
 *   claims again after the placeholder's TTL, and loads here at the loader timeout.
 * - The grace copy is read only when a stale value is wanted: a caller's soft timeout fires
 *   while the load runs, or the load fails (or failed recently). The plain cold path never
 *   reads it.
 * - An early refresh (XFetch) is made under the key's refresh lock (`lock:fill:<key>`,
 *   through the locks engine: owner token, renewed while the load runs, compare-and-delete
 *   release), and the refreshed value lands only over the entry it refreshed.
 * - A failed load is recorded (here, and for the other instances in Redis: in place of the
 *   placeholder, or beside a refreshed entry) for a few seconds, so the instances neither wait
 *   for nor call a failing upstream once per request; its stale copy is served meanwhile.
 */
import { performance } from 'node:perf_hooks'
import type { Lease } from '../locks/locks.js'
import { decodeStored, encodeStored, entryOf, type CacheEntry } from './entry.js'
import { CacheLoadTimeoutError, CacheValueError } from './errors.js'
import { failureMarkerOf, isPlaceholder, lockKeyOf, placeholderOf } from './keys.js'
import type { L1 } from './l1.js'
import type { L2, Swap } from './l2.js'
import type { CacheCounters, FailureCodec, Loaded } from './types.js'
import { isUncached } from './types.js'

/** The part of the locks engine the fill uses. */
export interface FillLocks {
  claim (resource: string, ttlMs: number, options?: { strict?: boolean }): Promise<Lease | null>
}

/** How a landing is announced to the other instances (the invalidation channel). */
export interface FillAnnouncer {
  /** The message for `key`: it now holds `entry` (its JSON), or its load failed with `failure`. */
  message (key: string, news: { entry?: string, failure?: string }): string
  /** The message is being published (counted as the instance's own). */
  published (): void
  /** The channel is subscribed: a waiter will hear of the landing. */
  readonly listening: boolean
}

export interface FillOptions {
  l1: L1
  l2: L2
  locks: FillLocks
  announcer: FillAnnouncer
  instanceId: string
  lockTtlMs: number
  loaderTimeoutMs: number
  /** How long a waiter waits between two claims while the channel is not subscribed. */
  pollMs: number
  /** How long a failed load is remembered (0: not at all). */
  failureTtlMs: number
  failureCodec: FailureCodec
}

/** One key to fill, in the units the engine works in. */
export interface FillJob {
  key: string
  ttlMs: number
  graceMs: number
  load: () => Promise<Loaded<unknown>>
  counters: CacheCounters
  /** A stale copy already at hand (from L1, or from a batch read of L2). */
  stale?: CacheEntry | undefined
  /** Only a value stored after this (its `storedAt`) will do: an early refresh wants a newer one. */
  newerThan: number
  /** An early refresh nobody waits for. With L1 off it runs beside the readers, not in their way. */
  background: boolean
}

export type FilledLayer = 'l2' | 'l2-wait' | 'loader' | 'stale'

export interface Filled {
  entry: CacheEntry
  layer: FilledLayer
}

export class Flight {
  readonly promise: Promise<Filled>
  /** Set by an invalidation: the result is still returned to those waiting but not stored. */
  invalidated = false
  /** Resolves with the first stale copy the flight learns of. */
  readonly staleFound: Promise<CacheEntry>
  #stale: CacheEntry | undefined
  #resolveStale!: (entry: CacheEntry) => void
  #lookForStale: (() => void) | undefined

  constructor (stale: CacheEntry | undefined, run: (flight: Flight) => Promise<Filled>, lookForStale?: (flight: Flight) => Promise<void>) {
    if (lookForStale !== undefined) {
      this.#lookForStale = () => {
        this.#lookForStale = undefined
        lookForStale(this).catch(() => {})
      }
    }
    this.staleFound = new Promise((resolve) => { this.#resolveStale = resolve })
    this.offerStale(stale)
    this.promise = run(this)
    // Callers who left on a soft timeout (or an early refresh nobody awaits) must not leave
    // an unhandled rejection behind.
    this.promise.catch(() => {})
  }

  get stale (): CacheEntry | undefined {
    return this.#stale !== undefined && Date.now() < this.#stale.staleUntil ? this.#stale : undefined
  }

  /** A caller wants a stale copy now (its soft timeout fired): the grace copy is read, once per flight. */
  wantStale (): void {
    if (this.#stale === undefined) this.#lookForStale?.()
  }

  offerStale (entry: CacheEntry | null | undefined): void {
    if (entry === null || entry === undefined || this.#stale !== undefined || Date.now() >= entry.staleUntil) return
    this.#stale = entry
    this.#resolveStale(entry)
  }
}

/** What a waiter heard: the landed value (its JSON), a failure, or "the key changed, look again". */
export type News = { entry: string } | { failure: string } | 'changed'

/** A flight waiting for news of its key (registered before it claims, so no message is missed). */
class Waiter {
  #news: News | undefined
  #wake: (() => void) | undefined

  hear (news: News): void {
    if (this.#news === undefined || this.#news === 'changed') this.#news = news
    this.#wake?.()
  }

  /** The news, or 'timeout' after `ms`. */
  async wait (ms: number): Promise<News | 'timeout'> {
    if (this.#news === undefined) {
      let timer: NodeJS.Timeout | undefined
      await new Promise<void>((resolve) => {
        this.#wake = resolve
        timer = setTimeout(resolve, ms)
        timer.unref()
      })
      clearTimeout(timer)
      this.#wake = undefined
    }
    return this.#news ?? 'timeout'
  }
}

interface RecordedFailure { error: unknown, until: number }

const MAX_FAILURES = 1000

/** How a load's result is written: over our placeholder, over the stale entry we refreshed, or not at all. */
type Landing = { expected: string } | null

export class Fill {
  readonly #opts: FillOptions
  readonly #inflight = new Map<string, Flight>()
  readonly #background = new Map<string, Flight>()
  readonly #failures = new Map<string, RecordedFailure>()
  readonly #waiters = new Map<string, Set<Waiter>>()
  #claims = 0
  #closed = false

  constructor (options: FillOptions) {
    this.#opts = options
  }

  /** The flight a reader of `key` can join, if one is under way. */
  joinable (key: string): Flight | undefined {
    return this.#inflight.get(key)
  }

  /** Whether any load of `key` is under way (an early refresh then need not start another). */
  busy (key: string): boolean {
    return this.#inflight.has(key) || this.#background.has(key)
  }

  start (job: FillJob): Flight {
    const flights = job.background ? this.#background : this.#inflight
    const flight: Flight = new Flight(job.stale, (f) => this.#fill(job, f).finally(() => {
      if (flights.get(job.key) === f) flights.delete(job.key)
    }), async (f) => { await this.#readGrace(job, f) })
    flights.set(job.key, flight)
    return flight
  }

  /** News of `key` from another instance; false when no flight here was waiting for it. */
  deliver (key: string, news: News): boolean {
    const waiters = this.#waiters.get(key)
    if (waiters === undefined) return false
    for (const waiter of waiters) waiter.hear(news)
    return true
  }

  /** Loads of `key` under way keep answering their waiters but store nothing; its recorded failure is forgotten. */
  abandon (key: string): void {
    this.#failures.delete(key)
    this.deliver(key, 'changed')
    for (const flights of [this.#inflight, this.#background]) {
      const flight = flights.get(key)
      if (flight === undefined) continue
      flight.invalidated = true
      flights.delete(key)
    }
  }

  abandonPrefix (prefix: string): void {
    const keys = new Set([...this.#inflight, ...this.#background, ...this.#failures, ...this.#waiters].map(([key]) => key))
    for (const key of keys) if (key.startsWith(prefix)) this.abandon(key)
  }

  close (): void {
    this.#closed = true
    for (const waiters of this.#waiters.values()) for (const waiter of waiters) waiter.hear('changed')
  }

  async #fill (job: FillJob, flight: Flight): Promise<Filled> {
    const { l1, l2 } = this.#opts
    const recorded = this.#recentFailure(job.key)
    if (recorded !== undefined) return this.#afterFailure(job, flight, recorded)

    // Without L1, reads from L2 are the hot path: one round trip (GET and PTTL in one script)
    // before claiming, as a claim that finds an entry takes two.
    if (!l1.enabled && l2.available && job.newerThan === -Infinity) {
      const [current] = await l2.read([job.key]) ?? [null]
      if (current != null && current.freshUntil > Date.now()) return this.#adopt(flight, job.key, { entry: current, layer: 'l2' })
      flight.offerStale(current)
    }

    const deadline = Date.now() + this.#opts.loaderTimeoutMs
    while (l2.available && !this.#closed && Date.now() < deadline) {
      const waiter = this.#listen(job.key)
      let leave = true
      try {
        const placeholder = placeholderOf(`${this.#opts.instanceId}:${++this.#claims}`)
        const claim = await l2.claim(job.key, placeholder, this.#opts.lockTtlMs)
        if (claim === null || claim.kind === 'other') break
        if (claim.kind === 'claimed') return await this.#loadClaimed(job, flight, placeholder)
        if (claim.kind === 'failed') {
          if (this.#opts.failureTtlMs <= 0) break
          const error = this.#opts.failureCodec.decode(claim.encoded)
          this.#remember(job.key, error)
          return await this.#afterFailure(job, flight, error)
        }
        if (claim.kind === 'entry') {
          const { entry, raw } = claim
          if (entry.freshUntil > Date.now() && entry.storedAt > job.newerThan) return this.#adopt(flight, job.key, { entry, layer: 'l2' })
          // Only an early refresh wants more than the value key's entry: refresh it.
          flight.offerStale(entry)
          const refreshed = await this.#refresh(job, flight, raw)
          if (refreshed !== null) return refreshed
        }
        // Another instance is loading (or refreshing): its landing's message brings the value.
        leave = false
      } finally {
        if (leave) this.#unlisten(job.key, waiter)
      }
      const news = await waiter.wait(this.#opts.announcer.listening ? this.#opts.lockTtlMs : this.#opts.pollMs)
      this.#unlisten(job.key, waiter)
      if (news === 'timeout' || news === 'changed') continue
      if ('entry' in news) {
        const stored = decodeStored(news.entry)
        if (stored !== null && stored.storedAt > job.newerThan) {
          const entry = entryOf(stored, news.entry.length, { at: Date.now(), remainingMs: stored.ttl })
          return this.#adopt(flight, job.key, { entry, layer: 'l2-wait' })
        }
        continue
      }
      const error = this.#opts.failureCodec.decode(news.failure)
      if (this.#opts.failureTtlMs > 0) this.#remember(job.key, error)
      return this.#afterFailure(job, flight, error)
    }
    // No Redis, something not ours under the key, or no value within the loader timeout: load
    // here. The result lands only where nothing is (a placeholder still there stays).
    return this.#load(job, flight, l2.available ? { expected: '' } : null)
  }

  /** The entry `raw` is there but a newer one is wanted: refresh it under the key's lock. Null: someone else is refreshing it. */
  async #refresh (job: FillJob, flight: Flight, raw: string): Promise<Filled | null> {
    const { l2 } = this.#opts
    const [lease, failure] = await Promise.all([
      this.#opts.locks.claim(lockKeyOf(job.key), this.#opts.lockTtlMs, { strict: false }).catch(() => null),
      this.#opts.failureTtlMs > 0 ? l2.readFailure(job.key) : Promise.resolve(null),
    ])
    if (failure !== null) {
      await lease?.release()
      const error = this.#opts.failureCodec.decode(failure)
      this.#remember(job.key, error)
      return this.#afterFailure(job, flight, error)
    }
    if (lease === null) return null
    try {
      return await lease.run(() => this.#load(job, flight, { expected: raw }))
    } finally {
      await lease.release()
    }
  }

  /** Loads a key this flight claimed, keeping the claim alive while the load runs. */
  async #loadClaimed (job: FillJob, flight: Flight, placeholder: string): Promise<Filled> {
    const { l2, lockTtlMs } = this.#opts
    const renewal = setInterval(() => { void l2.renew(job.key, placeholder, lockTtlMs) }, Math.max(50, Math.floor(lockTtlMs / 3)))
    renewal.unref()
    try {
      return await this.#load(job, flight, { expected: placeholder })
    } finally {
      clearInterval(renewal)
    }
  }

  async #load (job: FillJob, flight: Flight, landing: Landing): Promise<Filled> {
    const { l1, l2 } = this.#opts
    job.counters.loads++
    let entry: CacheEntry
    try {
      const started = performance.now()
      const loaded = await this.#runLoader(job)
      const cacheable = !isUncached(loaded)
      const value = isUncached(loaded) ? loaded.value : loaded
      if (value === undefined) throw new CacheValueError(job.key)
      const json = encodeStored({ value, storedAt: Date.now(), ttl: job.ttlMs, grace: job.graceMs, loadDurationMs: Math.round(performance.now() - started) })
      // Kept and answered exactly as any instance will read it back from L2.
      const stored = decodeStored(json)
      if (stored === null) throw new CacheValueError(job.key)
      entry = entryOf(stored, json.length, { at: Date.now(), remainingMs: job.ttlMs })
      if (!cacheable) {
        await this.#giveUp(job.key, landing, null)
        return { entry: { ...entry, staleUntil: 0 }, layer: 'loader' }
      }
      // Redis refusing the write (the placeholder or stale entry is gone: an invalidation
      // deleted it, or a put replaced it) is a change this instance may not hear about (its
      // message lost while the subscriber reconnects): the value is answered to this
      // request but kept nowhere.
      if (landing !== null && l2.available) {
        const landed = await this.#land(job, landing, json)
        if (!landed) flight.invalidated = true
      }
    } catch (err) {
      job.counters.loadErrors++
      await this.#recordFailure(job, landing, err)
      const stale = await this.#findStale(job, flight)
      if (stale !== null) return stale
      throw err
    }
    if (!flight.invalidated) l1.set(job.key, entry, Date.now())
    return { entry, layer: 'loader' }
  }

  async #runLoader (job: FillJob): Promise<Loaded<unknown>> {
    let timer: NodeJS.Timeout | undefined
    const timeoutMs = this.#opts.loaderTimeoutMs
    try {
      return await Promise.race([
        Promise.resolve().then(job.load),
        new Promise<never>((_resolve, reject) => {
          timer = setTimeout(() => reject(new CacheLoadTimeoutError(job.key, timeoutMs)), timeoutMs)
          timer.unref()
        }),
      ])
    } finally {
      clearTimeout(timer)
    }
  }

  /**
   * No value to land: a claim hands the key back (deleted, or replaced by the failure marker)
   * and tells the waiters, who then claim again (or take the failure).
   */
  async #giveUp (key: string, landing: Landing, failure: string | null): Promise<void> {
    if (landing === null || !isPlaceholder(landing.expected) || !this.#opts.l2.available) return
    await this.#swap({
      key,
      expected: landing.expected,
      replacement: failure === null ? '' : failureMarkerOf(failure),
      pxMs: this.#opts.failureTtlMs,
    }, failure === null ? {} : { failure })
  }

  /** A load's entry lands (value key for ttl, grace copy for ttl + grace), announced to the other instances and to this one's waiters. */
  async #land (job: FillJob, landing: { expected: string }, json: string): Promise<boolean> {
    const landed = await this.#opts.l2.land({
      key: job.key,
      expected: landing.expected,
      json,
      ttlMs: job.ttlMs,
      graceMs: job.graceMs,
      message: this.#opts.announcer.message(job.key, { entry: json }),
      restoreMs: this.#opts.lockTtlMs,
    })
    if (!landed) return false
    this.#opts.announcer.published()
    this.deliver(job.key, { entry: json })
    return true
  }

  /** A swap of the key's value, announced to the other instances and to this one's waiters. */
  async #swap (swap: Omit<Swap, 'message'>, news: { entry?: string, failure?: string }): Promise<boolean> {
    const swapped = await this.#opts.l2.swap({ ...swap, message: this.#opts.announcer.message(swap.key, news) })
    if (!swapped) return false
    this.#opts.announcer.published()
    this.deliver(swap.key, news.entry !== undefined ? { entry: news.entry } : news.failure !== undefined ? { failure: news.failure } : 'changed')
    return true
  }

  /** After a recorded failure: the stale copy if there is one, else the failure. */
  async #afterFailure (job: FillJob, flight: Flight, error: unknown): Promise<Filled> {
    const stale = await this.#findStale(job, flight)
    if (stale !== null) return stale
    throw error
  }

  async #findStale (job: FillJob, flight: Flight): Promise<Filled | null> {
    const known = flight.stale
    if (known !== undefined) return { entry: known, layer: 'stale' }
    const entry = await this.#readGrace(job, flight)
    if (entry === null) return null
    if (!flight.invalidated) this.#opts.l1.set(job.key, entry, Date.now())
    return { entry, layer: 'stale' }
  }

  /** The grace copy of the key, offered to the flight as its stale copy; null: none (or no grace). */
  async #readGrace (job: FillJob, flight: Flight): Promise<CacheEntry | null> {
    if (job.graceMs <= 0 || !this.#opts.l2.available) return null
    const entry = await this.#opts.l2.readGrace(job.key)
    if (entry === null || entry.staleUntil <= Date.now() || flight.invalidated) return null
    flight.offerStale(entry)
    return entry
  }

  #adopt (flight: Flight, key: string, filled: Filled): Filled {
    if (!flight.invalidated) this.#opts.l1.set(key, filled.entry, Date.now())
    return filled
  }

  #listen (key: string): Waiter {
    const waiter = new Waiter()
    let waiters = this.#waiters.get(key)
    if (waiters === undefined) {
      waiters = new Set()
      this.#waiters.set(key, waiters)
    }
    waiters.add(waiter)
    return waiter
  }

  #unlisten (key: string, waiter: Waiter): void {
    const waiters = this.#waiters.get(key)
    if (waiters === undefined) return
    waiters.delete(waiter)
    if (waiters.size === 0) this.#waiters.delete(key)
  }

  #recentFailure (key: string): unknown {
    const recorded = this.#failures.get(key)
    if (recorded === undefined) return undefined
    if (Date.now() < recorded.until) return recorded.error
    this.#failures.delete(key)
    return undefined
  }

  #remember (key: string, error: unknown): void {
    if (this.#failures.size >= MAX_FAILURES) {
      const oldest = this.#failures.entries().next().value?.[0]
      if (oldest !== undefined) this.#failures.delete(oldest)
    }
    this.#failures.set(key, { error, until: Date.now() + this.#opts.failureTtlMs })
  }

  /**
   * A failed load: remembered here, and for the other instances in place of our placeholder
   * (a cold key) or beside the stale entry (a refresh). A claim that records nothing hands the
   * key back.
   */
  async #recordFailure (job: FillJob, landing: Landing, error: unknown): Promise<void> {
    const { failureTtlMs, failureCodec, l2 } = this.#opts
    const encoded = failureTtlMs > 0 ? failureCodec.encode(error) : undefined
    if (encoded !== undefined) this.#remember(job.key, error)
    const claimed = landing !== null && isPlaceholder(landing.expected)
    if (claimed) {
      await this.#giveUp(job.key, landing, encoded ?? null)
      return
    }
    if (encoded !== undefined && l2.available) await l2.recordFailure(job.key, encoded, failureTtlMs)
  }
}
