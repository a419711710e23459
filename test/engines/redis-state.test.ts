/**
 * The Redis state machine on its own: flapping, TLS, backoff.
 */
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import type { Redis } from 'ioredis'
import { backoff, createRedisState, LOG_COMMAND_REFUSED, LOG_CONNECTED, LOG_CONNECTION_FAILED, LOG_OPERATION_FAILED, LOG_STILL_FAILING } from '../../src/engines/redis/state.js'
import { sleep, waitFor, type TapTest } from '../helper.js'
import { getFreePort, makeSelfSignedCert, opensslAvailable, skipUnlessRedis, startRedis, tlsSupported, type RedisProcess } from '../helpers/redis-server.js'

function capture () {
  const lines: Array<{ level: string, msg: string, obj: object }> = []
  const at = (level: string) => (obj: object, msg: string) => { lines.push({ level, msg, obj }) }
  return { lines, log: { info: at('info'), warn: at('warn'), error: at('error'), debug: () => {} } }
}

t.test('backoff is capped, exponential and jittered', async (t) => {
  t.ok(backoff(0, 1000) <= 50 && backoff(0, 1000) >= 25)
  for (let i = 0; i < 200; i++) {
    const d = backoff(i, 1000)
    t.ok(d >= 10 && d <= 1000, `attempt ${i}: ${d} ms`)
  }
  // Doubling from 50 ms, each delay within [0.5, 1) of its step, until the cap.
  for (let times = 0; times <= 7; times++) {
    const step = 50 * 2 ** times
    const seen = Array.from({ length: 20 }, () => backoff(times, 10_000))
    t.ok(seen.every((d) => d >= step / 2 && d <= step), `attempt ${times}: ${Math.min(...seen)}–${Math.max(...seen)} ms, within [${step / 2}, ${step}]`)
  }
  t.ok(Array.from({ length: 20 }, () => backoff(8, 10_000)).every((d) => d >= 5_000 && d <= 10_000), 'then capped')
  const late = new Set(Array.from({ length: 50 }, () => backoff(30, 1000)))
  t.ok(late.size > 5, 'jitter spreads the reconnects of many instances')
})

t.test('flapping 10 × (1 s down, 1 s up): one client, no leaks, ends connected', skipUnlessRedis(), async (t) => {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  const { lines, log } = capture()
  const warnings: Error[] = []
  const onWarning = (w: Error) => { warnings.push(w) }
  process.on('warning', onWarning)
  t.teardown(() => { process.off('warning', onWarning) })

  const state = createRedisState({ url: redis.url, log })
  await state.start()
  t.teardown(() => state.close())
  const client = state.client!
  const listenersBefore = client.eventNames().map((e) => `${String(e)}:${client.listenerCount(e)}`).sort()
  global.gc?.()
  const heapBefore = process.memoryUsage().heapUsed

  for (let i = 0; i < 10; i++) {
    await redis.kill()
    await sleep(1000)
    await redis.restart()
    await waitFor(() => state.mode === 'redis', 10_000)
    await sleep(Math.max(0, 1000 - 0))
  }

  t.equal(state.status, 'connected')
  t.equal(state.mode, 'redis')
  t.equal(state.activations, 10, 'ten outages, ten fallback activations')
  t.equal(lines.filter((l) => l.msg === LOG_CONNECTED).length, 11, '✅ once per recovery (plus boot)')
  t.equal(lines.filter((l) => l.msg === LOG_CONNECTION_FAILED).length, 10, '❌ once per outage')
  const clients = (await redis.command('CLIENT', 'LIST')).split('\n').filter((l) => !l.includes('cmd=client'))
  t.equal(clients.length, 1, 'one connection: a single reconnect loop, no duplicate clients')
  const listenersAfter = client.eventNames().map((e) => `${String(e)}:${client.listenerCount(e)}`).sort()
  t.same(listenersAfter, listenersBefore, 'no listener accumulates')
  t.equal(warnings.filter((w) => w.name === 'MaxListenersExceededWarning').length, 0, 'no listener-leak warning')
  global.gc?.()
  const growth = process.memoryUsage().heapUsed - heapBefore
  t.ok(growth < 20 * 1024 * 1024, `heap grew ${(growth / 1024 / 1024).toFixed(1)} MB over ten outages`)
  t.equal(await client.ping(), 'PONG')
})

