/**
 * The health endpoints and the Redis state machine seen through them, against private
 * redis-server processes that the tests kill, freeze and restart.
 */
import t from 'tap'
import { build, waitFor, sleep, type TapTest } from './helper.js'
import { getFreePort, skipUnlessRedis, startRedis } from './helpers/redis-server.js'
import { startProxy } from './helpers/tcp-proxy.js'
import { AUTH_ENV, adminLogin, bearer } from './auth-helpers.js'
import { LOG_CONNECTED, LOG_CONNECTION_FAILED, LOG_OPERATION_FAILED } from '../src/engines/redis/state.js'
import type { FastifyInstance } from 'fastify'

interface Health {
  status: string
  timestamp: string
  uptime: number
  version: string
  redis: { status: string, responseTime: number | null, mode: string }
}

async function health (app: FastifyInstance): Promise<{ code: number, body: Health, ms: number }> {
  const started = performance.now()
  const res = await app.inject({ method: 'GET', url: '/api/health' })
  return { code: res.statusCode, body: res.json<Health>(), ms: performance.now() - started }
}

t.test('without REDIS_URL the service serves with redis "disabled"', async (t) => {
  const { app, logs } = await build(t)
  const { code, body } = await health(app)
  t.equal(code, 200)
  t.equal(body.status, 'OK')
  t.same(body.redis, { status: 'disabled', responseTime: null, mode: 'fallback' })
  t.match(body.version, /^\d+\.\d+\.\d+/)
  t.ok(Number.isFinite(Date.parse(body.timestamp)), 'timestamp is a date')
  t.type(body.uptime, 'number')
  t.equal(logs.count(LOG_CONNECTION_FAILED), 0, 'no failure is reported when Redis is simply not configured')

  const live = await app.inject('/api/health/live')
  t.equal(live.statusCode, 200)
  const ready = await app.inject('/api/health/ready')
  t.equal(ready.statusCode, 200)

  app.lifecycle.shuttingDown = true
  const draining = await app.inject('/api/health/ready')
  t.equal(draining.statusCode, 503, 'readiness turns 503 during shutdown')
  t.equal((await app.inject('/api/health/live')).statusCode, 200, 'liveness stays 200 during shutdown')
})

t.test('unknown routes and errors have the error shape', async (t) => {
  const { app } = await build(t)
  const res = await app.inject('/api/nope')
  t.equal(res.statusCode, 404)
  t.same(res.json(), { statusCode: 404, error: 'Not Found', message: 'Route GET /api/nope not found' })
})

t.test('connected: status, a numeric responseTime, mode redis, ✅ logged once', skipUnlessRedis(), async (t) => {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  const { app, logs } = await build(t, { REDIS_URL: redis.url })
  const { code, body } = await health(app)
  t.equal(code, 200)
  t.equal(body.status, 'OK')
  t.equal(body.redis.status, 'connected')
  t.equal(body.redis.mode, 'redis')
  t.type(body.redis.responseTime, 'number')
  // Measured: an answer over health's own 250 ms PING bound would have been a null and DEGRADED.
  t.ok(body.redis.responseTime !== null && body.redis.responseTime >= 0, `responseTime ${String(body.redis.responseTime)} ms`)
  t.equal(logs.count(LOG_CONNECTED), 1)
  // More health calls inside the cache window reuse the PING result: at most one PING per
  // second the calls took (plus the one in flight), not one per call.
  const before = Number((await redis.command('INFO', 'commandstats')).match(/cmdstat_ping:calls=(\d+)/)?.[1] ?? 0)
  const callsStarted = performance.now()
  for (let i = 0; i < 50; i++) await health(app)
  const callsSeconds = Math.ceil((performance.now() - callsStarted) / 1000)
  const after = Number((await redis.command('INFO', 'commandstats')).match(/cmdstat_ping:calls=(\d+)/)?.[1] ?? 0)
  t.ok(after - before <= callsSeconds + 1, `50 health calls over ${callsSeconds} s sent ${after - before} PINGs (cached for about a second)`)
  t.equal(logs.count(LOG_CONNECTED), 1, 'still logged once')
})

