/** The rate limiter's families, for the rate-limit plugin to register; read at scrape time. */
import type { WindowCounterStats } from '../engines/counters/window-counter.js'
import type { Metrics } from './collectors.js'

/** Requests refused with 429, per limit (the `limit` label: login_email for loginEmail). */
export interface RateLimitRejections { global: number, admin: number, login: number, loginEmail: number, register: number }

export function registerRateLimitMetrics (metrics: Metrics, limiter: { stats (): Pick<WindowCounterStats, 'redisHits' | 'memoryHits'> & { limited: RateLimitRejections } }): void {
  metrics.counter('aic_rate_limit_rejections_total', 'Requests refused with 429, by limit.', ['limit'], () => {
    const { limited } = limiter.stats()
    return [
      [{ limit: 'global' }, limited.global], [{ limit: 'admin' }, limited.admin],
      [{ limit: 'login' }, limited.login], [{ limit: 'login_email' }, limited.loginEmail],
      [{ limit: 'register' }, limited.register],
    ]
  })
  metrics.counter('aic_rate_limit_hits_total', 'Hits counted by the limiter, by where they were counted.', ['store'], () => {
    const s = limiter.stats()
    return [[{ store: 'redis' }, s.redisHits], [{ store: 'memory' }, s.memoryHits]]
  })
}
