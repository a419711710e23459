/** The load-shedding families, for the under-pressure plugin to register; read at scrape time. */
import { byLabel, one, type Metrics } from './collectors.js'

export function registerSheddingMetrics (metrics: Metrics, shedding: { stats (): { active: boolean, shed: Record<string, number> } }): void {
  metrics.counter('aic_http_requests_shed_total', 'Requests answered 503 by load shedding, by the bound that was passed.', ['reason'],
    () => byLabel('reason', shedding.stats().shed))
  metrics.gauge('aic_load_shedding_active', '1 while requests are being shed (an episode is on), else 0.', [],
    () => one(shedding.stats().active ? 1 : 0))
}
