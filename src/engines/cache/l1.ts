/**
 * L1: the entries this process keeps, bounded by count and by (estimated) bytes, least
 * recently used out first. An entry leaves at the end of its grace; until its fresh life ends
 * it is a hit, after that only a stale fallback.
 */
import { LRUCache } from 'lru-cache'
import type { CacheEntry } from './entry.js'

export interface L1Options {
  enabled?: boolean
  maxEntries?: number
  maxBytes?: number
}

export interface L1Stats { enabled: boolean, entries: number, bytes: number, maxEntries: number, maxBytes: number }

export class L1 {
  readonly #lru: LRUCache<string, CacheEntry> | null
  readonly #maxEntries: number
  readonly #maxBytes: number

  constructor (options: L1Options = {}) {
    this.#maxEntries = options.maxEntries ?? 10_000
    this.#maxBytes = options.maxBytes ?? 32 * 1024 * 1024
    this.#lru = options.enabled === false
      ? null
      : new LRUCache<string, CacheEntry>({ max: this.#maxEntries, maxSize: this.#maxBytes, ttlAutopurge: false, allowStale: false })
  }

  get enabled (): boolean {
    return this.#lru !== null
  }

  /** The entry, fresh or stale, or undefined. */
  get (key: string): CacheEntry | undefined {
    return this.#lru?.get(key)
  }

  /** Keeps `entry` until its grace ends; an entry already past it is not kept. */
  set (key: string, entry: CacheEntry, now: number): void {
    if (this.#lru === null || entry.staleUntil <= now) return
    this.#lru.set(key, entry, { ttl: Math.ceil(entry.staleUntil - now), size: 2 * (key.length + entry.size) + 160 })
  }

  delete (key: string): void {
    this.#lru?.delete(key)
  }

  deletePrefix (prefix: string): void {
    if (this.#lru === null) return
    for (const [key] of [...this.#lru.entries()]) if (key.startsWith(prefix)) this.#lru.delete(key)
  }

  /** Nothing here is fresh any more: entries with a grace stay as stale fallbacks, the others go. */
  expireAll (): void {
    if (this.#lru === null) return
    for (const [key, entry] of [...this.#lru.entries()]) {
      if (entry.grace > 0) entry.freshUntil = 0
      else this.#lru.delete(key)
    }
  }

  stats (): L1Stats {
    return {
      enabled: this.#lru !== null,
      entries: this.#lru?.size ?? 0,
      bytes: this.#lru?.calculatedSize ?? 0,
      maxEntries: this.#maxEntries,
      maxBytes: this.#maxBytes,
    }
  }
}
