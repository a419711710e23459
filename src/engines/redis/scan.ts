/**
 * SCAN patterns. ioredis applies `keyPrefix` to commands' keys but not to SCAN's MATCH
 * pattern, so callers build the pattern from the full prefix, escaped to match literally.
 */

/** Escapes Redis glob metacharacters so `prefix` matches literally in SCAN MATCH. */
export function escapeGlob (prefix: string): string {
  return prefix.replace(/[*?[\]\\^-]/g, '\\$&')
}

/** The MATCH pattern for every key under `prefix` (REDIS_KEY_PREFIX included by the caller). */
export function prefixPattern (prefix: string): string {
  return `${escapeGlob(prefix)}*`
}
