/**
 * The vocabulary of the two-tier cache. TTLs are seconds in this API (as in HTTP and the
 * config); the engine converts them to milliseconds for the store.
 */

/** What a caller gets, as the `X-Cache` header says it. */
export type CacheStatus = 'HIT' | 'MISS' | 'STALE'

/** Where the value came from. `l2-wait`: another instance loaded it while this one waited. */
export type CacheLayer = 'l1' | 'l2' | 'l2-wait' | 'loader' | 'stale'

export interface WrapOptions {
  /** Fresh lifetime in seconds (> 0). */
  ttl: number
  /** Seconds an expired value is kept, to be served (marked stale) when the loader fails. */
  grace?: number
  /**
   * With a stale copy in L1, a caller waits at most this many ms for the loader and then
   * gets the stale copy; the load goes on and refreshes the cache when it finishes.
   */
  softTimeoutMs?: number
  /** The counters bucket; by default the name registered for the key's prefix. */
  name?: string
}

export interface CacheResult<T> {
  value: T
  cache: CacheStatus
  layer: CacheLayer
  /** When the value was loaded (ms since the epoch, the loading instance's clock). */
  storedAt: number
  /** Whole seconds since then (the HTTP `Age`). */
  age: number
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
    /** Messages published to the other instances. */
    published: number
    /** Messages received from the other instances. */
    received: number
    /** The subscriber connection is subscribed right now. */
    subscribed: boolean
    /** Invalidations made while Redis was away, replayed to L2 when it returns. */
    pending: number
  }
}

/**
 * What L2 holds under the key: the value and when and for how long it was stored, so that
 * any instance can tell its age and its remaining life without a PTTL round trip.
 */
export interface Envelope {
  /** The value (JSON). */
  v: unknown
  /** Stored at (ms since the epoch). */
  t: number
  /** Fresh lifetime (ms). */
  ttl: number
  /** Grace (ms). */
  g: number
  /** How long the load took (ms), the XFetch delta. */
  d: number
}
