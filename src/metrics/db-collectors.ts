/** The primary store's family, registered by the db plugin from `db.roundTrips()` at scrape time. */
import type { Metrics } from './collectors.js'

export function registerDbMetrics (metrics: Metrics, db: { kind: string, roundTrips (): number }): void {
  metrics.counter('aic_db_queries_total',
    'Statements sent to the primary store (BEGIN and COMMIT included), by store: one a database round trip.',
    ['store'], () => [[{ store: db.kind }, db.roundTrips()]])
}
