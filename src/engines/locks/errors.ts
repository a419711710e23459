/**
 * The errors the locks engine ends in. Each says when trying again makes sense
 * (`retryAfterMs`); none knows about HTTP: the app maps them to answers (src/errors.ts).
 * The messages are for logs; the app writes its own for clients.
 */

/** Base class: every error the locks engine throws on purpose. */
export class LockError extends Error {
  /** When another try may succeed, in ms. */
  readonly retryAfterMs: number
  /** The lock's resource (its Redis key, before the key prefix). */
  readonly resource: string

  constructor (message: string, resource: string, retryAfterMs: number) {
    super(message)
    this.resource = resource
    this.retryAfterMs = retryAfterMs
  }
}

/** The lock stayed busy for the whole wait (LOCK_WAIT_MS); the work was not run. */
export class LockBusyError extends LockError {
  override readonly name = 'LockBusyError'
  /** How long the caller waited, in ms. */
  readonly waitedMs: number

  constructor (resource: string, waitedMs: number) {
    super(`${resource} stayed busy for ${waitedMs} ms`, resource, 1000)
    this.waitedMs = waitedMs
  }
}

/** Too few Redis masters answered to decide (no majority); the work was not run. */
export class LockUnavailableError extends LockError {
  override readonly name = 'LockUnavailableError'

  constructor (resource: string) {
    super(`${resource}: too few lock servers reachable (no majority)`, resource, 2000)
  }
}

/** The abort reason when a held lock expires or is taken over while its holder still works. */
export class LockLostError extends LockError {
  override readonly name = 'LockLostError'
  readonly why: 'expired' | 'taken over'

  constructor (resource: string, why: 'expired' | 'taken over') {
    super(`the lock on ${resource} was lost (${why}) before the work finished`, resource, 1000)
    this.why = why
  }
}

export function isLockError (err: unknown): err is LockError {
  return err instanceof LockError
}

export function isLocksUnavailable (err: unknown): err is LockUnavailableError {
  return err instanceof LockUnavailableError
}
