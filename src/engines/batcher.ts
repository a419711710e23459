/**
 * Collects items and hands them over together, so that many callers share one command (one
 * Redis round trip, one socket write) instead of one each.
 *
 * A batch leaves:
 *  - at the end of the current event-loop turn (setImmediate) when somebody waits for it
 *    (`add(item, true)` or `hurry()`), or when `maxBatch` items are queued;
 *  - otherwise `holdMs` after its first item (0: at the end of the turn as well), so items
 *    nobody waits for can gather company across turns;
 *  - at once on `flush()` (shutdown).
 * The items go to `send` in the order they were added; an empty batch is never sent. The
 * batcher knows nothing of what the items are or of Redis: the caller's `send` does.
 */
export interface BatcherOptions<T> {
  /** Receives each batch (never empty). Called synchronously from the timer or `flush()`. */
  send: (items: T[]) => void
  /** How long a batch nobody waits for may be held (ms; 0: until the end of the turn). */
  holdMs?: number
  /** Queued items that make the batch leave at the end of this turn. */
  maxBatch?: number
}

export class Batcher<T> {
  readonly #send: (items: T[]) => void
  readonly #holdMs: number
  readonly #maxBatch: number
  #items: T[] = []
  #immediate: NodeJS.Immediate | null = null
  #timer: NodeJS.Timeout | null = null
  readonly #flush = (): void => { this.flush() }

  constructor (options: BatcherOptions<T>) {
    this.#send = options.send
    this.#holdMs = Math.max(0, options.holdMs ?? 0)
    this.#maxBatch = Math.max(1, options.maxBatch ?? Number.POSITIVE_INFINITY)
  }

  /** Items waiting for the next batch. */
  get size (): number {
    return this.#items.length
  }

  /** Queues `item`; `urgent`: somebody waits for it, the batch leaves at the end of this turn. */
  add (item: T, urgent = false): void {
    this.#items.push(item)
    if (urgent || this.#items.length >= this.#maxBatch || this.#holdMs === 0) this.hurry()
    else if (this.#timer === null && this.#immediate === null) this.#timer = setTimeout(this.#flush, this.#holdMs)
  }

  /** The queued batch (if any) leaves at the end of this turn instead of after the hold. */
  hurry (): void {
    if (this.#immediate !== null || this.#items.length === 0) return
    if (this.#timer !== null) {
      clearTimeout(this.#timer)
      this.#timer = null
    }
    this.#immediate = setImmediate(this.#flush)
  }

  /** Sends what is queued now. */
  flush (): void {
    if (this.#immediate !== null) clearImmediate(this.#immediate)
    if (this.#timer !== null) clearTimeout(this.#timer)
    this.#immediate = null
    this.#timer = null
    const items = this.#items
    if (items.length === 0) return
    this.#items = []
    this.#send(items)
  }
}
