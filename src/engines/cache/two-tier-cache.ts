/**
 * A two-tier cache: L1 in this process (bounded by entries and by bytes) in front of L2 in
 * Redis (through the store seam). While Redis is away the cache runs on L1 and the loader
 * only and never waits for Redis.
 *
 * - Single-flight: concurrent misses for a key in this process share one loader call; across
 *   instances a short per-key lock (SET NX PX with an owner token, released by
 *   compare-and-delete, extended while the load runs) lets one instance load while the
 *   others poll L2 for its result, for at most the loader timeout.
 * - Grace: a value is kept `grace` seconds past its TTL (in L1, and in L2 under
 *   `stale:<key>`); when a load fails, times out, or is slower than the soft timeout, the
 *   stale value is served and marked STALE. Errors are never cached.
 * - Early refresh: hits refresh a key shortly before it expires with XFetch's probability.
 * - Coherence: invalidations delete L2 and are published to every instance's L1; a
 *   generation counter per key stops a load that began before an invalidation from writing
 *   its older result after it. L1 entries never outlive their L2 TTL.
 */
import { randomUUID } from 'node:crypto'
import type { Redis } from 'ioredis'
import { LRUCache } from 'lru-cache'
import { GatewayTimeoutError } from '../../errors.js'
import type { RedisState } from '../redis/state.js'
import type { ResilientStore } from '../store/resilient-store.js'
import { decodeEnvelope, encodeEnvelope, genKeyOf, lockKeyOf, staleKeyOf } from './envelope.js'
import { InvalidationBus, type InvalidationMessage } from './invalidation-bus.js'
import { mapSettledLimit } from './limit.js'
import { cacheScriptPipeline, withCacheScripts } from './scripts.js'
import type { CacheCounters, CacheLayer, CacheResult, CacheStats, CacheStatus, Envelope, WrapOptions } from './types.js'
import { DEFAULT_XFETCH, shouldRefreshEarly, type XFetchOptions } from './xfetch.js'

export interface CacheLogger {
  info (obj: object, msg: string): void
  warn (obj: object, msg: string): void
}

export interface TwoTierCacheOptions {
  store: ResilientStore
  state: RedisState
  log: CacheLogger
  l1?: { enabled?: boolean, maxEntries?: number, maxBytes?: number }
  /** REDIS_KEY_PREFIX: added by the client to keys, added here to the channel and to SCAN patterns. */
  keyPrefix?: string
  /** A dedicated connection for the invalidation channel (null: no Redis). */
  createSubscriber?: () => Redis | null
  /** Life of a fill lock; the owner extends it while its load runs. */
  lockTtlMs?: number
  /** A load is abandoned after this long, and no caller waits longer for another instance's load. */
  loaderTimeoutMs?: number
  /** How often a waiting instance looks in L2 for another instance's result. */
  pollMs?: number
  /** Counter names by key prefix, e.g. [['stock:', 'quotes']]. */
  names?: ReadonlyArray<readonly [prefix: string, name: string]>
  xfetch?: Partial<XFetchOptions>
  /** Injected in tests to make early refresh deterministic. */
  random?: () => number
  /** Invalidations remembered while Redis is away, to be replayed when it returns. */
  maxPendingInvalidations?: number
  /** Life of a key's generation counter; must exceed the longest load. */
  genTtlMs?: number
}

interface L1Entry {
  value: unknown
  t: number
  freshUntil: number
  staleUntil: number
  ttl: number
  g: number
  d: number
}

interface Resolved {
  value: unknown
  t: number
  ttl: number
  d: number
  layer: 'l2' | 'l2-wait' | 'loader' | 'stale'
}

interface Flight {
  promise: Promise<Resolved>
  /** Set by an invalidation: the result is still returned to those waiting but not stored. */
  invalidated: boolean
}

const MAX_NAMES = 64

