/**
 * The cache's own errors. The engine knows nothing of HTTP: the app maps these (plugins/cache.ts).
 */

/** Base class: `instanceof CacheError` tells the cache's errors from a loader's. */
export class CacheError extends Error {
  override readonly name: string = 'CacheError'
}

/** A load took longer than the loader timeout and was abandoned (no stale value to serve). */
export class CacheLoadTimeoutError extends CacheError {
  override readonly name = 'CacheLoadTimeoutError'
  constructor (readonly key: string, readonly timeoutMs: number) {
    super(`loading ${key} took longer than ${timeoutMs} ms`)
  }
}

/** A loader returned undefined: values are JSON, and undefined is not one. */
export class CacheValueError extends CacheError {
  override readonly name = 'CacheValueError'
  constructor (readonly key: string) {
    super(`the cache loader for ${key} returned undefined (values are JSON)`)
  }
}