const tlsSkip = skipUnlessRedis().skip ?? (tlsSupported() && opensslAvailable() ? undefined : 'redis-server without TLS or no openssl: cannot run a TLS server here')

t.test('rediss:// builds a TLS connection', tlsSkip ? { skip: tlsSkip } : {}, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'aic-tls-'))
  const files = await makeSelfSignedCert(dir)
  const redis = await startRedis({ tls: files })
  t.teardown(() => redis.stop())
  t.match(redis.url, /^rediss:\/\//)

  const verified = capture()
  const ok = createRedisState({ url: redis.url, tlsCa: files.ca, log: verified.log })
  await ok.start()
  t.teardown(() => ok.close())
  t.equal(ok.status, 'connected', 'TLS with the CA verifies and connects')
  t.equal(await ok.client!.ping(), 'PONG')
  t.ok((ok.client!.options as { tls?: unknown }).tls, 'the client was built with TLS options')

  const untrusted = capture()
  const bad = createRedisState({ url: redis.url, log: untrusted.log })
  await bad.start()
  t.teardown(() => bad.close())
  t.not(bad.status, 'connected', 'an unknown CA is refused')
  t.match(String(untrusted.lines.find((l) => l.msg === LOG_CONNECTION_FAILED)?.obj && JSON.stringify(untrusted.lines[0]?.obj)), /certificate|self.signed|CERT/i, 'the reason names the certificate')

  const plain = capture()
  const plainState = createRedisState({ url: redis.url.replace('rediss://', 'redis://'), log: plain.log, connectTimeoutMs: 300 })
  await plainState.start()
  t.teardown(() => plainState.close())
  t.not(plainState.status, 'connected', 'plain redis:// cannot talk to a TLS port')
})

/**
 * One fault against one state under steady load: a writer that talks to Redis while the state
 * says so and reports each failure, as every caller does. Counts the transitions in the log.
 */
async function underFault (t: TapTest, redis: RedisProcess, fault: {
  op: (client: Redis, i: number) => Promise<unknown>
  inject: () => Promise<unknown>
  clear: () => Promise<unknown>
  /** Whether the fault switches the state at all (a refusal of one command does not). */
  switches: boolean
}) {
  const { lines, log } = capture()
  // A short probe interval gives a PING-based return many chances to flap in a few seconds.
  const state = createRedisState({ url: redis.url, log, probeIntervalMs: 100, instanceId: 'test' })
  await state.start()
  t.teardown(() => state.close())
  t.equal(state.mode, 'redis', 'starts connected')
  let stop = false
  let calls = 0
  const load = (async () => {
    for (let i = 0; !stop; i++) {
      if (state.available) {
        calls++
        try { await fault.op(state.client!, i) } catch (err) { state.reportFailure(err, 'op') }
      }
      await sleep(10)
    }
  })()
  await sleep(300)
  await fault.inject()
  if (fault.switches) await waitFor(() => state.mode === 'fallback', 10_000)
  // Twenty probe intervals or more under the fault.
  const until = Date.now() + 2500
  await waitFor(() => Date.now() >= until, 10_000)
  const during = { mode: state.mode, calls }
  await fault.clear()
  await waitFor(() => state.mode === 'redis', 10_000)
  await sleep(500)
  stop = true
  await load
  const downs = lines.filter((l) => l.msg === LOG_OPERATION_FAILED || l.msg === LOG_CONNECTION_FAILED).length
  const ups = lines.filter((l) => l.msg === LOG_CONNECTED).length - 1
  return { lines, state, during, downs, ups }
}