export class TwoTierCache {
  readonly instanceId = randomUUID()
  readonly #store: ResilientStore
  readonly #state: RedisState
  readonly #log: CacheLogger
  readonly #l1: LRUCache<string, L1Entry> | null
  readonly #l1Limits: { maxEntries: number, maxBytes: number }
  readonly #inflight = new Map<string, Flight>()
  /**
   * Early refreshes of L2 hits while L1 is off. They run beside the readers, not in their
   * way: a reader keeps reading the copy in L2 (still fresh) instead of joining the load.
   */
  readonly #refreshing = new Map<string, Flight>()
  readonly #counters = new Map<string, CacheCounters>()
  readonly #names: ReadonlyArray<readonly [string, string]>
  readonly #channel: string
  readonly #keyPrefix: string
  readonly #lockTtlMs: number
  readonly #loaderTimeoutMs: number
  readonly #pollMs: number
  readonly #xfetch: XFetchOptions
  readonly #random: () => number
  readonly #maxPending: number
  readonly #genTtlMs: number
  readonly #bus: InvalidationBus
  readonly #pendingKeys = new Set<string>()
  readonly #pendingPrefixes = new Set<string>()
  #pendingOverflow = false
  #published = 0
  #closed = false
  readonly #onUp = (): void => { this.#redisReturned() }

