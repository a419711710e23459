/**
 * The fill: getting a value that is not fresh here, with one loader call per key across
 * every instance.
 *
 * - In process, concurrent misses for a key join one flight.
 * - Across instances, the flight first looks in L2; then, in one round trip, it tries the
 *   key's fill lock (`lock:fill:<key>`, through the locks engine: owner token, renewed while
 *   the load runs, compare-and-delete release) and reads the value again, its grace copy,
 *   its generation and any recorded failure. The lock holder loads; the others poll L2 for
 *   its result, for at most the loader timeout.
 * - A failed load is recorded (here and in L2) for a few seconds, so the instances neither
 *   wait for nor call a failing upstream once per request; its stale copy is served
 *   meanwhile when there is one.
 * - A flight announces the first stale copy it knows of (L1, or the grace copy in L2), so a
 *   caller with a soft timeout is answered with it instead of waiting out a slow load.
 */
import { performance } from 'node:perf_hooks'
import type { Lease } from '../locks/locks.js'
import { decodeStored, encodeStored, entryOf, type CacheEntry } from './entry.js'
import { CacheLoadTimeoutError, CacheValueError } from './errors.js'
import { lockKeyOf } from './keys.js'
import type { L1 } from './l1.js'
import type { L2 } from './l2.js'
import type { CacheCounters, FailureCodec, Loaded } from './types.js'
import { isUncached } from './types.js'

/** The part of the locks engine the fill uses. */
export interface FillLocks {
  claim (resource: string, ttlMs: number, options?: { strict?: boolean }): Promise<Lease | null>
}

export interface FillOptions {
  l1: L1
  l2: L2
  locks: FillLocks
  lockTtlMs: number
  loaderTimeoutMs: number
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
  /** A stale copy already at hand (from L1). */
  stale?: CacheEntry | undefined
  /** Only a value stored after this (its `storedAt`) will do: an early refresh wants a newer one. */
  newerThan: number
  /** L2 was read for this key a moment ago (a batch): skip the first look. */
  prefetched: boolean
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

