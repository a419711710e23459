/**
 * The `store` of `@fastify/rate-limit`: the library builds the hooks, headers and 429s, and
 * asks the store for each hit's count. Ours is the window counter
 * (src/engines/counters/window-counter.ts): counted in Redis by one atomic script per batch
 * while Redis is in use, in process while it is not (switching with the shared Redis
 * state), never waiting on a dead Redis. The library's own Redis store sends one command
 * per request and has no fallback (docs/adr/0002-rate-limit-store.md).
 *
 * The library constructs the store itself (`new Store(options)`), so the class is made per
 * counter by `counterStore(counter)`. Every route shares the one counter: the route's limit
 * comes with each hit (`incr(key, cb, timeWindow, max)`), and its keys are told apart by
 * their key generator (`admin:…`, `register:…`).
 */
import type { FastifyRateLimitStore, FastifyRateLimitStoreCtor } from '@fastify/rate-limit'
import type { WindowCounter } from '../engines/counters/window-counter.js'

type IncrCallback = Parameters<FastifyRateLimitStore['incr']>[1]

export function counterStore (counter: WindowCounter): FastifyRateLimitStoreCtor {
  return class WindowCounterStore implements FastifyRateLimitStore {
    incr (key: string, callback: IncrCallback, timeWindow: number, max: number): void {
      counter.hit(key, timeWindow, max, (hit) => { callback(null, hit) })
    }

    /** A route with its own limit: the same counter (the limit arrives with each hit). */
    child (): FastifyRateLimitStore {
      return this
    }
  }
}
