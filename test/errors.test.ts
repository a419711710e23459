/**
 * The one place engine errors become HTTP answers (src/errors.ts): each locks error maps to
 * its status, client message and Retry-After; anything else is not mapped (the root
 * handler then treats it as an accident), and a custom table is read first row first.
 */
import t from 'tap'
import { LockBusyError, LockLostError, LockUnavailableError } from '../src/engines/locks/errors.js'
import { ConflictError, ENGINE_ERRORS, ServiceUnavailableError, engineError, fromEngineError } from '../src/errors.js'

t.test('the locks errors map to 409/503 with Retry-After and a message for the client', async (t) => {
  const busy = fromEngineError(new LockBusyError('lock:portfolio:1', 2000))
  t.match(busy, { statusCode: 409, code: 'AIC_CONFLICT', headers: { 'retry-after': '1' }, message: /safe to retry/ })
  t.notMatch(busy?.message, /lock:portfolio/, 'the resource (an internal key) stays in the logs')
  t.match(fromEngineError(new LockUnavailableError('lock:x')), { statusCode: 503, code: 'AIC_UNAVAILABLE', headers: { 'retry-after': '2' } })
  t.match(fromEngineError(new LockLostError('lock:x', 'expired')), { statusCode: 409, headers: { 'retry-after': '1' }, message: /was lost/ })
  t.ok(fromEngineError(new LockBusyError('lock:x', 1))?.cause instanceof LockBusyError, 'the engine error is kept as the cause')
})

t.test('errors the table does not know are not mapped', async (t) => {
  t.equal(fromEngineError(new Error('boom')), null)
  t.equal(fromEngineError(new ConflictError('already an HTTP error')), null)
  t.equal(fromEngineError('a string'), null)
  t.equal(fromEngineError(undefined), null)
})

t.test('rows are read in order; a row matches its subclasses', async (t) => {
  class EngineFailure extends Error {}
  class EngineTimeout extends EngineFailure {
    readonly afterMs = 2500
  }
  const table = [
    engineError({ type: EngineTimeout, as: ServiceUnavailableError, message: (e) => `timed out after ${e.afterMs} ms`, retryAfterMs: (e) => e.afterMs }),
    engineError({ type: EngineFailure, as: ConflictError, message: 'failed' }),
    ...ENGINE_ERRORS,
  ]
  t.match(fromEngineError(new EngineTimeout(), table), { statusCode: 503, message: 'timed out after 2500 ms', headers: { 'retry-after': '3' } })
  const failure = fromEngineError(new EngineFailure(), table)
  t.match(failure, { statusCode: 409, message: 'failed' })
  t.equal(failure?.headers, undefined, 'no Retry-After unless the row gives one')
})
