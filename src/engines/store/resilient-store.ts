/**
 * Picks, per call, Redis or the in-process store from the shared state. A dead Redis is
 * never awaited: in fallback mode the call goes straight to memory; in redis mode a failed
 * or timed-out command flips the state (one log line, in the state) and the same call is
 * answered from memory.
 */
import type { Redis } from 'ioredis'
import type { RedisState } from '../redis/state.js'
import { MemoryStore } from './memory-store.js'
import { RedisStore } from './redis-store.js'
import type { KvStore } from './types.js'

export class ResilientStore implements KvStore {
  readonly memory: MemoryStore
  readonly #state: RedisState
  readonly #redis: RedisStore | null

  constructor (state: RedisState, memory: MemoryStore) {
    this.#state = state
    this.memory = memory
    this.#redis = state.client ? new RedisStore(state.client) : null
  }

  /** True when the next call will go to Redis. */
  get usingRedis (): boolean {
    return this.#redis !== null && this.#state.available
  }

  /**
   * The seam for operations outside the small interface (a set index for sessions, a
   * pipeline): run `withRedis` while Redis is in use, `withMemory` otherwise or when it fails.
   */
  async use<T> (operation: string, withRedis: (client: Redis) => Promise<T>, withMemory: (memory: MemoryStore) => T | Promise<T>): Promise<T> {
    const client = this.#state.client
    if (client !== null && this.#state.available) {
      try {
        return await withRedis(client)
      } catch (err) {
        this.#state.reportFailure(err, operation)
      }
    }
    return withMemory(this.memory)
  }

  async #run<T> (operation: string, call: (store: KvStore) => Promise<T>): Promise<T> {
    if (this.#redis !== null && this.#state.available) {
      try {
        return await call(this.#redis)
      } catch (err) {
        this.#state.reportFailure(err, operation)
      }
    }
    return call(this.memory)
  }

  get (key: string): Promise<string | null> {
    return this.#run('get', (s) => s.get(key))
  }

  mget (keys: readonly string[]): Promise<Array<string | null>> {
    return this.#run('mget', (s) => s.mget(keys))
  }

  set (key: string, value: string, ttlMs: number): Promise<void> {
    return this.#run('set', (s) => s.set(key, value, ttlMs))
  }

  del (...keys: string[]): Promise<number> {
    return this.#run('del', (s) => s.del(...keys))
  }

  pttl (key: string): Promise<number | null> {
    return this.#run('pttl', (s) => s.pttl(key))
  }

  expire (key: string, ttlMs: number): Promise<boolean> {
    return this.#run('expire', (s) => s.expire(key, ttlMs))
  }

  incrWindow (key: string, windowMs: number): Promise<{ count: number, ttlMs: number }> {
    return this.#run('incrWindow', (s) => s.incrWindow(key, windowMs))
  }

  setIfAbsent (key: string, value: string, ttlMs: number): Promise<boolean> {
    return this.#run('setIfAbsent', (s) => s.setIfAbsent(key, value, ttlMs))
  }

  compareAndDelete (key: string, expected: string): Promise<boolean> {
    return this.#run('compareAndDelete', (s) => s.compareAndDelete(key, expected))
  }

  compareAndExpire (key: string, expected: string, ttlMs: number): Promise<boolean> {
    return this.#run('compareAndExpire', (s) => s.compareAndExpire(key, expected, ttlMs))
  }
}
