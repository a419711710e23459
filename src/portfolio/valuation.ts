/**
 * Prices positions with quotes fetched in batches (one cache round trip per 50 tickers) and
 * builds the view the API returns. A ticker without a quote (provider down, nothing cached)
 * is listed in `unpriced` with null figures instead of failing the whole portfolio.
 */
import type { Position } from './ledger.js'

export interface PositionView {
  ticker: string
  shares: number
  avgCost: number
  price: number | null
  value: number | null
  gain: number | null
  gainPercent: number | null
}

export interface PortfolioView {
  userId: string
  positions: PositionView[]
  totals: { cost: number, value: number | null, gain: number | null, gainPercent: number | null }
  version: number
  asOf: string
  /** Tickers that could not be priced (their figures are null, and so are the totals'). */
  unpriced: string[]
}

/** The part of the quote service valuation uses. */
export interface QuoteSource {
  getMany (tickers: readonly string[]): Promise<{ quotes: Array<{ ticker: string, quote: { price: number }, cache?: string }>, errors: Array<{ ticker: string }> }>
}

export const QUOTE_BATCH = 50

const round = (n: number, digits: number): number => {
  const f = 10 ** digits
  return Math.round(n * f) / f
}

/** Prices for the tickers (missing: no quote). Never throws: a failed batch leaves its tickers unpriced. */
export async function fetchPrices (quotes: QuoteSource, tickers: readonly string[], onError?: (err: unknown) => void): Promise<Map<string, number>> {
  const prices = new Map<string, number>()
  const unique = [...new Set(tickers)]
  const batches: string[][] = []
  for (let i = 0; i < unique.length; i += QUOTE_BATCH) batches.push(unique.slice(i, i + QUOTE_BATCH))
  await Promise.all(batches.map(async (batch) => {
    try {
      const { quotes: found } = await quotes.getMany(batch)
      for (const q of found) prices.set(q.ticker, q.quote.price)
    } catch (err) {
      onError?.(err)
    }
  }))
  return prices
}

export function valuePortfolio (userId: string, version: number, positions: readonly Position[], prices: ReadonlyMap<string, number>, asOf: Date): PortfolioView {
  let cost = 0
  let value = 0
  const unpriced: string[] = []
  const views = [...positions].sort((a, b) => (a.ticker < b.ticker ? -1 : a.ticker > b.ticker ? 1 : 0)).map((p): PositionView => {
    const positionCost = p.shares * p.avgCost
    cost += positionCost
    const price = prices.get(p.ticker)
    if (price === undefined) {
      unpriced.push(p.ticker)
      return { ticker: p.ticker, shares: p.shares, avgCost: round(p.avgCost, 4), price: null, value: null, gain: null, gainPercent: null }
    }
    const positionValue = p.shares * price
    value += positionValue
    return {
      ticker: p.ticker,
      shares: p.shares,
      avgCost: round(p.avgCost, 4),
      price,
      value: round(positionValue, 2),
      gain: round(positionValue - positionCost, 2),
      gainPercent: positionCost > 0 ? round(((positionValue - positionCost) / positionCost) * 100, 2) : 0,
    }
  })
  const priced = unpriced.length === 0
  return {
    userId,
    positions: views,
    totals: {
      cost: round(cost, 2),
      value: priced ? round(value, 2) : null,
      gain: priced ? round(value - cost, 2) : null,
      gainPercent: priced ? (cost > 0 ? round(((value - cost) / cost) * 100, 2) : 0) : null,
    },
    version,
    asOf: asOf.toISOString(),
    unpriced,
  }
}
