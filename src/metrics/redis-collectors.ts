/**
 * The Redis families, registered by the redis plugin: the shared state, every ioredis
 * command's round trip (from the `ioredis:command` diagnostics channel, so all clients of
 * the process are seen), and the INFO figures under redis_exporter's names, read from the
 * sampler's last INFO (never per scrape).
 */
import type { RedisState } from '../engines/redis/state.js'
import { map, one, type HistogramSeries, type Metrics, type Sample } from './collectors.js'
import type { RedisInfo } from '../debug/redis-info.js'
import type { RedisInfoSampler } from './redis-info-sampler.js'
import { traceRedisCommands } from './tracing.js'

export const REDIS_STATUSES = ['disabled', 'connecting', 'connected', 'disconnected'] as const
export const REDIS_BUCKETS = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1]
/** Distinct Redis command names kept as labels; any beyond are counted as "other". */
const MAX_COMMAND_LABELS = 64

/** Registers the families; returns the function that stops timing commands. */
export function registerRedisMetrics (metrics: Metrics, state: RedisState, sampler: RedisInfoSampler | null, now: () => number = Date.now): () => void {
  if (!metrics.enabled) return () => {}
  const { counter, gauge } = metrics
  gauge('aic_redis_state', 'Redis connection state: 1 for the current one, 0 for the others.', ['state'],
    () => REDIS_STATUSES.map((s) => [{ state: s }, state.status === s ? 1 : 0] as const))
  gauge('aic_redis_fallback_active', '1 while the service runs on its in-process fallbacks (Redis configured but away, or not configured).', [],
    () => one(state.mode === 'fallback' ? 1 : 0))
  counter('aic_redis_fallback_activations_total', 'Switches from Redis to the in-process fallbacks.', [], () => one(state.activations))

  const commands = metrics.histogram('aic_redis_command_duration_seconds',
    'Redis command round trips (every ioredis client of the process), by command and outcome.',
    ['command', 'outcome'], REDIS_BUCKETS)
  const seriesByKey = new Map<string, HistogramSeries>()
  const stop = traceRedisCommands((command, seconds, ok) => {
    const key = ok ? command : `${command} error`
    let series = seriesByKey.get(key)
    if (series === undefined) {
      const name = commands.size < MAX_COMMAND_LABELS ? command : 'other'
      series = commands.series([name, ok ? 'ok' : 'error'])
      seriesByKey.set(key, series)
    }
    series.observe(seconds)
  })

  const fromInfo = (read: (i: RedisInfo) => Sample[]) => (): Sample[] | null =>
    sampler !== null && sampler.up && sampler.latest !== null ? read(sampler.latest) : null
  if (sampler !== null) {
    gauge('redis_up', '1 when the last INFO (read every REDIS_INFO_INTERVAL_MS) succeeded and Redis is in use, else 0.', [],
      () => one(sampler.up ? 1 : 0))
    gauge('aic_redis_info_age_seconds', 'Age of the INFO figures behind the redis_* metrics.', [],
      () => map(sampler.latest, () => one((now() - sampler.at) / 1000)))
  } else {
    // Declared so that the families exist; no samples without a configured Redis.
    gauge('redis_up', '1 when the last INFO succeeded and Redis is in use, else 0. No sample: Redis is not configured.', [], () => null)
  }
  gauge('redis_connected_clients', 'Client connections (INFO connected_clients).', [], fromInfo((i) => one(i.connectedClients)))
  gauge('redis_memory_used_bytes', 'Memory used by Redis (INFO used_memory).', [], fromInfo((i) => one(i.usedMemory)))
  gauge('redis_memory_max_bytes', 'maxmemory (0: no limit).', [], fromInfo((i) => one(i.maxmemory)))
  counter('redis_keyspace_hits_total', 'Successful key lookups (INFO keyspace_hits).', [], fromInfo((i) => one(i.keyspaceHits)))
  counter('redis_keyspace_misses_total', 'Failed key lookups (INFO keyspace_misses).', [], fromInfo((i) => one(i.keyspaceMisses)))
  gauge('redis_instantaneous_ops_per_sec', 'Commands per second (INFO instantaneous_ops_per_sec).', [], fromInfo((i) => one(i.instantaneousOpsPerSec)))
  counter('redis_evicted_keys_total', 'Keys evicted because of maxmemory.', [], fromInfo((i) => one(i.evictedKeys)))
  counter('redis_expired_keys_total', 'Keys removed by expiry.', [], fromInfo((i) => one(i.expiredKeys)))
  gauge('redis_db_keys', 'Keys in the database this service uses.', ['db'], fromInfo((i) => [[{ db: `db${sampler?.db ?? 0}` }, i.keys]]))
  gauge('redis_uptime_in_seconds', 'Seconds since the Redis server started.', [], fromInfo((i) => one(i.uptimeSeconds)))
  return stop
}
