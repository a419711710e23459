/**
 * Admin-only views of Redis for operators: the connection and its INFO figures, and keys by
 * prefix (SCAN with an escaped MATCH and a bounded COUNT; KEYS is never sent).
 */
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import type { Redis } from 'ioredis'
import { Type, type Static } from 'typebox'
import { escapeGlob, parseClusterNodes, parseInfo, type ClusterNodeView, type RedisInfo } from '../../src/debug/redis-info.js'
import { ErrorSchema } from '../../src/schemas.js'
import { perKey, scanAll } from '../../src/engines/redis/scan.js'

const Num = Type.Number()
const NullableNum = Type.Union([Type.Number(), Type.Null()])

export const RedisInfoSchema = Type.Object({
  version: Type.String(),
  uptimeSeconds: Num,
  connectedClients: Num,
  usedMemory: Num,
  usedMemoryHuman: Type.String(),
  maxmemory: Num,
  maxmemoryPolicy: Type.String(),
  keyspaceHits: Num,
  keyspaceMisses: Num,
  hitRate: Type.Union([Type.Number({ minimum: 0, maximum: 1 }), Type.Null()], { description: 'hits ÷ (hits + misses); null before any lookup.' }),
  instantaneousOpsPerSec: Num,
  evictedKeys: Num,
  expiredKeys: Num,
  keys: Type.Number({ description: 'Keys in the database this service uses.' }),
})

export const DebugRedisSchema = Type.Object({
  redis: Type.Object({
    status: Type.Union([Type.Literal('connected'), Type.Literal('connecting'), Type.Literal('disconnected'), Type.Literal('disabled')]),
    mode: Type.Union([Type.Literal('redis'), Type.Literal('fallback')]),
    responseTime: NullableNum,
    url: Type.Union([Type.String(), Type.Null()], { description: 'REDIS_URL with its password redacted; with Sentinel, sentinel://<sentinels>/<name>; with a cluster, cluster://<seed nodes>.' }),
    sentinel: Type.Union([Type.Object({
      name: Type.String({ description: 'REDIS_SENTINEL_NAME: the master group.' }),
      sentinels: Type.Array(Type.String(), { description: 'REDIS_SENTINELS as host:port.' }),
      master: Type.Union([Type.String(), Type.Null()], { description: 'host:port of the master this instance writes to now; null while not connected.' }),
    }), Type.Null()], { description: 'null without REDIS_SENTINELS.' }),
    cluster: Type.Union([Type.Object({
      seeds: Type.Array(Type.String(), { description: 'REDIS_CLUSTER_NODES as host:port.' }),
      nodes: Type.Array(Type.Object({
        id: Type.String(),
        address: Type.String({ description: 'host:port' }),
        role: Type.Union([Type.Literal('master'), Type.Literal('replica')]),
        masterId: Type.Union([Type.String(), Type.Null()], { description: 'A replica\'s master; null for a master.' }),
        slots: Type.Array(Type.Tuple([Type.Integer(), Type.Integer()]), { description: 'Slot ranges served, inclusive.' }),
        up: Type.Boolean({ description: 'False when the cluster marks the node failing or its link is down.' }),
      }), { description: 'Every node as CLUSTER NODES gives it (asked of one node); [] when no node answers.' }),
    }), Type.Null()], { description: 'null without REDIS_CLUSTER_NODES.' }),
    info: Type.Union([RedisInfoSchema, Type.Null()], { description: 'null when Redis is unreachable or not configured. On a cluster, one node\'s figures.' }),
    lastError: Type.Union([Type.Object({
      class: Type.String({ description: 'transport, routing, write, not-ready, auth or command (docs/reliability.md).' }),
      message: Type.String({ description: 'The reason, secrets redacted.' }),
      at: Type.String({ format: 'date-time' }),
    }), Type.Null()], { description: 'The last failure seen (a reconnect refused, a command failed); null if none since start.' }),
  }),
  fallback: Type.Object({
    active: Type.Boolean(),
    since: Type.String({ format: 'date-time' }),
    activations: Type.Integer(),
  }),
  timestamp: Type.String({ format: 'date-time' }),
})

export const MAX_KEYS_LIMIT = 1000

const KeysQuerySchema = Type.Object({
  prefix: Type.String({ default: '', maxLength: 256, description: 'Matched literally (glob characters are escaped).' }),
  limit: Type.Integer({ default: 100, minimum: 1, maximum: MAX_KEYS_LIMIT }),
})

const KeysSchema = Type.Object({
  source: Type.Union([Type.Literal('redis'), Type.Literal('memory')]),
  prefix: Type.String(),
  count: Type.Integer(),
  keys: Type.Array(Type.Object({
    key: Type.String(),
    type: Type.String(),
    ttlMs: Type.Union([Type.Integer(), Type.Null()], { description: 'null: no expiry.' }),
  })),
  complete: Type.Boolean({ description: 'False when the listing stopped at `limit` or at the scan budget before the end.' }),
})

