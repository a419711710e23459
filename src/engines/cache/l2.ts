/**
 * L2: the values in Redis, through the store seam (a failed command switches the shared
 * state, and the call is answered as a miss). Every read brings the key's PTTL with it, and
 * turns what it found into entries whose life is measured on this instance's clock.
 */
import type { ResilientStore } from '../store/resilient-store.js'
import { decodeStored, entryOf, type CacheEntry } from './entry.js'
import { failKeyOf, genKeyOf, staleKeyOf } from './keys.js'
import { withCacheScripts } from './scripts.js'

/** What one look at a key before loading it found (one round trip). */
export interface Probe {
  generation: string
  current: CacheEntry | null
  stale: CacheEntry | null
  /** A recent failure of its loader (as the codec encoded it). */
  failure: string | null
}

export interface WriteRequest {
  key: string
  json: string
  ttlMs: number
  graceMs: number
}

export class L2 {
  readonly #store: ResilientStore
  readonly #genTtlMs: number

  constructor (store: ResilientStore, genTtlMs: number) {
    this.#store = store
    this.#genTtlMs = genTtlMs
  }

  get available (): boolean {
    return this.#store.usingRedis
  }

  /** The entries under `keys` (null: absent, or Redis unusable), in order; null when not asked. */
  async read (keys: readonly string[]): Promise<Array<CacheEntry | null> | null> {
    if (!this.#store.usingRedis || keys.length === 0) return null
    const at = Date.now()
    const reply = await this.#store.use('cache.get', async (client) => {
      return await withCacheScripts(client).aicCacheRead(keys.length, ...keys) as Array<string | number | null>
    }, () => null)
    if (reply === null) return null
    return keys.map((_key, i) => toEntry(reply[2 * i], reply[2 * i + 1], at))
  }

  /** The value, its grace copy, its generation and a recent failure, in one round trip. */
  async probe (key: string): Promise<Probe | null> {
    const at = Date.now()
    return this.#store.use('cache.probe', async (client) => {
      const [gen, value, pttl, stale, stalePttl, failure] = await withCacheScripts(client)
        .aicCacheProbe(key, genKeyOf(key), staleKeyOf(key), failKeyOf(key)) as Array<string | number | null>
      return {
        generation: typeof gen === 'string' ? gen : '',
        current: toEntry(value, pttl, at),
        stale: toStaleEntry(stale, stalePttl, at),
        failure: typeof failure === 'string' ? failure : null,
      }
    }, () => null)
  }

  /** The value and whether the fill lock is still held (a waiter's poll; one round trip). */
  async poll (key: string, lockKey: string): Promise<{ current: CacheEntry | null, locked: boolean } | null> {
    if (!this.#store.usingRedis) return null
    const at = Date.now()
    return this.#store.use('cache.poll', async (client) => {
      const [[value, pttl], holder] = await Promise.all([
        withCacheScripts(client).aicCacheRead(1, key) as Promise<Array<string | number | null>>,
        client.exists(lockKey),
      ])
      return { current: toEntry(value, pttl, at), locked: holder === 1 }
    }, () => null)
  }

  /** The grace copy only. */
  async readStale (key: string): Promise<CacheEntry | null> {
    const at = Date.now()
    return this.#store.use('cache.stale', async (client) => {
      const [value, pttl] = await withCacheScripts(client).aicCacheRead(1, staleKeyOf(key)) as Array<string | number | null>
      return toStaleEntry(value, pttl, at)
    }, () => null)
  }

  /** The key and its grace copy, if its generation is still `generation`. False: an invalidation came first. */
  async fill (write: WriteRequest, generation: string): Promise<boolean> {
    return this.#store.use('cache.fill', async (client) => {
      const { key, json, ttlMs, graceMs } = write
      const written = await withCacheScripts(client).aicCacheFill(key, staleKeyOf(key), genKeyOf(key), json, ttlMs, graceMs > 0 ? ttlMs + graceMs : 0, generation)
      return Number(written) !== 0
    }, () => true)
  }

  /** The new truth (bumps the generation, so an older fill in flight cannot land). False: Redis unusable. */
  async put (write: WriteRequest): Promise<boolean> {
    return this.#store.use('cache.set', async (client) => {
      const { key, json, ttlMs, graceMs } = write
      await withCacheScripts(client).aicCachePut(key, staleKeyOf(key), genKeyOf(key), json, ttlMs, graceMs > 0 ? ttlMs + graceMs : 0, this.#genTtlMs)
      return true
    }, () => false)
  }

  /** Remembers a failed load for `ttlMs` for every instance. */
  async recordFailure (key: string, encoded: string, ttlMs: number): Promise<void> {
    await this.#store.use('cache.failure', async (client) => { await client.set(failKeyOf(key), encoded, 'PX', ttlMs) }, () => undefined)
  }
}

function toEntry (raw: unknown, pttl: unknown, at: number): CacheEntry | null {
  if (typeof raw !== 'string') return null
  const stored = decodeStored(raw)
  const remainingMs = Number(pttl)
  // -1 (no TTL) is not one of ours; -2: gone between the GET and the PTTL.
  if (stored === null || !(remainingMs > 0)) return null
  return entryOf(stored, raw.length, { at, remainingMs })
}

/** A grace copy lives ttl + grace: its fresh life ended `grace` before its key expires. */
function toStaleEntry (raw: unknown, pttl: unknown, at: number): CacheEntry | null {
  if (typeof raw !== 'string') return null
  const stored = decodeStored(raw)
  const remainingMs = Number(pttl)
  if (stored === null || !(remainingMs > 0)) return null
  const entry = entryOf(stored, raw.length, { at, remainingMs: 0 })
  return { ...entry, freshUntil: at + remainingMs - stored.grace, staleUntil: at + remainingMs }
}
