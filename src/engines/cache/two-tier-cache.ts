/**
 * A two-tier cache: L1 in this process (bounded by entries and by bytes) in front of L2 in
 * Redis (through the store seam). While Redis is away the cache runs on L1 and the loader
 * only and never waits for Redis. The parts, one job each:
 *
 *   entry.ts      what is kept for a key (named fields; the compact L2 form)
 *   l1.ts         the in-process entries
 *   keys.ts       what Redis holds: the value key for its ttl (an entry, a fill placeholder or
 *                 a failure) and, with a grace, its grace copy in the same hash slot
 *   l2.ts         Redis reads and writes, one key per command and one slot per script (every
 *                 read brings the key's PTTL)
 *   fill.ts       one loader call per key across instances: flights, claiming a cold key,
 *                 waiting for another instance's landing, early refreshes under the locks
 *                 engine, recorded failures, grace (the grace copy read only when wanted)
 *   coherence.ts  invalidation: the pub/sub bus (which also carries landings), replay after an outage
 *   xfetch.ts     early refresh
 *
 * This file puts them together behind the public API, and keeps the counters.
 */
import { randomUUID } from 'node:crypto'
import type { Redis } from 'ioredis'
import { Locks } from '../locks/locks.js'
import type { RedisState } from '../redis/state.js'
import type { ResilientStore } from '../store/resilient-store.js'
import { Coherence } from './coherence.js'
import { ageOf, decodeStored, encodeStored, entryOf, type CacheEntry } from './entry.js'
import { Fill, type FillJob, type FillLocks, type Filled } from './fill.js'
import { L1, type L1Options } from './l1.js'
import { L2 } from './l2.js'
import { mapSettledLimit } from './limit.js'
import type {
  CacheBatchRequest, CacheCounters, CachePolicy, CacheRequest, CacheResult, CacheStats, CacheStatus, FailureCodec,
} from './types.js'
import { DEFAULT_XFETCH, shouldRefreshEarly, type XFetchOptions } from './xfetch.js'

export interface CacheLogger {
  info (obj: object, msg: string): void
  warn (obj: object, msg: string): void
}

export interface TwoTierCacheOptions {
  store: ResilientStore
  state: RedisState
  log: CacheLogger
  l1?: L1Options
  /** REDIS_KEY_PREFIX: added by the client to keys, added here to the channel and to SCAN patterns. */
  keyPrefix?: string
  /** A dedicated connection for the invalidation channel (null: no Redis). */
  createSubscriber?: () => Redis | null
  /**
   * The refresh locks (stale and early-refreshed keys). By default a locks engine whose one
   * master is the main Redis (the lock lives beside the value it guards, whatever REDLOCK_URLS
   * says), in-process while it is away.
   */
  locks?: FillLocks
  /**
   * Life of a cold key's fill placeholder and of a refresh lock; the loading instance extends
   * it while its load runs. A waiter that hears nothing claims again after this long.
   */
  lockTtlMs?: number
  /** A load is abandoned after this long, and no caller waits longer for another instance's load. */
  loaderTimeoutMs?: number
  /** How often a waiting instance claims again while the invalidation channel is not subscribed. */
  pollMs?: number
  /** How long a failed load is remembered, here and for the other instances (0: not at all). */
  failureTtlMs?: number
  /** Which failures are remembered, and how another instance rebuilds them (default: none). */
  failureCodec?: FailureCodec
  /** Counter names by key prefix, e.g. [['stock:', 'quotes']]. */
  names?: ReadonlyArray<readonly [prefix: string, name: string]>
  xfetch?: Partial<XFetchOptions>
  /** Injected in tests to make early refresh deterministic. */
  random?: () => number
  /** Invalidations remembered while Redis is away, to be replayed when it returns. */
  maxPendingInvalidations?: number
}

const MAX_NAMES = 64
const NO_FAILURES: FailureCodec = { encode: () => undefined, decode: (encoded) => new Error(encoded) }

export class TwoTierCache {
  readonly instanceId = randomUUID()
  readonly #l1: L1
  readonly #l2: L2
  readonly #fill: Fill
  readonly #coherence: Coherence
  readonly #counters = new Map<string, CacheCounters>()
  readonly #names: ReadonlyArray<readonly [string, string]>
  readonly #xfetch: XFetchOptions
  readonly #random: () => number
  #closed = false

