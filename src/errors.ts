/**
 * The service's error codes. Every error a handler throws on purpose is made here, so its
 * message is written for the client; anything else that reaches the root handler with a
 * 5xx status is an accident and is answered with a generic message.
 *
 * The engines (src/engines) throw typed errors of their own and know nothing of HTTP;
 * ENGINE_ERRORS below is the one place where they become answers.
 */
import createError from '@fastify/error'
import type { FastifyError } from 'fastify'
import { LockBusyError, LockLostError, LockUnavailableError } from './engines/locks/errors.js'

export const ServiceUnavailableError = createError('AIC_UNAVAILABLE', '%s', 503)
export const NotFoundError = createError('AIC_NOT_FOUND', '%s', 404)
export const ConflictError = createError('AIC_CONFLICT', '%s', 409)
export const BadRequestError = createError('AIC_BAD_REQUEST', '%s', 400)
export const UnauthorizedError = createError('AIC_UNAUTHORIZED', '%s', 401)
export const ForbiddenError = createError('AIC_FORBIDDEN', '%s', 403)
export const UnprocessableError = createError('AIC_UNPROCESSABLE', '%s', 422)
export const BadGatewayError = createError('AIC_BAD_GATEWAY', '%s', 502)
export const GatewayTimeoutError = createError('AIC_GATEWAY_TIMEOUT', '%s', 504)

/** Errors whose message was written for the client, even with a 5xx status. */
export function isServiceError (err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code
  return typeof code === 'string' && code.startsWith('AIC_')
}

// ---------------------------------------------------------------------------------------
// Engine errors → HTTP
// ---------------------------------------------------------------------------------------

/** One of the service error classes above. */
type ServiceErrorClass = new (message: string) => FastifyError
type ErrorClass<E extends Error> = abstract new (...args: never[]) => E

/** How the app answers one kind of engine error. */
export interface EngineErrorAnswer<E extends Error> {
  /** The engine's error class (subclasses match too: put them before their base). */
  type: ErrorClass<E>
  /** The service error it becomes (its code and status). */
  as: ServiceErrorClass
  /** The client's message; the engine's own message is for the logs. */
  message: string | ((err: E) => string)
  /** Retry-After, in ms (sent rounded up to seconds). */
  retryAfterMs?: (err: E) => number
}

/** One row of the table: the answer for `err` when it is of the row's type, else null. */
export interface EngineErrorRow {
  answer (err: Error): HttpError | null
}

/** A service error carrying the headers the root handler puts on the reply. */
export type HttpError = FastifyError & { headers?: Record<string, string> }

/** A row of the table, typed by the engine error it answers. */
export function engineError<E extends Error> (row: EngineErrorAnswer<E>): EngineErrorRow {
  return {
    answer (err) {
      if (!(err instanceof row.type)) return null
      const mapped: HttpError = new row.as(typeof row.message === 'function' ? row.message(err) : row.message)
      mapped.cause = err
      const retryAfterMs = row.retryAfterMs?.(err)
      if (retryAfterMs !== undefined) mapped.headers = { 'retry-after': String(Math.max(1, Math.ceil(retryAfterMs / 1000))) }
      return mapped
    },
  }
}

/**
 * Every engine error the app answers on purpose, first match wins. An engine error not
 * listed here is an accident: a 500 with a generic message, logged with its stack.
 */
export const ENGINE_ERRORS: readonly EngineErrorRow[] = [
  // locks (src/engines/locks/errors.ts)
  engineError({
    type: LockBusyError,
    as: ConflictError,
    message: 'Another operation on this resource is in progress; this request was not applied and is safe to retry',
    retryAfterMs: (err) => err.retryAfterMs,
  }),
  engineError({
    type: LockUnavailableError,
    as: ServiceUnavailableError,
    message: 'Locking is unavailable (too few lock servers reachable); the operation was not performed, retry later',
    retryAfterMs: (err) => err.retryAfterMs,
  }),
  engineError({
    type: LockLostError,
    as: ConflictError,
    message: 'The lock on this resource was lost before the operation finished; retry',
    retryAfterMs: (err) => err.retryAfterMs,
  }),
]

/** The service error an engine error is answered with; null when `err` is not one the table knows. */
export function fromEngineError (err: unknown, table: readonly EngineErrorRow[] = ENGINE_ERRORS): HttpError | null {
  if (!(err instanceof Error)) return null
  for (const row of table) {
    const mapped = row.answer(err)
    if (mapped !== null) return mapped
  }
  return null
}
