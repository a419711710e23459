/**
 * The rate limiter's plain parts: client keys (IPv6 by /64, verified bearer tokens), the
 * TRUST_PROXY parser and its config check, the bounded in-process windows, and the Redis
 * counter's batching (exact counts, one script call per turn, TTL in the same script)
 * against a private redis-server.
 */
import t from 'tap'
import { Redis } from 'ioredis'
import { clientKey, emailKey, ipClient, userFromAuthorization, type TokenVerifier } from '../src/rate-limit/client-key.js'
import { retryText } from '../src/rate-limit/limits.js'
import { counterStore } from '../src/rate-limit/store.js'
import { trustProxyOption, trustProxyProblem } from '../src/rate-limit/trust-proxy.js'
import { COALESCE_MS, HITS_SCRIPT, MAX_BATCH, MAX_EARLY, MemoryWindows, WindowCounter, earlyAllowance, type CounterState, type Hit } from '../src/engines/counters/window-counter.js'
import { ConfigError, loadConfig } from '../src/config.js'
import { skipUnlessRedis, startRedis } from './helpers/redis-server.js'
import { waitFor } from './helper.js'

t.test('ipClient: IPv4 as is, IPv4-mapped IPv6 as IPv4, IPv6 grouped by /64', async (t) => {
  t.equal(ipClient('203.0.113.7'), 'ip:203.0.113.7')
  t.equal(ipClient('::ffff:203.0.113.7'), 'ip:203.0.113.7')
  t.equal(ipClient('::FFFF:cb00:7107'), 'ip:203.0.113.7', 'hex-form mapped address is parsed')
  const a = ipClient('2001:db8:1:2::1')
  t.equal(a, 'ip:2001:db8:1:2::/64')
  t.equal(ipClient('2001:0db8:0001:0002:ffff:ffff:ffff:ffff'), a, 'same /64, other host bits, long form')
  t.equal(ipClient('2001:DB8:1:2:abcd::9'), a, 'upper case')
  t.not(ipClient('2001:db8:1:3::1'), a, 'next /64 is another bucket')
  t.equal(ipClient('fe80::1%eth0'), 'ip:fe80::/64', 'zone id ignored')
  t.equal(ipClient('::1'), 'ip:::/64')
  t.match(ipClient('not:an:address:zz'), /^ip:invalid-[A-Za-z0-9_-]{22}$/, 'garbage still gives a bounded key')
  t.match(ipClient('x'.repeat(5000)), /^ip:invalid-[A-Za-z0-9_-]{22}$/, 'also without a colon (a forwarded value from a trusted proxy)')
})

t.test('userFromAuthorization / clientKey: only a verified token with a plain sub is a user', async (t) => {
  const verifier: TokenVerifier = {
    verify (token: string) {
      if (token === 'good') return { sub: 'u-1', role: 'user', sid: 's' }
      if (token === 'numeric') return { sub: 42 }
      if (token === 'weird') return { sub: 'a b:c*' }
      if (token === 'nosub') return { role: 'user' }
      throw new Error('bad signature')
    },
  }
  t.equal(userFromAuthorization('Bearer good', verifier), 'u-1')
  t.equal(userFromAuthorization('bearer good', verifier), 'u-1', 'scheme is case-insensitive')
  t.equal(userFromAuthorization('Bearer numeric', verifier), '42')
  t.equal(userFromAuthorization('Bearer weird', verifier), null, 'a sub with odd characters is not put in a key')
  t.equal(userFromAuthorization('Bearer nosub', verifier), null)
  t.equal(userFromAuthorization('Bearer forged', verifier), null, 'bad signature')
  t.equal(userFromAuthorization('Basic Zm9vOmJhcg==', verifier), null)
  t.equal(userFromAuthorization(undefined, verifier), null)
  t.equal(userFromAuthorization('Bearer good', undefined), null, 'no jwt decorator: no user')

  t.equal(clientKey({ ip: '198.51.100.1', headers: { authorization: 'Bearer good' } }, verifier), 'user:u-1')
  t.equal(clientKey({ ip: '198.51.100.1', headers: { authorization: 'Bearer forged' } }, verifier), 'ip:198.51.100.1')
  t.equal(clientKey({ ip: '198.51.100.1', headers: {} }, undefined), 'ip:198.51.100.1')
})

