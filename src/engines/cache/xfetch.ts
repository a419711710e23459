/**
 * Probabilistic early expiration ("XFetch", Vattani, Chierichetti and Lowenstein, VLDB 2015).
 * Each read refreshes early with a probability that grows as expiry nears and with how long a
 * load takes: refresh when  now - delta * beta * ln(random())  >=  expiry.  A hot key is
 * refreshed by one reader shortly before it expires, so it never expires for everyone at once;
 * a cold key is almost never refreshed early.
 */

export interface XFetchOptions {
  /** > 1 favours earlier refreshes. */
  beta: number
  /** Smallest delta used, as a fraction of the TTL, so a very fast loader still gets a window. */
  minDeltaRatio: number
}

export const DEFAULT_XFETCH: XFetchOptions = { beta: 1, minDeltaRatio: 0.01 }

/** Where a copy stands: now, when it expires, how long its load took, its TTL (ms). */
export interface CopyLife {
  now: number
  expiresAt: number
  loadMs: number
  ttlMs: number
}

export function shouldRefreshEarly (life: CopyLife, random: () => number, options: XFetchOptions = DEFAULT_XFETCH): boolean {
  const delta = Math.max(life.loadMs, life.ttlMs * options.minDeltaRatio)
  // -ln(r) for r in (0, 1]; random() may return 0, which would mean "infinitely early".
  const r = random()
  const gap = -delta * options.beta * Math.log(r > 0 ? r : Number.MIN_VALUE)
  return life.now + gap >= life.expiresAt
}