t.test('Redis killed: DEGRADED on the closed socket, no request waits on Redis, connected again after the restart', skipUnlessRedis(), async (t) => {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  const { app, logs, config } = await build(t, { REDIS_URL: redis.url, REDIS_COMMAND_TIMEOUT_MS: '10000' })
  t.equal((await health(app)).body.redis.status, 'connected')

  await redis.kill('SIGKILL')
  const killedAt = Date.now()
  // The closed socket is seen at once; the deadline is seconds for a loaded machine, and the
  // time it took is in the message.
  await waitFor(async () => {
    const { body } = await health(app)
    return body.status === 'DEGRADED' && body.redis.status === 'disconnected' && body.redis.mode === 'fallback'
  }, 5000)
  t.pass(`DEGRADED after ${Date.now() - killedAt} ms`)

  // While Redis is down no call waits on it: each is seconds under the (10 s) command timeout.
  const limit = config.REDIS_COMMAND_TIMEOUT_MS - 5000
  for (let i = 0; i < 20; i++) {
    const started = performance.now()
    await app.store.set(`k${i}`, 'v', 10_000)
    t.equal(await app.store.get(`k${i}`), 'v', 'the fallback store answers')
    const { ms } = await health(app)
    const took = performance.now() - started
    t.ok(took < limit && ms < limit, `request ${i} took ${took.toFixed(1)} ms`)
  }

  // ❌ when the socket's close is seen first, ⚠️ when a command failing on it is: one of them, once.
  const downs = [...logs.withMsg(LOG_CONNECTION_FAILED), ...logs.withMsg(LOG_OPERATION_FAILED)]
  t.equal(downs.length, 1, '❌ (or ⚠️) logged once for the outage')
  t.match(String(downs[0]?.reason), /ECONNREFUSED|Connection (is )?closed|ECONNRESET|EPIPE/, 'the reason is given')

  await redis.restart()
  const restartedAt = Date.now()
  // Reconnects back off to at most 1 s (test/engines/redis-state.test.ts pins the cap); the
  // deadline leaves a loaded machine seconds more.
  await waitFor(async () => (await health(app)).body.redis.status === 'connected', 6000)
  t.pass(`connected ${Date.now() - restartedAt} ms after the restart`)
  t.equal((await health(app)).body.status, 'OK')
  t.equal(logs.count(LOG_CONNECTED), 2, '✅ logged once per transition')
  t.equal(app.redisState.activations, 1)
})

/**
 * Writes distinct values, then reads them back concurrently: any reply delivered to the
 * wrong command shows up as a mismatched value.
 */
async function assertRepliesMatch (t: TapTest, app: FastifyInstance, round: string): Promise<void> {
  const client = app.redis!
  const n = 200
  await Promise.all(Array.from({ length: n }, (_v, i) => client.set(`${round}:${i}`, `${round}-value-${i}`, 'PX', 60_000)))
  const values = await Promise.all(Array.from({ length: n }, (_v, i) => client.get(`${round}:${i}`)))
  const wrong = values.filter((v, i) => v !== `${round}-value-${i}`)
  t.equal(wrong.length, 0, `${n} replies each reached their own request (${round})`)
}

t.test('Redis frozen (SIGSTOP): health answers without waiting on it; after SIGCONT no reply goes astray', skipUnlessRedis(), async (t) => {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  const { app, logs, config } = await build(t, { REDIS_URL: redis.url })
  await assertRepliesMatch(t, app, 'before')

  redis.pause()
  // Commands already on the wire when the server froze: they time out, and their late
  // replies must be consumed by them, not by later commands.
  const inFlight = Array.from({ length: 20 }, (_v, i) => app.redis!.get(`before:${i}`).catch((err: Error) => err.message))
  const started = performance.now()
  const op = await app.store.get('before:1')
  // Redis stays frozen until resumed below: without the timeout the command would not end.
  const gaveUp = performance.now() - started
  t.ok(gaveUp < config.REDIS_COMMAND_TIMEOUT_MS + 3000, `the first command gives up at the command timeout (${gaveUp.toFixed(0)} ms; timeout ${config.REDIS_COMMAND_TIMEOUT_MS} ms)`)
  t.equal(op, null, 'answered from the fallback')
  const timedOut = await Promise.all(inFlight)
  t.ok(timedOut.every((m) => m === 'Command timed out'), 'the commands sent during the freeze time out')

  const { body, ms } = await health(app)
  // Frozen until resumed below: a health call waiting on Redis would not end.
  t.ok(ms < 5000, `health answered in ${ms.toFixed(0)} ms while Redis is frozen`)
  t.equal(body.status, 'DEGRADED')
  t.equal(body.redis.mode, 'fallback')
  t.equal(logs.count(LOG_OPERATION_FAILED), 1, '⚠️ logged once for the transition')

  redis.resume()
  await waitFor(async () => (await health(app)).body.redis.mode === 'redis', 10_000)
  await assertRepliesMatch(t, app, 'after')
  t.equal(logs.count(LOG_OPERATION_FAILED), 1)
})

