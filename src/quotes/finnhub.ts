/**
 * Quotes from Finnhub: `GET {baseUrl}/quote?symbol=X` with the API key in the
 * `X-Finnhub-Token` header (kept out of URLs, so out of every access log). Each attempt has a
 * timeout; network errors, timeouts, 429 and 5xx are retried a bounded number of times with a
 * short jittered backoff; a circuit breaker makes a dead provider fail fast. Finnhub answers
 * an unknown symbol with all zeros, and a symbol it does not quote with a price but zero open,
 * high, low and previous close: both are a 404, never a price.
 */
import { BadGatewayError, GatewayTimeoutError, NotFoundError, ServiceUnavailableError, isServiceError } from '../errors.js'
import { CircuitBreaker, type BreakerState } from './circuit-breaker.js'
import type { Quote, QuoteProvider } from './schemas.js'

export interface FinnhubOptions {
  baseUrl: string
  apiKey: string
  timeoutMs: number
  /** Extra attempts after the first (network errors, timeouts, 429, 5xx). */
  retries: number
  breakerThreshold: number
  breakerCooldownMs: number
  onBreakerChange?: (state: BreakerState, reason: string) => void
  /** Base of the backoff between attempts (ms); doubled each attempt, jittered. */
  backoffMs?: number
}

export interface FinnhubStats {
  /** HTTP requests sent. */
  requests: number
  failures: number
  breaker: { state: BreakerState, opens: number, rejected: number }
}

/** An attempt that may succeed if tried again. */
class Retryable extends Error {
  constructor (readonly error: Error) {
    super(error.message)
  }
}

export class FinnhubProvider implements QuoteProvider {
  readonly name = 'finnhub' as const
  requests = 0
  failures = 0
  readonly #opts: FinnhubOptions
  readonly #base: string
  readonly #breaker: CircuitBreaker

  constructor (options: FinnhubOptions) {
    if (options.apiKey.trim() === '') throw new Error('FinnhubProvider needs an API key')
    this.#opts = options
    this.#base = options.baseUrl.replace(/\/+$/, '')
    this.#breaker = new CircuitBreaker({
      threshold: options.breakerThreshold,
      cooldownMs: options.breakerCooldownMs,
      // 404 (unknown symbol) is a healthy answer; 5xx-class outcomes are the upstream's trouble.
      isFailure: (err) => ((err as { statusCode?: number }).statusCode ?? 500) >= 500,
      ...(options.onBreakerChange ? { onStateChange: options.onBreakerChange } : {}),
    })
  }

  async quote (ticker: string): Promise<Quote> {
    return this.#breaker.run(() => this.#withRetries(ticker), 'The quote provider')
  }

  stats (): FinnhubStats {
    return {
      requests: this.requests,
      failures: this.failures,
      breaker: { state: this.#breaker.state, opens: this.#breaker.opens, rejected: this.#breaker.rejected },
    }
  }

  async #withRetries (ticker: string): Promise<Quote> {
    const attempts = 1 + this.#opts.retries
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.#attempt(ticker)
      } catch (err) {
        if (!(err instanceof Retryable)) {
          if (((err as { statusCode?: number }).statusCode ?? 500) >= 500) this.failures++
          throw err
        }
        if (attempt >= attempts) {
          this.failures++
          throw err.error
        }
        const base = (this.#opts.backoffMs ?? 100) * 2 ** (attempt - 1)
        await sleep(base * (0.5 + Math.random() / 2))
      }
    }
  }

  async #attempt (ticker: string): Promise<Quote> {
    const url = `${this.#base}/quote?symbol=${encodeURIComponent(finnhubSymbol(ticker))}`
    const signal = AbortSignal.timeout(this.#opts.timeoutMs)
    let body: unknown
    try {
      this.requests++
      const response = await fetch(url, {
        headers: { 'X-Finnhub-Token': this.#opts.apiKey, accept: 'application/json' },
        signal,
      })
      if (!response.ok) {
        await response.body?.cancel().catch(() => {})
        throw statusError(response.status)
      }
      try {
        body = await response.json()
      } catch (err) {
        if (isTimeout(err)) throw err
        throw new BadGatewayError('The quote provider sent an answer that is not JSON')
      }
    } catch (err) {
      if (err instanceof Retryable || isServiceError(err)) throw err
      if (isTimeout(err)) throw new Retryable(new GatewayTimeoutError(`The quote provider did not answer within ${this.#opts.timeoutMs} ms`))
      throw new Retryable(new ServiceUnavailableError('The quote provider is unreachable'))
    }
    return toQuote(ticker, body)
  }
}

