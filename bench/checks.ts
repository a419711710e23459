/**
 * `npm run bench:checks`: checks that pin a speed trick rather than a behaviour, by counts
 * that noise cannot move. They live here, not in `npm test`: a change that drops a trick
 * for readability fails here and nowhere else, and the bench figures then say what it
 * cost. The behaviour around each trick (what is logged, with which bindings and
 * redaction) stays in the tests.
 *
 * - The lazy request logger (src/logger.ts) makes no pino child for a request that logs
 *   nothing at an enabled level, one child on the first enabled line, and Fastify's request
 *   lines are not even built above info.
 *
 * Exits 1 if a check fails. Takes a second or two.
 */
import assert from 'node:assert/strict'
import pino from 'pino'
import type { FastifyReply, FastifyRequest } from 'fastify'
import { buildApp } from '../src/app.js'
import { loadConfig } from '../src/config.js'
import { LazyRequestLogger, REDACT_PATHS, RequestLogController, type ParentLogger } from '../src/logger.js'
import { LogCapture, TEST_ENV } from '../test/helper.js'

const checks: Array<[string, () => Promise<void> | void]> = []
const check = (name: string, fn: () => Promise<void> | void): void => { checks.push([name, fn]) }

/** A pino logger writing to `logs`, with `child` calls counted. */
function countingParent (logs: LogCapture, level = 'warn'): { parent: ParentLogger, children: () => number } {
  const root = pino({ level, redact: { paths: REDACT_PATHS, censor: '[redacted]' } }, logs)
  let children = 0
  const child = root.child.bind(root)
  const parent = Object.assign(Object.create(root) as ParentLogger, {
    child: (bindings: Record<string, unknown>, options?: Record<string, unknown>) => { children++; return child(bindings, options) as unknown as ParentLogger },
  })
  return { parent, children: () => children }
}

check('lazy logger: no pino child for lines below the level; one, kept, from the first enabled line', () => {
  const logs = new LogCapture()
  const { parent, children } = countingParent(logs)
  const log = new LazyRequestLogger(parent, { reqId: 'req-1' }, {})
  log.info('not at warn')
  log.debug('nor this')
  assert.equal(children(), 0, 'disabled levels cost no child')
  log.warn('first warning')
  log.error('second line')
  assert.equal(children(), 1, 'one child, made on the first enabled line and kept')
})

check('lazy logger: a request that logs nothing gets no pino child, and Fastify\'s request lines are not built above info', async () => {
  const app = await buildApp(loadConfig({ ...TEST_ENV, LOG_LEVEL: 'warn' }), { logStream: new LogCapture() })
  let seen: unknown
  app.get('/bench/quiet', async (request) => { seen = request.log; return { ok: true } })
  const calls: unknown[] = []
  const original = LazyRequestLogger.prototype.info
  LazyRequestLogger.prototype.info = function (this: LazyRequestLogger, ...args: unknown[]) { calls.push(args); original.apply(this, args) }
  try {
    await app.ready()
    assert.equal((await app.inject({ url: '/bench/quiet' })).statusCode, 200)
  } finally {
    LazyRequestLogger.prototype.info = original
    await app.close()
  }
  assert.ok(seen instanceof LazyRequestLogger, 'request.log is a LazyRequestLogger')
  assert.equal((seen as unknown as { real: unknown }).real, null, 'no pino child was made for it')
  assert.equal(calls.length, 0, 'no info call at all for the request (Fastify\'s own controller makes two, then drops them)')
  const component = app.log.child({ component: 'bench' }) as unknown as { real: unknown }
  assert.equal(component.real, null, 'a component logger makes no pino child until it logs')
})

check('request log controller: nothing for a request that went well above info; an error still logged', () => {
  const log = pino({ level: 'warn' })
  const controller = new RequestLogController()
  const lines: string[] = []
  const fake = {
    isLevelEnabled: (level: string) => log.isLevelEnabled(level),
    info: () => lines.push('info'),
    error: () => lines.push('error'),
  }
  const request = { log: fake } as unknown as FastifyRequest
  const reply = { log: fake, elapsedTime: 1 } as unknown as FastifyReply
  controller.incomingRequest(request, reply)
  controller.requestCompleted(null, request, reply)
  assert.deepEqual(lines, [])
  controller.requestCompleted(new Error('boom'), request, reply)
  assert.deepEqual(lines, ['error'])
})

let failed = 0
for (const [name, fn] of checks) {
  try {
    await fn()
    process.stdout.write(`ok     ${name}\n`)
  } catch (err) {
    failed++
    process.stdout.write(`FAILED ${name}\n  ${err instanceof Error ? err.message : String(err)}\n`)
  }
}
process.stdout.write(`bench checks: ${checks.length - failed} passed, ${failed} failed\n`)
process.exitCode = failed === 0 ? 0 : 1
