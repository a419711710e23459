/**
 * L2: the values in Redis, through the store seam (a failed command switches the shared
 * state, and the call is answered as a miss). One key per value (see keys.ts); every command
 * touches that one key. Every read brings the key's PTTL with it and turns what it found into
 * an entry whose life is measured on this instance's clock: the key lives ttl + grace, so the
 * entry is fresh for PTTL − grace and stale (served within the grace) after that.
 */
import type { ResilientStore } from '../store/resilient-store.js'
import { decodeStored, entryOf, type CacheEntry } from './entry.js'
import { failKeyOf, failureIn, isPlaceholder } from './keys.js'
import { cacheScriptPipeline, withCacheScripts } from './scripts.js'

/**
 * What a claim of a cold key found. `claimed`: the placeholder is ours, load. `entry`: a value
 * (fresh or stale) was there. `filling`: another claim is loading it. `failed`: its last load
 * failed. `other`: something that is not the cache's (or vanished before its PTTL was read).
 */
export type Claim =
  | { kind: 'claimed' }
  | { kind: 'entry', entry: CacheEntry, raw: string }
  | { kind: 'filling' }
  | { kind: 'failed', encoded: string }
  | { kind: 'other' }

/** A replacement of the value that only happens if it is still `expected` ('' = absent). */
export interface Swap {
  key: string
  expected: string
  /** The new value ('' = delete the key). */
  replacement: string
  pxMs: number
  /** Published on `channel` in the same step when the swap happens ('' = nothing). */
  message: string
}

export interface WriteRequest {
  key: string
  json: string
  ttlMs: number
  graceMs: number
}

export class L2 {
  readonly #store: ResilientStore
  readonly #channel: string

  constructor (store: ResilientStore, channel: string) {
    this.#store = store
    this.#channel = channel
  }

  get available (): boolean {
    return this.#store.usingRedis
  }

  /**
   * The entries under `keys` (null: absent, or not an entry), fresh or stale, in order; null
   * when Redis is not usable. One round trip (a pipeline of one-key scripts).
   */
  async read (keys: readonly string[]): Promise<Array<CacheEntry | null> | null> {
    if (!this.#store.usingRedis || keys.length === 0) return null
    const at = Date.now()
    return this.#store.use('cache.get', async (client) => {
      const pipeline = cacheScriptPipeline(client)
      for (const key of keys) pipeline.aicCacheRead(key)
      const replies = (await pipeline.exec()) ?? []
      return keys.map((_key, i) => {
        const [err, reply] = replies[i] ?? [null, null]
        if (err) throw err
        const [raw, pttl] = reply as [string | null, number]
        return toEntry(raw, pttl, at)
      })
    }, () => null)
  }

  /**
   * One command: `SET key placeholder NX GET PX pxMs`. Either the cold key is now ours, or the
   * reply is what was there; an entry's PTTL is then read with a second command.
   */
  async claim (key: string, placeholder: string, pxMs: number): Promise<Claim | null> {
    if (!this.#store.usingRedis) return null
    return this.#store.use('cache.claim', async (client): Promise<Claim> => {
      const raw = await client.set(key, placeholder, 'PX', pxMs, 'NX', 'GET')
      if (raw === null) return { kind: 'claimed' }
      if (isPlaceholder(raw)) return { kind: 'filling' }
      const encoded = failureIn(raw)
      if (encoded !== null) return { kind: 'failed', encoded }
      if (decodeStored(raw) === null) return { kind: 'other' }
      const at = Date.now()
      const entry = toEntry(raw, await client.pttl(key), at)
      return entry === null ? { kind: 'other' } : { kind: 'entry', entry, raw }
    }, () => null)
  }

  /** Replaces the value if it is still what the caller expects, and publishes; false: it was not (or Redis is unusable). */
  async swap (swap: Swap): Promise<boolean> {
    return this.#store.use('cache.swap', async (client) => {
      const { key, expected, replacement, pxMs, message } = swap
      return Number(await withCacheScripts(client).aicCacheSwap(key, expected, replacement, pxMs, this.#channel, message)) === 1
    }, () => false)
  }

  /** Keeps a claim alive while its load runs; false: the placeholder is no longer ours. */
  async renew (key: string, placeholder: string, pxMs: number): Promise<boolean> {
    return this.#store.use('cache.renew', async (client) => {
      return Number(await withCacheScripts(client).aicCacheRenew(key, placeholder, pxMs)) === 1
    }, () => false)
  }

  /** The new truth, for ttl + grace (it replaces a placeholder too: the fill then does not land). False: Redis unusable. */
  async put (write: WriteRequest): Promise<boolean> {
    return this.#store.use('cache.set', async (client) => {
      const { key, json, ttlMs, graceMs } = write
      await client.set(key, json, 'PX', ttlMs + graceMs)
      return true
    }, () => false)
  }

  /** A recent failure to refresh the key's stale copy (as the codec encoded it). */
  async readFailure (key: string): Promise<string | null> {
    return this.#store.use('cache.failure', async (client) => await client.get(failKeyOf(key)), () => null)
  }

  /** Remembers a failed refresh for `ttlMs` for every instance. */
  async recordFailure (key: string, encoded: string, ttlMs: number): Promise<void> {
    await this.#store.use('cache.failure', async (client) => { await client.set(failKeyOf(key), encoded, 'PX', ttlMs) }, () => undefined)
  }
}

/** An entry from a key read with its PTTL: fresh for PTTL − grace, then stale until the key expires. */
export function toEntry (raw: unknown, pttl: unknown, at: number): CacheEntry | null {
  if (typeof raw !== 'string') return null
  const stored = decodeStored(raw)
  const remainingMs = Number(pttl)
  // -1 (no TTL) is not one of ours; -2: gone between the GET and the PTTL.
  if (stored === null || !(remainingMs > 0)) return null
  const freshMs = remainingMs - stored.grace
  if (freshMs > 0) return entryOf(stored, raw.length, { at, remainingMs: freshMs })
  const entry = entryOf(stored, raw.length, { at, remainingMs: 0 })
  return { ...entry, freshUntil: at + freshMs, staleUntil: at + remainingMs }
}
