/**
 * The cache's Redis scripts. Each touches one key, or a value key and its grace copy (one hash
 * slot: see keys.ts), so each runs on a Redis Cluster as on one server, and is one atomic step
 * and one round trip. Every write carries a TTL.
 */
import type { Redis } from 'ioredis'

const SCRIPTS = {
  // KEY: the value. → value, pttl (a read always brings the key's remaining life with it).
  aicCacheRead: { numberOfKeys: 1, lua: `
local v = redis.call('GET', KEYS[1])
if v then return { v, redis.call('PTTL', KEYS[1]) } end
return { false, -2 }` },
  // KEYS: the value, its grace copy (the value key again when it has none). ARGV: expected
  // ('' = absent), entry, ttl, grace, channel, message ('' = none), restore PX.
  // Lands a load: the entry replaces the value only if it is still what the caller left there
  // (its fill placeholder, or the entry it refreshed early), for exactly its ttl; the grace copy
  // is written and the entry announced in the same step. → 1, or 0 when it did not land: an
  // invalidation deleted the value (XX wrote nothing), or a put (or another claim) replaced it,
  // which is then put back, a put's entry with its own remaining life (its grace copy's PTTL
  // minus its grace: a put writes both keys in one step).
  aicCacheLand: { numberOfKeys: 2, lua: `
local ttl = tonumber(ARGV[3])
local grace = tonumber(ARGV[4])
local old
if ARGV[1] == '' then
  old = redis.call('SET', KEYS[1], ARGV[2], 'NX', 'GET', 'PX', ttl)
  if old then return 0 end
else
  old = redis.call('SET', KEYS[1], ARGV[2], 'XX', 'GET', 'PX', ttl)
  if not old then return 0 end
  if old ~= ARGV[1] then
    local ms = tonumber(ARGV[7])
    if string.sub(old, 1, 1) ~= '~' then
      ms = ttl
      if KEYS[2] ~= KEYS[1] then
        local ok, stored = pcall(cjson.decode, old)
        local g = 0
        if ok and type(stored) == 'table' and type(stored.g) == 'number' then g = stored.g end
        ms = redis.call('PTTL', KEYS[2]) - g
      end
    end
    if ms > 0 then
      redis.call('SET', KEYS[1], old, 'PX', ms)
    else
      redis.call('DEL', KEYS[1])
    end
    return 0
  end
end
if KEYS[2] ~= KEYS[1] and grace > 0 then redis.call('SET', KEYS[2], ARGV[2], 'PX', ttl + grace) end
if ARGV[6] ~= '' then redis.call('PUBLISH', ARGV[5], ARGV[6]) end
return 1` },
  // KEYS: the value, its grace copy. ARGV: entry, ttl, grace. A put: both keys in one step.
  aicCachePut: { numberOfKeys: 2, lua: `
local ttl = tonumber(ARGV[2])
local grace = tonumber(ARGV[3])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ttl)
if KEYS[2] ~= KEYS[1] then
  if grace > 0 then
    redis.call('SET', KEYS[2], ARGV[1], 'PX', ttl + grace)
  else
    redis.call('DEL', KEYS[2])
  end
end
return 1` },
  // KEY: the value. ARGV: expected placeholder, replacement ('' = delete), PX, channel, message ('' = none).
  // A claim that has no value to land hands the key back (deleted, or replaced by a failure
  // marker) only if its placeholder is still there, and announces it in the same step. → 1, or
  // 0 when an invalidation deleted it or a put (or another claim) replaced it: that one stays.
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
