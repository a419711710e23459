/**
 * The vocabulary of the two-tier cache. TTLs are seconds in this API (as in HTTP and the
 * config); the engine converts them to milliseconds for the store.
 */
import type { CacheEntry } from './entry.js'

/** What a caller gets, as the `X-Cache` header says it. */
export type CacheStatus = 'HIT' | 'MISS' | 'STALE'

/** Where the value came from. `l2-wait`: another instance loaded it while this one waited. */
export type CacheLayer = 'l1' | 'l2' | 'l2-wait' | 'loader' | 'stale'

/** How long a value lives, for a read and for a `set`. */
export interface CachePolicy {
  /** Fresh lifetime in seconds (> 0). */
  ttl: number
  /** Seconds an expired value is kept, to be served (marked STALE) when no fresh one can be had. */
  grace?: number | undefined
  /**
   * With a stale copy at hand (in L1, or the entry in L2 within its grace), a caller waits at most this
   * many ms for a load (here or on another instance) and then gets the stale copy; the load
   * goes on and refreshes the cache when it finishes.
   */
  softTimeoutMs?: number | undefined
  /** The counters bucket; by default the name registered for the key's prefix. */
  name?: string | undefined
}

/** A value the loader does not want cached (answered to this read and its waiters only). */
export class Uncached<T> {
  constructor (readonly value: T) {}
}

/** Wraps a loader's result so that it is answered but not cached. */
export function noCache<T> (value: T): Uncached<T> {
  return new Uncached(value)
}

export function isUncached<T> (loaded: Loaded<T>): loaded is Uncached<T> {
  return loaded instanceof Uncached
}

/** What a loader resolves to: the value, or `noCache(value)`. */
export type Loaded<T> = T | Uncached<T>

/** One read: the key, how long its value lives, and how to load it. */
export interface CacheRequest<T> extends CachePolicy {
  key: string
  load: () => Promise<Loaded<T>>
}

/** Many keys in one read (one L2 round trip for all of them). */
export interface CacheBatchRequest<T> extends CachePolicy {
  keys: readonly string[]
  load: (key: string) => Promise<Loaded<T>>
  /** Loads at most this many at a time (8). */
  concurrency?: number
}

export interface CacheResult<T> {
  value: T
  cache: CacheStatus
  layer: CacheLayer
  /** When the value was loaded (ms since the epoch, the loading instance's clock). */
  storedAt: number
  /** Whole seconds since then (the HTTP `Age`), measured from the remaining TTL. */
  age: number
  /** The entry behind the answer (the HTTP layer memoises its serialized payload on it). */
  entry: CacheEntry<T>
}

/**
 * Failures shared between instances for a few seconds. `encode` says which errors are
 * recorded (undefined: this one is not, e.g. "not found"); `decode` makes the error another
 * instance throws from what was recorded.
 */
export interface FailureCodec {
  encode (error: unknown): string | undefined
  decode (encoded: string): unknown
}

/** Counters of one named cache. Every lookup counts exactly one of hitsL1, hitsL2, misses. */
export interface CacheCounters {
  hitsL1: number
  hitsL2: number
  /** Lookups that found nothing fresh (including those that ended in a stale serve). */
  misses: number
  /** Lookups answered with a stale value because the loader failed or was slow. */
  staleServes: number
  /** Loader calls made by this instance (including early refreshes). */
  loads: number
  loadErrors: number
  /** Loads started before expiry by the XFetch rule. */
  earlyRefreshes: number
}

export interface CacheStats {
  caches: Record<string, CacheCounters>
  l1: { enabled: boolean, entries: number, bytes: number, maxEntries: number, maxBytes: number }
  invalidation: {
    /** Messages published to the other instances (invalidations, puts, and fills landed with their value). */
    published: number
    /** Messages received from the other instances. */
    received: number
    /** The subscriber connection is subscribed right now. */
    subscribed: boolean
    /** Invalidations made while Redis was away, replayed to L2 when it returns. */
    pending: number
  }
}
