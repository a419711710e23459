/** The keys the cache keeps beside each value (all with a TTL). */
import { createHash } from 'node:crypto'

/** The grace copy: kept for ttl + grace, read only when no fresh value can be had. */
export function staleKeyOf (key: string): string {
  return `stale:${key}`
}

/**
 * The per-key fill lock (distinct from `lock:<key>` locks other concerns take). A key the
 * locks engine would refuse as a resource (spaces, non-ASCII, too long) is locked by its hash.
 */
export function lockKeyOf (key: string): string {
  const plain = `lock:fill:${key}`
  return /^[\x21-\x7e]{1,512}$/.test(plain) ? plain : `lock:fill:#${createHash('sha256').update(key).digest('base64url')}`
}

/** The per-key generation, bumped by every invalidation so that an older fill cannot land after it. */
export function genKeyOf (key: string): string {
  return `cache:gen:${key}`
}

/** A recent failure of the key's loader, shared by every instance for a few seconds. */
export function failKeyOf (key: string): string {
  return `cache:fail:${key}`
}