  constructor (options: TwoTierCacheOptions) {
    this.#store = options.store
    this.#state = options.state
    this.#log = options.log
    const maxEntries = options.l1?.maxEntries ?? 10_000
    const maxBytes = options.l1?.maxBytes ?? 32 * 1024 * 1024
    this.#l1Limits = { maxEntries, maxBytes }
    this.#l1 = options.l1?.enabled === false
      ? null
      : new LRUCache<string, L1Entry>({ max: maxEntries, maxSize: maxBytes, ttlAutopurge: false, allowStale: false })
    this.#names = options.names ?? []
    this.#keyPrefix = options.keyPrefix ?? ''
    this.#channel = `${this.#keyPrefix}cache:invalidate`
    this.#lockTtlMs = options.lockTtlMs ?? 3000
    this.#loaderTimeoutMs = options.loaderTimeoutMs ?? 10_000
    this.#pollMs = options.pollMs ?? 25
    this.#xfetch = { ...DEFAULT_XFETCH, ...options.xfetch }
    this.#random = options.random ?? Math.random
    this.#maxPending = options.maxPendingInvalidations ?? 10_000
    this.#genTtlMs = options.genTtlMs ?? 600_000
    for (const [, name] of this.#names) this.#countersFor(name)
    this.#bus = new InvalidationBus({
      createSubscriber: options.createSubscriber ?? (() => null),
      channel: this.#channel,
      instanceId: this.instanceId,
      onMessage: (message) => { this.#applyRemote(message) },
      // Messages sent while the subscription was down are lost: re-check everything in L1.
      onSubscribed: () => { this.#expireL1() },
    })
    this.#state.on('up', this.#onUp)
    this.#bus.start()
  }

  /** The loader's value for `key`, from L1, L2 or the loader (see `wrapEntry`). */
  async wrap<T> (key: string, options: WrapOptions, loader: () => Promise<T>): Promise<T> {
    return (await this.wrapEntry(key, options, loader)).value
  }

  /**
   * The value with where it came from. Values are JSON, returned deeply frozen (they are
   * shared by every caller): copy before changing one.
   */
  async wrapEntry<T> (key: string, options: WrapOptions, loader: () => Promise<T>): Promise<CacheResult<T>> {
    return this.wrapEntryNow(key, options, loader)
  }

  /**
   * `wrapEntry` for hot paths: a fresh L1 copy is answered synchronously (counted as a hit,
   * its XFetch early refresh started when due); anything else is `wrapEntry`'s promise.
   */
  wrapEntryNow<T> (key: string, options: WrapOptions, loader: () => Promise<T>): CacheResult<T> | Promise<CacheResult<T>> {
    checkOptions(options)
    const counters = this.#countersFor(options.name ?? this.#nameOf(key))
    const now = Date.now()
    const entry = this.#l1?.get(key)
    if (entry === undefined || now >= entry.freshUntil) return this.#lookup(key, options, loader, counters, entry, false)
    counters.hitsL1++
    if (!this.#inflight.has(key) && shouldRefreshEarly(now, entry.freshUntil, entry.d, entry.ttl, this.#random, this.#xfetch)) {
      counters.earlyRefreshes++
      this.#startFlight(key, options, loader, counters, entry, entry.t, false)
    }
    return toResult(entry.value, entry.t, 'HIT', 'l1', now)
  }

  /**
   * Many keys at once: L1 first, then ONE L2 round trip (MGET) for all the others, then the
   * loader for what is still missing, at most `concurrency` at a time. Results are aligned
   * with `keys`; a failed key does not fail the others.
   */
  async wrapMany<T> (
    keys: readonly string[],
    options: WrapOptions,
    loader: (key: string) => Promise<T>,
    concurrency = 8,
  ): Promise<Array<PromiseSettledResult<CacheResult<T>>>> {
    checkOptions(options)
    const results = new Array<PromiseSettledResult<CacheResult<T>>>(keys.length)
    const now = Date.now()
    let missing: number[] = []
    for (let i = 0; i < keys.length; i++) {
      const key = keys[i] as string
      const entry = this.#l1?.get(key)
      if (entry !== undefined && now < entry.freshUntil) {
        const counters = this.#countersFor(options.name ?? this.#nameOf(key))
        counters.hitsL1++
        if (!this.#inflight.has(key) && shouldRefreshEarly(now, entry.freshUntil, entry.d, entry.ttl, this.#random, this.#xfetch)) {
          counters.earlyRefreshes++
          this.#startFlight(key, options, () => loader(key), counters, entry, entry.t, false)
        }
        results[i] = { status: 'fulfilled', value: toResult(entry.value, entry.t, 'HIT', 'l1', now) }
      } else {
        missing.push(i)
      }
    }
    let prefetched = false
    const toRead = missing.filter((i) => !this.#inflight.has(keys[i] as string))
    if (toRead.length > 0 && this.#store.usingRedis) {
      const raws = await this.#l2mget(toRead.map((i) => keys[i] as string))
      prefetched = raws !== null
      const found = new Set<number>()
      toRead.forEach((i, n) => {
        const raw = raws?.[n] ?? null
        const envelope = decodeEnvelope(raw)
        if (envelope === null || raw === null) return
        const key = keys[i] as string
        this.#l1Set(key, envelope, raw.length)
        this.#countersFor(options.name ?? this.#nameOf(key)).hitsL2++
        results[i] = { status: 'fulfilled', value: toResult(deepFreeze(envelope.v), envelope.t, 'HIT', 'l2', Date.now()) }
        found.add(i)
      })
      missing = missing.filter((i) => !found.has(i))
    }
    const loaded = await mapSettledLimit(missing, concurrency, async (i) => {
      const key = keys[i] as string
      const counters = this.#countersFor(options.name ?? this.#nameOf(key))
      return this.#lookup(key, options, () => loader(key), counters, this.#l1?.get(key), prefetched)
    })
    missing.forEach((i, n) => { results[i] = loaded[n] as PromiseSettledResult<CacheResult<T>> })
    return results
  }

  /** The cached value (L1, then L2), or undefined. Never calls a loader. */
  async get<T> (key: string, name?: string): Promise<T | undefined> {
    const counters = this.#countersFor(name ?? this.#nameOf(key))
    const entry = this.#l1?.get(key)
    if (entry !== undefined && Date.now() < entry.freshUntil) {
      counters.hitsL1++
      return entry.value as T
    }
    if (this.#store.usingRedis) {
      const raw = await this.#l2get(key)
      const envelope = decodeEnvelope(raw)
      if (envelope !== null && raw !== null) {
        counters.hitsL2++
        this.#l1Set(key, envelope, raw.length)
        return deepFreeze(envelope.v) as T
      }
    }
    counters.misses++
    return undefined
  }

  /** Stores a value (the new truth: a load still in flight cannot overwrite it) and drops other instances' L1 copies. */
  async set (key: string, value: unknown, options: WrapOptions): Promise<void> {
    checkOptions(options)
    const ttlMs = options.ttl * 1000
    const graceMs = (options.grace ?? 0) * 1000
    const json = encodeEnvelope({ v: value, t: Date.now(), ttl: ttlMs, g: graceMs, d: 0 })
    const stored = JSON.parse(json) as Envelope
    this.#dropLocal([key])
    this.#l1Set(key, stored, json.length)
    if (this.#store.usingRedis) {
      const done = await this.#store.use('cache.set', async (client) => {
        await withCacheScripts(client).aicCachePut(key, staleKeyOf(key), genKeyOf(key), json, ttlMs, graceMs > 0 ? ttlMs + graceMs : 0, this.#genTtlMs)
        await this.#publish(client, { o: this.instanceId, k: [key] })
        return true
      }, () => false)
      if (done) return
    }
    this.#remember(key, null)
  }

  /**
   * Removes the key from L2 and from every instance's L1 (within milliseconds while Redis is
   * up). Resolves to true when Redis took it; false when only this L1 was cleared (the rest is
   * replayed when Redis returns, or there is no Redis and so no other copy).
   */
  async invalidate (key: string): Promise<boolean> {
    this.#dropLocal([key])
    const reached = await this.#invalidateRemote([key])
    if (!reached) this.#remember(key, null)
    return reached
  }

  /** Removes every key starting with `prefix` (SCAN, never KEYS) from L2 and from every L1; resolves as `invalidate`. */
  async invalidatePrefix (prefix: string): Promise<boolean> {
    if (typeof prefix !== 'string' || prefix.length === 0) throw new TypeError('invalidatePrefix needs a non-empty prefix')
    this.#dropLocalPrefix(prefix)
    const reached = await this.#invalidatePrefixRemote(prefix)
    if (!reached) this.#remember(null, prefix)
    return reached
  }

  stats (): CacheStats {
    const caches: Record<string, CacheCounters> = {}
    for (const [name, counters] of this.#counters) caches[name] = { ...counters }
    return {
      caches,
      l1: {
        enabled: this.#l1 !== null,
        entries: this.#l1?.size ?? 0,
        bytes: this.#l1?.calculatedSize ?? 0,
        maxEntries: this.#l1Limits.maxEntries,
        maxBytes: this.#l1Limits.maxBytes,
      },
      invalidation: {
        published: this.#published,
        received: this.#bus.received,
        subscribed: this.#bus.subscribed,
        pending: this.#pendingKeys.size + this.#pendingPrefixes.size,
      },
    }
  }

  async close (): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    this.#state.off('up', this.#onUp)
    await this.#bus.close()
  }

  // --- lookups ---------------------------------------------------------------------------

  async #lookup<T> (
    key: string,
    options: WrapOptions,
    loader: () => Promise<T>,
    counters: CacheCounters,
    staleEntry: L1Entry | undefined,
    prefetched: boolean,
  ): Promise<CacheResult<T>> {
    const flight = this.#inflight.get(key) ?? this.#startFlight(key, options, loader, counters, staleEntry, -Infinity, prefetched)
    let resolved: Resolved
    try {
      const soft = options.softTimeoutMs
      resolved = soft !== undefined && staleEntry !== undefined && Date.now() < staleEntry.staleUntil
        ? await withSoftTimeout(flight.promise, soft, staleEntry)
        : await flight.promise
    } catch (err) {
      counters.misses++
      throw err
    }
    const now = Date.now()
    switch (resolved.layer) {
      case 'l2':
        counters.hitsL2++
        // Without an L1, hits on L2 are the hot path: early refresh applies to them.
        if (this.#l1 === null && !this.#refreshing.has(key) &&
            shouldRefreshEarly(now, resolved.t + resolved.ttl, resolved.d, resolved.ttl, this.#random, this.#xfetch)) {
          counters.earlyRefreshes++
          this.#startFlight(key, options, loader, counters, undefined, resolved.t, false, this.#refreshing)
        }
        return toResult(resolved.value, resolved.t, 'HIT', 'l2', now)
      case 'stale':
        counters.misses++
        counters.staleServes++
        return toResult(resolved.value, resolved.t, 'STALE', 'stale', now)
      default:
        counters.misses++
        return toResult(resolved.value, resolved.t, 'MISS', resolved.layer, now)
    }
  }

  #startFlight (
    key: string,
    options: WrapOptions,
    loader: () => Promise<unknown>,
    counters: CacheCounters,
    staleEntry: L1Entry | undefined,
    newerThan: number,
    prefetched: boolean,
    /** Where the flight is found while it runs: readers join those in #inflight. */
    flights = this.#inflight,
  ): Flight {
    const flight: Flight = { promise: Promise.resolve() as unknown as Promise<Resolved>, invalidated: false }
    flight.promise = this.#fill(key, options, loader, counters, staleEntry, newerThan, prefetched, flight)
      .finally(() => { if (flights.get(key) === flight) flights.delete(key) })
    // Callers who left on a soft timeout (or an early refresh nobody awaits) must not leave
    // an unhandled rejection behind.
    flight.promise.catch(() => {})
    flights.set(key, flight)
    return flight
  }

