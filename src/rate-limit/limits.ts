/**
 * The limiter's fixed parts: the 429 error, how a wait is said in a message, and what a
 * route declares for a limit of its own.
 */
import createError from '@fastify/error'
import type { FastifyRequest } from 'fastify'

/** Answered as `{ statusCode: 429, error: 'Too Many Requests', message }` by the root handler. */
export const TooManyRequestsError = createError('AIC_RATE_LIMITED', '%s', 429)

/** The limits the metrics count refusals of (`aic_rate_limit_rejections_total{limit}`). */
export type LimitName = 'global' | 'admin' | 'login' | 'loginEmail' | 'register'

/**
 * A limit of a route's own: at most `max` per `timeWindow` ms per key, refused with
 * "`message`, retry in …". `key` gives the request's key (keep a distinct prefix per limit,
 * e.g. `register:`), or null when the limit does not apply to it.
 */
export interface RouteLimit {
  name: LimitName
  max: number
  timeWindow: number
  key: (request: FastifyRequest) => string | null
  message: string
}

/** The 429 for a refused request: "<message>, retry in <wait>". */
export function tooManyRequests (message: string, ttlMs: number): Error {
  return new TooManyRequestsError(`${message}, retry in ${retryText(Math.ceil(ttlMs / 1000))}`)
}

/** 1 → "1 second", 90 → "2 minutes", 3600 → "60 minutes", 7200 → "2 hours" (always rounded up). */
export function retryText (seconds: number): string {
  const s = Math.max(1, Math.ceil(seconds))
  const [value, unit] = s < 60 ? [s, 'second'] : s <= 5400 ? [Math.ceil(s / 60), 'minute'] : [Math.ceil(s / 3600), 'hour']
  return `${value} ${unit}${value === 1 ? '' : 's'}`
}
