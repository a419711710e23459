/**
 * The errors a lock can end in, as the service's AIC_* errors (so the root handler passes
 * their messages through), each carrying a Retry-After header that the locks plugin puts
 * on the reply.
 */
import type { FastifyError } from 'fastify'
import { ConflictError, ServiceUnavailableError } from '../../errors.js'

const kLockError = Symbol.for('aic.lockError')

export type LockError = FastifyError & { headers: Record<string, string>, [kLockError]: true }

function brand (err: FastifyError, retryAfterS: number): LockError {
  return Object.assign(err, { headers: { 'retry-after': String(retryAfterS) }, [kLockError]: true as const })
}

/** 409: the lock stayed busy for LOCK_WAIT_MS. */
export function lockBusyError (): LockError {
  return brand(new ConflictError('Another operation on this resource is in progress; this request was not applied and is safe to retry'), 1)
}

/** 503: a majority of the lock's Redis masters could not be reached; nothing ran. */
export function locksUnavailableError (): LockError {
  return brand(new ServiceUnavailableError('Locking is unavailable (too few lock servers reachable); the operation was not performed, retry later'), 2)
}

/** The abort reason when a held lock expires or is taken over while its holder still works. */
export function lockLostError (): LockError {
  return brand(new ConflictError('The lock on this resource was lost before the operation finished; retry'), 1)
}

export function isLockError (err: unknown): err is LockError {
  return typeof err === 'object' && err !== null && (err as Partial<LockError>)[kLockError] === true
}

export function isLocksUnavailable (err: unknown): boolean {
  return isLockError(err) && err.statusCode === 503
}
