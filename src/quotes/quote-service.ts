/**
 * Quotes through the two-tier cache under the guide's key `stock:<TICKER>`: one ticker, or a
 * batch (one L2 round trip for all of them, the provider only for the misses, with bounded
 * concurrency). The portfolio concern prices positions with `getMany`.
 */
import { BadRequestError, GatewayTimeoutError, isServiceError } from '../errors.js'
import { CacheLoadTimeoutError } from '../engines/cache/errors.js'
import type { TwoTierCache } from '../engines/cache/two-tier-cache.js'
import type { CacheLayer, CachePolicy, CacheStatus } from '../engines/cache/types.js'
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
  /** How a quote is cached: the route declares the same policy (plugins/cache.ts reads it here). */
  const policy: CachePolicy = {
    ttl: options.ttlSeconds,
    grace: options.graceSeconds,
    name: 'quotes',
    ...(options.softTimeoutMs !== undefined ? { softTimeoutMs: options.softTimeoutMs } : {}),
  }

  return {
    provider: provider.name,
    policy,

    /** The provider's quote, not cached: the loader behind the cached route and `get`. */
    async fetch (symbol: string): Promise<Quote> {
      return provider.quote(symbol)
    },

    /** One quote; throws the AIC error to answer with (404 unknown, 502/503/504 upstream). */
    async get (ticker: string): Promise<QuoteLookup> {
      const symbol = normalizeTicker(ticker)
      try {
        const r = await cache.get({ ...policy, key: quoteKey(symbol), load: () => provider.quote(symbol) })
        return { ticker: symbol, quote: r.value, cache: r.cache, age: r.age, layer: r.layer }
      } catch (err) {
        throw asServiceError(err)
      }
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
      const settled = await cache.getMany<Quote>({
        ...policy,
        keys: symbols.map(quoteKey),
        load: (key) => provider.quote(key.slice('stock:'.length)),
        concurrency: options.batchConcurrency,
      })
      const quotes: QuoteLookup[] = []
      const errors: QuoteFailure[] = []
      settled.forEach((outcome, i) => {
        const ticker = symbols[i] as string
        if (outcome.status === 'fulfilled') {
          const result = outcome.value
          quotes.push({ ticker, quote: result.value, cache: result.cache, age: result.age, layer: result.layer })
        } else {
          errors.push({ ticker, ...describeFailure(outcome.reason) })
        }
      })
      return { quotes, errors }
    },
  }
}

export type QuoteService = ReturnType<typeof createQuoteService>

/** The cache's own errors as the app answers them (a load abandoned at its timeout: 504). */
export function asServiceError (err: unknown): unknown {
  if (err instanceof CacheLoadTimeoutError) return new GatewayTimeoutError(`The quote provider did not answer within ${err.timeoutMs} ms`)
  return err
}

/** Status and message for a client: AIC errors keep theirs, anything else is a plain 503. */
export function describeFailure (failure: unknown): { statusCode: number, message: string } {
  const err = asServiceError(failure)
  if (isServiceError(err)) {
    const e = err as { statusCode?: number, message: string }
    return { statusCode: e.statusCode ?? 503, message: e.message }
  }
  return { statusCode: 503, message: 'The quote is unavailable right now' }
}
