/**
 * What the cache keeps for a key, in L1 and on the wire to L2.
 *
 * L2 holds a compact JSON envelope `{ v, t, ttl, g, d }` (value, stored at, TTL, grace, load
 * duration; short names because every instance reads it on every L2 hit). In this process it
 * becomes a `CacheEntry` with named fields.
 *
 * Clocks: `storedAt` is the loading instance's clock and is used only to tell one stored
 * version from another (an early refresh wants a newer one). When an entry is expiry and age
 * come from the remaining TTL Redis reported (PTTL) as read, measured on this instance's clock,
 * so a skewed clock elsewhere can neither stretch an L1 copy past its Redis key nor make Age lie.
 */

export interface CacheEntry<T = unknown> {
  /** The value (JSON), deeply frozen: shared by every reader. */
  readonly value: T
  /** When the loading instance stored it (its clock): the version stamp. */
  readonly storedAt: number
  /** Fresh until (this instance's clock). */
  freshUntil: number
  /** Kept as a stale fallback until (this instance's clock). */
  readonly staleUntil: number
  /** Fresh lifetime (ms). */
  readonly ttl: number
  /** Grace after the fresh lifetime (ms). */
  readonly grace: number
  /** How long the load took (ms): the XFetch delta. */
  readonly loadDurationMs: number
  /** Size of its JSON (characters), for the L1 byte bound. */
  readonly size: number
  /** The HTTP layer's serialized answer, computed once per entry by the route hook. */
  payload?: string
  /** A reader found an early refresh due but had no loader at hand (`peek`). */
  refreshDue?: boolean
}

/** The L2 form, as JSON. */
interface Envelope { v: unknown, t: number, ttl: number, g: number, d: number }

export interface Stored { value: unknown, storedAt: number, ttl: number, grace: number, loadDurationMs: number }

export function encodeStored (stored: Stored): string {
  const envelope: Envelope = { v: stored.value, t: stored.storedAt, ttl: stored.ttl, g: stored.grace, d: stored.loadDurationMs }
  return JSON.stringify(envelope)
}

/** The stored value in `raw`, or null when `raw` is absent or not one of ours (a miss). */
export function decodeStored (raw: string | null | undefined): Stored | null {
  if (raw === null || raw === undefined) return null
  let parsed: unknown
  try {
    parsed = JSON.parse(raw)
  } catch {
    return null
  }
  if (typeof parsed !== 'object' || parsed === null || !('v' in parsed)) return null
  const e = parsed as Record<string, unknown>
  if (!isFiniteNumber(e.t) || !isFiniteNumber(e.ttl) || e.ttl <= 0) return null
  return {
    value: e.v,
    storedAt: e.t,
    ttl: e.ttl,
    grace: isFiniteNumber(e.g) && e.g > 0 ? e.g : 0,
    loadDurationMs: isFiniteNumber(e.d) && e.d > 0 ? e.d : 0,
  }
}

/**
 * An entry whose fresh life ends `remainingMs` after `at` (this instance's clock): after a
 * load, the full TTL from the moment of the write; after an L2 read, the PTTL Redis reported.
 */
export function entryOf<T> (stored: Stored, size: number, life: { at: number, remainingMs: number }): CacheEntry<T> {
  const freshUntil = life.at + Math.min(stored.ttl, Math.max(0, life.remainingMs))
  return {
    value: deepFreeze(stored.value) as T,
    storedAt: stored.storedAt,
    freshUntil,
    staleUntil: freshUntil + stored.grace,
    ttl: stored.ttl,
    grace: stored.grace,
    loadDurationMs: stored.loadDurationMs,
    size,
  }
}

/** Whole seconds since the value was loaded, from its remaining life (no other clock involved). */
export function ageOf (entry: CacheEntry, now: number): number {
  return Math.max(0, Math.floor((now - (entry.freshUntil - entry.ttl)) / 1000))
}

export function deepFreeze<T> (value: T): T {
  if (typeof value === 'object' && value !== null && !Object.isFrozen(value)) {
    Object.freeze(value)
    for (const child of Object.values(value)) deepFreeze(child)
  }
  return value
}

function isFiniteNumber (value: unknown): value is number {
  return typeof value === 'number' && Number.isFinite(value)
}
