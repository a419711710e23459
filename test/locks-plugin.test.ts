/**
 * The locks plugin in the app, through HTTP: in-process locks without Redis; a busy lock
 * answers 409 with Retry-After and the usual error body; the main Redis killed → writes
 * run under the in-process lock (never a 503, never a wait); REDLOCK_URLS with two of
 * three masters down → 503 with Retry-After and fn never runs; bad REDLOCK_URLS stop the
 * boot; the plugin closes the connections it made and reuses the main one.
 */
import t from 'tap'
import type { FastifyInstance } from 'fastify'
import { buildApp } from '../src/app.js'
import { loadConfig } from '../src/config.js'
import { LogCapture, TEST_ENV, sleep, waitFor, type TapTest } from './helper.js'
import { skipUnlessRedis, startRedis, type RedisProcess } from './helpers/redis-server.js'

const redisOpts = skipUnlessRedis()

interface Built { app: FastifyInstance, logs: LogCapture, calls: () => number }

/** The app with one test-only route that takes a lock around an empty function. */
async function buildWithLockedRoute (t: TapTest, env: Record<string, string>): Promise<Built> {
  const logs = new LogCapture()
  // A command timeout a busy machine cannot hit by accident (at 300 ms, load 15 timed the
  // lock's SET out and the request ran under the in-process lock instead of getting its 409).
  const app = await buildApp(loadConfig({ ...TEST_ENV, REDIS_COMMAND_TIMEOUT_MS: '3000', REDIS_CONNECT_TIMEOUT_MS: '3000', ...env }), { logStream: logs })
  let calls = 0
  app.post<{ Params: { id: string } }>('/test/locked/:id', async (request) => {
    return app.locks.using(`lock:portfolio:${request.params.id}`, 5000, async () => {
      calls++
      return { ok: true, backend: app.locks.backend() }
    })
  })
  await app.ready()
  t.teardown(() => app.close())
  return { app, logs, calls: () => calls }
}

async function server (t: TapTest): Promise<RedisProcess> {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  return redis
}

/** Connections to a server other than redis-cli's own. */
async function clientCount (redis: RedisProcess): Promise<number> {
  const list = await redis.command('CLIENT', 'LIST')
  return list.split('\n').filter((line) => line.trim() !== '' && !/ cmd=client\|list /.test(line)).length
}

t.test('without REDIS_URL: in-process locks, said once at boot', async (t) => {
  const { app, logs, calls } = await buildWithLockedRoute(t, {})
  const res = await app.inject({ method: 'POST', url: '/test/locked/u1' })
  t.equal(res.statusCode, 200)
  t.same(res.json(), { ok: true, backend: 'local' })
  t.equal(calls(), 1)
  t.equal(logs.count('locks: in-process (no Redis configured, single instance)'), 1)
})

t.test('a busy lock: 409 with Retry-After after LOCK_WAIT_MS; the main Redis killed: in-process locks, no 503, no wait', redisOpts, async (t) => {
  const redis = await server(t)
  const { app, calls } = await buildWithLockedRoute(t, { REDIS_URL: redis.url, LOCK_WAIT_MS: '200' })
  t.equal(app.locks.backend(), 'redlock')
  await redis.command('SET', 'lock:portfolio:u1', 'other-instance:1:abc', 'PX', '10000')
  const started = Date.now()
  const busy = await app.inject({ method: 'POST', url: '/test/locked/u1' })
  t.ok(Date.now() - started >= 190, 'waited LOCK_WAIT_MS first')
  t.equal(busy.statusCode, 409)
  t.equal(busy.headers['retry-after'], '1')
  t.same(busy.json(), { statusCode: 409, error: 'Conflict', message: 'Another operation on this resource is in progress; this request was not applied and is safe to retry' })
  t.equal(calls(), 0, 'fn never ran')
  t.equal(await redis.command('GET', 'lock:portfolio:u1'), 'other-instance:1:abc', 'the other holder keeps its lock')

  const free = await app.inject({ method: 'POST', url: '/test/locked/u2' })
  t.same(free.json(), { ok: true, backend: 'redlock' })

  await redis.kill()
  // At once, before or after the state machine noticed: never a 503, never a long wait.
  const during = Date.now()
  const res = await app.inject({ method: 'POST', url: '/test/locked/u1' })
  t.equal(res.statusCode, 200, 'served under the in-process lock')
  // A bound that catches a wait for Redis to come back, not one of tens of milliseconds.
  t.ok(Date.now() - during < 3000, `answered in ${Date.now() - during} ms`)
  await waitFor(() => app.locks.backend() === 'fallback', 10_000)
  const later = await app.inject({ method: 'POST', url: '/test/locked/u1' })
  t.same(later.json(), { ok: true, backend: 'fallback' })
  t.ok(app.locks.stats().fallbackAcquisitions >= 1)

  await redis.restart()
  await waitFor(() => app.locks.backend() === 'redlock', 5000)
  t.same((await app.inject({ method: 'POST', url: '/test/locked/u3' })).json(), { ok: true, backend: 'redlock' }, 'back on Redis')
})