  constructor (options: TwoTierCacheOptions) {
    const { state, log } = options
    const keyPrefix = options.keyPrefix ?? ''
    this.#l1 = new L1(options.l1)
    this.#coherence = new Coherence({
      store: options.store,
      state,
      log,
      instanceId: this.instanceId,
      keyPrefix,
      createSubscriber: options.createSubscriber ?? (() => null),
      maxPending: options.maxPendingInvalidations ?? 10_000,
      local: {
        dropKeys: (keys) => { for (const key of keys) this.#dropLocal(key) },
        dropPrefix: (prefix) => {
          this.#l1.deletePrefix(prefix)
          this.#fill.abandonPrefix(prefix)
        },
        // A landing elsewhere concerns the flights here waiting for it. An L1 copy here is kept:
        // a fill lands only over a cold or stale key, and a copy's life ends with its L2 key's.
        filled: (key, news) => { this.#fill.deliver(key, news) },
        distrustAll: () => { this.#l1.expireAll() },
      },
    })
    const coherence = this.#coherence
    this.#l2 = new L2(options.store, coherence.channel, keyPrefix)
    this.#fill = new Fill({
      l1: this.#l1,
      l2: this.#l2,
      locks: options.locks ?? fillLocksOn(state, keyPrefix),
      announcer: {
        message: (key, news) => coherence.fillMessage(key, news),
        published: () => { coherence.countPublished() },
        get listening () { return coherence.listening },
      },
      instanceId: this.instanceId,
      lockTtlMs: options.lockTtlMs ?? 3000,
      loaderTimeoutMs: options.loaderTimeoutMs ?? 10_000,
      pollMs: options.pollMs ?? 25,
      failureTtlMs: options.failureTtlMs ?? 0,
      failureCodec: options.failureCodec ?? NO_FAILURES,
    })
    this.#names = options.names ?? []
    this.#xfetch = { ...DEFAULT_XFETCH, ...options.xfetch }
    this.#random = options.random ?? Math.random
    for (const [, name] of this.#names) this.#countersFor(name)
  }

  /**
   * The fresh L1 entry for `key` (counted as a hit), or undefined. Synchronous, for the HTTP
   * hook's fast path; undefined too when an early refresh is due, so that the caller goes
   * through `get`, which has the loader to refresh with.
   */
  peek (key: string, name?: string): CacheEntry | undefined {
    const entry = this.#l1.get(key)
    const now = Date.now()
    if (entry === undefined || now >= entry.freshUntil) return undefined
    if (entry.refreshDue === true) return undefined
    if (!this.#fill.busy(key) && this.#refreshDue(entry, now)) {
      entry.refreshDue = true
      return undefined
    }
    this.#countersFor(name ?? this.#nameOf(key)).hitsL1++
    return entry
  }

  /**
   * The value for `request.key`, from L1, L2 or the loader, with where it came from. Values
   * are JSON, returned deeply frozen (they are shared by every caller): copy before changing one.
   */
  async get<T> (request: CacheRequest<T>): Promise<CacheResult<T>> {
    checkPolicy(request)
    const counters = this.#countersFor(request.name ?? this.#nameOf(request.key))
    const entry = this.#l1.get(request.key)
    const now = Date.now()
    if (entry !== undefined && now < entry.freshUntil) {
      counters.hitsL1++
      if (!this.#fill.busy(request.key) && (entry.refreshDue === true || this.#refreshDue(entry, now))) {
        entry.refreshDue = false
        counters.earlyRefreshes++
        this.#fill.start(this.#job(request, counters, { stale: entry, newerThan: entry.storedAt }))
      }
      return result(entry as CacheEntry<T>, 'l1', now)
    }
    return this.#lookup(request, counters, { stale: entry })
  }

  /** `get(request).value`. */
  async wrap<T> (request: CacheRequest<T>): Promise<T> {
    return (await this.get(request)).value
  }

