/**
 * Held locks as an operator sees them: `lock:*` keys found with SCAN (MATCH with the key
 * prefix escaped, a bounded COUNT and a bounded number of calls; never KEYS), with their
 * owner token and remaining TTL, read in one pipeline per master.
 */
import type { Redis } from 'ioredis'
import { perKey, prefixPattern, scanAll } from '../redis/scan.js'

export interface ScannedLock {
  resource: string
  owner: string | null
  ttlMs: number | null
}

export interface ScanResult {
  locks: ScannedLock[]
  /** False when the listing stopped at `limit` or at the scan budget before the end. */
  complete: boolean
}

const SCAN_COUNT = 200
const MAX_SCAN_CALLS = 50

/**
 * ioredis applies `keyPrefix` to commands' keys but not to SCAN's pattern or its results,
 * so the prefix is added to MATCH and taken off the names here.
 */
export async function scanLocks (client: Redis, keyPrefix: string, limit: number): Promise<ScanResult> {
  const match = prefixPattern(`${keyPrefix}lock:`)
  // On a cluster, every master in turn.
  const scanned = await scanAll(client, match, { limit, maxCalls: MAX_SCAN_CALLS, count: SCAN_COUNT })
  const names = scanned.names.map((name) => name.slice(keyPrefix.length))
  if (names.length === 0) return { locks: [], complete: scanned.complete }
  // A lock is a string; GET on another type errors, which is reported as owner null.
  const replies = await perKey(client, names, ['get', 'pttl'])
  const locks: ScannedLock[] = []
  names.forEach((resource, i) => {
    const owner = replies[2 * i]
    const ttl = replies[2 * i + 1]
    const ttlMs = ttl !== undefined && ttl[0] === null ? Number(ttl[1]) : null
    // -2: expired between SCAN and PTTL.
    if (ttlMs === -2) return
    locks.push({
      resource,
      owner: owner !== undefined && owner[0] === null && typeof owner[1] === 'string' ? owner[1] : null,
      ttlMs: ttlMs === null || ttlMs < 0 ? null : ttlMs,
    })
  })
  return { locks, complete: scanned.complete }
}
