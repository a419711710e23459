/** The auth and session families, registered by the auth and sessions plugins; read at scrape time. */
import type { AccountStats } from '../auth/accounts.js'
import type { SessionStats } from '../auth/sessions.js'
import type { AuthStats } from '../auth/types.js'
import { byLabel, one, type Metrics } from './collectors.js'

export function registerAuthMetrics (metrics: Metrics, stats: () => AuthStats & { accounts: AccountStats }): void {
  const { counter } = metrics
  counter('aic_auth_logins_total', 'Login attempts that reached the password check, by outcome.', ['outcome'], () => {
    const { accounts } = stats()
    return [[{ outcome: 'success' }, accounts.loginSucceeded], [{ outcome: 'failure' }, accounts.loginFailed]]
  })
  counter('aic_auth_rejections_total', 'Requests refused 401 by authentication, by reason.', ['reason'], () => byLabel('reason', stats().rejected))
  counter('aic_auth_forbidden_total', 'Requests refused 403 (admin role required).', [], () => one(stats().forbidden))
}

export function registerSessionMetrics (metrics: Metrics, sessions: { stats (): SessionStats }): void {
  const { counter } = metrics
  counter('aic_session_checks_total', 'Tokens whose session was accepted, by where it was checked (fallback: Redis away, policy allow).', ['source'],
    () => byLabel('source', sessions.stats().accepted))
  counter('aic_session_rejections_total', 'Tokens refused because of their session, by reason.', ['reason'],
    () => byLabel('reason', sessions.stats().rejected))
  counter('aic_session_outage_logouts_dropped_total', 'Logouts made while Redis was away and dropped before they reached it (more than FALLBACK_MAX_ENTRIES).', [],
    () => one(sessions.stats().tombstonesDropped))
}
