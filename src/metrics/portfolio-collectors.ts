/** The portfolio families, registered by the portfolio plugin from `portfolio.stats()` at scrape time. */
import type { PortfolioStats } from '../portfolio/service.js'
import { one, type Metrics } from './collectors.js'

export function registerPortfolioMetrics (metrics: Metrics, portfolio: { stats (): PortfolioStats }): void {
  const { counter } = metrics
  const read = (figure: (p: PortfolioStats) => number) => () => one(figure(portfolio.stats()))
  counter('aic_portfolio_reads_total', 'GET /api/portfolio answers.', [], read((p) => p.reads))
  counter('aic_portfolio_writes_total', 'Committed writes, by kind.', ['kind'], () => {
    const p = portfolio.stats()
    return [[{ kind: 'trade' }, p.trades], [{ kind: 'removal' }, p.removals]]
  })
  counter('aic_portfolio_idempotent_replays_total', 'Retries answered from the stored response (Idempotency-Key).', [], read((p) => p.replays))
  counter('aic_portfolio_idempotency_mismatches_total', 'Idempotency-Key reused with a different request (422).', [], read((p) => p.keyMismatches))
  counter('aic_portfolio_conflicts_total', 'Commits refused by the version check.', [], read((p) => p.conflicts))
  counter('aic_portfolio_lock_lost_total', 'Writes abandoned because the lock was lost before the commit.', [], read((p) => p.lockLost))
  counter('aic_portfolio_stale_copies_total', 'Cached portfolio views refused because the stored version had moved on.', [], read((p) => p.staleCopies))
  counter('aic_portfolio_invalidate_failures_total', 'Cache invalidations after a write that failed.', [], read((p) => p.invalidateFailures))
}
