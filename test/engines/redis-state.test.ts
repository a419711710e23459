/**
 * The Redis state machine on its own: flapping, TLS, backoff.
 */
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { backoff, createRedisState, LOG_CONNECTED, LOG_CONNECTION_FAILED } from '../../src/engines/redis/state.js'
import { sleep, waitFor } from '../helper.js'
import { makeSelfSignedCert, opensslAvailable, skipUnlessRedis, startRedis, tlsSupported } from '../helpers/redis-server.js'

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
    await waitFor(() => state.mode === 'redis', 2000)
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
