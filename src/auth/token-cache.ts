/**
 * Strings that passed a check (a bearer token, a whole Authorization header) with what the
 * check produced, each until an expiry of its own (its token's `exp`), never longer. Used on
 * every authenticated request, so a lookup is kept cheap: entries are found by the string's
 * last characters (inside a token's signature: 43 random characters for HS256), because
 * hashing those costs less than hashing a whole token, and a hit is confirmed against the
 * whole string. Bounded: past `max` entries the oldest one goes (a miss only means checking
 * the string again).
 */

/** How many trailing characters find an entry. */
const KEY_CHARS = 32

interface Entry<V> { text: string, value: V, expiresAtMs: number }

export class CheckedStrings<V> {
  readonly #max: number
  readonly #entries = new Map<string, Entry<V>>()

  constructor (max: number) {
    this.#max = max
  }

  get size (): number {
    return this.#entries.size
  }

  /** What `text` was checked to be, unless it was never checked or has expired. */
  get (text: string): V | undefined {
    const key = text.slice(-KEY_CHARS)
    const entry = this.#entries.get(key)
    if (entry === undefined || entry.text !== text) return undefined
    if (!(entry.expiresAtMs > Date.now())) {
      this.#entries.delete(key)
      return undefined
    }
    return entry.value
  }

  /** Remembers `text` until `expiresAtMs` (nothing when that is not in the future). */
  set (text: string, value: V, expiresAtMs: number): void {
    if (!(expiresAtMs > Date.now())) return
    const key = text.slice(-KEY_CHARS)
    if (this.#entries.size >= this.#max && !this.#entries.has(key)) dropOldest(this.#entries)
    this.#entries.set(key, { text, value, expiresAtMs })
  }
}

/**
 * Removes a Map's oldest entry (insertion order): the eviction of the bounded caches here,
 * enough where a miss costs only one check or one parse again.
 */
export function dropOldest (map: Map<unknown, unknown>): void {
  for (const [oldest] of map) {
    map.delete(oldest)
    return
  }
}
