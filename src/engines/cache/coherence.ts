/**
 * Coherence and invalidation: an invalidation deletes the value key in L2 (with a fill
 * placeholder in it: the fill under way then cannot land its older result, see fill.ts), its
 * grace copy and a recorded refresh failure, and is published so every instance drops its L1
 * copy. Each command touches one key. While Redis
 * is away the invalidations made here are remembered (bounded) and replayed when it returns;
 * a subscription that was lost makes this instance distrust its whole L1.
 */
import type { Redis } from 'ioredis'
import { scanTargets } from '../redis/scan.js'
import type { RedisState } from '../redis/state.js'
import type { ResilientStore } from '../store/resilient-store.js'
import { InvalidationBus, type InvalidationMessage } from './invalidation-bus.js'
import { failKeyOf, graceKeyOf, valueKeyOfGrace } from './keys.js'

export interface CoherenceLogger {
  info (obj: object, msg: string): void
  warn (obj: object, msg: string): void
}

/** What this instance drops when it hears of an invalidation. */
export interface LocalCopies {
  dropKeys (keys: readonly string[]): void
  dropPrefix (prefix: string): void
  /** Another instance landed a fill of `key` (`entry`: its JSON) or failed to (`failure`). */
  filled (key: string, news: { entry: string } | { failure: string }): void
  /** Messages may have been missed: nothing local is fresh any more. */
  distrustAll (): void
}

export interface CoherenceOptions {
  store: ResilientStore
  state: RedisState
  log: CoherenceLogger
  instanceId: string
  local: LocalCopies
  keyPrefix: string
  createSubscriber: () => Redis | null
  maxPending: number
}

export interface CoherenceStats { published: number, received: number, subscribed: boolean, pending: number }

export class Coherence {
  readonly #opts: CoherenceOptions
  readonly channel: string
  readonly #bus: InvalidationBus
  readonly #pendingKeys = new Set<string>()
  readonly #pendingPrefixes = new Set<string>()
  #pendingOverflow = false
  #published = 0
  readonly #onUp = (): void => { this.#replay() }

  constructor (options: CoherenceOptions) {
    this.#opts = options
    this.channel = `${options.keyPrefix}cache:invalidate`
    this.#bus = new InvalidationBus({
      createSubscriber: options.createSubscriber,
      channel: this.channel,
      instanceId: options.instanceId,
      onMessage: (message) => { this.#apply(message) },
      onSubscribed: () => { options.local.distrustAll() },
    })
    options.state.on('up', this.#onUp)
    this.#bus.start()
  }

  /** Drops `key` here, and in L2 and every other instance (now, or when Redis returns). True: Redis took it. */
  async invalidate (key: string): Promise<boolean> {
    this.#opts.local.dropKeys([key])
    const reached = await this.#invalidateRemote([key])
    if (!reached) this.#remember(key, null)
    return reached
  }

  async invalidatePrefix (prefix: string): Promise<boolean> {
    this.#opts.local.dropPrefix(prefix)
    const reached = await this.#invalidatePrefixRemote(prefix)
    if (!reached) this.#remember(null, prefix)
    return reached
  }

  /** A write made here (a `set`): tell the others to drop their copies. */
  async announce (key: string): Promise<void> {
    await this.#opts.store.use('cache.publish', async (client) => { await this.#publish(client, { o: this.#opts.instanceId, k: [key] }) }, () => undefined)
  }

  /** The message a fill's landing publishes (in its script) for `key`. */
  fillMessage (key: string, news: { entry?: string, failure?: string }): string {
    const message: InvalidationMessage = { o: this.#opts.instanceId, k: [key] }
    if (news.entry !== undefined) message.e = news.entry
    if (news.failure !== undefined) message.x = news.failure
    return JSON.stringify(message)
  }

  /** A fill's landing published its message. */
  countPublished (): void {
    this.#published++
  }

  /** Subscribed right now: a landing elsewhere will be heard. */
  get listening (): boolean {
    return this.#bus.subscribed
  }

  /** A write that could not reach Redis: the others must drop their copies when it returns. */
  remember (key: string): void {
    this.#remember(key, null)
  }

  stats (): CoherenceStats {
    return {
      published: this.#published,
      received: this.#bus.received,
      subscribed: this.#bus.subscribed,
      pending: this.#pendingKeys.size + this.#pendingPrefixes.size,
    }
  }

  async close (): Promise<void> {
    this.#opts.state.off('up', this.#onUp)
    await this.#bus.close()
  }

  #apply (message: InvalidationMessage): void {
    const [filled] = message.k ?? []
    if (filled !== undefined && message.e !== undefined) return this.#opts.local.filled(filled, { entry: message.e })
    if (filled !== undefined && message.x !== undefined) return this.#opts.local.filled(filled, { failure: message.x })
    if (message.k !== undefined) this.#opts.local.dropKeys(message.k)
    if (message.p !== undefined && message.p.length > 0) this.#opts.local.dropPrefix(message.p)
  }

