/**
 * The cache's Redis scripts. Each touches exactly one key (so each runs on a Redis Cluster as
 * on one server) and is one atomic step and one round trip. Every write carries a TTL.
 */
import type { Redis } from 'ioredis'

const SCRIPTS = {
  // KEY: the value. → value, pttl (a read always brings the key's remaining life with it).
  aicCacheRead: { numberOfKeys: 1, lua: `
local v = redis.call('GET', KEYS[1])
if v then return { v, redis.call('PTTL', KEYS[1]) } end
return { false, -2 }` },
  // KEY: the value. ARGV: expected ('' = absent), replacement ('' = delete), PX, channel, message ('' = none).
  // Replaces the value only if it is still what the caller left there (its fill placeholder,
  // or the stale entry it refreshed), and announces the result in the same step. → 1, or 0 when
  // an invalidation deleted it or a put (or another claim) replaced it: that one stays.
  aicCacheSwap: { numberOfKeys: 1, lua: `
local old = redis.call('GET', KEYS[1])
if ARGV[1] == '' then
  if old then return 0 end
elseif old ~= ARGV[1] then
  return 0
end
if ARGV[2] == '' then
  redis.call('DEL', KEYS[1])
else
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
end
if ARGV[5] ~= '' then redis.call('PUBLISH', ARGV[4], ARGV[5]) end
return 1` },
  // KEY: the value. ARGV: placeholder, PX. A long load keeps its claim while it runs.
  aicCacheRenew: { numberOfKeys: 1, lua: `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0` },
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
    if (!(name in client)) client.defineCommand(name, { numberOfKeys: script.numberOfKeys, lua: script.lua })
  }
  return client as CacheScriptClient
}

/** A pipeline that can run the scripts (one round trip for many calls). */
export function cacheScriptPipeline (client: Redis): CacheScriptPipeline {
  withCacheScripts(client)
  return client.pipeline() as unknown as CacheScriptPipeline
}
