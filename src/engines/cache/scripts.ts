/**
 * The cache's Redis scripts, each one atomic step and one round trip. Every write carries a
 * TTL, the generation counter included, and the counter is bumped and given its expiry in the
 * same step (never INCR then EXPIRE). Reads return each value with its PTTL: an L1 copy's
 * life is what Redis says is left, never a clock elsewhere.
 */
import type { Redis } from 'ioredis'

const SCRIPTS = {
  // KEYS: any number. → value1, pttl1, value2, pttl2, …
  aicCacheRead: { numberOfKeys: undefined, lua: `
local out = {}
for i, k in ipairs(KEYS) do
  local v = redis.call('GET', k)
  out[2 * i - 1] = v
  if v then out[2 * i] = redis.call('PTTL', k) else out[2 * i] = -2 end
end
return out` },
  // KEYS: key, gen, stale, fail. → gen, value, pttl, stale value, stale pttl, failure
  aicCacheProbe: { numberOfKeys: 4, lua: `
local v = redis.call('GET', KEYS[1])
local s = redis.call('GET', KEYS[3])
return { redis.call('GET', KEYS[2]), v, v and redis.call('PTTL', KEYS[1]) or -2, s, s and redis.call('PTTL', KEYS[3]) or -2, redis.call('GET', KEYS[4]) }` },
  // KEYS: key, stale, gen. A loader's result lands only if no invalidation happened since the load began.
  aicCacheFill: { numberOfKeys: 3, lua: `
local g = redis.call('GET', KEYS[3])
if not g then g = '' end
if g ~= ARGV[4] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
if tonumber(ARGV[3]) > 0 then
  redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[3])
end
return 1` },
  // KEYS: key, stale, gen. An explicit set is the new truth: it wins over any fill still in flight.
  aicCachePut: { numberOfKeys: 3, lua: `
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
if tonumber(ARGV[3]) > 0 then
  redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[3])
else
  redis.call('DEL', KEYS[2])
end
redis.call('INCR', KEYS[3])
redis.call('PEXPIRE', KEYS[3], ARGV[4])
return 1` },
  // KEYS: key, stale, gen, fail.
  aicCacheInvalidate: { numberOfKeys: 4, lua: `
local n = redis.call('DEL', KEYS[1], KEYS[2], KEYS[4])
redis.call('INCR', KEYS[3])
redis.call('PEXPIRE', KEYS[3], ARGV[1])
return n` },
} as const

type ScriptName = keyof typeof SCRIPTS
type Args = Array<string | number>
export type CacheScriptClient = Redis & Record<ScriptName, (...args: Args) => Promise<unknown>>
export type CacheScriptPipeline = Record<ScriptName, (...args: Args) => unknown> & {
  exec (): Promise<Array<[Error | null, unknown]> | null>
}

/** The client with the scripts defined (EVALSHA, NOSCRIPT handled by ioredis); idempotent. */
export function withCacheScripts (client: Redis): CacheScriptClient {
  for (const [name, script] of Object.entries(SCRIPTS)) {
    if (!(name in client)) {
      client.defineCommand(name, script.numberOfKeys === undefined ? { lua: script.lua } : { numberOfKeys: script.numberOfKeys, lua: script.lua })
    }
  }
  return client as CacheScriptClient
}

/** A pipeline that can run the scripts (one round trip for many calls). */
export function cacheScriptPipeline (client: Redis): CacheScriptPipeline {
  withCacheScripts(client)
  return client.pipeline() as unknown as CacheScriptPipeline
}