function counts (t: TapTest, r: { downs: number, ups: number }, expected: number) {
  t.equal(r.downs, expected, `${expected} ⚠️/❌ line(s) for the fault`)
  t.equal(r.ups, expected, `${expected} ✅ line(s) after it`)
}


t.test('READONLY (REPLICAOF a dead master): one switch, back only after a write probe', skipUnlessRedis(), async (t) => {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  const dead = await getFreePort()
  const r = await underFault(t, redis, {
    op: (c, i) => c.set(`k:${i % 50}`, 'v'),
    inject: () => redis.command('REPLICAOF', '127.0.0.1', String(dead)),
    clear: () => redis.command('REPLICAOF', 'NO', 'ONE'),
    switches: true,
  })
  t.equal(r.during.mode, 'fallback', 'stays in fallback while writes are refused, though PING answers')
  counts(t, r, 1)
  t.equal(r.lines.find((l) => l.msg === LOG_OPERATION_FAILED)?.obj && (r.lines.find((l) => l.msg === LOG_OPERATION_FAILED)!.obj as { class: string }).class, 'write')
  t.ok(r.state.writeProbes > 1, `${r.state.writeProbes} write probes`)
  t.equal(await redis.command('EXISTS', 'health:probe:test'), '0', 'the probe leaves no key behind')
})

t.test('OOM under noeviction, with MULTI/EXEC failing as EXECABORT: one switch, one return', skipUnlessRedis(), async (t) => {
  const redis = await startRedis({ args: ['--maxmemory-policy', 'noeviction'] })
  t.teardown(() => redis.stop())
  const r = await underFault(t, redis, {
    op: (c, i) => c.multi().set(`s:${i % 50}`, 'v').sadd('idx', String(i % 50)).exec(),
    inject: () => redis.command('CONFIG', 'SET', 'maxmemory', '1'),
    clear: () => redis.command('CONFIG', 'SET', 'maxmemory', '0'),
    switches: true,
  })
  t.equal(r.during.mode, 'fallback')
  counts(t, r, 1)
  const warn = r.lines.find((l) => l.msg === LOG_OPERATION_FAILED)?.obj as { class: string, reason: string }
  t.equal(warn.class, 'write', 'EXECABORT caused by OOM is a refused write')
})

t.test('NOPERM on every write (ACL -@write): one switch found by the write probe, one return', skipUnlessRedis(), async (t) => {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  const r = await underFault(t, redis, {
    op: (c, i) => c.set(`k:${i % 50}`, 'v'),
    inject: () => redis.command('ACL', 'SETUSER', 'default', '-@write'),
    clear: () => redis.command('ACL', 'SETUSER', 'default', '+@all'),
    switches: true,
  })
  t.equal(r.during.mode, 'fallback')
  counts(t, r, 1)
})

t.test('MISCONF (a failed background save stops writes): one switch, one return', skipUnlessRedis(), async (t) => {
  const redis = await startRedis({ args: ['--enable-protected-configs', 'yes'] })
  t.teardown(() => redis.stop())
  const gone = mkdtempSync(join(tmpdir(), 'aic-misconf-'))
  const r = await underFault(t, redis, {
    op: (c, i) => c.set(`k:${i % 50}`, 'v'),
    inject: async () => {
      // A save into a directory that no longer exists fails even as root.
      await redis.command('CONFIG', 'SET', 'dir', gone)
      rmSync(gone, { recursive: true, force: true })
      await redis.command('CONFIG', 'SET', 'save', '3600 1', 'stop-writes-on-bgsave-error', 'yes')
      await redis.command('BGSAVE')
      await waitFor(async () => (await redis.command('INFO', 'persistence')).includes('rdb_last_bgsave_status:err'), 10_000, 50)
    },
    clear: () => redis.command('CONFIG', 'SET', 'stop-writes-on-bgsave-error', 'no'),
    switches: true,
  })
  t.equal(r.during.mode, 'fallback')
  counts(t, r, 1)
  t.match(r.state.snapshot().lastError, { class: 'write', message: /MISCONF/ })
})