  /**
   * Many keys at once: L1 first, then ONE L2 round trip for all the others, then the loader
   * for what is still missing, at most `concurrency` at a time. Results are aligned with
   * `keys`; a failed key does not fail the others.
   */
  async getMany<T> (request: CacheBatchRequest<T>): Promise<Array<PromiseSettledResult<CacheResult<T>>>> {
    checkPolicy(request)
    const { keys } = request
    const results = new Array<PromiseSettledResult<CacheResult<T>>>(keys.length)
    const single = (key: string): CacheRequest<T> => ({ ...request, key, load: () => request.load(key) })
    let missing: number[] = []
    const now = Date.now()
    for (let i = 0; i < keys.length; i++) {
      const key = keys[i] as string
      const entry = this.#l1.get(key)
      if (entry === undefined || now >= entry.freshUntil) {
        missing.push(i)
        continue
      }
      const counters = this.#countersFor(request.name ?? this.#nameOf(key))
      counters.hitsL1++
      if (!this.#fill.busy(key) && this.#refreshDue(entry, now)) {
        counters.earlyRefreshes++
        this.#fill.start(this.#job(single(key), counters, { stale: entry, newerThan: entry.storedAt }))
      }
      results[i] = { status: 'fulfilled', value: result(entry as CacheEntry<T>, 'l1', now) }
    }
    const toRead = missing.filter((i) => this.#fill.joinable(keys[i] as string) === undefined)
    const found = await this.#l2.read(toRead.map((i) => keys[i] as string))
    const staleInL2 = new Map<number, CacheEntry>()
    if (found !== null) {
      const at = Date.now()
      toRead.forEach((i, n) => {
        const entry = found[n]
        if (entry == null) return
        if (entry.freshUntil <= at) {
          staleInL2.set(i, entry)
          return
        }
        const key = keys[i] as string
        this.#l1.set(key, entry, at)
        this.#countersFor(request.name ?? this.#nameOf(key)).hitsL2++
        results[i] = { status: 'fulfilled', value: result(entry as CacheEntry<T>, 'l2', at) }
      })
      missing = missing.filter((i) => results[i] === undefined)
    }
    const loaded = await mapSettledLimit(missing, request.concurrency ?? 8, async (i) => {
      const key = keys[i] as string
      const counters = this.#countersFor(request.name ?? this.#nameOf(key))
      return this.#lookup(single(key), counters, { stale: this.#l1.get(key) ?? staleInL2.get(i) })
    })
    missing.forEach((i, n) => { results[i] = loaded[n] as PromiseSettledResult<CacheResult<T>> })
    return results
  }

  /** The cached value (L1, then L2), or undefined. Never calls a loader. */
  async find<T> (key: string, name?: string): Promise<T | undefined> {
    const counters = this.#countersFor(name ?? this.#nameOf(key))
    const entry = this.#l1.get(key)
    if (entry !== undefined && Date.now() < entry.freshUntil) {
      counters.hitsL1++
      return entry.value as T
    }
    const [stored] = await this.#l2.read([key]) ?? [null]
    if (stored != null && stored.freshUntil > Date.now()) {
      counters.hitsL2++
      this.#l1.set(key, stored, Date.now())
      return stored.value as T
    }
    counters.misses++
    return undefined
  }

  /** Stores a value (the new truth: a load still in flight cannot overwrite it) and drops other instances' L1 copies. */
  async set (key: string, value: unknown, policy: CachePolicy): Promise<void> {
    checkPolicy(policy)
    const ttlMs = policy.ttl * 1000
    const graceMs = (policy.grace ?? 0) * 1000
    const json = encodeStored({ value, storedAt: Date.now(), ttl: ttlMs, grace: graceMs, loadDurationMs: 0 })
    const stored = decodeStored(json)
    if (stored === null) throw new TypeError(`the value for ${key} is not JSON`)
    this.#dropLocal(key)
    this.#l1.set(key, entryOf(stored, json.length, { at: Date.now(), remainingMs: ttlMs }), Date.now())
    if (await this.#l2.put({ key, json, ttlMs, graceMs })) {
      await this.#coherence.announce(key)
      return
    }
    this.#coherence.remember(key)
  }

  /**
   * Removes the key from L2 and from every instance's L1 (within milliseconds while Redis is
   * up). Resolves to true when Redis took it; false when only this L1 was cleared (the rest is
   * replayed when Redis returns, or there is no Redis and so no other copy).
   */
  async invalidate (key: string): Promise<boolean> {
    return this.#coherence.invalidate(key)
  }

  /** Removes every key starting with `prefix` (SCAN, never KEYS) from L2 and from every L1; resolves as `invalidate`. */
  async invalidatePrefix (prefix: string): Promise<boolean> {
    if (typeof prefix !== 'string' || prefix.length === 0) throw new TypeError('invalidatePrefix needs a non-empty prefix')
    return this.#coherence.invalidatePrefix(prefix)
  }

  stats (): CacheStats {
    const caches: Record<string, CacheCounters> = {}
    for (const [name, counters] of this.#counters) caches[name] = { ...counters }
    return { caches, l1: this.#l1.stats(), invalidation: this.#coherence.stats() }
  }

  async close (): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    this.#fill.close()
    await this.#coherence.close()
  }

  async #lookup<T> (request: CacheRequest<T>, counters: CacheCounters, from: { stale: CacheEntry | undefined }): Promise<CacheResult<T>> {
    const stale = from.stale !== undefined && Date.now() < from.stale.staleUntil ? from.stale : undefined
    const joined = this.#fill.joinable(request.key)
    const flight = joined ?? this.#fill.start(this.#job(request, counters, { stale }))
    if (joined !== undefined) flight.offerStale(stale)
    let filled: Filled
    try {
      filled = request.softTimeoutMs !== undefined
        ? await withSoftTimeout(flight, request.softTimeoutMs)
        : await flight.promise
    } catch (err) {
      counters.misses++
      throw err
    }
    const now = Date.now()
    switch (filled.layer) {
      case 'l2':
        counters.hitsL2++
        // Without an L1, hits on L2 are the hot path: early refresh applies to them.
        if (!this.#l1.enabled && !this.#fill.busy(request.key) && this.#refreshDue(filled.entry, now)) {
          counters.earlyRefreshes++
          this.#fill.start(this.#job(request, counters, { newerThan: filled.entry.storedAt, background: true }))
        }
        return result(filled.entry as CacheEntry<T>, 'l2', now)
      case 'stale':
        counters.misses++
        counters.staleServes++
        return result(filled.entry as CacheEntry<T>, 'stale', now)
      default:
        counters.misses++
        return result(filled.entry as CacheEntry<T>, filled.layer, now)
    }
  }

  #job<T> (request: CacheRequest<T>, counters: CacheCounters, extra: Partial<Pick<FillJob, 'stale' | 'newerThan' | 'background'>>): FillJob {
    return {
      key: request.key,
      ttlMs: request.ttl * 1000,
      graceMs: (request.grace ?? 0) * 1000,
      load: request.load,
      counters,
      stale: extra.stale,
      newerThan: extra.newerThan ?? -Infinity,
      background: extra.background ?? false,
    }
  }

