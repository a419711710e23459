/** The quote as the API returns it; the domain type is derived from it. */
import { Type, type Static } from 'typebox'

/**
 * One ticker, unanchored: a symbol of 1 to 10 letters, digits, dots or dashes, optionally
 * qualified by an exchange of 1 to 10 letters (`TASE:TEVA`). No character of it is special to
 * Redis (no glob characters, no spaces), so `stock:TASE:TEVA` is a safe key.
 */
export const TICKER_ITEM_PATTERN = '(?:[A-Za-z]{1,10}:)?[A-Za-z0-9.\\-]{1,10}'
/** A ticker as accepted anywhere in the service (normalised to upper case after validation). */
export const TICKER_PATTERN = `^${TICKER_ITEM_PATTERN}$`
export const TICKER_REGEX = new RegExp(TICKER_PATTERN)
/** The longest ticker the pattern accepts (`EXCHANGEXX:SYMBOLXXXX`). */
export const TICKER_MAX_LENGTH = 21
export const TICKER_DESCRIPTION = '1 to 10 letters, digits, dots or dashes, optionally after an exchange and a colon (`TASE:TEVA`); case-insensitive.'

export const QuoteSourceSchema = Type.Union([Type.Literal('simulated'), Type.Literal('finnhub')], {
  description: '`simulated` quotes are synthetic (deterministic from the ticker and the time), never market data.',
})

export const QuoteSchema = Type.Object({
  ticker: Type.String(),
  price: Type.Number({ description: 'Current (last) price.' }),
  change: Type.Number({ description: 'price - previousClose' }),
  changePercent: Type.Number({ description: 'Change in percent of previousClose.' }),
  open: Type.Number(),
  high: Type.Number(),
  low: Type.Number(),
  previousClose: Type.Number(),
  timestamp: Type.String({ format: 'date-time', description: 'Time of the price (ISO 8601).' }),
  source: QuoteSourceSchema,
}, { $id: 'Quote' })

export type Quote = Static<typeof QuoteSchema>
export type QuoteSource = Static<typeof QuoteSourceSchema>

/** What every provider implements. Providers never invent a price: they answer or throw. */
export interface QuoteProvider {
  readonly name: QuoteSource
  /** `ticker` is validated and upper case. Throws AIC errors (404 unknown, 502/503/504 upstream). */
  quote (ticker: string): Promise<Quote>
}