t.test('BUSY (a script past its time limit): not ready, one switch, back after SCRIPT KILL', skipUnlessRedis(), async (t) => {
  const redis = await startRedis({ args: ['--busy-reply-threshold', '100'] })
  t.teardown(() => redis.stop())
  const r = await underFault(t, redis, {
    op: (c, i) => c.set(`k:${i % 50}`, 'v'),
    // redis-cli waits for the script's answer (never): not awaited.
    inject: async () => { void redis.command('EVAL', 'while true do end', '0').catch(() => {}) },
    clear: () => redis.command('SCRIPT', 'KILL'),
    switches: true,
  })
  t.equal(r.during.mode, 'fallback')
  counts(t, r, 1)
  t.ok(r.lines.some((l) => l.msg === LOG_OPERATION_FAILED && /BUSY|timed out/.test(String((l.obj as { reason: string }).reason))), 'the reason is BUSY (or the command timeout while the script started)')
})

t.test('an unknown or refused command: that call falls back, no switch, one line per reason with a suppressed count', skipUnlessRedis(), async (t) => {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  const r = await underFault(t, redis, {
    op: (c, i) => i % 2 === 0 ? c.call('NOSUCHCOMMAND', 'x') : c.set('plain', 'v').then(() => c.sadd('plain', 'x')),
    inject: async () => {},
    clear: async () => {},
    switches: false,
  })
  t.equal(r.during.mode, 'redis', 'Redis stays in use')
  counts(t, r, 0)
  const refused = r.lines.filter((l) => l.msg === LOG_COMMAND_REFUSED)
  t.same(refused.map((l) => (l.obj as { reason: string }).reason.split(' ')[0]).sort(), ['ERR', 'WRONGTYPE'], 'one line for the unknown command, one for the wrong type')
  t.ok(r.state.commandRefusals > 20, `${r.state.commandRefusals} refusals counted`)
})

t.test('a reconnect that fails for a new reason says so once: ECONNREFUSED, then NOAUTH; the password never shows', skipUnlessRedis(), async (t) => {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  const { lines, log } = capture()
  const state = createRedisState({ url: redis.url, log, instanceId: 'test' })
  await state.start()
  t.teardown(() => state.close())
  const secret = 'n3w-Server-Secret'
  // The server starts requiring a password and drops every connection.
  await redis.command('CONFIG', 'SET', 'requirepass', secret)
  await redis.command('-a', secret, '--no-auth-warning', 'CLIENT', 'KILL', 'TYPE', 'normal')
  await waitFor(() => lines.some((l) => /NOAUTH/.test(String((l.obj as { reason?: string }).reason))), 10_000)
  t.equal(state.mode, 'fallback')
  await sleep(1500) // several reconnects, each refused the same way
  const noauth = lines.filter((l) => /NOAUTH/.test(String((l.obj as { reason?: string }).reason)))
  t.equal(noauth.length, 1, 'NOAUTH is logged once, not per reconnect')
  t.match(state.snapshot().lastError, { class: 'auth', message: /NOAUTH/, at: String })
  // Then the server goes away: a new reason, logged once.
  await redis.kill()
  await waitFor(() => lines.some((l) => l.msg === LOG_STILL_FAILING && /ECONNREFUSED/.test(String((l.obj as { reason?: string }).reason))), 10_000)
  await sleep(1500)
  t.equal(lines.filter((l) => /ECONNREFUSED/.test(String((l.obj as { reason?: string }).reason))).length, 1, 'ECONNREFUSED once')
  t.match(state.snapshot().lastError, { class: 'transport', message: /ECONNREFUSED/ })
  await redis.restart()
  await waitFor(() => state.mode === 'redis', 10_000)
  t.equal(lines.filter((l) => l.msg === LOG_CONNECTION_FAILED || l.msg === LOG_OPERATION_FAILED).length, 1, 'one ❌ for the whole outage')
  t.notOk(JSON.stringify(lines).includes(secret), 'the password is in no log line')
})
