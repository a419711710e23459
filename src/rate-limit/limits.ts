/**
 * The limiter's fixed parts: the 429 error, where the special limits attach, and how a
 * wait is said in a message.
 */
import createError from '@fastify/error'

/** Answered as `{ statusCode: 429, error: 'Too Many Requests', message }` by the root handler. */
export const TooManyRequestsError = createError('AIC_RATE_LIMITED', '%s', 429)

/** The login route gets the login limits on top of the global one. */
export const LOGIN_URL = '/api/auth/login'

/** So does the registration route, per address (its 409 tells whether an email has an account). */
export const REGISTER_URL = '/api/auth/register'

/** Routes under this prefix get the admin limit instead of the global one. */
export const ADMIN_PREFIX = '/api/debug'

export function isAdminUrl (url: string): boolean {
  return url === ADMIN_PREFIX || url.startsWith(`${ADMIN_PREFIX}/`)
}

/** 1 → "1 second", 90 → "2 minutes", 3600 → "60 minutes", 7200 → "2 hours" (always rounded up). */
export function retryText (seconds: number): string {
  const s = Math.max(1, Math.ceil(seconds))
  const [value, unit] = s < 60 ? [s, 'second'] : s <= 5400 ? [Math.ceil(s / 60), 'minute'] : [Math.ceil(s / 3600), 'hour']
  return `${value} ${unit}${value === 1 ? '' : 's'}`
}
