/**
 * The in-process store used while Redis is away (or not configured). Bounded by entries and
 * by bytes: under pressure the least recently used entries go first, so memory stays capped
 * however long an outage lasts. Expired entries are never returned.
 */
import { LRUCache } from 'lru-cache'
import type { KvStore } from './types.js'

export interface MemoryStoreOptions {
  maxEntries?: number
  maxBytes?: number
}

export class MemoryStore implements KvStore {
  readonly #cache: LRUCache<string, string>

  constructor ({ maxEntries = 50_000, maxBytes = 64 * 1024 * 1024 }: MemoryStoreOptions = {}) {
    this.#cache = new LRUCache<string, string>({
      max: maxEntries,
      maxSize: maxBytes,
      // UTF-16 in memory: two bytes a code unit, plus the key and the entry's overhead.
      sizeCalculation: (value, key) => 2 * (value.length + key.length) + 64,
      ttlAutopurge: false,
      allowStale: false,
    })
  }

  get size (): number {
    return this.#cache.size
  }

  get bytes (): number {
    return this.#cache.calculatedSize
  }

  getSync (key: string): string | null {
    return this.#cache.get(key) ?? null
  }

  async get (key: string): Promise<string | null> {
    return this.getSync(key)
  }

  async mget (keys: readonly string[]): Promise<Array<string | null>> {
    return keys.map((key) => this.getSync(key))
  }

  async set (key: string, value: string, ttlMs: number): Promise<void> {
    this.#cache.set(key, value, { ttl: positive(ttlMs) })
  }

  async del (...keys: string[]): Promise<number> {
    let removed = 0
    for (const key of keys) if (this.#cache.delete(key)) removed++
    return removed
  }

  async pttl (key: string): Promise<number | null> {
    if (!this.#cache.has(key)) return null
    return Math.max(1, Math.round(this.#cache.getRemainingTTL(key)))
  }

  async expire (key: string, ttlMs: number): Promise<boolean> {
    const value = this.getSync(key)
    if (value === null) return false
    this.#cache.set(key, value, { ttl: positive(ttlMs) })
    return true
  }

  async incrWindow (key: string, windowMs: number): Promise<{ count: number, ttlMs: number }> {
    return this.incrWindowSync(key, windowMs)
  }

  incrWindowSync (key: string, windowMs: number): { count: number, ttlMs: number } {
    const current = this.getSync(key)
    if (current === null) {
      this.#cache.set(key, '1', { ttl: positive(windowMs) })
      return { count: 1, ttlMs: windowMs }
    }
    // The LRU's clock can read a millisecond ahead of the window: clamp to it.
    const ttlMs = Math.min(windowMs, Math.max(1, Math.round(this.#cache.getRemainingTTL(key))))
    const count = Number(current) + 1
    this.#cache.set(key, String(count), { ttl: ttlMs, noUpdateTTL: true })
    return { count, ttlMs }
  }

  async setIfAbsent (key: string, value: string, ttlMs: number): Promise<boolean> {
    if (this.getSync(key) !== null) return false
    this.#cache.set(key, value, { ttl: positive(ttlMs) })
    return true
  }

  async compareAndDelete (key: string, expected: string): Promise<boolean> {
    if (this.getSync(key) !== expected) return false
    return this.#cache.delete(key)
  }

  async compareAndExpire (key: string, expected: string, ttlMs: number): Promise<boolean> {
    if (this.getSync(key) !== expected) return false
    this.#cache.set(key, expected, { ttl: positive(ttlMs) })
    return true
  }

  /** Keys starting with `prefix` (the in-process twin of SCAN MATCH prefix*). */
  * keysWithPrefix (prefix: string): Generator<string> {
    // entries() skips expired entries, so no separate liveness check is needed.
    for (const [key] of this.#cache.entries()) if (key.startsWith(prefix)) yield key
  }

  clear (): void {
    this.#cache.clear()
  }
}

function positive (ms: number): number {
  return Math.max(1, Math.ceil(ms))
}