t.test('fifty calls failing at once: ⚠️ logged once per transition, once more for a second outage', skipUnlessRedis(), async (t) => {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  const { app, logs } = await build(t, { REDIS_URL: redis.url, REDIS_COMMAND_TIMEOUT_MS: '300' })
  t.teardown(() => redis.resume())
  for (const outage of [1, 2]) {
    await app.store.set('shared', 'v', 60_000)
    redis.pause()
    const answers = await Promise.all(Array.from({ length: 50 }, async (_v, i) => app.store.get(i % 2 === 0 ? 'shared' : `k${i}`)))
    t.equal(answers.filter((a) => a === null).length, 50, `outage ${outage}: all fifty answered by the fallback`)
    t.equal(app.redisState.mode, 'fallback')
    t.equal(logs.count(LOG_OPERATION_FAILED), outage, `outage ${outage}: ⚠️ logged ${outage} time(s) in all`)
    redis.resume()
    await waitFor(() => app.redisState.mode === 'redis', 10_000)
  }
  t.equal(app.redisState.activations, 2)
})

t.test('health\'s own PING gives up after 250 ms, however long the command timeout: DEGRADED, responseTime null', skipUnlessRedis(), async (t) => {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  const { app, config } = await build(t, { REDIS_URL: redis.url, REDIS_COMMAND_TIMEOUT_MS: '10000' })
  t.equal((await health(app)).body.redis.mode, 'redis')
  redis.pause()
  t.teardown(() => redis.resume())
  await sleep(1100) // past the PING cache: the next health call sends its own PING, the first command of the freeze
  const { code, body, ms } = await health(app)
  // 250 ms expected; the alternative ruled out is the 10 s command timeout.
  t.ok(ms < 5000, `health answered in ${ms.toFixed(0)} ms (command timeout ${config.REDIS_COMMAND_TIMEOUT_MS} ms)`)
  t.equal(code, 200)
  t.equal(body.status, 'DEGRADED', 'an unanswered PING is a failure like any other')
  t.equal(body.redis.mode, 'fallback')
  t.equal(body.redis.responseTime, null, 'nothing measured')
  redis.resume()
  await waitFor(async () => (await health(app)).body.redis.mode === 'redis', 10_000)
  const back = await health(app)
  t.equal(back.body.status, 'OK')
  t.type(back.body.redis.responseTime, 'number')
})

t.test('black-holed through a proxy: health answers without waiting on it; after the flush replies stay matched', skipUnlessRedis(), async (t) => {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  const proxy = await startProxy({ port: redis.port })
  t.teardown(() => proxy.close())
  const { app } = await build(t, { REDIS_URL: proxy.url })
  await assertRepliesMatch(t, app, 'pre')

  proxy.blackhole()
  const held = Array.from({ length: 50 }, (_v, i) => app.redis!.get(`pre:${i}`).catch((err: Error) => err.message))
  await app.store.get('pre:0')
  const { body, ms } = await health(app)
  // Black-holed until the flush below: a health call waiting on Redis would not end.
  t.ok(ms < 5000, `health answered in ${ms.toFixed(0)} ms during the black hole`)
  t.equal(body.status, 'DEGRADED')
  t.ok((await Promise.all(held)).every((m) => m === 'Command timed out'))

  proxy.flush()
  await waitFor(async () => (await health(app)).body.redis.mode === 'redis', 10_000)
  await assertRepliesMatch(t, app, 'post')
})

