/**
 * Quotes through the two-tier cache under the guide's key `stock:<TICKER>`: one ticker, or a
 * batch (one L2 round trip for all of them, the provider only for the misses, with bounded
 * concurrency). The portfolio concern prices positions with `getMany`.
 */
import { BadRequestError, isServiceError } from '../errors.js'
import type { TwoTierCache } from '../engines/cache/two-tier-cache.js'
import type { CacheLayer, CacheStatus } from '../engines/cache/types.js'
import { TICKER_REGEX, type Quote, type QuoteProvider } from './schemas.js'

export interface QuoteServiceOptions {
  cache: TwoTierCache
  provider: QuoteProvider
  ttlSeconds: number
  graceSeconds: number
  /** With a stale quote at hand, wait at most this long for the provider (ms). */
  softTimeoutMs?: number
  batchConcurrency: number
}

export interface QuoteLookup {
  ticker: string
  quote: Quote
  cache: CacheStatus
  /** Seconds since the quote was fetched. */
  age: number
  /** Where it was found ('l1': the in-process copy every reader shares). */
  layer: CacheLayer
}

export interface QuoteFailure {
  ticker: string
  statusCode: number
  message: string
}

export const MAX_BATCH = 50

export function quoteKey (ticker: string): string {
  return `stock:${ticker}`
}

/** The ticker in upper case; a 400 for anything that does not match the ticker pattern. */
export function normalizeTicker (ticker: string): string {
  if (typeof ticker !== 'string' || !TICKER_REGEX.test(ticker)) {
    throw new BadRequestError('A ticker is 1 to 10 letters, digits, dots or dashes, optionally after an exchange and a colon (TASE:TEVA)')
  }
  return ticker.toUpperCase()
}

export function createQuoteService (options: QuoteServiceOptions) {
  const { cache, provider } = options
  const wrapOptions = {
    ttl: options.ttlSeconds,
    grace: options.graceSeconds,
    name: 'quotes',
    ...(options.softTimeoutMs !== undefined ? { softTimeoutMs: options.softTimeoutMs } : {}),
  }

  return {
    provider: provider.name,

    /** One quote; throws the AIC error to answer with (404 unknown, 502/503/504 upstream). */
    async get (ticker: string): Promise<QuoteLookup> {
      return this.lookup(ticker)
    },

    /**
     * `get` for the hot path: a quote fresh in L1 is answered synchronously (no promise, no
     * microtask); anything else is `get`'s promise.
     */
    lookup (ticker: string): QuoteLookup | Promise<QuoteLookup> {
      const symbol = normalizeTicker(ticker)
      const result = cache.wrapEntryNow(quoteKey(symbol), wrapOptions, () => provider.quote(symbol))
      return result instanceof Promise
        ? result.then((r) => ({ ticker: symbol, quote: r.value, cache: r.cache, age: r.age, layer: r.layer }))
        : { ticker: symbol, quote: result.value, cache: result.cache, age: result.age, layer: result.layer }
    },

    /**
     * Quotes for up to 50 distinct tickers (normalised, duplicates removed, order kept).
     * A ticker that fails lands in `errors`; the others are still answered.
     */
    async getMany (tickers: readonly string[]): Promise<{ quotes: QuoteLookup[], errors: QuoteFailure[] }> {
      const symbols = [...new Set(tickers.map(normalizeTicker))]
      if (symbols.length === 0 || symbols.length > MAX_BATCH) {
        throw new BadRequestError(`Ask for 1 to ${MAX_BATCH} distinct tickers (got ${symbols.length})`)
      }
      const settled = await cache.wrapMany(symbols.map(quoteKey), wrapOptions,
        (key) => provider.quote(key.slice('stock:'.length)), options.batchConcurrency)
      const quotes: QuoteLookup[] = []
      const errors: QuoteFailure[] = []
      settled.forEach((outcome, i) => {
        const ticker = symbols[i] as string
        if (outcome.status === 'fulfilled') {
          const result = outcome.value
          quotes.push({ ticker, quote: result.value as Quote, cache: result.cache, age: result.age, layer: result.layer })
        } else {
          errors.push({ ticker, ...describeFailure(outcome.reason) })
        }
      })
      return { quotes, errors }
    },
  }
}

export type QuoteService = ReturnType<typeof createQuoteService>

/** Status and message for a client: AIC errors keep theirs, anything else is a plain 503. */
export function describeFailure (err: unknown): { statusCode: number, message: string } {
  if (isServiceError(err)) {
    const e = err as { statusCode?: number, message: string }
    return { statusCode: e.statusCode ?? 503, message: e.message }
  }
  return { statusCode: 503, message: 'The quote is unavailable right now' }
}
