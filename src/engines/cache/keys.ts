/**
 * What the cache keeps in Redis. One key per value, `<key>` itself, holds one of:
 *
 * - an entry (the JSON envelope, see entry.ts), kept for ttl + grace: its fresh life is its
 *   PTTL minus its grace, and after that it is the stale copy served within the grace;
 * - a fill placeholder (`~fill:<token>`): an instance claimed the cold key and is loading it;
 * - a recorded failure (`~fail:<encoded error>`): the last load failed, for a few seconds.
 *
 * Beside it, on the rare path only: the refresh lock of a stale or early-refreshed key
 * (`lock:fill:<key>`, through the locks engine) and a failure of such a refresh
 * (`cache:fail:<key>`). Every command touches one key.
 */
import { createHash } from 'node:crypto'

const FILL = '~fill:'
const FAIL = '~fail:'

/** A placeholder for one claim (JSON never starts with `~`, so it is never read as an entry). */
export function placeholderOf (token: string): string {
  return `${FILL}${token}`
}

export function isPlaceholder (raw: string): boolean {
  return raw.startsWith(FILL)
}

/** The failure marker for an encoded error. */
export function failureMarkerOf (encoded: string): string {
  return `${FAIL}${encoded}`
}

/** The encoded error in a failure marker, or null when `raw` is not one. */
export function failureIn (raw: string): string | null {
  return raw.startsWith(FAIL) ? raw.slice(FAIL.length) : null
}

/**
 * The refresh lock of a key (distinct from `lock:<key>` locks other concerns take). A key the
 * locks engine would refuse as a resource (spaces, non-ASCII, too long) is locked by its hash.
 */
export function lockKeyOf (key: string): string {
  const plain = `lock:fill:${key}`
  return /^[\x21-\x7e]{1,512}$/.test(plain) ? plain : `lock:fill:#${createHash('sha256').update(key).digest('base64url')}`
}

/** A failed refresh of a key that still has its stale copy, shared by every instance for a few seconds. */
export function failKeyOf (key: string): string {
  return `cache:fail:${key}`
}
