/**
 * Adds the shared Redis state (`redisState`), the raw client (`redis`, null when Redis is
 * not configured) and the fallback seam (`store`) every concern uses; registers the Redis
 * metrics (state, command latency, INFO read on a timer, never per scrape).
 *
 * `@fastify/redis` is not used: it holds the boot until the client is ready (and forever
 * while Redis is unreachable with the offline queue off), and the design says boot never
 * waits for Redis longer than the connect timeout. The decorator keeps its name and shape.
 */
import fp from 'fastify-plugin'
import { parseSentinels, type Config } from '../src/config.js'
import { createRedisState } from '../src/engines/redis/state.js'
import { MemoryStore } from '../src/engines/store/memory-store.js'
import { ResilientStore } from '../src/engines/store/resilient-store.js'
import { registerRedisMetrics } from '../src/metrics/redis-collectors.js'
import { RedisInfoSampler } from '../src/metrics/redis-info-sampler.js'

declare module 'fastify' {
  interface FastifyInstance {
    redis: ReturnType<typeof createRedisState>['client']
    redisState: ReturnType<typeof createRedisState>
    store: ReturnType<typeof createStore>
  }
}

export function createRedisStateFromConfig (config: Config, log: Parameters<typeof createRedisState>[0]['log']) {
  return createRedisState({
    url: config.REDIS_URL,
    sentinel: config.REDIS_SENTINELS === undefined || config.REDIS_SENTINEL_NAME === undefined
      ? undefined
      : {
          sentinels: parseSentinels(config.REDIS_SENTINELS),
          name: config.REDIS_SENTINEL_NAME,
          sentinelPassword: config.REDIS_SENTINEL_PASSWORD,
          password: config.REDIS_PASSWORD,
        },
    cluster: config.REDIS_CLUSTER_NODES === undefined
      ? undefined
      : { nodes: parseSentinels(config.REDIS_CLUSTER_NODES), password: config.REDIS_PASSWORD },
    keyPrefix: config.REDIS_KEY_PREFIX,
    connectTimeoutMs: config.REDIS_CONNECT_TIMEOUT_MS,
    commandTimeoutMs: config.REDIS_COMMAND_TIMEOUT_MS,
    maxRetriesPerRequest: config.REDIS_MAX_RETRIES_PER_REQUEST,
    keepAliveMs: config.REDIS_KEEPALIVE_MS,
    family: config.REDIS_FAMILY,
    readyCheck: config.REDIS_READY_CHECK,
    lazyConnect: config.REDIS_LAZY_CONNECT,
    tlsCa: config.REDIS_TLS_CA,
    tlsRejectUnauthorized: config.REDIS_TLS_REJECT_UNAUTHORIZED,
    log,
  })
}

/** Redis while it is in use, the bounded in-process store otherwise. */
export function createStore (config: Config, state: ReturnType<typeof createRedisState>) {
  return new ResilientStore(state, new MemoryStore({ maxEntries: config.FALLBACK_MAX_ENTRIES, maxBytes: config.FALLBACK_MAX_BYTES }))
}

export default fp(async function redisPlugin (fastify) {
  const { config, metrics } = fastify
  const log = fastify.log.child({ component: 'redis' })
  const state = createRedisStateFromConfig(config, log)
  const client = state.client
  const sampler = client === null || !metrics.enabled
    ? null
    : new RedisInfoSampler({ state, intervalMs: config.REDIS_INFO_INTERVAL_MS, db: Number(client.options.db ?? 0) })
  const stopMetrics = registerRedisMetrics(metrics, state, sampler)

  fastify.decorate('redisState', state)
  fastify.decorate('redis', client)
  fastify.decorate('store', createStore(config, state))
  fastify.addHook('onReady', async () => { sampler?.start() })
  fastify.addHook('onClose', async () => {
    stopMetrics()
    await sampler?.stop()
    await state.close()
  })

  if (state.status === 'disabled') {
    log.info('REDIS_URL (or REDIS_SENTINELS, REDIS_CLUSTER_NODES) is not set: running single-instance with in-process fallbacks')
  }
  await state.start()
}, { name: 'redis', fastify: '5.x', dependencies: ['config', 'metrics'] })
