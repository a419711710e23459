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

/**
 * What this store reads of the options the library hands `new Store(…)` and `child(…)`: the
 * (merged) limit options, with `routeInfo`, the route a child is for (empty for
 * `fastify.rateLimit(options)` hooks). The library's types call that argument RouteOptions.
 */
interface LimitParams {
  keyGenerator: unknown
  method: string
  url: string | undefined
}

function paramsOf (options: object): LimitParams {
  const keyGenerator = 'keyGenerator' in options ? options.keyGenerator : undefined
  const route = 'routeInfo' in options && typeof options.routeInfo === 'object' && options.routeInfo !== null ? options.routeInfo : {}
  const method = 'method' in route ? route.method : undefined
  const url = 'url' in route && typeof route.url === 'string' ? route.url : undefined
  return { keyGenerator, method: Array.isArray(method) ? method.join(',') : typeof method === 'string' ? method : '', url }
}

export function counterStore (counter: WindowCounter): FastifyRateLimitStoreCtor {
  return class WindowCounterStore implements FastifyRateLimitStore {
    readonly #globalKey: unknown
    readonly #prefix: string

    constructor (options: object, prefix = '') {
      this.#globalKey = paramsOf(options).keyGenerator
      this.#prefix = prefix
    }

    incr (key: string, callback: IncrCallback, timeWindow: number, max: number): void {
      counter.hit(this.#prefix === '' ? key : this.#prefix + key, timeWindow, max, callback)
    }

    /**
     * A limit of a route's own. With its own key generator its keys are its own already
     * (`register:…`); with the global key they would share the global limit's bucket, so
     * they count per route instead (`route:<METHOD>:<url>:<client>`), as the library's
     * stores do.
     */
    child (options: object): FastifyRateLimitStore {
      const { keyGenerator, method, url } = paramsOf(options)
      if (keyGenerator !== this.#globalKey || url === undefined) return new WindowCounterStore(options, this.#prefix)
      return new WindowCounterStore({ keyGenerator }, `${this.#prefix}route:${method}:${url}:`)
    }
  }
}
