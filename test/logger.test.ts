/**
 * Request loggers: made lazily, with the same output as an eager child: the request id,
 * redaction, route-level log levels, and Fastify's own request lines at info. That no pino
 * child is made for a request that logs nothing (the speed trick itself) is checked by
 * counts in `npm run bench:checks` (bench/checks.ts), not here.
 */
import t from 'tap'
import pino from 'pino'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { buildApp } from '../src/app.js'
import { loadConfig } from '../src/config.js'
import { Writable } from 'node:stream'
import { LazyRequestLogger, REDACT_PATHS, RequestLogController, createRootLogger, wantsPrettyLogs, type ParentLogger } from '../src/logger.js'
import { LogCapture, TEST_ENV, waitFor, type TapTest } from './helper.js'

async function appWith (t: TapTest, level: string, extra: (app: FastifyInstance) => void): Promise<{ app: FastifyInstance, logs: LogCapture }> {
  const logs = new LogCapture()
  const app = await buildApp(loadConfig({ ...TEST_ENV, DATABASE_PATH: ':memory:', LOG_LEVEL: level }), { logStream: logs })
  extra(app)
  await app.ready()
  t.teardown(() => app.close())
  return { app, logs }
}

/** A pino logger writing to `logs`, as the app's root logger is made. */
function parentLogger (logs: LogCapture, level = 'warn'): { parent: ParentLogger } {
  const root = pino({ level, redact: { paths: REDACT_PATHS, censor: '[redacted]' } }, logs)
  return { parent: root as unknown as ParentLogger }
}

t.test('a request logger logs at the enabled levels only, with its bindings and the redaction', async (t) => {
  const logs = new LogCapture()
  const { parent } = parentLogger(logs)
  const log = new LazyRequestLogger(parent, { reqId: 'req-1' }, {})
  log.info({ a: 1 }, 'not at warn')
  log.debug('nor this')
  log.trace('nor this')
  t.equal(log.level, 'warn')
  t.notOk(log.isLevelEnabled('info'))
  t.ok(log.isLevelEnabled('error'))
  t.equal(logs.lines.length, 0)

  log.warn({ headers: { authorization: 'Bearer secret-token' } }, 'first warning')
  log.error('second line')
  t.same(logs.lines.map((l) => [l.msg, l.reqId]), [['first warning', 'req-1'], ['second line', 'req-1']])
  t.notMatch(logs.text, /secret-token/, 'the parent\'s redaction applies')
  t.match(logs.text, /\[redacted\]/)
  t.same(log.bindings(), { reqId: 'req-1' })
})

t.test('a route-level level is honoured (the child is made with it)', async (t) => {
  const logs = new LogCapture()
  const { parent } = parentLogger(logs)
  const log = new LazyRequestLogger(parent, { reqId: 'req-2' }, { level: 'debug' })
  t.equal(log.level, 'debug')
  log.debug('route says debug')
  t.same(logs.lines.map((l) => [l.msg, l.reqId]), [['route says debug', 'req-2']])
  log.level = 'error'
  log.warn('now below the level')
  t.equal(logs.lines.length, 1)
})

t.test('through the app: request lines carry the request id, secrets stay redacted', async (t) => {
  const { app, logs } = await appWith(t, 'warn', (app) => {
    app.get('/api/test/warns', async (request) => {
      request.log.warn({ headers: request.headers }, 'route warning')
      return { ok: true }
    })
    app.get('/api/test/debugs', { logLevel: 'debug' }, async (request) => {
      request.log.debug('route-level debug')
      return { ok: true }
    })
  })
  const res = await app.inject({ url: '/api/test/warns', headers: { authorization: 'Bearer abc.def.ghi' } })
  t.equal(res.statusCode, 200)
  const [line] = logs.withMsg('route warning')
  t.ok(line, 'logged')
  t.match(String(line?.reqId), /^req-/)
  t.notMatch(logs.text, /abc\.def\.ghi/)

  t.equal((await app.inject({ url: '/api/test/debugs' })).statusCode, 200)
  t.equal(logs.count('route-level debug'), 1, 'debug logged on a route whose logLevel is debug, though the service level is warn')
  const incoming = (url: string): number => logs.withMsg('incoming request').filter((l) => (l.req as { url?: string } | undefined)?.url === url).length
  t.equal(incoming('/api/test/warns'), 0, 'no request lines at warn')
  t.equal(incoming('/api/test/debugs'), 1, 'request lines on the debug route')
})