t.test('emailKey: normalised, hashed, bounded', async (t) => {
  const k = emailKey('  Alice@Example.COM ')
  t.equal(k, emailKey('alice@example.com'))
  t.match(k, /^[A-Za-z0-9_-]{22}$/)
  t.not(k, emailKey('bob@example.com'))
  t.equal(emailKey(''), null)
  t.equal(emailKey(42), null)
  t.equal(emailKey(undefined), null)
  t.match(emailKey('x'.repeat(10_000)), /^[A-Za-z0-9_-]{22}$/)
})

t.test('TRUST_PROXY: addresses, CIDRs and proxy-addr names; never "trust everyone"', async (t) => {
  t.equal(trustProxyOption(undefined), false)
  t.equal(trustProxyOption('  '), false)
  t.same(trustProxyOption('127.0.0.1'), ['127.0.0.1'])
  t.same(trustProxyOption(' 10.0.0.0/8, 172.16.0.0/12 ,fd00::/8,::1,loopback,uniquelocal '), ['10.0.0.0/8', '172.16.0.0/12', 'fd00::/8', '::1', 'loopback', 'uniquelocal'])
  for (const bad of ['true', '*', '1', '0.0.0.0/0', '::/0', '10.0.0.0/33', 'fd00::/129', '10.1', '0x7f.0.0.1', 'example.com', '10.0.0.0/8/1', ',']) {
    t.type(trustProxyProblem(bad), 'string', `${JSON.stringify(bad)} refused`)
    t.throws(() => trustProxyOption(bad), { message: /^TRUST_PROXY: / })
  }
  t.equal(trustProxyProblem('10.0.0.0/8,192.168.1.10'), null)

  const config = loadConfig({ TRUST_PROXY: '10.0.0.0/8, 127.0.0.1' })
  t.equal(config.TRUST_PROXY, '10.0.0.0/8, 127.0.0.1')
  t.throws(() => loadConfig({ TRUST_PROXY: 'true' }), ConfigError, 'config load fails with a clear message')
  try {
    loadConfig({ TRUST_PROXY: '10.0.0.0/8,true' })
  } catch (err) {
    t.match((err as Error).message, /TRUST_PROXY: "true" is not allowed: name the proxies' addresses/)
  }
})

t.test('rate-limit config defaults', async (t) => {
  const c = loadConfig({})
  t.equal(c.RATE_LIMIT_MAX, 300)
  t.equal(c.RATE_LIMIT_WINDOW_MS, 60_000)
  t.equal(c.LOGIN_RATE_LIMIT_MAX, 5)
  t.equal(c.LOGIN_RATE_LIMIT_WINDOW_MS, 15 * 60_000)
  t.equal(c.LOGIN_EMAIL_RATE_LIMIT_MAX, 20)
  t.equal(c.LOGIN_EMAIL_RATE_LIMIT_WINDOW_MS, 3_600_000)
  t.equal(c.ADMIN_RATE_LIMIT_MAX, 60)
  t.equal(c.TRUST_PROXY, undefined)
  t.throws(() => loadConfig({ RATE_LIMIT_MAX: '0' }), ConfigError)
  t.throws(() => loadConfig({ RATE_LIMIT_WINDOW_MS: '1m' }), ConfigError, 'the window is milliseconds, not a duration string')
})

t.test('retryText', async (t) => {
  t.equal(retryText(0.2), '1 second')
  t.equal(retryText(45), '45 seconds')
  t.equal(retryText(60), '1 minute')
  t.equal(retryText(899), '15 minutes')
  t.equal(retryText(3599), '60 minutes')
  t.equal(retryText(5400), '90 minutes')
  t.equal(retryText(5401), '2 hours')
})

t.test('MemoryWindows: fixed windows, shrinking settings, Redis mirror, hard bound', async (t) => {
  const m = new MemoryWindows(100)
  t.same(m.hit('a', 1000, 0), { current: 1, ttl: 1000 })
  t.same(m.hit('a', 1000, 400), { current: 2, ttl: 600 })
  t.same(m.hit('a', 1000, 1000), { current: 1, ttl: 1000 }, 'a new window after the old one ended')
  t.same(m.hit('a', 100, 1100), { current: 2, ttl: 100 }, 'a window longer than the setting is cut to it')

  const b = m.track('b', 1000, 0)
  b.count = 7 // as a Redis answer sets it
  b.resetAt = 500
  t.same(m.hit('b', 1000, 100), { current: 8, ttl: 400 }, 'carries on from the count Redis reported')
  t.equal(m.peek('b', 100), 8)
  t.equal(m.peek('b', 600), 0)

  const small = new MemoryWindows(10)
  for (let i = 0; i < 1000; i++) small.hit(`k${i}`, 60_000, 0)
  t.ok(small.size <= 10, `never more than 10 windows (has ${small.size})`)
  t.ok(small.evictions > 0)
  t.equal(small.peek('k999', 1), 1, 'the newest window survives')
  t.equal(small.peek('k0', 1), 0, 'the oldest went first')

  const expiring = new MemoryWindows(10)
  for (let i = 0; i < 10; i++) expiring.hit(`old${i}`, 10, 0)
  expiring.hit('new', 60_000, 100)
  t.equal(expiring.evictions, 0, 'expired windows are swept before any live one is evicted')
  t.equal(expiring.size, 1)

  const busy = new MemoryWindows(10)
  for (let i = 0; i < 10; i++) busy.track(`b${i}`, 60_000, 0).inFlight = i === 0 ? 1 : 0
  busy.hit('new', 60_000, 1)
  t.ok(busy.get('b0') !== undefined, 'a window with hits still waiting for Redis is kept over an idle one')
  t.equal(busy.get('b1'), undefined)
})

t.test('earlyAllowance: 1% of the limit, at most 1000, none below 100', async (t) => {
  t.equal(earlyAllowance(5), 0)
  t.equal(earlyAllowance(99), 0)
  t.equal(earlyAllowance(100), 1)
  t.equal(earlyAllowance(300), 3)
  t.equal(earlyAllowance(50_000), 500)
  t.equal(earlyAllowance(1_000_000_000), MAX_EARLY)
  t.equal(MAX_EARLY, 1000)
})

/** The hit if `counter` answered it before returning (no wait for Redis), else null. */
function hitNow (counter: WindowCounter, client: string, windowMs: number, max: number): Hit | null {
  let answer: Hit | null = null
  counter.hit(client, windowMs, max, (_err, hit) => { answer = hit })
  return answer
}

/** A CounterState over a plain client, with the failures it was told about. */
function stateFor (client: Redis | null) {
  const failures: unknown[] = []
  const state: CounterState & { failures: unknown[], up: boolean } = {
    client,
    up: true,
    failures,
    get available () { return this.up },
    reportFailure (err: unknown) { failures.push(err); this.up = false },
  }
  return state
}

t.test('WindowCounter without Redis counts in process, synchronously', async (t) => {
  const counter = new WindowCounter({ state: stateFor(null), maxEntries: 100 })
  const seen = Array.from({ length: 3 }, () => hitNow(counter, 'ip:1.2.3.4', 1000, 10))
  t.notOk(seen.some((h) => h === null), 'answered at once')
  t.same(seen.map((h) => h?.current), [1, 2, 3])
  t.equal(counter.stats().memoryHits, 3)
  t.equal(counter.stats().batches, 0)
})

t.test('WindowCounter with Redis', skipUnlessRedis(), async (t) => {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  const client = new Redis(redis.url, { keyPrefix: 'pfx:', enableOfflineQueue: true, lazyConnect: false })
  t.teardown(() => client.disconnect())
  await waitFor(() => client.status === 'ready', 10_000)

  t.test('hits in one turn go out as one script call, one INCRBY per client, with exact counts', async (t) => {
    const state = stateFor(client)
    const counter = new WindowCounter({ state, maxEntries: 1000 })
    const hits = await Promise.all(Array.from({ length: 600 }, (_v, i) => counter.hitAsync(i % 2 === 0 ? 'ip:10.0.0.1' : 'ip:10.0.0.2', 60_000, 250)))
    const a = hits.filter((_h, i) => i % 2 === 0).map((h) => h.current).sort((x, y) => x - y)
    t.same(a, Array.from({ length: 300 }, (_v, i) => i + 1), 'every count 1..300 handed out exactly once (early answers included)')
    const stats = counter.stats()
    t.equal(stats.redisHits, 600)
    t.equal(stats.batches, 1, '600 hits of 2 clients in one turn → one script call')
    t.equal(stats.earlyAdmits, 2 * earlyAllowance(250), 'the first 2 per client were answered before Redis')
    t.equal(await redis.command('GET', 'pfx:rate_limit:ip:10.0.0.1'), '300', 'REDIS_KEY_PREFIX applies to the script keys')
    const pttl = Number(await redis.command('PTTL', 'pfx:rate_limit:ip:10.0.0.1'))
    t.ok(pttl > 0 && pttl <= 60_000, `TTL ${pttl} set with the count`)
    t.equal(counter.memory.peek('ip:10.0.0.1'), 300, 'the in-process windows mirror the shared count')
    t.same(state.failures, [])

    const many = new WindowCounter({ state, maxEntries: 1000 })
    await Promise.all(Array.from({ length: 600 }, (_v, i) => many.hitAsync(`ip:10.9.${i >> 8}.${i & 255}`, 60_000, 10)))
    t.equal(many.stats().batches, Math.ceil(600 / MAX_BATCH), `600 clients → ${Math.ceil(600 / MAX_BATCH)} calls of ≤ ${MAX_BATCH} keys`)
  })

  t.test('hits nobody waits for share a call across turns', async (t) => {
    const counter = new WindowCounter({ state: stateFor(client), maxEntries: 100, coalesceMs: 100 })
    for (let turn = 0; turn < 3; turn++) {
      for (let i = 0; i < 5; i++) t.not(hitNow(counter, 'ip:10.4.0.1', 60_000, 1_000_000), null)
      await new Promise((resolve) => setImmediate(resolve))
    }
    t.equal(counter.stats().earlyAdmits, 15, 'all answered at once')
    await waitFor(async () => (await redis.command('GET', 'pfx:rate_limit:ip:10.4.0.1')) === '15', 10_000)
    t.equal(counter.stats().batches, 1, 'three turns, one call')
    t.equal(COALESCE_MS, 20, 'the default hold is 20 ms')
  })

  t.test('a busy client\'s held hits leave once they reach half its early allowance, not after the whole hold', async (t) => {
    const counter = new WindowCounter({ state: stateFor(client), maxEntries: 100, coalesceMs: 60_000 })
    const max = 1_000_000_000
    const half = earlyAllowance(max) / 2
    t.equal(half, MAX_EARLY / 2)
    /** Hits `n` times; how many answers were promises (requests that would wait for Redis). */
    const hits = (n: number): number => {
      let waited = 0
      for (let i = 0; i < n; i++) if (hitNow(counter, 'ip:10.4.0.9', 60_000, max) === null) waited++
      return waited
    }
    t.equal(hits(half - 1), 0, 'all answered at once')
    await new Promise((resolve) => setTimeout(resolve, 50))
    t.equal(counter.stats().batches, 0, `${half - 1} early hits are held`)
    t.equal(Number(await redis.command('EXISTS', 'pfx:rate_limit:ip:10.4.0.9')), 0, 'nothing in Redis yet')
    t.equal(hits(1), 0)
    await waitFor(async () => (await redis.command('GET', 'pfx:rate_limit:ip:10.4.0.9')) === String(half), 10_000)
    t.equal(counter.stats().batches, 1, `the ${half}th leaves with the others, long before the 60 s hold`)
    // While that call was out, the other half of the allowance kept admitting at once.
    t.equal(hits(2 * half), 0, 'all answered at once')
    t.equal(counter.stats().earlyAdmits, 3 * half, 'no request of this client waited for Redis')
    counter.flush()
    await waitFor(async () => (await redis.command('GET', 'pfx:rate_limit:ip:10.4.0.9')) === String(3 * half), 10_000)
    t.pass('and the rest with the next calls')
  })

  t.test(`hits of MAX_BATCH (${MAX_BATCH}) clients leave at once, not after the whole hold`, async (t) => {
    const counter = new WindowCounter({ state: stateFor(client), maxEntries: 1000, coalesceMs: 60_000 })
    let waited = 0
    for (let i = 0; i < MAX_BATCH - 1; i++) if (hitNow(counter, `ip:10.5.${i >> 8}.${i & 255}`, 60_000, 1_000_000) === null) waited++
    t.equal(waited, 0, 'all answered at once')
    await new Promise((resolve) => setTimeout(resolve, 50))
    t.equal(counter.stats().batches, 0, `${MAX_BATCH - 1} clients' early hits are held`)
    hitNow(counter, 'ip:10.5.9.9', 60_000, 1_000_000)
    await waitFor(async () => (await redis.command('GET', 'pfx:rate_limit:ip:10.5.9.9')) === '1', 10_000)
    t.equal(counter.stats().batches, 1, 'one call with all of them')
    t.equal(await redis.command('GET', 'pfx:rate_limit:ip:10.5.0.0'), '1')
  })

  t.test('hits queued on a window that is evicted before the call leaves are still counted', async (t) => {
    const counter = new WindowCounter({ state: stateFor(client), maxEntries: 2, coalesceMs: 60_000 })
    for (let i = 0; i < 6; i++) t.not(hitNow(counter, `ip:10.6.0.${i}`, 60_000, 1_000_000), null)
    t.ok(counter.stats().memoryEvictions > 0, 'the bound of 2 windows evicted some with queued hits')
    counter.flush()
    await waitFor(async () => {
      const counts = await Promise.all(Array.from({ length: 6 }, (_v, i) => redis.command('GET', `pfx:rate_limit:ip:10.6.0.${i}`)))
      return counts.every((c) => c === '1')
    }, 2000)
    t.equal(counter.stats().redisHits, 6, 'all six reached Redis')
  })

  t.test('the script repairs a counter without TTL, cuts a too-long TTL, and replaces a non-number', async (t) => {
    await redis.command('SET', 'pfx:rate_limit:ip:leftover', '4')
    await redis.command('SET', 'pfx:rate_limit:ip:long', '2', 'PX', '9999999')
    await redis.command('SET', 'pfx:rate_limit:ip:junk', 'not-a-number', 'PX', '9999999')
    const counter = new WindowCounter({ state: stateFor(client), maxEntries: 100 })
    const [leftover, long, junk] = await Promise.all([
      counter.hitAsync('ip:leftover', 5000, 10), counter.hitAsync('ip:long', 5000, 10), counter.hitAsync('ip:junk', 5000, 10),
    ])
    t.equal(leftover?.current, 5)
    t.equal(long?.current, 3)
    t.equal(junk?.current, 1, 'a value INCR cannot handle is reset, not an error for the whole batch')
    for (const key of ['leftover', 'long', 'junk']) {
      const pttl = Number(await redis.command('PTTL', `pfx:rate_limit:ip:${key}`))
      t.ok(pttl > 0 && pttl <= 5000, `${key}: TTL ${pttl} within the 5 s window`)
    }
  })

  t.test('Lua alone: count and expiry are one atomic command', async (t) => {
    const reply = await client.eval(HITS_SCRIPT, 2, 'rate_limit:x', 'rate_limit:y', '1000', '1', '2000', '3') as number[]
    t.same(reply, [1, 1000, 3, 2000])
  })

  /** `n` hits on `key` from `counter` in one turn; how many were admitted under `max`. */
  async function burst (counter: WindowCounter, key: string, n: number, max: number): Promise<number> {
    const hits = await Promise.all(Array.from({ length: n }, () => counter.hitAsync(key, 60_000, max)))
    return hits.filter((h) => h.current <= max).length
  }

  t.test('one instance with early admission is still exact', async (t) => {
    const counter = new WindowCounter({ state: stateFor(client), maxEntries: 100 })
    let admitted = 0
    for (let turn = 0; turn < 13; turn++) admitted += await burst(counter, 'ip:10.1.0.1', 20, 200)
    t.equal(admitted, 200, '260 hits in bursts of 20 against a limit of 200 (allowance 2): exactly 200 admitted')
    t.ok(counter.stats().earlyAdmits > 0, 'some were admitted before Redis answered')
    // Hits refused without waiting reach Redis with the next call: wait for it, do not race it.
    counter.flush()
    await waitFor(async () => (await redis.command('GET', 'pfx:rate_limit:ip:10.1.0.1')) === '260', 10_000)
    t.pass('every hit counted (260)')
  })

  t.test('two instances: over-admission is at most the early allowance per instance', async (t) => {
    const a = new WindowCounter({ state: stateFor(client), maxEntries: 100 })
    const b = new WindowCounter({ state: stateFor(client), maxEntries: 100 })
    const max = 1000
    let admitted = 0
    for (let turn = 0; turn < 20; turn++) {
      const [x, y] = await Promise.all([burst(a, 'ip:10.2.0.1', 30, max), burst(b, 'ip:10.2.0.1', 30, max)])
      admitted += x + y
    }
    t.ok(admitted >= max, `${admitted} ≥ ${max}: the limit is never undercut`)
    t.ok(admitted <= max + 2 * earlyAllowance(max), `${admitted} ≤ ${max} + 2 × ${earlyAllowance(max)}`)
    // Hits admitted early reach Redis with the next batch: wait for it rather than race it.
    a.flush()
    b.flush()
    await waitFor(async () => (await redis.command('GET', 'pfx:rate_limit:ip:10.2.0.1')) === '1200', 10_000)
    t.pass('every hit counted in Redis (1200)')
  })

  t.test('a window known to be over its limit is refused without waiting, and still counted', async (t) => {
    const counter = new WindowCounter({ state: stateFor(client), maxEntries: 100 })
    await burst(counter, 'ip:10.3.0.1', 4, 3)
    const answered = hitNow(counter, 'ip:10.3.0.1', 60_000, 3)
    t.not(answered, null, 'answered at once')
    t.equal(answered?.current, 5)
    t.equal(counter.stats().earlyRefusals, 1)
    await waitFor(async () => (await redis.command('GET', 'pfx:rate_limit:ip:10.3.0.1')) === '5', 10_000)
    t.pass('the refused hit reached Redis too')
  })

  t.test('a failing call flips the state and the hits are answered from memory', async (t) => {
    // Never connected and no offline queue: every command is refused at once.
    const broken = new Redis(redis.url, { lazyConnect: true, enableOfflineQueue: false, retryStrategy: () => null })
    broken.on('error', () => {})
    t.teardown(() => broken.disconnect())
    const state = stateFor(broken)
    const counter = new WindowCounter({ state, maxEntries: 100 })
    const hits = await Promise.all([counter.hitAsync('ip:9.9.9.9', 1000, 10), counter.hitAsync('ip:9.9.9.9', 1000, 10)])
    t.same(hits.map((h) => h.current).sort(), [1, 2])
    t.equal(state.failures.length, 1, 'one report per failed batch')
    t.equal(state.available, false)
    t.equal(counter.stats().failedBatches, 1)
    t.equal(counter.stats().memoryHits, 2)
    const next = await counter.hitAsync('ip:9.9.9.9', 1000, 10)
    t.equal(next.current, 3, 'in fallback the next hit goes straight to memory')
    t.equal(state.failures.length, 1, 'without touching Redis again')
    await counter.reset('ip:9.9.9.9')
    t.equal(hitNow(counter, 'ip:9.9.9.9', 1000, 10)?.current, 1, 'a reset in fallback clears the in-process window')
    t.equal(state.failures.length, 1, 'and does not touch the dead Redis')
  })

  t.test('reset: the window starts again, in Redis and in process', async (t) => {
    const counter = new WindowCounter({ state: stateFor(client), maxEntries: 100 })
    await burst(counter, 'login-email:abc', 4, 5)
    t.equal(await redis.command('GET', 'pfx:rate_limit:login-email:abc'), '4')
    await counter.reset('login-email:abc')
    t.equal(await redis.command('EXISTS', 'pfx:rate_limit:login-email:abc'), '0', 'the key is gone')
    t.equal(counter.memory.peek('login-email:abc'), 0)
    t.equal((await counter.hitAsync('login-email:abc', 60_000, 5)).current, 1)
    t.equal(counter.stats().resets, 1)
  })

  t.test('as @fastify/rate-limit\'s store: incr answers through the callback, a child is the same counter', async (t) => {
    const counter = new WindowCounter({ state: stateFor(client), maxEntries: 100 })
    const Store = counterStore(counter)
    const store = new Store({})
    const incr = (s: typeof store, key: string): Promise<{ current: number, ttl: number } | undefined> =>
      new Promise((resolve, reject) => { s.incr(key, (err, res) => { if (err !== null) reject(err); else resolve(res) }, 60_000, 3) })
    t.same((await incr(store, 'ip:10.7.0.1'))?.current, 1)
    const child = store.child({} as never)
    t.same((await incr(child, 'ip:10.7.0.1'))?.current, 2, 'the child counts in the same windows')
    t.equal(await redis.command('GET', 'pfx:rate_limit:ip:10.7.0.1'), '2', 'in Redis, under rate_limit:')
  })
})