  #refreshDue (entry: CacheEntry, now: number): boolean {
    return shouldRefreshEarly({ now, expiresAt: entry.freshUntil, loadMs: entry.loadDurationMs, ttlMs: entry.ttl }, this.#random, this.#xfetch)
  }

  #dropLocal (key: string): void {
    this.#l1.delete(key)
    this.#fill.abandon(key)
  }

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

/** Refresh locks on the main Redis alone (in process while it is away). */
function fillLocksOn (state: RedisState, keyPrefix: string): Locks {
  const client = state.client
  return new Locks({
    masters: client === null ? [] : [{ client, name: 'main', onError: (err, op) => { state.reportFailure(err, op) } }],
    followsMainRedis: true,
    mainAvailable: () => state.available,
    waitMs: 0,
    retryDelayMs: 25,
    keyPrefix,
    log: { info () {}, warn () {}, debug () {} },
  })
}

function checkPolicy (policy: CachePolicy): void {
  if (!(Number.isFinite(policy.ttl) && policy.ttl > 0)) throw new TypeError(`cache ttl must be a positive number of seconds (got ${String(policy.ttl)})`)
  const grace = policy.grace ?? 0
  if (!(Number.isFinite(grace) && grace >= 0)) throw new TypeError(`cache grace must be zero or a positive number of seconds (got ${String(policy.grace)})`)
}

const STATUS: Record<CacheResult<unknown>['layer'], CacheStatus> = { l1: 'HIT', l2: 'HIT', 'l2-wait': 'MISS', loader: 'MISS', stale: 'STALE' }

function result<T> (entry: CacheEntry<T>, layer: CacheResult<T>['layer'], now: number): CacheResult<T> {
  return { value: entry.value, cache: STATUS[layer], layer, storedAt: entry.storedAt, age: ageOf(entry, now), entry }
}

/** The flight's result, or after `ms` the stale copy it knows of (now or as soon as it learns of one). */
async function withSoftTimeout (flight: { promise: Promise<Filled>, staleFound: Promise<CacheEntry>, wantStale: () => void }, ms: number): Promise<Filled> {
  let timer: NodeJS.Timeout | undefined
  try {
    return await Promise.race([
      flight.promise,
      new Promise<void>((resolve) => {
        timer = setTimeout(resolve, ms)
        timer.unref()
      }).then(async () => {
        // Only now is the grace copy worth a read (the plain cold path never reads it).
        flight.wantStale()
        return await flight.staleFound
      }).then((entry): Filled => ({ entry, layer: 'stale' })),
    ])
  } finally {
    clearTimeout(timer)
  }
}
