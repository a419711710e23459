/**
 * L2: the values in Redis, through the store seam (a failed command switches the shared
 * state, and the call is answered as a miss). A value key per value, and its grace copy in
 * the same hash slot (see keys.ts); every command or script touches that one slot. Every read
 * brings the key's PTTL with it and turns what it found into an entry whose life is measured
 * on this instance's clock: the value key lives exactly ttl, so an entry read there is fresh
 * for its PTTL; the grace copy lives ttl + grace and is read only for its stale copy.
 */
import type { Redis } from 'ioredis'
import type { ResilientStore } from '../store/resilient-store.js'
import { decodeStored, entryOf, type CacheEntry } from './entry.js'
import { failKeyOf, failureIn, graceKeyOf, isPlaceholder } from './keys.js'
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

/** A load's result, written over what the caller left (`expected`: its placeholder, the entry it refreshed, '' = absent). */
export interface Landing {
  key: string
  expected: string
  json: string
  ttlMs: number
  graceMs: number
  /** Published on `channel` in the same step when the entry lands ('' = nothing). */
  message: string
  /** The life given back to a placeholder or failure marker found in place of `expected`. */
  restoreMs: number
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
  readonly #keyPrefix: string

  constructor (store: ResilientStore, channel: string, keyPrefix = '') {
    this.#store = store
    this.#channel = channel
    this.#keyPrefix = keyPrefix
  }

  /** The grace copy's name of `key`. */
  graceKeyOf (key: string): string {
    return graceKeyOf(key, this.#keyPrefix)
  }

  get available (): boolean {
    return this.#store.usingRedis
  }

  /**
   * The entries under `keys` (null: absent, or not an entry), fresh, in order; null when Redis
   * is not usable. One round trip (a pipeline of one-key scripts). Grace copies are not read.
   */
  async read (keys: readonly string[]): Promise<Array<CacheEntry | null> | null> {
    if (!this.#store.usingRedis || keys.length === 0) return null
    const at = Date.now()
    return this.#store.use('cache.get', async (client) => {
      const replies = await readEach(client, keys)
      return keys.map((_key, i) => {
        const [err, reply] = replies[i] ?? [null, null]
        if (err) throw err
        const [raw, pttl] = reply as [string | null, number]
        return toEntry(raw, pttl, at)
      })
    }, () => null)
  }

  /** The stale copy of `key` from its grace copy (never fresh: the value key holds the fresh one), or null. */
  async readGrace (key: string): Promise<CacheEntry | null> {
    const graceKey = this.graceKeyOf(key)
    if (!this.#store.usingRedis || graceKey === key) return null
    const at = Date.now()
    return this.#store.use('cache.grace', async (client) => {
      const [raw, pttl] = await withCacheScripts(client).aicCacheRead(graceKey) as [string | null, number]
      return toGraceEntry(raw, pttl, at)
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

  /** Lands a load's entry (value key and grace copy) and publishes; false: it did not land (or Redis is unusable). */
  async land (landing: Landing): Promise<boolean> {
    return this.#store.use('cache.land', async (client) => {
      const { key, expected, json, ttlMs, graceMs, message, restoreMs } = landing
      const reply = await withCacheScripts(client).aicCacheLand(key, this.graceKeyOf(key), expected, json, ttlMs, graceMs, this.#channel, message, restoreMs)
      return Number(reply) === 1
    }, () => false)
  }

  /** Hands a claimed key back (deleted, or a failure marker) if it is still the placeholder, and publishes; false: it was not (or Redis is unusable). */
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

  /**
   * The new truth: the value key for ttl and its grace copy for ttl + grace, in one step (it
   * replaces a placeholder too: the fill then does not land). False: Redis unusable.
   */
  async put (write: WriteRequest): Promise<boolean> {
    return this.#store.use('cache.set', async (client) => {
      const { key, json, ttlMs, graceMs } = write
      await withCacheScripts(client).aicCachePut(key, this.graceKeyOf(key), json, ttlMs, graceMs)
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

/** An entry from a value key read with its PTTL: fresh for PTTL, then stale for its grace. */
export function toEntry (raw: unknown, pttl: unknown, at: number): CacheEntry | null {
  if (typeof raw !== 'string') return null
  const stored = decodeStored(raw)
  const remainingMs = Number(pttl)
  // -1 (no TTL) is not one of ours; -2: gone between the GET and the PTTL.
  if (stored === null || !(remainingMs > 0)) return null
  return entryOf(stored, raw.length, { at, remainingMs })
}

/**
 * A stale entry from a grace copy read with its PTTL: stale until the copy expires. It is
 * never taken as fresh (only the value key says a value is fresh, an operator's `DEL` of it
 * included); its age is measured from its fresh life, PTTL − grace.
 */
export function toGraceEntry (raw: unknown, pttl: unknown, at: number): CacheEntry | null {
  if (typeof raw !== 'string') return null
  const stored = decodeStored(raw)
  const remainingMs = Number(pttl)
  if (stored === null || !(remainingMs > 0)) return null
  const freshMs = Math.min(0, remainingMs - stored.grace)
  const entry = entryOf(stored, raw.length, { at, remainingMs: 0 })
  return { ...entry, freshUntil: at + freshMs, staleUntil: at + remainingMs }
}

/**
 * aicCacheRead for each key: one pipeline on one server; on a cluster (a pipeline's keys must
 * share a slot) every call on its own, all at once.
 */
async function readEach (client: Redis, keys: readonly string[]): Promise<Array<[Error | null, unknown]>> {
  if ((client as { isCluster?: boolean }).isCluster !== true) {
    const pipeline = cacheScriptPipeline(client)
    for (const key of keys) pipeline.aicCacheRead(key)
    return (await pipeline.exec()) ?? []
  }
  const scripted = withCacheScripts(client)
  const settled = await Promise.allSettled(keys.map(async (key) => await scripted.aicCacheRead(key)))
  return settled.map((r) => r.status === 'fulfilled' ? [null, r.value] : [r.reason instanceof Error ? r.reason : new Error(String(r.reason)), null])
}
