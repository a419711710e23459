/**
 * Adds `locks`: distributed locks with an owner token, a compare-and-delete release and
 * automatic extension (`fastify.locks.using(resource, ttlMs, fn)`), over the Redlock
 * algorithm. Masters: the main Redis (REDLOCK_URLS unset; in-process locks while it is
 * down or not configured), or the independent servers in REDLOCK_URLS, whose clients this
 * plugin owns and closes. The engine's errors (busy, unavailable, lost) become 409/503 with
 * Retry-After in src/errors.ts. Registers the locks metrics.
 */
import type { FastifyBaseLogger } from 'fastify'
import fp from 'fastify-plugin'
import type { Config } from '../src/config.js'
import { redactUrl } from '../src/engines/redis/redact.js'
import { Locks } from '../src/engines/locks/locks.js'
import type { LockMaster } from '../src/engines/locks/redlock.js'
import type { RedisState } from '../src/engines/redis/state.js'
import { registerLocksMetrics } from '../src/metrics/locks-collectors.js'
import { createRedisStateFromConfig } from './redis.js'

declare module 'fastify' {
  interface FastifyInstance {
    locks: ReturnType<typeof createLocks>['locks']
  }
}

/** REDLOCK_URLS → distinct URLs; throws with a message naming the variable. */
export function parseRedlockUrls (value: string | undefined): string[] {
  if (value === undefined) return []
  const urls = value.split(',').map((u) => u.trim()).filter((u) => u !== '')
  for (const url of urls) {
    try {
      const parsed = new URL(url)
      if (!/^rediss?:$/.test(parsed.protocol) || parsed.hostname === '') throw new Error('not a redis URL')
    } catch {
      throw new Error(`REDLOCK_URLS: ${redactUrl(url)} is not a valid redis:// or rediss:// URL`)
    }
  }
  const seen = new Set<string>()
  for (const url of urls) {
    if (seen.has(url)) throw new Error(`REDLOCK_URLS: ${redactUrl(url)} is listed twice (Redlock masters must be independent servers)`)
    seen.add(url)
  }
  return urls
}

/**
 * The lock service for a config: masters from REDLOCK_URLS (the main client stands in for
 * REDIS_URL when it is listed), else the main Redis alone, else none. `owned` are the
 * master connections made here, to start and to close.
 */
export function createLocks (config: Config, redisState: RedisState, log: FastifyBaseLogger) {
  const urls = parseRedlockUrls(config.REDLOCK_URLS)
  const owned: RedisState[] = []
  const masters: LockMaster[] = []
  const mainMaster = (): LockMaster | null => redisState.client === null
    ? null
    : { client: redisState.client, name: redisState.url ?? 'main', onError: (err, op) => redisState.reportFailure(err, op) }

  if (urls.length === 0) {
    const main = mainMaster()
    if (main !== null) masters.push(main)
  } else {
    for (const url of urls) {
      const main = url === config.REDIS_URL ? mainMaster() : null
      if (main !== null) {
        masters.push(main)
        continue
      }
      const name = redactUrl(url)
      const state = createRedisStateFromConfig({ ...config, REDIS_URL: url, REDIS_SENTINELS: undefined, REDIS_SENTINEL_NAME: undefined }, log.child({ master: name }))
      if (state.client === null) continue
      owned.push(state)
      masters.push({ client: state.client, name, onError: (err, op) => state.reportFailure(err, op) })
    }
    if (masters.length % 2 === 0) {
      log.warn({ masters: masters.length }, 'REDLOCK_URLS lists an even number of masters: it tolerates no more failures than one fewer (use 3 or 5)')
    }
  }

  const locks = new Locks({
    masters,
    followsMainRedis: urls.length === 0 || (urls.length === 1 && urls[0] === config.REDIS_URL),
    mainAvailable: () => redisState.available,
    waitMs: config.LOCK_WAIT_MS,
    retryDelayMs: config.LOCK_RETRY_DELAY_MS,
    keyPrefix: config.REDIS_KEY_PREFIX,
    log,
  })
  return { locks, owned }
}

export default fp(async function locksPlugin (fastify) {
  const { config, redisState, metrics } = fastify
  const log = fastify.log.child({ component: 'locks' })
  const { locks, owned } = createLocks(config, redisState, log)
  registerLocksMetrics(metrics, locks)

  fastify.decorate('locks', locks)
  fastify.addHook('onClose', async () => {
    await Promise.all(owned.map(async (state) => state.close()))
  })

  await Promise.all(owned.map(async (state) => state.start()))
  log.info({
    backend: locks.backend(),
    masters: locks.masterCount,
    source: config.REDLOCK_URLS !== undefined ? 'REDLOCK_URLS' : redisState.client !== null ? (redisState.sentinel !== null ? 'REDIS_SENTINELS' : redisState.cluster !== null ? 'REDIS_CLUSTER_NODES' : 'REDIS_URL') : 'none',
  }, locks.masterCount === 0 ? 'locks: in-process (no Redis configured, single instance)' : 'locks: Redlock')
}, { name: 'locks', fastify: '5.x', dependencies: ['config', 'metrics', 'redis'] })
