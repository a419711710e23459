/**
 * The portfolio concern's scheduled jobs. The scheduler runs each tick on one instance and
 * passes an AbortSignal that fires if the job's lock is lost; both jobs stop at the next
 * batch when it does. Both are safe to run twice: prewarm only loads quotes, and a
 * snapshot is one row per user per day, overwritten by a second run that day.
 */
import type { PortfolioRepo, SnapshotRecord } from './repo.js'
import { QUOTE_BATCH, fetchPrices, valuePortfolio, type QuoteSource } from './valuation.js'

export interface JobLogger {
  info (obj: object, msg: string): void
  warn (obj: object, msg: string): void
  debug (obj: object, msg: string): void
}

export interface PrewarmResult {
  tickers: number
  /** Quotes that were missing or expired and were loaded now. */
  loaded: number
  /** Quotes that were already fresh in the cache. */
  warm: number
  failed: number
  aborted: boolean
}

export interface SnapshotResult {
  day: string
  portfolios: number
  /** Portfolios stored with a null value because a quote was missing. */
  unpriced: number
  /** Idempotency records past their TTL, deleted in the same run. */
  purgedKeys: number
  aborted: boolean
}

export interface JobStats {
  prewarm: { runs: number, last: PrewarmResult | null }
  snapshot: { runs: number, last: SnapshotResult | null }
}

/** Portfolios read and stored per transaction by the snapshot job. */
export const SNAPSHOT_PAGE = 200

export function createPortfolioJobs (deps: { repo: PortfolioRepo, quotes: QuoteSource, log: JobLogger, now: () => number }) {
  const { repo, quotes, log, now } = deps
  const stats: JobStats = { prewarm: { runs: 0, last: null }, snapshot: { runs: 0, last: null } }

  return {
    /** quotes-prewarm: loads the quote of every ticker anyone holds, 50 per cache round trip. */
    async prewarm (signal: AbortSignal): Promise<PrewarmResult> {
      const tickers = await repo.heldTickers()
      const result: PrewarmResult = { tickers: tickers.length, loaded: 0, warm: 0, failed: 0, aborted: false }
      for (let i = 0; i < tickers.length; i += QUOTE_BATCH) {
        if (signal.aborted) {
          result.aborted = true
          break
        }
        const batch = tickers.slice(i, i + QUOTE_BATCH)
        try {
          const { quotes: found, errors } = await quotes.getMany(batch)
          for (const q of found) {
            if (q.cache === 'HIT') result.warm++
            else result.loaded++
          }
          result.failed += errors.length
        } catch (err) {
          result.failed += batch.length
          log.warn({ err: err instanceof Error ? err.message : String(err), tickers: batch.length }, 'quotes-prewarm: a batch failed')
        }
      }
      stats.prewarm.runs++
      stats.prewarm.last = result
      if (result.failed > 0) log.warn({ ...result }, 'quotes-prewarm: some quotes could not be loaded')
      else log.debug({ ...result }, 'quotes-prewarm done')
      return result
    },

    /**
     * portfolio-snapshot: stores each portfolio's value for today (UTC), priced once per
     * ticker for the whole run, and deletes idempotency records past their TTL.
     */
    async snapshot (signal: AbortSignal): Promise<SnapshotResult> {
      const at = new Date(now())
      const takenAt = at.toISOString()
      const day = takenAt.slice(0, 10)
      const result: SnapshotResult = { day, portfolios: 0, unpriced: 0, purgedKeys: await repo.purgeIdempotency(takenAt), aborted: false }
      const prices = new Map<string, number>()
      const tried = new Set<string>()
      let after = ''
      for (;;) {
        if (signal.aborted) {
          result.aborted = true
          break
        }
        const page = await repo.listPortfolios(after, SNAPSHOT_PAGE)
        const last = page.at(-1)
        if (last === undefined) break
        const needed = [...new Set(page.flatMap((p) => p.positions.map((x) => x.ticker)))].filter((t) => !tried.has(t))
        for (const t of needed) tried.add(t)
        for (const [t, price] of await fetchPrices(quotes, needed)) prices.set(t, price)
        const rows: SnapshotRecord[] = page.map((p) => {
          const view = valuePortfolio(p.userId, p.version, p.positions, prices, at)
          if (view.unpriced.length > 0) result.unpriced++
          return { userId: p.userId, day, takenAt, version: p.version, positions: p.positions.length, cost: view.totals.cost, value: view.totals.value }
        })
        if (signal.aborted) {
          result.aborted = true
          break
        }
        await repo.saveSnapshots(rows)
        result.portfolios += rows.length
        after = last.userId
      }
      stats.snapshot.runs++
      stats.snapshot.last = result
      if (result.aborted) log.warn({ ...result }, 'portfolio-snapshot stopped early: its lock was lost')
      else log.info({ ...result }, 'portfolio-snapshot done')
      return result
    },

    stats (): JobStats {
      return { prewarm: { ...stats.prewarm }, snapshot: { ...stats.snapshot } }
    },
  }
}
