/**
 * The fallback seam: the few key-value operations the cache, sessions, rate limiter and
 * locks need, with one Redis implementation and one bounded in-process implementation.
 * TTLs here are milliseconds; every write carries one, so no key lives forever.
 */
export interface KvStore {
  get (key: string): Promise<string | null>
  /** One round trip for many keys; the result is aligned with `keys`. */
  mget (keys: readonly string[]): Promise<Array<string | null>>
  set (key: string, value: string, ttlMs: number): Promise<void>
  /** Removes the keys; resolves to how many existed. */
  del (...keys: string[]): Promise<number>
  /** Remaining time to live in ms; null when the key is absent. */
  pttl (key: string): Promise<number | null>
  /** Sets a new TTL on an existing key; false when the key is absent. */
  expire (key: string, ttlMs: number): Promise<boolean>
  /**
   * Counts a hit in a fixed window: the counter and its expiry are set together, so a
   * crash can never leave a counter without a TTL.
   */
  incrWindow (key: string, windowMs: number): Promise<{ count: number, ttlMs: number }>
  /** SET NX PX: true when this call created the key. */
  setIfAbsent (key: string, value: string, ttlMs: number): Promise<boolean>
  /** Deletes the key only while it still holds `expected` (an owner token). */
  compareAndDelete (key: string, expected: string): Promise<boolean>
  /** Extends the key's TTL only while it still holds `expected`. */
  compareAndExpire (key: string, expected: string, ttlMs: number): Promise<boolean>
}