  async #publish (client: Redis, message: InvalidationMessage): Promise<void> {
    await client.publish(this.channel, JSON.stringify(message))
    this.#published++
  }

  async #invalidateRemote (keys: readonly string[]): Promise<boolean> {
    if (!this.#opts.store.usingRedis || keys.length === 0) return keys.length === 0
    return this.#opts.store.use('cache.invalidate', async (client) => {
      await this.#deleteKeys(client, keys)
      for (let i = 0; i < keys.length; i += 100) await this.#publish(client, { o: this.#opts.instanceId, k: keys.slice(i, i + 100) })
      return true
    }, () => false)
  }

  async #invalidatePrefixRemote (prefix: string): Promise<boolean> {
    if (!this.#opts.store.usingRedis) return false
    return this.#opts.store.use('cache.invalidatePrefix', async (client) => {
      await this.#scan(client, prefix, async (keys) => { await this.#deleteKeys(client, keys) })
      // Refresh failures and grace copies whose value key has already expired.
      await this.#scan(client, failKeyOf(prefix), async (keys) => { await this.#unlink(client, keys) })
      const { keyPrefix } = this.#opts
      const graceCopies = async (names: string[]): Promise<void> => {
        await this.#unlink(client, names.filter((name) => valueKeyOfGrace(name, keyPrefix)?.startsWith(prefix) === true))
      }
      await this.#scan(client, `stale:{${keyPrefix}${prefix}`, graceCopies)
      await this.#scan(client, `stale:${prefix}`, graceCopies)
      await this.#publish(client, { o: this.#opts.instanceId, p: prefix })
      return true
    }, () => false)
  }

  /** Each key, its grace copy and its refresh failure, one key per command, in one round trip. */
  async #deleteKeys (client: Redis, keys: readonly string[]): Promise<void> {
    const { keyPrefix } = this.#opts
    await this.#unlink(client, keys.flatMap((key) => {
      const grace = graceKeyOf(key, keyPrefix)
      return grace === key ? [key, failKeyOf(key)] : [key, grace, failKeyOf(key)]
    }))
  }

  /** One UNLINK a key: one pipeline on one server; on a cluster (a pipeline's keys must share a slot) all at once. */
  async #unlink (client: Redis, keys: readonly string[]): Promise<void> {
    if (keys.length === 0) return
    if ((client as { isCluster?: boolean }).isCluster === true) {
      await Promise.all(keys.map(async (key) => await client.unlink(key)))
      return
    }
    const pipeline = client.pipeline()
    for (const key of keys) pipeline.unlink(key)
    for (const [err] of (await pipeline.exec()) ?? []) if (err) throw err
  }

  /** SCAN MATCH <prefix>* in bounded batches (never KEYS); keys are handed over without the client's key prefix. */
  async #scan (client: Redis, prefix: string, each: (keys: string[]) => Promise<void>): Promise<void> {
    const { keyPrefix } = this.#opts
    const pattern = `${globEscape(keyPrefix)}${globEscape(prefix)}*`
    // On a cluster every master holds only its own slots' keys: scan each.
    for (const target of scanTargets(client)) {
      let cursor = '0'
      do {
        const [next, found] = await target.scan(cursor, 'MATCH', pattern, 'COUNT', 500)
        cursor = next
        const keys = found.map((k) => k.slice(keyPrefix.length))
        if (keys.length > 0) await each(keys)
      } while (cursor !== '0')
    }
  }

  #remember (key: string | null, prefix: string | null): void {
    // Without Redis configured there is one instance and no L2: nothing to replay.
    if (this.#opts.state.client === null) return
    if (this.#pendingKeys.size + this.#pendingPrefixes.size >= this.#opts.maxPending) {
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
  #replay (): void {
    const keys = [...this.#pendingKeys]
    const prefixes = [...this.#pendingPrefixes]
    const overflow = this.#pendingOverflow
    this.#pendingKeys.clear()
    this.#pendingPrefixes.clear()
    this.#pendingOverflow = false
    if (overflow) {
      this.#opts.log.warn({ kept: this.#opts.maxPending }, 'cache: more invalidations were made during the Redis outage than could be remembered; the others expire by TTL')
    }
    if (keys.length === 0 && prefixes.length === 0) return
    void (async () => {
      if (!(await this.#invalidateRemote(keys))) for (const key of keys) this.#remember(key, null)
      for (const prefix of prefixes) if (!(await this.#invalidatePrefixRemote(prefix))) this.#remember(null, prefix)
      this.#opts.log.info({ keys: keys.length, prefixes: prefixes.length }, 'cache: replayed the invalidations made while Redis was away')
    })()
  }
}

function globEscape (text: string): string {
  return text.replace(/[*?[\]\\]/g, '\\$&')
}
