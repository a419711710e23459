/**
 * What the cache keeps in Redis. The value key, `<key>` itself, holds one of:
 *
 * - an entry (the JSON envelope, see entry.ts), kept for exactly its ttl: whoever reads the
 *   key (another component, `redis-cli GET`) never sees a value older than its TTL there;
 * - a fill placeholder (`~fill:<token>`): an instance claimed the cold key and is loading it;
 * - a recorded failure (`~fail:<encoded error>`): the last load failed, for a few seconds.
 *
 * The grace copy (`stale:{<key>}`, or `stale:<key>` when the key has a hash tag of its own)
 * holds the same entry for ttl + grace, in the same hash slot: it is written in the same step
 * as the value (a landing, a put) and read only when a stale value is wanted (a soft timeout,
 * a failed load). Its fresh life is its PTTL minus its grace.
 *
 * Beside them, on the rare path only: the refresh lock of an early-refreshed key
 * (`lock:fill:<key>`, through the locks engine) and a failure of such a refresh
 * (`cache:fail:<key>`). Every command and script touches one hash slot.
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

/**
 * What Redis Cluster hashes for a full key name: the content of its hash tag (between the
 * first `{` and the first `}` after it, when not empty), else the whole name.
 */
export function hashedPart (name: string): string {
  const open = name.indexOf('{')
  if (open === -1) return name
  const close = name.indexOf('}', open + 1)
  return close > open + 1 ? name.slice(open + 1, close) : name
}

/**
 * The grace copy of `key` (as the client names it, before its `keyPrefix`): `stale:<key>`
 * when the full name already has a hash tag (the copy shares it), else `stale:{<prefix><key>}`
 * (hashed as the full value key). A name no copy can share a slot with (a `}` with no valid
 * tag before it) has no grace copy: the key itself is returned, and nothing is kept past the ttl.
 */
export function graceKeyOf (key: string, keyPrefix = ''): string {
  const hashed = hashedPart(`${keyPrefix}${key}`)
  for (const name of [`stale:${key}`, `stale:{${keyPrefix}${key}}`]) {
    if (hashedPart(`${keyPrefix}${name}`) === hashed) return name
  }
  return key
}

/** The value key of a grace copy's name (from a SCAN), or null when `name` is not one. */
export function valueKeyOfGrace (name: string, keyPrefix = ''): string | null {
  if (!name.startsWith('stale:')) return null
  const rest = name.slice('stale:'.length)
  const candidates = [rest]
  if (rest.startsWith(`{${keyPrefix}`) && rest.endsWith('}')) candidates.unshift(rest.slice(1 + keyPrefix.length, -1))
  for (const key of candidates) if (graceKeyOf(key, keyPrefix) === name) return key
  return null
}
