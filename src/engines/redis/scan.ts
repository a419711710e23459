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

/** What scanning needs of a client: SCAN itself, and on a cluster its masters. */
interface ScanClient {
  scan (cursor: string, match: 'MATCH', pattern: string, count: 'COUNT', n: number): Promise<[string, string[]]>
}

/**
 * The connections to SCAN: on a Redis Cluster every master (each holds only its own slots'
 * keys; SCAN through the cluster client would ask one node), else the client itself.
 */
export function scanTargets<C extends ScanClient> (client: C): C[] {
  const c = client as C & { isCluster?: boolean, nodes?: (role: 'master') => C[] }
  return c.isCluster === true && typeof c.nodes === 'function' ? c.nodes('master') : [client]
}

export interface ScanAllResult {
  /** Full key names as Redis has them (REDIS_KEY_PREFIX included). */
  names: string[]
  /** Every target was scanned to its end and nothing was left out for `limit`. */
  complete: boolean
}

/**
 * SCAN MATCH `match` COUNT `count` on every target (every master of a cluster) in turn, until
 * `limit` names, the end of each, or `maxCalls` SCAN calls in all.
 */
export async function scanAll (client: ScanClient, match: string, o: { limit: number, maxCalls: number, count: number }): Promise<ScanAllResult> {
  const names: string[] = []
  let calls = 0
  let complete = true
  for (const target of scanTargets(client)) {
    let cursor = '0'
    let ended = false
    while (calls < o.maxCalls) {
      calls++
      const [next, batch] = await target.scan(cursor, 'MATCH', match, 'COUNT', o.count)
      cursor = next
      for (const name of batch) {
        if (names.length < o.limit) names.push(name)
        else complete = false
      }
      if (cursor === '0') { ended = true; break }
      if (names.length >= o.limit) break
    }
    if (!ended) complete = false
    if (names.length >= o.limit && !complete) break
  }
  return { names, complete }
}

/** A pipeline's replies: [error, value] per command. */
export type Replies = Array<[Error | null, unknown]>

interface PerKeyClient {
  pipeline (): { exec (): Promise<Replies | null> } & Record<'get' | 'pttl' | 'type', (key: string) => unknown>
  get (key: string): Promise<unknown>
  pttl (key: string): Promise<unknown>
  type (key: string): Promise<unknown>
}

/**
 * For each key, each of `commands`, with replies in that order as a pipeline gives them: one
 * pipeline on one server; on a cluster every command on its own, all at once (the keys of a
 * cluster pipeline must share a slot, and these are any keys).
 */
export async function perKey (client: PerKeyClient, keys: readonly string[], commands: ReadonlyArray<'get' | 'pttl' | 'type'>): Promise<Replies> {
  if (keys.length === 0) return []
  if ((client as { isCluster?: boolean }).isCluster !== true) {
    const pipe = client.pipeline()
    for (const key of keys) for (const command of commands) pipe[command](key)
    return await pipe.exec() ?? []
  }
  const settled = await Promise.allSettled(keys.flatMap((key) => commands.map(async (command) => client[command](key))))
  return settled.map((r) => r.status === 'fulfilled' ? [null, r.value] : [r.reason instanceof Error ? r.reason : new Error(String(r.reason)), null])
}