t.test('latency over the command timeout flips to fallback; normal latency does not', skipUnlessRedis(), async (t) => {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  const proxy = await startProxy({ port: redis.port })
  t.teardown(() => proxy.close())
  // A 1 s command timeout against 5 s round trips: the give-up is seconds from both.
  const { app } = await build(t, { REDIS_URL: proxy.url, REDIS_COMMAND_TIMEOUT_MS: '1000' })
  proxy.setLatency(20)
  await app.store.set('a', '1', 60_000)
  t.equal(await app.store.get('a'), '1')
  t.equal(app.redisState.mode, 'redis', '40 ms round trips are fine')
  proxy.setLatency(2500)
  const started = performance.now()
  t.equal(await app.store.get('a'), null, 'a slow Redis is given up on and the fallback answers')
  const ms = performance.now() - started
  t.ok(ms < 3500, `given up at the 1000 ms command timeout, not after the 5000 ms round trip (${ms.toFixed(0)} ms)`)
  t.equal(app.redisState.mode, 'fallback')
  proxy.setLatency(0)
  await waitFor(() => app.redisState.mode === 'redis', 15_000)
  t.equal(await app.store.get('a'), '1', 'Redis is used again and still has the data')
})

t.test('boot with Redis absent, started 5 s later: connected on its own', skipUnlessRedis(), async (t) => {
  const port = await getFreePort()
  const started = Date.now()
  // A 10 s connect timeout: a boot that waited for it (or for Redis) would stand out by seconds.
  const { app, logs } = await build(t, { REDIS_URL: `redis://127.0.0.1:${port}`, REDIS_CONNECT_TIMEOUT_MS: '10000' })
  t.ok(Date.now() - started < 5000, `boot took ${Date.now() - started} ms (never waits for Redis)`)
  const { body } = await health(app)
  t.equal(body.status, 'DEGRADED')
  t.equal(body.redis.mode, 'fallback')
  t.ok(['connecting', 'disconnected'].includes(body.redis.status))
  t.equal(logs.count(LOG_CONNECTION_FAILED), 1, 'the failed first connection is logged once')

  await sleep(5000)
  t.equal(logs.count(LOG_CONNECTION_FAILED), 1, 'reconnect attempts do not log again')
  const redis = await startRedis({ port })
  t.teardown(() => redis.stop())
  const upAt = Date.now()
  // Reconnects back off to at most 1 s (test/engines/redis-state.test.ts pins the cap).
  await waitFor(async () => (await health(app)).body.redis.status === 'connected', 6000)
  t.pass(`connected ${Date.now() - upAt} ms after Redis started`)
  t.equal(logs.count(LOG_CONNECTED), 1)
})

t.test('wrong password and NOAUTH: a clear log line, not connected, the password nowhere', skipUnlessRedis(), async (t) => {
  const secret = 'server-s3cret-pass'
  const redis = await startRedis({ password: secret })
  t.teardown(() => redis.stop())

  const wrong = 'wr0ng-Pa55word-xyz'
  const a = await build(t, { REDIS_URL: `redis://:${wrong}@127.0.0.1:${redis.port}` })
  const b = await build(t, { REDIS_URL: `redis://127.0.0.1:${redis.port}` })
  await waitFor(() => a.logs.count(LOG_CONNECTION_FAILED) >= 1 && b.logs.count(LOG_CONNECTION_FAILED) >= 1, 10_000)
  await sleep(300) // a few reconnects, none of which may log again
  for (const [name, { app, logs }, pattern] of [
    ['wrong password', a, /WRONGPASS|invalid username-password/],
    ['no password', b, /NOAUTH/],
  ] as const) {
    const { body } = await health(app)
    t.not(body.redis.status, 'connected', `${name}: not connected`)
    t.equal(body.redis.mode, 'fallback', `${name}: fallback`)
    t.equal(logs.count(LOG_CONNECTION_FAILED), 1, `${name}: one failure line`)
    t.match(String(logs.withMsg(LOG_CONNECTION_FAILED)[0]?.reason), pattern, `${name}: the reason says why`)
    const snapshot = JSON.stringify(app.redisState.snapshot())
    for (const text of [logs.text, JSON.stringify(body), snapshot]) {
      t.notOk(text.includes(wrong), `${name}: the configured password does not appear`)
      t.notOk(text.includes(secret), `${name}: the server password does not appear`)
    }
  }
  t.match(a.app.redisState.url, /^redis:\/\/:\*\*\*@127\.0\.0\.1:/, 'the URL is shown redacted')
})

