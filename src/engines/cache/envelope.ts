/** Encoding of L2 values, and the keys the cache keeps beside each value. */
import type { Envelope } from './types.js'

export function encodeEnvelope (envelope: Envelope): string {
  return JSON.stringify(envelope)
}

/** The envelope in `raw`, or null when `raw` is absent or not one of ours (treated as a miss). */
export function decodeEnvelope (raw: string | null | undefined): Envelope | null {
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
    v: e.v,
    t: e.t,
    ttl: e.ttl,
    g: isFiniteNumber(e.g) && e.g > 0 ? e.g : 0,
    d: isFiniteNumber(e.d) && e.d > 0 ? e.d : 0,
  }
}

/** The grace copy: kept for ttl + grace, read only when a load fails. */
export function staleKeyOf (key: string): string {
  return `stale:${key}`
}

/** The per-key fill lock (distinct from `lock:<key>` locks other concerns take). */
export function lockKeyOf (key: string): string {
  return `lock:fill:${key}`
}

/** The per-key generation, bumped by every invalidation so that an older fill cannot land after it. */
export function genKeyOf (key: string): string {
  return `cache:gen:${key}`
}

function isFiniteNumber (value: unknown): value is number {
  return typeof value === 'number' && Number.isFinite(value)
}
