/**
 * The arithmetic of a portfolio, with no I/O: what a buy, a sell or a removal does to one
 * position. Shares keep at most six decimals (fractional shares), so repeated buys and
 * sells add up exactly instead of leaving float dust such as 0.30000000000000004.
 */
import { UnprocessableError, BadRequestError } from '../errors.js'

export type Side = 'buy' | 'sell'

export interface Position {
  ticker: string
  shares: number
  /** Average cost per share of the shares held (buys only; sells keep it). */
  avgCost: number
}

export interface Trade {
  /** Upper case, validated. */
  ticker: string
  side: Side
  shares: number
  price: number
}

export const SHARE_DECIMALS = 6
export const MAX_TRADE_SHARES = 1e9
export const MAX_PRICE = 1e9
/** A millionth: below any quoted price, and far above where products of shares and price underflow. */
export const MIN_PRICE = 1e-6
/** Six decimals stay exact in a double up to about 9e9 shares. */
export const MAX_POSITION_SHARES = 9e9

const SCALE = 10 ** SHARE_DECIMALS

export function roundShares (shares: number): number {
  return Math.round(shares * SCALE) / SCALE
}

/** Throws a 400 for shares the schema lets through but the ledger cannot keep exactly. */
export function checkTrade (trade: Trade): Trade {
  if (!(trade.shares > 0) || trade.shares > MAX_TRADE_SHARES) {
    throw new BadRequestError(`shares must be greater than 0 and at most ${MAX_TRADE_SHARES}`)
  }
  if (roundShares(trade.shares) !== trade.shares) {
    throw new BadRequestError(`shares may have at most ${SHARE_DECIMALS} decimals`)
  }
  if (!(trade.price >= MIN_PRICE) || trade.price > MAX_PRICE || !Number.isFinite(trade.price)) {
    throw new BadRequestError(`price must be at least ${MIN_PRICE} and at most ${MAX_PRICE}`)
  }
  return trade
}

/**
 * The position after the trade (null: nothing left). Throws a 422 when selling more than
 * is held, or when a buy would grow a position past what the ledger can keep exactly.
 */
export function applyTrade (current: Position | null, trade: Trade): Position | null {
  const held = current?.shares ?? 0
  if (trade.side === 'sell') {
    if (current === null || trade.shares > held) {
      throw new UnprocessableError(`Cannot sell ${trade.shares} ${trade.ticker}: ${held} held`)
    }
    const left = roundShares(held - trade.shares)
    return left > 0 ? { ticker: trade.ticker, shares: left, avgCost: current.avgCost } : null
  }
  const shares = roundShares(held + trade.shares)
  if (shares > MAX_POSITION_SHARES) {
    throw new UnprocessableError(`A position holds at most ${MAX_POSITION_SHARES} shares`)
  }
  const avgCost = current === null
    ? trade.price
    : (held * current.avgCost + trade.shares * trade.price) / shares
  // Cannot happen with checked trades; a position the store would refuse must be a 4xx, not a 500.
  if (!(avgCost > 0) || !Number.isFinite(avgCost)) {
    throw new UnprocessableError(`The average cost of ${trade.ticker} would not be a positive number`)
  }
  return { ticker: trade.ticker, shares, avgCost }
}
