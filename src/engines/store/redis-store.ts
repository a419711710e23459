/**
 * The Redis implementation of the seam. Multi-step operations are single Lua scripts
 * (loaded once, then run by SHA), so each is atomic and one round trip.
 */
import type { Redis } from 'ioredis'
import { clientTopology, groupBySlot } from '../redis/slots.js'
import type { KvStore } from './types.js'

const SCRIPTS = {
  // INCR and the expiry in one step: never INCR then EXPIRE.
  aicIncrWindow: `
local count = redis.call('INCR', KEYS[1])
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
return {count, ttl}`,
  aicCompareAndDelete: `
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0`,
  aicCompareAndExpire: `
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0`,
} as const

type ScriptName = keyof typeof SCRIPTS
type ScriptClient = Redis & Record<ScriptName, (...args: Array<string | number>) => Promise<unknown>>

export function defineScripts (client: Redis): void {
  for (const [name, lua] of Object.entries(SCRIPTS)) {
    if (!(name in client)) client.defineCommand(name, { numberOfKeys: 1, lua })
  }
}

export class RedisStore implements KvStore {
  readonly #client: ScriptClient

  constructor (client: Redis) {
    defineScripts(client)
    this.#client = client as ScriptClient
  }

  async get (key: string): Promise<string | null> {
    return this.#client.get(key)
  }

  /** On a cluster, one MGET per slot (sent at once), answered in the keys' order. */
  async mget (keys: readonly string[]): Promise<Array<string | null>> {
    if (keys.length === 0) return []
    const groups = groupBySlot(keys.map((key, i) => ({ key, i })), (e) => e.key, clientTopology(this.#client))
    if (groups.length === 1) return this.#client.mget(...keys)
    const values: Array<string | null> = new Array(keys.length).fill(null)
    await Promise.all(groups.map(async (group) => {
      const got = await this.#client.mget(...group.map((e) => e.key))
      group.forEach((e, j) => { values[e.i] = got[j] ?? null })
    }))
    return values
  }

  async set (key: string, value: string, ttlMs: number): Promise<void> {
    await this.#client.set(key, value, 'PX', positive(ttlMs))
  }

  /** On a cluster, one DEL per slot (sent at once); the count is their sum. */
  async del (...keys: string[]): Promise<number> {
    if (keys.length === 0) return 0
    const groups = groupBySlot(keys, (k) => k, clientTopology(this.#client))
    if (groups.length === 1) return this.#client.del(...keys)
    const counts = await Promise.all(groups.map(async (group) => this.#client.del(...group)))
    return counts.reduce((a, b) => a + b, 0)
  }

  async pttl (key: string): Promise<number | null> {
    const ttl = await this.#client.pttl(key)
    return ttl === -2 ? null : ttl
  }

  async expire (key: string, ttlMs: number): Promise<boolean> {
    return (await this.#client.pexpire(key, positive(ttlMs))) === 1
  }

  async incrWindow (key: string, windowMs: number): Promise<{ count: number, ttlMs: number }> {
    const [count, ttlMs] = await this.#client.aicIncrWindow(key, positive(windowMs)) as [number, number]
    return { count: Number(count), ttlMs: Number(ttlMs) }
  }

  async setIfAbsent (key: string, value: string, ttlMs: number): Promise<boolean> {
    return (await this.#client.set(key, value, 'PX', positive(ttlMs), 'NX')) === 'OK'
  }

  async compareAndDelete (key: string, expected: string): Promise<boolean> {
    return Number(await this.#client.aicCompareAndDelete(key, expected)) === 1
  }

  async compareAndExpire (key: string, expected: string, ttlMs: number): Promise<boolean> {
    return Number(await this.#client.aicCompareAndExpire(key, expected, positive(ttlMs))) === 1
  }
}

function positive (ms: number): number {
  return Math.max(1, Math.ceil(ms))
}
