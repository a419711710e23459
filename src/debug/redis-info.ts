/** Redis INFO text → the figures an operator watches, as numbers; and glob escaping for SCAN. */

export interface RedisInfo {
  version: string
  uptimeSeconds: number
  connectedClients: number
  usedMemory: number
  usedMemoryHuman: string
  maxmemory: number
  maxmemoryPolicy: string
  keyspaceHits: number
  keyspaceMisses: number
  /** hits ÷ (hits + misses), 0..1; null before any lookup. */
  hitRate: number | null
  instantaneousOpsPerSec: number
  evictedKeys: number
  expiredKeys: number
  /** Keys in database `db` (from the keyspace section). */
  keys: number
}

/** `field:value` lines of every section into one map (section headers and blanks skipped). */
export function parseInfoFields (text: string): Map<string, string> {
  const fields = new Map<string, string>()
  for (const line of text.split(/\r?\n/)) {
    if (line === '' || line.startsWith('#')) continue
    const colon = line.indexOf(':')
    if (colon > 0) fields.set(line.slice(0, colon), line.slice(colon + 1).trim())
  }
  return fields
}

export function parseInfo (text: string, db = 0): RedisInfo {
  const fields = parseInfoFields(text)
  const num = (name: string): number => {
    const value = Number(fields.get(name))
    return Number.isFinite(value) ? value : 0
  }
  const hits = num('keyspace_hits')
  const misses = num('keyspace_misses')
  // db0:keys=12,expires=3,avg_ttl=0
  const keyspace = /(?:^|,)keys=(\d+)/.exec(fields.get(`db${db}`) ?? '')
  return {
    version: fields.get('redis_version') ?? 'unknown',
    uptimeSeconds: num('uptime_in_seconds'),
    connectedClients: num('connected_clients'),
    usedMemory: num('used_memory'),
    usedMemoryHuman: fields.get('used_memory_human') ?? '',
    maxmemory: num('maxmemory'),
    maxmemoryPolicy: fields.get('maxmemory_policy') ?? 'unknown',
    keyspaceHits: hits,
    keyspaceMisses: misses,
    hitRate: hits + misses === 0 ? null : hits / (hits + misses),
    instantaneousOpsPerSec: num('instantaneous_ops_per_sec'),
    evictedKeys: num('evicted_keys'),
    expiredKeys: num('expired_keys'),
    keys: keyspace?.[1] !== undefined ? Number(keyspace[1]) : 0,
  }
}

// Kept importable from here (the debug routes); the code lives with the Redis engine.
export { escapeGlob } from '../engines/redis/scan.js'

/** One node of a Redis Cluster as `CLUSTER NODES` describes it. */
export interface ClusterNodeView {
  id: string
  /** host:port (the client port, without the bus port). */
  address: string
  role: 'master' | 'replica'
  /** The master's id, for a replica; null for a master. */
  masterId: string | null
  /** The slot ranges it serves, inclusive: [[0, 5460]]; [] for a replica. */
  slots: Array<[number, number]>
  /** False when the cluster marks it failing (`fail` or `fail?`) or its link is down. */
  up: boolean
}

/** `CLUSTER NODES` text → one entry per node, masters first, then by address. */
export function parseClusterNodes (text: string): ClusterNodeView[] {
  const nodes: ClusterNodeView[] = []
  for (const line of text.split(/\r?\n/)) {
    const f = line.trim().split(' ')
    if (f.length < 8) continue
    const [id, addr, flagText, master, , , , link, ...slotFields] = f as [string, string, string, string, string, string, string, string, ...string[]]
    const flags = flagText.split(',')
    const slots: Array<[number, number]> = []
    for (const s of slotFields) {
      if (s.startsWith('[')) continue // a slot being migrated or imported
      const [a, b] = s.split('-')
      slots.push([Number(a), Number(b ?? a)])
    }
    nodes.push({
      id,
      address: (addr.split('@')[0] ?? addr).split(',')[0] ?? addr,
      role: flags.includes('master') ? 'master' : 'replica',
      masterId: master === '-' ? null : master,
      slots,
      up: !flags.includes('fail') && !flags.includes('fail?') && !flags.includes('noaddr') && link === 'connected',
    })
  }
  return nodes.sort((x, y) => (x.role === y.role ? x.address.localeCompare(y.address) : x.role === 'master' ? -1 : 1))
}
