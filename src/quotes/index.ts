/** Picks the quote provider named by the configuration. */
import type { BreakerState } from './circuit-breaker.js'
import { FinnhubProvider } from './finnhub.js'
import type { QuoteProvider } from './schemas.js'
import { SimulatedProvider } from './simulated.js'

export interface ProviderConfig {
  QUOTE_PROVIDER: 'simulated' | 'finnhub'
  FINNHUB_API_KEY?: string | undefined
  FINNHUB_BASE_URL: string
  FINNHUB_TIMEOUT_MS: number
  FINNHUB_RETRIES: number
  FINNHUB_BREAKER_THRESHOLD: number
  FINNHUB_BREAKER_COOLDOWN_MS: number
}

export function createQuoteProvider (config: ProviderConfig, onBreakerChange?: (state: BreakerState, reason: string) => void): QuoteProvider {
  if (config.QUOTE_PROVIDER === 'simulated') return new SimulatedProvider()
  if (config.FINNHUB_API_KEY === undefined || config.FINNHUB_API_KEY.trim() === '') {
    throw new Error('QUOTE_PROVIDER=finnhub needs FINNHUB_API_KEY (get one at https://finnhub.io/register), or set QUOTE_PROVIDER=simulated')
  }
  return new FinnhubProvider({
    baseUrl: config.FINNHUB_BASE_URL,
    apiKey: config.FINNHUB_API_KEY,
    timeoutMs: config.FINNHUB_TIMEOUT_MS,
    retries: config.FINNHUB_RETRIES,
    breakerThreshold: config.FINNHUB_BREAKER_THRESHOLD,
    breakerCooldownMs: config.FINNHUB_BREAKER_COOLDOWN_MS,
    ...(onBreakerChange ? { onBreakerChange } : {}),
  })
}

export { FinnhubProvider } from './finnhub.js'
export { SimulatedProvider, simulatedQuote } from './simulated.js'
export type { Quote, QuoteProvider } from './schemas.js'
