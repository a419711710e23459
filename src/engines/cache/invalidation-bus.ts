/**
 * Keeps every instance's L1 coherent: invalidations are published on one Redis channel and
 * each instance drops the named keys from its L1 when the message arrives. A fill's landing
 * is published on the same channel with the value it wrote, which wakes the instances
 * waiting for that key.
 *
 * Subscribing takes a connection of its own (a subscribed connection cannot send ordinary
 * commands). Its connection errors are not logged here: the shared Redis state already logs
 * the transitions of the same server once. A connection that comes back subscribes again
 * and tells the cache, which then drops its L1 (messages sent while it was away are lost).
 */
import type { Redis } from 'ioredis'

export interface InvalidationMessage {
  /** The sending instance (its own messages are ignored). */
  o: string
  /** Keys to drop. */
  k?: string[]
  /** A key prefix to drop. */
  p?: string
  /** A fill landed: the one key in `k` now holds this entry (its JSON), so a waiter needs no read. */
  e?: string
  /** The one key in `k` failed to load with this (encoded) failure. */
  x?: string
}

export interface InvalidationBusOptions {
  createSubscriber: () => Redis | null
  channel: string
  instanceId: string
  onMessage: (message: InvalidationMessage) => void
  /** Subscribed (at first, or again after losing the subscription): messages may have been missed before. */
  onSubscribed: () => void
  retryMs?: number
}

export class InvalidationBus {
  subscribed = false
  received = 0
  readonly #opts: InvalidationBusOptions
  #sub: Redis | null = null
  #closing = false
  #retryTimer: NodeJS.Timeout | null = null

  constructor (options: InvalidationBusOptions) {
    this.#opts = options
  }

  get active (): boolean {
    return this.#sub !== null
  }

  start (): void {
    const sub = this.#opts.createSubscriber()
    if (sub === null) return
    this.#sub = sub
    sub.on('error', () => {})
    sub.on('ready', () => { void this.#subscribe() })
    sub.on('close', () => { this.subscribed = false })
    sub.on('message', (channel: string, raw: string) => {
      if (channel !== this.#opts.channel) return
      const message = parseMessage(raw)
      if (message === null || message.o === this.#opts.instanceId) return
      this.received++
      this.#opts.onMessage(message)
    })
    if (sub.status === 'wait') sub.connect().catch(() => {})
  }

  async close (): Promise<void> {
    this.#closing = true
    if (this.#retryTimer !== null) clearTimeout(this.#retryTimer)
    const sub = this.#sub
    this.#sub = null
    this.subscribed = false
    if (sub === null) return
    sub.removeAllListeners()
    sub.on('error', () => {})
    sub.disconnect(false)
  }

  async #subscribe (): Promise<void> {
    const sub = this.#sub
    if (sub === null || this.#closing) return
    try {
      await sub.subscribe(this.#opts.channel)
    } catch {
      // Still connected but the SUBSCRIBE failed (a timeout): try again shortly.
      if (this.#closing) return
      this.#retryTimer = setTimeout(() => {
        this.#retryTimer = null
        if (sub.status === 'ready') void this.#subscribe()
      }, this.#opts.retryMs ?? 1000)
      this.#retryTimer.unref()
      return
    }
    if (this.#closing) return
    this.subscribed = true
    // The first subscription too: copies put in L1 before it (the instance started while Redis
    // was away) may have been invalidated by messages it could not hear.
    this.#opts.onSubscribed()
  }
}

function parseMessage (raw: string): InvalidationMessage | null {
  try {
    const parsed = JSON.parse(raw) as InvalidationMessage
    if (typeof parsed !== 'object' || parsed === null || typeof parsed.o !== 'string') return null
    const keys = Array.isArray(parsed.k) ? parsed.k.filter((k): k is string => typeof k === 'string') : undefined
    const prefix = typeof parsed.p === 'string' ? parsed.p : undefined
    if (keys === undefined && prefix === undefined) return null
    return {
      o: parsed.o,
      ...(keys ? { k: keys } : {}),
      ...(prefix !== undefined ? { p: prefix } : {}),
      ...(typeof parsed.e === 'string' ? { e: parsed.e } : {}),
      ...(typeof parsed.x === 'string' ? { x: parsed.x } : {}),
    }
  } catch {
    return null
  }
}
