/**
 * Synthetic quotes, the default provider: a pure function of the ticker and the time
 * (rounded to the second), so every instance computes the same quote for the same moment,
 * and every quote says `source: "simulated"`. Prices move smoothly within a day, highs and
 * lows are consistent with the path so far, and the previous close is the last day's close.
 */
import type { Quote, QuoteProvider } from './schemas.js'

const DAY_MS = 86_400_000
const SAMPLE_MS = 5 * 60_000

export class SimulatedProvider implements QuoteProvider {
  readonly name = 'simulated' as const
  readonly #now: () => number

  constructor (options: { now?: () => number } = {}) {
    this.#now = options.now ?? Date.now
  }

  async quote (ticker: string): Promise<Quote> {
    return simulatedQuote(ticker, this.#now())
  }
}

export function simulatedQuote (ticker: string, at: number): Quote {
  const t = Math.floor(at / 1000) * 1000
  const seed = fnv1a(ticker)
  const dayStart = Math.floor(t / DAY_MS) * DAY_MS
  const base = 10 + (seed % 49_000) / 100
  const previousClose = closeOf(seed, base, dayStart - DAY_MS)
  const open = openOf(seed, base, dayStart, previousClose)
  const price = pathAt(seed, open, t - dayStart)
  let high = Math.max(open, price)
  let low = Math.min(open, price)
  for (let offset = SAMPLE_MS; offset < t - dayStart; offset += SAMPLE_MS) {
    const p = pathAt(seed, open, offset)
    if (p > high) high = p
    if (p < low) low = p
  }
  const change = price - previousClose
  return {
    ticker,
    price: round(price, 2),
    change: round(change, 2),
    changePercent: round((change / previousClose) * 100, 4),
    open: round(open, 2),
    high: round(high, 2),
    low: round(low, 2),
    previousClose: round(previousClose, 2),
    timestamp: new Date(t).toISOString(),
    source: 'simulated',
  }
}

function openOf (seed: number, base: number, dayStart: number, previousClose: number): number {
  const day = dayStart / DAY_MS
  return previousClose * (1 + 0.01 * Math.sin(day * 1.7 + (seed % 97)))
}

function closeOf (seed: number, base: number, dayStart: number): number {
  const day = dayStart / DAY_MS
  const previous = base * (1 + 0.15 * Math.sin(day * 0.05 + (seed % 89)))
  const open = openOf(seed, base, dayStart, previous)
  return pathAt(seed, open, DAY_MS - 1)
}

/** The intraday path: a few slow waves, at most about ±3 % from the open. */
function pathAt (seed: number, open: number, offsetMs: number): number {
  const x = offsetMs / DAY_MS
  const a = Math.sin(2 * Math.PI * x * 3 + (seed % 31)) - Math.sin(seed % 31)
  const b = Math.sin(2 * Math.PI * x * 11 + (seed % 13)) - Math.sin(seed % 13)
  return open * (1 + 0.01 * a + 0.005 * b)
}

function fnv1a (text: string): number {
  let hash = 0x811c9dc5
  for (let i = 0; i < text.length; i++) {
    hash ^= text.charCodeAt(i)
    hash = Math.imul(hash, 0x01000193)
  }
  return hash >>> 0
}

function round (value: number, digits: number): number {
  const f = 10 ** digits
  return Math.round(value * f) / f
}