t.test('at info, Fastify\'s own request lines are there, with the request id', async (t) => {
  const { app, logs } = await appWith(t, 'info', () => {})
  t.equal((await app.inject({ url: '/api/health/live' })).statusCode, 200)
  const incoming = logs.withMsg('incoming request')
  const completed = logs.withMsg('request completed')
  t.equal(incoming.length, 1)
  t.equal(completed.length, 1)
  t.equal(incoming[0]?.reqId, completed[0]?.reqId)
  t.match(String(incoming[0]?.reqId), /^req-/)
})

t.test('above info, Fastify\'s request lines are not logged; an errored request is still logged', async (t) => {
  const { app, logs } = await appWith(t, 'warn', (app) => {
    app.get('/api/test/plain', async () => ({ ok: true }))
  })
  t.equal((await app.inject({ url: '/api/test/plain' })).statusCode, 200)
  t.equal(logs.count('request completed'), 0)

  const log = pino({ level: 'warn' })
  const controller = new RequestLogController()
  const lines: Array<{ level: string, args: unknown[] }> = []
  const fake = {
    isLevelEnabled: (level: string) => log.isLevelEnabled(level),
    info: (...args: unknown[]) => lines.push({ level: 'info', args }),
    error: (...args: unknown[]) => lines.push({ level: 'error', args }),
  }
  const request = { log: fake } as unknown as FastifyRequest
  const reply = { log: fake, elapsedTime: 1 } as unknown as FastifyReply
  controller.incomingRequest(request, reply)
  controller.requestCompleted(null, request, reply)
  t.same(lines, [], 'nothing for a request that went well')
  controller.requestCompleted(new Error('boom'), request, reply)
  t.equal(lines.length, 1)
  t.equal(lines[0]?.level, 'error', 'a request that errored is logged at error, as Fastify does')
  t.equal(logs.count('incoming request'), 0)
})

t.test('the root logger hands out lazy children, which log with every binding once used', async (t) => {
  const { app, logs } = await appWith(t, 'info', () => {})
  const component = app.log.child({ component: 'test' }) as unknown as LazyRequestLogger
  const nested = component.child({ job: 'nightly' })
  nested.info({ password: 'hunter2' }, 'nested line')
  const line = logs.withMsg('nested line')[0]
  t.equal(line?.component, 'test')
  t.equal(line?.job, 'nightly')
  t.equal(line?.password, '[redacted]', 'redaction still applies to children of children')
  component.debug('not at info')
  t.equal(logs.count('not at info'), 0)
})

/** A stdout stand-in: a terminal or not, collecting what is written. */
class FakeStdout extends Writable {
  text = ''
  constructor (readonly isTTY: boolean) { super() }
  override _write (chunk: Buffer, _enc: BufferEncoding, done: () => void): void {
    this.text += chunk.toString('utf8')
    done()
  }
}

t.test('pretty logs in development on a terminal; JSON lines otherwise', async (t) => {
  t.ok(wantsPrettyLogs({ NODE_ENV: 'development' }, { isTTY: true }))
  for (const [env, tty] of [['development', false], ['production', true], ['test', true]] as const) {
    t.notOk(wantsPrettyLogs({ NODE_ENV: env }, { isTTY: tty }), `NODE_ENV=${env}, ${tty ? 'a' : 'no'} TTY: JSON`)
  }

  const terminal = new FakeStdout(true)
  const dev = createRootLogger({ LOG_LEVEL: 'info', NODE_ENV: 'development' }, undefined, terminal)
  dev.info({ userId: 'u1', password: 'hunter2' }, 'hello from dev')
  await waitFor(() => terminal.text.includes('hello from dev'), 5000)
  t.match(terminal.text, /INFO.*hello from dev/, 'a readable line with its level')
  t.throws(() => JSON.parse(terminal.text.split('\n')[0] ?? ''), 'not JSON')
  t.match(terminal.text, /userId: "u1"/, 'fields shown')
  t.notMatch(terminal.text, /hunter2/, 'redaction still applies')

  const piped = new FakeStdout(false)
  const json = createRootLogger({ LOG_LEVEL: 'info', NODE_ENV: 'development' }, undefined, piped)
  json.info({ userId: 'u1' }, 'hello from a pipe')
  await waitFor(() => piped.text.includes('hello from a pipe'), 5000)
  t.match(JSON.parse(piped.text.trim().split('\n')[0] ?? '') as object, { msg: 'hello from a pipe', userId: 'u1', level: 30 }, 'piped: JSON lines')

  const prod = new FakeStdout(true)
  createRootLogger({ LOG_LEVEL: 'info', NODE_ENV: 'production' }, undefined, prod).info('hello from prod')
  await waitFor(() => prod.text.includes('hello from prod'), 5000)
  t.match(JSON.parse(prod.text.trim()) as object, { msg: 'hello from prod' }, 'production on a terminal: still JSON')
})