type KeysQuery = Static<typeof KeysQuerySchema>
type KeysResult = Static<typeof KeysSchema>
type KeyEntry = KeysResult['keys'][number]

/** SCAN calls per request at most (×1000 keys looked at), so a sparse prefix over a huge keyspace stays bounded. */
const MAX_SCAN_CALLS = 100

const debug: FastifyPluginAsyncTypebox = async (fastify) => {
  const { redisState, store, config } = fastify
  const keyPrefix = config.REDIS_KEY_PREFIX

  fastify.get('/redis', {
    schema: {
      tags: ['debug'],
      summary: 'Redis connection, fallback state and INFO figures (admin)',
      security: [{ bearerAuth: [] }],
      response: { 200: DebugRedisSchema, 401: ErrorSchema, 403: ErrorSchema },
    },
  }, async () => {
    const responseTime = redisState.status === 'disabled' ? null : await redisState.ping()
    let info: RedisInfo | null = null
    const client = redisState.client
    if (client !== null && redisState.available) {
      try {
        info = parseInfo(await client.info(), dbIndex(client))
      } catch (err) {
        redisState.reportFailure(err, 'info')
      }
    }
    let cluster: { seeds: string[], nodes: ClusterNodeView[] } | null = null
    const snapshot = redisState.snapshot()
    if (redisState.cluster !== null) {
      let nodes: ClusterNodeView[] = []
      try {
        // Asked even in fallback: which node is down is what an operator wants to see then.
        nodes = parseClusterNodes(String(await redisState.cluster.cluster('NODES')))
      } catch (err) {
        redisState.reportFailure(err, 'cluster nodes')
      }
      cluster = { seeds: snapshot.cluster?.seeds ?? [], nodes }
    }
    return {
      redis: { status: redisState.status, mode: redisState.mode, responseTime, url: redisState.url, sentinel: snapshot.sentinel, cluster, info, lastError: snapshot.lastError },
      fallback: { active: redisState.mode === 'fallback', since: redisState.since.toISOString(), activations: redisState.activations },
      timestamp: new Date().toISOString(),
    }
  })

  fastify.get('/keys', {
    schema: {
      tags: ['debug'],
      summary: 'Keys by prefix with type and TTL, via SCAN (admin)',
      security: [{ bearerAuth: [] }],
      querystring: KeysQuerySchema,
      response: { 200: KeysSchema, 400: ErrorSchema, 401: ErrorSchema, 403: ErrorSchema },
    },
  }, async (request) => {
    const query = request.query
    return store.use<KeysResult>('debug.keys',
      (client) => scanKeys(client, keyPrefix, query),
      async (memory) => {
        const keys: KeyEntry[] = []
        let complete = true
        for (const key of memory.keysWithPrefix(query.prefix)) {
          if (keys.length >= query.limit) {
            complete = false
            break
          }
          keys.push({ key, type: 'string', ttlMs: await memory.pttl(key) })
        }
        return { source: 'memory', prefix: query.prefix, count: keys.length, keys, complete }
      })
  })
}

const SCAN_COUNT = 1000

/**
 * SCAN MATCH <escaped prefix>* COUNT 1000 until `limit` keys, the end, or the scan budget;
 * on a cluster on every master in turn, within one budget; then TYPE and PTTL for the keys
 * found, in one pipeline (on a cluster, each on its own, at once). ioredis does not apply
 * `keyPrefix` to SCAN patterns or results, so it is added to MATCH and taken off the names.
 */
async function scanKeys (client: Redis, keyPrefix: string, query: KeysQuery): Promise<KeysResult> {
  const match = `${escapeGlob(keyPrefix + query.prefix)}*`
  // On a cluster, every master in turn.
  const scanned = await scanAll(client, match, { limit: query.limit, maxCalls: MAX_SCAN_CALLS, count: SCAN_COUNT })
  const names = scanned.names.map((name) => name.slice(keyPrefix.length))
  const complete = scanned.complete
  const replies = await perKey(client, names, ['type', 'pttl'])
  // A key can expire between SCAN and TYPE ("none"): it is left out.
  const keys: KeyEntry[] = names.map((key, i) => {
    const type = replies[2 * i]
    const ttl = replies[2 * i + 1]
    const ttlMs = ttl === undefined || ttl[0] !== null ? null : Number(ttl[1])
    return {
      key,
      type: type !== undefined && type[0] === null ? String(type[1]) : 'unknown',
      ttlMs: ttlMs === null || ttlMs < 0 ? null : ttlMs,
    }
  }).filter((entry) => entry.type !== 'none')
  return { source: 'redis', prefix: query.prefix, count: keys.length, keys, complete }
}

function dbIndex (client: Redis): number {
  return Number(client.options.db ?? 0)
}

export default debug
