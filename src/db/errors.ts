/**
 * What a repository throws when the database cannot answer: one 503 error with Retry-After
 * for every cause (PostgreSQL refused, unreachable, frozen past a timeout, restarting; an
 * SQLite file locked past busy_timeout or gone). Its message is for the client and never
 * carries the driver's text; the cause is kept for the log.
 */
import { ServiceUnavailableError } from '../errors.js'

export const DATABASE_RETRY_AFTER_SECONDS = 5

export interface DatabaseUnavailable extends Error {
  statusCode: 503
  headers: { 'retry-after': string }
  databaseUnavailable: true
}

export function databaseUnavailable (cause: unknown): DatabaseUnavailable {
  const err = new ServiceUnavailableError('The database is not answering; nothing was changed. Retry shortly.') as unknown as DatabaseUnavailable
  return Object.assign(err, {
    cause,
    headers: { 'retry-after': String(DATABASE_RETRY_AFTER_SECONDS) },
    databaseUnavailable: true as const,
  })
}

export function isDatabaseUnavailable (err: unknown): err is DatabaseUnavailable {
  return (err as { databaseUnavailable?: unknown } | null)?.databaseUnavailable === true
}

/** PostgreSQL SQLSTATE classes/codes that mean "not now", not "this request is wrong". */
const PG_UNAVAILABLE_CODES = new Set([
  '57014', // query_canceled (statement_timeout)
  '57P01', '57P02', '57P03', // admin/crash shutdown, cannot connect now
  '53300', // too_many_connections
  '55P03', // lock_not_available (lock_timeout)
  '40001', '40P01', // serialization failure, deadlock: retrying is the answer
  '25P03', // idle_in_transaction_session_timeout
])
const SQLITE_UNAVAILABLE = /^SQLITE_(BUSY|LOCKED|IOERR|CANTOPEN|FULL|READONLY)/
const NODE_NET_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'EPIPE', 'ENOTFOUND', 'EAI_AGAIN'])
const UNAVAILABLE_TEXT = /timeout exceeded when trying to connect|Query read timeout|Connection terminated|connection is not open|Client has encountered a connection error|Cannot use a pool after calling end|Postgres connection has been discarded|database connection is not open|Client was closed/i

/** True for errors that say the database cannot answer (as opposed to a constraint or a bug). */
export function isUnavailableCause (err: unknown): boolean {
  if (isDatabaseUnavailable(err)) return true
  if (err === null || typeof err !== 'object') return false
  const code = (err as { code?: unknown }).code
  if (typeof code === 'string') {
    if (PG_UNAVAILABLE_CODES.has(code) || code.startsWith('08')) return true
    if (SQLITE_UNAVAILABLE.test(code)) return true
    if (NODE_NET_CODES.has(code)) return true
  }
  const message = (err as { message?: unknown }).message
  return typeof message === 'string' && UNAVAILABLE_TEXT.test(message)
}

/** Unique-key violations in either store. */
export function isUniqueViolation (err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code
  return code === '23505' || code === 'SQLITE_CONSTRAINT_PRIMARYKEY' || code === 'SQLITE_CONSTRAINT_UNIQUE'
}

/** Runs a repository call, turning "cannot answer" into the 503 error. */
export async function guarded<T> (fn: () => Promise<T>): Promise<T> {
  try {
    return await fn()
  } catch (err) {
    if (!isDatabaseUnavailable(err) && isUnavailableCause(err)) throw databaseUnavailable(err)
    throw err
  }
}