  /**
   * One fill: L2, then the lock (with a second look at L2 and the key's generation in the
   * same round trip), then either the loader or a bounded wait for the instance that holds
   * the lock. `newerThan` is the storedAt of the copy being refreshed (early refresh).
   */
  async #fill (
    key: string,
    options: WrapOptions,
    loader: () => Promise<unknown>,
    counters: CacheCounters,
    staleEntry: L1Entry | undefined,
    newerThan: number,
    prefetched: boolean,
    flight: Flight,
  ): Promise<Resolved> {
    const ttlMs = options.ttl * 1000
    const graceMs = (options.grace ?? 0) * 1000

    if (this.#store.usingRedis && !prefetched) {
      const raw = await this.#l2get(key)
      const envelope = decodeEnvelope(raw)
      if (envelope !== null && raw !== null && envelope.t > newerThan) return this.#adopt(key, envelope, raw.length, flight, 'l2')
    }

    const lockKey = lockKeyOf(key)
    let token: string | null = null
    let generation = ''
    if (this.#store.usingRedis) {
      const deadline = Date.now() + this.#loaderTimeoutMs
      for (;;) {
        const candidate = randomUUID()
        const [acquired, gen, raw] = await Promise.all([
          this.#store.setIfAbsent(lockKey, candidate, this.#lockTtlMs),
          this.#store.get(genKeyOf(key)),
          this.#store.get(key),
        ])
        generation = gen ?? ''
        const current = decodeEnvelope(raw)
        if (current !== null && raw !== null && current.t > newerThan) {
          if (acquired) void this.#store.compareAndDelete(lockKey, candidate)
          return this.#adopt(key, current, raw.length, flight, 'l2')
        }
        if (acquired) {
          token = candidate
          break
        }
        const waited = await this.#waitForFill(key, lockKey, newerThan, deadline)
        if (waited !== 'gone' && waited !== 'late') return this.#adopt(key, waited.envelope, waited.size, flight, 'l2-wait')
        // The holder left without a value (it crashed, or its load failed): the lock is free
        // again, and the waiters race for it, so one of them loads while the others wait again.
        if (waited === 'gone' && Date.now() < deadline && this.#store.usingRedis) continue
        // Too slow, or Redis went away: load here.
        break
      }
    }

    counters.loads++
    const extender = token !== null ? this.#extendWhileLoading(lockKey, token) : null
    try {
      let stored: Envelope
      let size: number
      try {
        const started = performance.now()
        const value = await this.#runLoader(key, loader)
        if (value === undefined) throw new TypeError(`the cache loader for ${key} returned undefined (values are JSON)`)
        const json = encodeEnvelope({ v: value, t: Date.now(), ttl: ttlMs, g: graceMs, d: Math.round(performance.now() - started) })
        // Stored and returned exactly as any instance will read it back from L2.
        stored = JSON.parse(json) as Envelope
        size = json.length
        // Redis refusing the write (the key was invalidated since the load began) is an
        // invalidation this instance may not hear about (its message lost while the
        // subscriber reconnects): the value is answered to this request but kept nowhere.
        if (!flight.invalidated && this.#store.usingRedis && !(await this.#l2fill(key, json, ttlMs, graceMs, generation))) flight.invalidated = true
      } catch (err) {
        counters.loadErrors++
        const stale = await this.#findStale(key, staleEntry, graceMs, flight)
        if (stale !== null) return stale
        throw err
      }
      if (!flight.invalidated) this.#l1Set(key, stored, size)
      return { value: deepFreeze(stored.v), t: stored.t, ttl: stored.ttl, d: stored.d, layer: 'loader' }
    } finally {
      if (extender !== null) clearInterval(extender)
      // After the L2 write, so that waiters find the value before they see the lock gone.
      if (token !== null) await this.#store.compareAndDelete(lockKey, token)
    }
  }

  async #runLoader (key: string, loader: () => Promise<unknown>): Promise<unknown> {
    let timer: NodeJS.Timeout | undefined
    try {
      return await Promise.race([
        Promise.resolve().then(loader),
        new Promise<never>((_resolve, reject) => {
          timer = setTimeout(() => reject(new GatewayTimeoutError(`loading ${key} took longer than ${this.#loaderTimeoutMs} ms`)), this.#loaderTimeoutMs)
          timer.unref()
        }),
      ])
    } finally {
      clearTimeout(timer)
    }
  }

  #extendWhileLoading (lockKey: string, token: string): NodeJS.Timeout {
    const timer = setInterval(() => { void this.#store.compareAndExpire(lockKey, token, this.#lockTtlMs) }, Math.max(50, Math.floor(this.#lockTtlMs / 2)))
    timer.unref()
    return timer
  }

  /**
   * Polls L2 until the lock holder's value is there; 'gone' when the lock went without a value,
   * 'late' at the deadline (or when Redis went away).
   */
  async #waitForFill (key: string, lockKey: string, newerThan: number, deadline: number): Promise<{ envelope: Envelope, size: number } | 'gone' | 'late'> {
    while (Date.now() < deadline) {
      await sleep(this.#pollMs * (0.75 + Math.random() / 2))
      if (!this.#store.usingRedis || this.#closed) return 'late'
      const [raw, holder] = await Promise.all([this.#store.get(key), this.#store.get(lockKey)])
      const envelope = decodeEnvelope(raw)
      if (envelope !== null && raw !== null && envelope.t > newerThan) return { envelope, size: raw.length }
      if (holder === null) {
        // The value may have landed between the two reads.
        const again = await this.#store.get(key)
        const last = decodeEnvelope(again)
        return last !== null && again !== null && last.t > newerThan ? { envelope: last, size: again.length } : 'gone'
      }
    }
    return 'late'
  }

  async #findStale (key: string, staleEntry: L1Entry | undefined, graceMs: number, flight: Flight): Promise<Resolved | null> {
    const now = Date.now()
    if (staleEntry !== undefined && now < staleEntry.staleUntil) {
      return { value: staleEntry.value, t: staleEntry.t, ttl: staleEntry.ttl, d: staleEntry.d, layer: 'stale' }
    }
    if (graceMs <= 0 || !this.#store.usingRedis) return null
    const raw = await this.#l2get(staleKeyOf(key))
    const envelope = decodeEnvelope(raw)
    if (envelope === null || raw === null || now >= envelope.t + envelope.ttl + envelope.g) return null
    if (!flight.invalidated) this.#l1Set(key, envelope, raw.length)
    return { value: deepFreeze(envelope.v), t: envelope.t, ttl: envelope.ttl, d: envelope.d, layer: 'stale' }
  }

  #adopt (key: string, envelope: Envelope, size: number, flight: Flight, layer: 'l2' | 'l2-wait'): Resolved {
    if (!flight.invalidated) this.#l1Set(key, envelope, size)
    return { value: deepFreeze(envelope.v), t: envelope.t, ttl: envelope.ttl, d: envelope.d, layer }
  }

  // --- L1 ------------------------------------------------------------------------------

  /** An L1 copy is fresh until its L2 copy expires (never later), then kept for its grace. */
  #l1Set (key: string, envelope: Envelope, jsonLength: number): void {
    if (this.#l1 === null) return
    const now = Date.now()
    const freshUntil = Math.min(envelope.t + envelope.ttl, now + envelope.ttl)
    const staleUntil = freshUntil + envelope.g
    if (staleUntil <= now) return
    this.#l1.set(key, {
      value: deepFreeze(envelope.v),
      t: envelope.t,
      freshUntil,
      staleUntil,
      ttl: envelope.ttl,
      g: envelope.g,
      d: envelope.d,
    }, { ttl: Math.ceil(staleUntil - now), size: entrySize(key, jsonLength) })
  }

  #dropLocal (keys: readonly string[]): void {
    for (const key of keys) {
      this.#l1?.delete(key)
      this.#abandonFlights(key)
    }
  }

  #dropLocalPrefix (prefix: string): void {
    if (this.#l1 !== null) {
      for (const [key] of [...this.#l1.entries()]) if (key.startsWith(prefix)) this.#l1.delete(key)
    }
    const keys = new Set([...this.#inflight, ...this.#refreshing].map(([key]) => key))
    for (const key of keys) if (key.startsWith(prefix)) this.#abandonFlights(key)
  }

  /** A load or refresh of `key` under way keeps answering its waiters but stores nothing. */
  #abandonFlights (key: string): void {
    for (const flights of [this.#inflight, this.#refreshing]) {
      const flight = flights.get(key)
      if (flight === undefined) continue
      flight.invalidated = true
      flights.delete(key)
    }
  }

  /**
   * Every L1 copy must be checked again (invalidations may have been missed): copies with a
   * grace are kept as stale fallbacks but are no longer fresh; the others are dropped.
   */
  #expireL1 (): void {
    if (this.#l1 === null) return
    for (const [key, entry] of [...this.#l1.entries()]) {
      if (entry.g > 0) entry.freshUntil = 0
      else this.#l1.delete(key)
    }
  }

  #applyRemote (message: InvalidationMessage): void {
    if (message.k !== undefined) this.#dropLocal(message.k)
    if (message.p !== undefined && message.p.length > 0) this.#dropLocalPrefix(message.p)
  }

  // --- L2 ------------------------------------------------------------------------------

  #l2get (key: string): Promise<string | null> {
    return this.#store.use('cache.get', (client) => client.get(key), () => null)
  }

  #l2mget (keys: readonly string[]): Promise<Array<string | null> | null> {
    return this.#store.use('cache.mget', (client) => client.mget(...keys), () => null)
  }

  /** False only when Redis refused the write because the key's generation moved (an invalidation since the load began). */
  async #l2fill (key: string, json: string, ttlMs: number, graceMs: number, generation: string): Promise<boolean> {
    return this.#store.use('cache.fill', async (client) => {
      const written = await withCacheScripts(client).aicCacheFill(key, staleKeyOf(key), genKeyOf(key), json, ttlMs, graceMs > 0 ? ttlMs + graceMs : 0, generation)
      return Number(written) !== 0
    }, () => true)
  }

  async #publish (client: Redis, message: InvalidationMessage): Promise<void> {
    await client.publish(this.#channel, JSON.stringify(message))
    this.#published++
  }

  async #invalidateRemote (keys: readonly string[]): Promise<boolean> {
    if (!this.#store.usingRedis || keys.length === 0) return keys.length === 0
    return this.#store.use('cache.invalidate', async (client) => {
      const pipeline = cacheScriptPipeline(client)
      for (const key of keys) pipeline.aicCacheInvalidate(key, staleKeyOf(key), genKeyOf(key), this.#genTtlMs)
      for (const [err] of (await pipeline.exec()) ?? []) if (err) throw err
      for (let i = 0; i < keys.length; i += 100) await this.#publish(client, { o: this.instanceId, k: keys.slice(i, i + 100) })
      return true
    }, () => false)
  }

  async #invalidatePrefixRemote (prefix: string): Promise<boolean> {
    if (!this.#store.usingRedis) return false
    return this.#store.use('cache.invalidatePrefix', async (client) => {
      await this.#scan(client, prefix, async (keys) => {
        const pipeline = cacheScriptPipeline(client)
        for (const key of keys) pipeline.aicCacheInvalidate(key, staleKeyOf(key), genKeyOf(key), this.#genTtlMs)
        for (const [err] of (await pipeline.exec()) ?? []) if (err) throw err
      })
      // Grace copies whose main key has already expired.
      await this.#scan(client, staleKeyOf(prefix), async (keys) => { await client.unlink(...keys) })
      await this.#publish(client, { o: this.instanceId, p: prefix })
      return true
    }, () => false)
  }

  /** SCAN MATCH <prefix>* in bounded batches; keys are handed over without the client's key prefix. */
  async #scan (client: Redis, prefix: string, each: (keys: string[]) => Promise<void>): Promise<void> {
    const pattern = `${globEscape(this.#keyPrefix)}${globEscape(prefix)}*`
    let cursor = '0'
    do {
      const [next, found] = await client.scan(cursor, 'MATCH', pattern, 'COUNT', 500)
      cursor = next
      const keys = found.map((k) => k.slice(this.#keyPrefix.length))
      if (keys.length > 0) await each(keys)
    } while (cursor !== '0')
  }

  // --- Redis away and back ---------------------------------------------------------------

  #remember (key: string | null, prefix: string | null): void {
    // Without Redis configured there is one instance and no L2: nothing to replay.
    if (this.#state.client === null) return
    if (this.#pendingKeys.size + this.#pendingPrefixes.size >= this.#maxPending) {
      this.#pendingOverflow = true
      return
    }
    if (key !== null) this.#pendingKeys.add(key)
    if (prefix !== null) this.#pendingPrefixes.add(prefix)
  }

  /**
   * Redis is back: the invalidations made here during the outage reach L2 and the other
   * instances now. (Messages this instance may have missed are handled when its subscription
   * comes back: see `onSubscribed`.)
   */
  #redisReturned (): void {
    const keys = [...this.#pendingKeys]
    const prefixes = [...this.#pendingPrefixes]
    const overflow = this.#pendingOverflow
    this.#pendingKeys.clear()
    this.#pendingPrefixes.clear()
    this.#pendingOverflow = false
    if (overflow) {
      this.#log.warn({ kept: this.#maxPending }, 'cache: more invalidations were made during the Redis outage than could be remembered; the others expire by TTL')
    }
    if (keys.length === 0 && prefixes.length === 0) return
    void (async () => {
      if (!(await this.#invalidateRemote(keys))) for (const key of keys) this.#remember(key, null)
      for (const prefix of prefixes) if (!(await this.#invalidatePrefixRemote(prefix))) this.#remember(null, prefix)
      this.#log.info({ keys: keys.length, prefixes: prefixes.length }, 'cache: replayed the invalidations made while Redis was away')
    })()
  }

  // --- counters --------------------------------------------------------------------------

  #nameOf (key: string): string {
    for (const [prefix, name] of this.#names) if (key.startsWith(prefix)) return name
    const colon = key.indexOf(':')
    return colon > 0 ? key.slice(0, colon) : 'default'
  }

  #countersFor (name: string): CacheCounters {
    let counters = this.#counters.get(name)
    if (counters === undefined) {
      if (this.#counters.size >= MAX_NAMES) return this.#countersFor('other')
      counters = { hitsL1: 0, hitsL2: 0, misses: 0, staleServes: 0, loads: 0, loadErrors: 0, earlyRefreshes: 0 }
      this.#counters.set(name, counters)
    }
    return counters
  }
}

export function createTwoTierCache (options: TwoTierCacheOptions): TwoTierCache {
  return new TwoTierCache(options)
}

function checkOptions (options: WrapOptions): void {
  if (!(Number.isFinite(options.ttl) && options.ttl > 0)) throw new TypeError(`cache ttl must be a positive number of seconds (got ${String(options.ttl)})`)
  const grace = options.grace ?? 0
  if (!(Number.isFinite(grace) && grace >= 0)) throw new TypeError(`cache grace must be zero or a positive number of seconds (got ${String(options.grace)})`)
}

function toResult<T> (value: unknown, storedAt: number, cache: CacheStatus, layer: CacheLayer, now: number): CacheResult<T> {
  return { value: value as T, cache, layer, storedAt, age: Math.max(0, Math.floor((now - storedAt) / 1000)) }
}

async function withSoftTimeout (promise: Promise<Resolved>, ms: number, stale: L1Entry): Promise<Resolved> {
  let timer: NodeJS.Timeout | undefined
  try {
    return await Promise.race([
      promise,
      new Promise<Resolved>((resolve) => {
        timer = setTimeout(() => resolve({ value: stale.value, t: stale.t, ttl: stale.ttl, d: stale.d, layer: 'stale' }), ms)
        timer.unref()
      }),
    ])
  } finally {
    clearTimeout(timer)
  }
}

/** Estimated bytes an L1 entry holds: the key and the value as UTF-16, plus the entry's bookkeeping. */
function entrySize (key: string, jsonLength: number): number {
  return 2 * (key.length + jsonLength) + 160
}

function deepFreeze<T> (value: T): T {
  if (typeof value === 'object' && value !== null && !Object.isFrozen(value)) {
    Object.freeze(value)
    for (const child of Object.values(value)) deepFreeze(child)
  }
  return value
}

function globEscape (text: string): string {
  return text.replace(/[*?[\]\\]/g, '\\$&')
}

function sleep (ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref())
}