/**
 * Finnhub's suffix for a stock exchange's listings (`TEVA.TA`); US exchanges have none. An
 * exchange not listed here is passed as written (`BINANCE:BTCUSDT`), the form Finnhub uses
 * for the venues it names by prefix.
 */
export const FINNHUB_EXCHANGE_SUFFIX: Readonly<Record<string, string>> = {
  NASDAQ: '', NYSE: '', AMEX: '', NYSEARCA: '', ARCA: '', BATS: '', US: '',
  TASE: '.TA', LSE: '.L', LON: '.L', TSX: '.TO', TSXV: '.V', XETRA: '.DE', ETR: '.DE', FRA: '.F',
  EPA: '.PA', AMS: '.AS', EBR: '.BR', SIX: '.SW', BIT: '.MI', BME: '.MC', STO: '.ST', OSL: '.OL',
  CPH: '.CO', HEL: '.HE', HKEX: '.HK', HKG: '.HK', TYO: '.T', TSE: '.T', ASX: '.AX', NSE: '.NS',
  BSE: '.BO', KRX: '.KS', SGX: '.SI',
}

/** The symbol Finnhub expects for a validated, upper-case ticker (`TASE:TEVA` → `TEVA.TA`). */
export function finnhubSymbol (ticker: string): string {
  const colon = ticker.indexOf(':')
  if (colon === -1) return ticker
  const suffix = FINNHUB_EXCHANGE_SUFFIX[ticker.slice(0, colon)]
  return suffix === undefined ? ticker : `${ticker.slice(colon + 1)}${suffix}`
}

function statusError (status: number): Error {
  if (status === 429) return new Retryable(new ServiceUnavailableError('The quote provider is rate limiting this service; try again shortly'))
  if (status >= 500) return new Retryable(new ServiceUnavailableError(`The quote provider failed (HTTP ${status})`))
  if (status === 401 || status === 403) return new BadGatewayError(`The quote provider refused the request (HTTP ${status}): check FINNHUB_API_KEY and its plan`)
  return new BadGatewayError(`The quote provider answered HTTP ${status}`)
}

/** Finnhub's quote → ours. All zeros means "unknown symbol"; anything not a price is refused, never guessed. */
export function toQuote (ticker: string, body: unknown): Quote {
  if (typeof body !== 'object' || body === null) throw new BadGatewayError('The quote provider sent an unexpected answer')
  const b = body as Record<string, unknown>
  const c = num(b.c)
  const h = num(b.h)
  const l = num(b.l)
  const o = num(b.o)
  const pc = num(b.pc)
  const t = num(b.t)
  if (c === 0 && h === 0 && l === 0 && o === 0 && pc === 0) throw new NotFoundError(`Unknown ticker: ${ticker}`)
  // A price with zero open, high, low and previous close is what Finnhub sends for symbols it
  // lists but does not quote: not a real quote.
  if (h === 0 && l === 0 && o === 0 && pc === 0) throw new NotFoundError(`No quote for ${ticker}`)
  if (c === null || h === null || l === null || o === null || pc === null || t === null || c <= 0 || t <= 0) {
    throw new BadGatewayError('The quote provider sent an incomplete quote')
  }
  const d = num(b.d) ?? c - pc
  const dp = num(b.dp) ?? (pc !== 0 ? (d / pc) * 100 : 0)
  return {
    ticker,
    price: c,
    change: d,
    changePercent: dp,
    open: o,
    high: h,
    low: l,
    previousClose: pc,
    timestamp: new Date(t * 1000).toISOString(),
    source: 'finnhub',
  }
}

function num (value: unknown): number | null {
  return typeof value === 'number' && Number.isFinite(value) ? value : null
}

function isTimeout (err: unknown): boolean {
  const name = (err as { name?: unknown } | null)?.name
  return name === 'TimeoutError' || name === 'AbortError'
}

function sleep (ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms))
}
