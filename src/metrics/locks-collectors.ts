/** The locks families, registered by the locks plugin from `locks.stats()` at scrape time. */
import type { Locks } from '../engines/locks/locks.js'
import { one, type Metrics } from './collectors.js'

export function registerLocksMetrics (metrics: Metrics, locks: Pick<Locks, 'stats'>): void {
  const { counter, gauge } = metrics
  const read = (figure: (l: ReturnType<Locks['stats']>) => number) => () => one(figure(locks.stats()))
  counter('aic_lock_acquisitions_total', 'Locks taken (all backends).', [], read((l) => l.acquisitions))
  counter('aic_lock_contentions_total', 'Acquisitions that found the lock busy at least once.', [], read((l) => l.contentions))
  counter('aic_lock_failures_total', 'Locks not obtained: timeout (still busy after LOCK_WAIT_MS, 409) or unavailable (too few masters, 503).', ['reason'], () => {
    const l = locks.stats()
    return [[{ reason: 'timeout' }, l.timeouts], [{ reason: 'unavailable' }, l.unavailable]]
  })
  counter('aic_lock_extensions_total', 'Automatic extensions of held locks.', [], read((l) => l.extensions))
  counter('aic_lock_extension_failures_total', 'Extensions that failed.', [], read((l) => l.extensionFailures))
  counter('aic_lock_lost_total', 'Holders whose lock expired or was taken over while they worked.', [], read((l) => l.lost))
  counter('aic_lock_fallback_acquisitions_total', 'Locks taken in process because the main Redis was away.', [], read((l) => l.fallbackAcquisitions))
  gauge('aic_locks_held_local', 'In-process locks held now.', [], read((l) => l.held))
}