  constructor (stale: CacheEntry | undefined, run: (flight: Flight) => Promise<Filled>) {
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

  offerStale (entry: CacheEntry | null | undefined): void {
    if (entry === null || entry === undefined || this.#stale !== undefined || Date.now() >= entry.staleUntil) return
    this.#stale = entry
    this.#resolveStale(entry)
  }
}

interface RecordedFailure { error: unknown, until: number }

const MAX_FAILURES = 1000

export class Fill {
  readonly #opts: FillOptions
  readonly #inflight = new Map<string, Flight>()
  readonly #background = new Map<string, Flight>()
  readonly #failures = new Map<string, RecordedFailure>()
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
    }))
    flights.set(job.key, flight)
    return flight
  }

  /** Loads of `key` under way keep answering their waiters but store nothing; its recorded failure is forgotten. */
  abandon (key: string): void {
    this.#failures.delete(key)
    for (const flights of [this.#inflight, this.#background]) {
      const flight = flights.get(key)
      if (flight === undefined) continue
      flight.invalidated = true
      flights.delete(key)
    }
  }

  abandonPrefix (prefix: string): void {
    const keys = new Set([...this.#inflight, ...this.#background, ...this.#failures].map(([key]) => key))
    for (const key of keys) if (key.startsWith(prefix)) this.abandon(key)
  }

  close (): void {
    this.#closed = true
  }

  async #fill (job: FillJob, flight: Flight): Promise<Filled> {
    const { l2 } = this.#opts
    const recorded = this.#recentFailure(job.key)
    if (recorded !== undefined) return this.#afterFailure(job, flight, recorded)

    if (l2.available && !job.prefetched) {
      const [current] = await l2.read([job.key]) ?? [null]
      if (current != null && current.storedAt > job.newerThan) return this.#adopt(job, flight, { entry: current, layer: 'l2' })
    }

    let lease: Lease | null = null
    let generation = ''
    if (l2.available) {
      const deadline = Date.now() + this.#opts.loaderTimeoutMs
      for (;;) {
        const [claimed, probe] = await Promise.all([
          this.#opts.locks.claim(lockKeyOf(job.key), this.#opts.lockTtlMs, { strict: false }).catch(() => null),
          l2.probe(job.key),
        ])
        if (probe === null) {
          // Redis went away between the two: load here, without a lock to hold.
          await claimed?.release()
          break
        }
        generation = probe.generation
        flight.offerStale(probe.stale)
        if (probe.current !== null && probe.current.storedAt > job.newerThan) {
          await claimed?.release()
          return this.#adopt(job, flight, { entry: probe.current, layer: 'l2' })
        }
        if (probe.failure !== null && this.#opts.failureTtlMs > 0) {
          await claimed?.release()
          const error = this.#opts.failureCodec.decode(probe.failure)
          this.#remember(job.key, error)
          return this.#afterFailure(job, flight, error)
        }
        if (claimed !== null) {
          lease = claimed
          break
        }
        const waited = await this.#waitForFill(job, deadline)
        if (waited !== 'gone' && waited !== 'late') return this.#adopt(job, flight, { entry: waited, layer: 'l2-wait' })
        // The holder left without a value (it crashed, or its load failed): the lock is free
        // again and the waiters race for it, so one of them loads while the others wait again
        // (or find the failure it recorded).
        if (waited === 'gone' && Date.now() < deadline && l2.available) continue
        // Too slow, or Redis went away: load here.
        break
      }
    }
    if (lease === null) return this.#load(job, flight, generation)
    const held = lease
    try {
      return await held.run(() => this.#load(job, flight, generation))
    } finally {
      // After the L2 write, so that waiters find the value before they see the lock gone.
      await held.release()
    }
  }

  async #load (job: FillJob, flight: Flight, generation: string): Promise<Filled> {
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
      if (!cacheable) return { entry: { ...entry, staleUntil: 0 }, layer: 'loader' }
      // Redis refusing the write (the key was invalidated since the load began) is an
      // invalidation this instance may not hear about (its message lost while the
      // subscriber reconnects): the value is answered to this request but kept nowhere.
      if (!flight.invalidated && l2.available && !(await l2.fill({ key: job.key, json, ttlMs: job.ttlMs, graceMs: job.graceMs }, generation))) flight.invalidated = true
    } catch (err) {
      job.counters.loadErrors++
      await this.#recordFailure(job.key, err)
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
   * Polls L2 until the lock holder's value is there; 'gone' when the lock went without a value,
   * 'late' at the deadline (or when Redis went away).
   */
  async #waitForFill (job: FillJob, deadline: number): Promise<CacheEntry | 'gone' | 'late'> {
    const { l2 } = this.#opts
    while (Date.now() < deadline) {
      await sleep(this.#opts.pollMs * (0.75 + Math.random() / 2))
      if (!l2.available || this.#closed) return 'late'
      const polled = await l2.poll(job.key, lockKeyOf(job.key))
      if (polled === null) return 'late'
      if (polled.current !== null && polled.current.storedAt > job.newerThan) return polled.current
      if (!polled.locked) {
        // The value may have landed between the two reads.
        const [again] = await l2.read([job.key]) ?? [null]
        return again != null && again.storedAt > job.newerThan ? again : 'gone'
      }
    }
    return 'late'
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
    if (job.graceMs <= 0 || !this.#opts.l2.available) return null
    const entry = await this.#opts.l2.readStale(job.key)
    if (entry === null) return null
    flight.offerStale(entry)
    if (!flight.invalidated) this.#opts.l1.set(job.key, entry, Date.now())
    return { entry, layer: 'stale' }
  }

  #adopt (job: FillJob, flight: Flight, filled: Filled): Filled {
    if (!flight.invalidated) this.#opts.l1.set(job.key, filled.entry, Date.now())
    return filled
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

  async #recordFailure (key: string, error: unknown): Promise<void> {
    const { failureTtlMs, failureCodec } = this.#opts
    if (failureTtlMs <= 0) return
    const encoded = failureCodec.encode(error)
    if (encoded === undefined) return
    this.#remember(key, error)
    if (this.#opts.l2.available) await this.#opts.l2.recordFailure(key, encoded, failureTtlMs)
  }
}

function sleep (ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref())
}