t.test('REDLOCK_URLS: two of three masters down → 503 with Retry-After, fn never runs', redisOpts, async (t) => {
  const masters = await Promise.all([server(t), server(t), server(t)])
  const { app, calls, logs } = await buildWithLockedRoute(t, { REDLOCK_URLS: masters.map((m) => m.url).join(',') })
  t.equal(app.locks.masterCount, 3)
  t.equal((await app.inject({ method: 'POST', url: '/test/locked/a' })).statusCode, 200)
  await masters[0]!.kill()
  t.equal((await app.inject({ method: 'POST', url: '/test/locked/a' })).statusCode, 200, 'one down: still works')
  await masters[1]!.kill()
  const res = await app.inject({ method: 'POST', url: '/test/locked/a' })
  t.equal(res.statusCode, 503)
  t.equal(res.headers['retry-after'], '2')
  t.same(res.json(), { statusCode: 503, error: 'Service Unavailable', message: 'Locking is unavailable (too few lock servers reachable); the operation was not performed, retry later' })
  t.equal(calls(), 2, 'fn never ran without a majority')
  await app.inject({ method: 'POST', url: '/test/locked/a' })
  t.equal(logs.count('lock servers unreachable (no majority): locked work is refused and jobs skip until they are back'), 1, 'logged once, not per request')
})

t.test('bad REDLOCK_URLS stop the boot with a message naming the variable', async (t) => {
  t.throws(() => loadConfig({ REDLOCK_URLS: 'http://a:1' }), /REDLOCK_URLS/)
  await t.rejects(buildApp(loadConfig({ ...TEST_ENV, REDLOCK_URLS: 'redis://127.0.0.1:1,redis://127.0.0.1:1' }), { logStream: new LogCapture() }),
    /REDLOCK_URLS: redis:\/\/127\.0\.0\.1:1 is listed twice/)
  await t.rejects(buildApp(loadConfig({ ...TEST_ENV, REDLOCK_URLS: 'redis://:secret@[nope:1' }), { logStream: new LogCapture() }),
    { message: /REDLOCK_URLS: .* is not a valid/ })
  const err = await buildApp(loadConfig({ ...TEST_ENV, REDLOCK_URLS: 'redis://:s3cret@[nope:1' }), { logStream: new LogCapture() }).catch((e: unknown) => e)
  t.notOk(String((err as Error).message).includes('s3cret'), 'the password is redacted')
})

t.test('the plugin closes the master connections it made and shares the main one', redisOpts, async (t) => {
  const main = await server(t)
  const extra = await server(t)
  const third = await server(t)
  const baseline = await server(t)
  const plain = await buildApp(loadConfig({ ...TEST_ENV, REDIS_URL: baseline.url }), { logStream: new LogCapture() })
  await plain.ready()
  t.teardown(() => plain.close())
  const app = await buildApp(loadConfig({ ...TEST_ENV, REDIS_URL: main.url, REDLOCK_URLS: [main.url, extra.url, third.url].join(',') }), { logStream: new LogCapture() })
  await app.ready()
  t.equal(app.locks.masterCount, 3)
  t.equal(await clientCount(main), await clientCount(baseline), 'the main Redis listed in REDLOCK_URLS reuses the main client: no extra connection')
  t.equal(await clientCount(extra), 1, 'one connection to each other master')
  await app.locks.using('lock:shared', 1000, async () => {
    t.equal(await main.command('EXISTS', 'lock:shared'), '1')
    t.equal(await extra.command('EXISTS', 'lock:shared'), '1')
    t.equal(await third.command('EXISTS', 'lock:shared'), '1')
  })
  await app.close()
  await waitFor(async () => (await clientCount(extra)) === 0 && (await clientCount(third)) === 0, 3000)
  t.pass('the masters it owned are closed')
  await sleep(50)
})