t.test('the right password connects', skipUnlessRedis(), async (t) => {
  const redis = await startRedis({ password: 'p@ss/word:1' })
  t.teardown(() => redis.stop())
  const { app, logs } = await build(t, { REDIS_URL: `redis://:${encodeURIComponent('p@ss/word:1')}@127.0.0.1:${redis.port}` })
  t.equal((await health(app)).body.redis.status, 'connected')
  t.notOk(logs.text.includes('p@ss/word:1'))
})

t.test('OOM under maxmemory: the write falls back, the state switches once, back only once a write goes through', skipUnlessRedis(), async (t) => {
  const redis = await startRedis({ args: ['--maxmemory', '2mb', '--maxmemory-policy', 'noeviction'] })
  t.teardown(() => redis.stop())
  const { app, logs } = await build(t, { REDIS_URL: redis.url })
  const big = 'x'.repeat(100_000)
  let refused = 0
  for (let i = 0; i < 60; i++) {
    await app.store.set(`fill:${i}`, big, 60_000)
    if ((await redis.command('EXISTS', `fill:${i}`)) === '0') refused++
  }
  t.ok(refused > 0, `Redis refused ${refused} writes with OOM`)
  t.equal(app.store.memory.getSync('fill:59'), big, 'a refused write went to the in-process store instead of failing')
  t.equal(app.redisState.mode, 'fallback', 'a full Redis refuses every write: the whole service uses its fallback, reads included, so it reads what it wrote')
  const warnings = logs.withMsg(LOG_OPERATION_FAILED)
  t.equal(warnings.length, 1, 'one ⚠️ line, not one per write')
  t.match(warnings[0], { class: 'write', reason: /^OOM command not allowed/ }, 'the reason is the OOM error')
  t.equal((await health(app)).body.status, 'DEGRADED')
  await sleep(2500) // the probe answers PING all along; only a write would bring it back
  t.equal(app.redisState.mode, 'fallback', 'still in fallback while Redis is full')
  t.equal(logs.count(LOG_CONNECTED), 1, 'no ✅ while writes are refused')
  await redis.command('CONFIG', 'SET', 'maxmemory', '0')
  await waitFor(() => app.redisState.mode === 'redis', 10_000)
  t.equal(logs.count(LOG_CONNECTED), 2, 'one ✅ once writes go through')
  t.equal(logs.count(LOG_OPERATION_FAILED), 1)
})

t.test('a password added at runtime: NOAUTH logged once, /api/debug/redis shows the last error, no password anywhere', skipUnlessRedis(), async (t) => {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  const { app, logs } = await build(t, { REDIS_URL: redis.url, ...AUTH_ENV })
  const admin = (await adminLogin(app)).token
  const secret = 'added-Later-s3cret'
  await redis.command('CONFIG', 'SET', 'requirepass', secret)
  await redis.command('-a', secret, '--no-auth-warning', 'CLIENT', 'KILL', 'TYPE', 'normal')
  await waitFor(() => logs.text.includes('NOAUTH'), 10_000)
  await sleep(1500)
  const res = await app.inject({ url: '/api/debug/redis', headers: bearer(admin) })
  t.equal(res.statusCode, 200)
  const body = res.json<{ redis: { mode: string, lastError: { class: string, message: string, at: string } | null } }>()
  t.equal(body.redis.mode, 'fallback')
  t.match(body.redis.lastError, { class: 'auth', message: /NOAUTH/ })
  t.ok(Number.isFinite(Date.parse(body.redis.lastError?.at ?? '')), 'with the time it happened')
  t.equal(logs.lines.filter((l) => /NOAUTH/.test(JSON.stringify(l))).length, 1, 'NOAUTH logged once over several reconnects')
  t.notOk(logs.text.includes(secret) || res.body.includes(secret), 'the password is nowhere')
  await redis.command('-a', secret, '--no-auth-warning', 'CONFIG', 'SET', 'requirepass', '')
  await waitFor(() => app.redisState.mode === 'redis', 10_000)
  t.pass('back once the password is removed')
})
