/**
 * The cache's multi-key writes, each one Lua script (atomic, one round trip). Every write
 * carries a TTL, the generation counter included, and the counter is bumped and given its
 * expiry in the same step (never INCR then EXPIRE).
 */
import type { Redis } from 'ioredis'

const SCRIPTS = {
  // A loader's result lands only if no invalidation happened since the load began.
  aicCacheFill: `
local g = redis.call('GET', KEYS[3])
if not g then g = '' end
if g ~= ARGV[4] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
if tonumber(ARGV[3]) > 0 then
  redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[3])
end
return 1`,
  // An explicit set is the new truth: it wins over any fill still in flight.
  aicCachePut: `
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
if tonumber(ARGV[3]) > 0 then
  redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[3])
else
  redis.call('DEL', KEYS[2])
end
redis.call('INCR', KEYS[3])
redis.call('PEXPIRE', KEYS[3], ARGV[4])
return 1`,
  aicCacheInvalidate: `
local n = redis.call('DEL', KEYS[1], KEYS[2])
redis.call('INCR', KEYS[3])
redis.call('PEXPIRE', KEYS[3], ARGV[1])
return n`,
} as const

type ScriptName = keyof typeof SCRIPTS
export type CacheScriptClient = Redis & Record<ScriptName, (...args: Array<string | number>) => Promise<unknown>>

export function withCacheScripts (client: Redis): CacheScriptClient {
  for (const [name, lua] of Object.entries(SCRIPTS)) {
    if (!(name in client)) client.defineCommand(name, { numberOfKeys: 3, lua })
  }
  return client as CacheScriptClient
}

export type CacheScriptPipeline = Record<ScriptName, (...args: Array<string | number>) => unknown> & {
  exec (): Promise<Array<[Error | null, unknown]> | null>
}

/** A pipeline that can run the cache's scripts (one round trip for many calls). */
export function cacheScriptPipeline (client: Redis): CacheScriptPipeline {
  withCacheScripts(client)
  return client.pipeline() as unknown as CacheScriptPipeline
}
