/**
 * The rate limiter through the whole app, against private redis-server processes: the
 * limit and its headers, exactness across two instances, TTLs, client addresses behind
 * (and not behind) a trusted proxy, IPv6 /64 buckets, per-user keys, admin limits, and
 * Redis dying, freezing and coming back.
 */
import t from 'tap'
import type { FastifyInstance, LightMyRequestResponse } from 'fastify'
import { buildApp } from '../src/app.js'
import { loadConfig } from '../src/config.js'
import { LogCapture, TEST_ENV, build, sleep, waitFor, type TapTest } from './helper.js'
import { skipUnlessRedis, startRedis, type RedisProcess } from './helpers/redis-server.js'
import { startMonitor } from './helpers/monitor.js'

const ROUTE = '/api/test/limited'

interface Built { app: FastifyInstance, logs: LogCapture }

/** The real app plus one cheap limited route (and whatever `extra` adds), closed in teardown. */
async function limitedApp (t: TapTest, env: Record<string, string>, extra?: (app: FastifyInstance) => void): Promise<Built> {
  const config = loadConfig({ ...TEST_ENV, DATABASE_PATH: ':memory:', LOG_LEVEL: 'warn', ...env })
  const logs = new LogCapture()
  const app = await buildApp(config, { logStream: logs })
  app.get(ROUTE, async () => ({ ok: true }))
  extra?.(app)
  await app.ready()
  t.teardown(() => app.close())
  return { app, logs }
}

function get (app: FastifyInstance, opts: { url?: string, remoteAddress?: string, headers?: Record<string, string> } = {}): Promise<LightMyRequestResponse> {
  return app.inject({ method: 'GET', url: opts.url ?? ROUTE, ...(opts.remoteAddress ? { remoteAddress: opts.remoteAddress } : {}), ...(opts.headers ? { headers: opts.headers } : {}) })
}

async function codes (responses: Promise<LightMyRequestResponse>[]): Promise<number[]> {
  return (await Promise.all(responses)).map((r) => r.statusCode)
}

async function scanLimiterKeys (redis: RedisProcess): Promise<string[]> {
  const out = await redis.command('--scan', '--pattern', 'rate_limit:*')
  return out === '' ? [] : out.split('\n').sort()
}

t.test('with Redis', skipUnlessRedis(), async (t) => {
  const redis = await startRedis()
  t.teardown(() => redis.stop())

  t.test('the (N+1)th request in a window is a 429 with Retry-After and the headers; the next window admits again', async (t) => {
    // A 3 s window: the four requests below land in one window unless the machine stalls for
    // seconds. The reset header counts whole seconds down, so it is checked against the
    // window and against Retry-After, not against one exact value.
    const { app } = await limitedApp(t, { REDIS_URL: redis.url, RATE_LIMIT_MAX: '3', RATE_LIMIT_WINDOW_MS: '3000' })
    t.equal(app.redisState.mode, 'redis')
    const admitted: LightMyRequestResponse[] = []
    for (let i = 0; i < 3; i++) admitted.push(await get(app, { remoteAddress: '198.51.100.10' }))
    t.same(admitted.map((r) => r.statusCode), [200, 200, 200])
    t.same(admitted.map((r) => r.headers['x-ratelimit-remaining']), ['2', '1', '0'])
    for (const r of admitted) {
      t.equal(r.headers['x-ratelimit-limit'], '3')
      const reset = Number(r.headers['x-ratelimit-reset'])
      t.ok(Number.isInteger(reset) && reset >= 1 && reset <= 3, `seconds until the window ends (${reset})`)
      t.notOk('retry-after' in r.headers)
    }

    const refused = await get(app, { remoteAddress: '198.51.100.10' })
    t.equal(refused.statusCode, 429)
    const retryAfter = String(refused.headers['retry-after'])
    t.match(retryAfter, /^[1-3]$/, 'Retry-After: whole seconds until the window ends')
    t.same(refused.json(), { statusCode: 429, error: 'Too Many Requests', message: `Rate limit exceeded, retry in ${retryAfter} second${retryAfter === '1' ? '' : 's'}` })
    t.equal(refused.headers['x-ratelimit-limit'], '3')
    t.equal(refused.headers['x-ratelimit-remaining'], '0')
    t.equal(refused.headers['x-ratelimit-reset'], retryAfter, 'the reset header and Retry-After agree')
    t.equal((await get(app, { remoteAddress: '198.51.100.11' })).statusCode, 200, 'another client has its own bucket')
    t.equal(await redis.command('GET', 'rate_limit:ip:198.51.100.10'), '4', 'counted in Redis')

    await sleep(3100)
    const again = await get(app, { remoteAddress: '198.51.100.10' })
    t.equal(again.statusCode, 200, 'a new window admits again')
    t.equal(again.headers['x-ratelimit-remaining'], '2')
  })

  t.test('health, live and ready are exempt; limited routes carry the headers', async (t) => {
    const { app } = await limitedApp(t, { REDIS_URL: redis.url, RATE_LIMIT_MAX: '1' })
    for (const url of ['/api/health', '/api/health/live', '/api/health/ready']) {
      const rs = await Promise.all([get(app, { url }), get(app, { url }), get(app, { url })])
      t.same(rs.map((r) => r.statusCode), [200, 200, 200], `${url} is never limited`)
      t.notOk('x-ratelimit-limit' in (rs[0]?.headers ?? {}), `${url} has no limit headers`)
    }
    const limited = await get(app, { remoteAddress: '198.51.100.20' })
    t.equal(limited.headers['x-ratelimit-limit'], '1')
    const stock = await get(app, { url: '/api/stocks/AAPL', remoteAddress: '198.51.100.21' })
    t.equal(stock.headers['x-ratelimit-limit'], '1', 'a real route is limited too')
  })

  t.test('two instances on one Redis, limit 10, 8 requests each → exactly 10 admitted', async (t) => {
    const env = { REDIS_URL: redis.url, RATE_LIMIT_MAX: '10' }
    const a = await limitedApp(t, env)
    const b = await limitedApp(t, env)
    const all = await codes(Array.from({ length: 16 }, (_v, i) => get(i % 2 === 0 ? a.app : b.app, { remoteAddress: '198.51.100.30' })))
    t.equal(all.filter((c) => c === 200).length, 10, 'exactly 10 admitted in total')
    t.equal(all.filter((c) => c === 429).length, 6)
    t.equal(await redis.command('GET', 'rate_limit:ip:198.51.100.30'), '16')
  })

  t.test('every rate_limit:* key has a TTL no longer than its window, set by the same script as the count', async (t) => {
    // Windows of tens of seconds, each different: a key still alive when it is read has the
    // TTL its own limit set (a loaded machine once let a 3 s login window expire before the
    // read), and a TTL from another limit's window would be caught.
    const windowMs = 40_000
    const { app } = await limitedApp(t, {
      REDIS_URL: redis.url, RATE_LIMIT_WINDOW_MS: String(windowMs), LOGIN_RATE_LIMIT_WINDOW_MS: '30000', LOGIN_EMAIL_RATE_LIMIT_WINDOW_MS: '50000',
    })
    const monitor = await startMonitor(redis.port)
    t.teardown(() => monitor.stop())
    const seen = monitor.lines

    await Promise.all([
      get(app, { remoteAddress: '198.51.100.40' }),
      get(app, { remoteAddress: '2001:db8:40::1' }),
      get(app, { url: '/api/debug/redis', remoteAddress: '198.51.100.41' }),
      app.inject({ method: 'POST', url: '/api/auth/login', payload: { email: 'ttl@example.com', password: 'whatever-password' }, remoteAddress: '198.51.100.42' }),
    ])
    // The script's own commands show up in the monitor after the EVALSHA: wait for them, before
    // this test's own SCAN and PTTL show up there too.
    const scriptRan = (): boolean => {
      const inScript = new Set(seen.filter((s) => s.source === 'lua').map((s) => (s.args[0] ?? '').toLowerCase()))
      return inScript.has('incrby') && inScript.has('pttl') && inScript.has('pexpire')
    }
    await waitFor(scriptRan, 10_000).catch(() => {})
    const sent = [...seen]

    const windows: Record<string, number> = {
      'rate_limit:ip:198.51.100.40': windowMs,
      'rate_limit:ip:2001:db8:40::/64': windowMs,
      'rate_limit:admin:ip:198.51.100.41': windowMs,
      'rate_limit:ip:198.51.100.42': windowMs,
    }
    const keys = (await scanLimiterKeys(redis)).filter((k) => !/^rate_limit:ip:198\.51\.100\.(1\d|2\d|3\d)$/.test(k))
    t.ok(keys.length >= 6, `keys written: ${keys.join(', ')}`)
    for (const key of keys) {
      const pttl = Number(await redis.command('PTTL', key))
      const limit = windows[key] ?? (key.startsWith('rate_limit:login-email:') ? 50_000 : key.startsWith('rate_limit:login:') ? 30_000 : windowMs)
      t.ok(pttl > 0 && pttl <= limit, `${key}: PTTL ${pttl} in (0, ${limit}]`)
    }

    const fromClient = sent.filter((s) => s.source !== 'lua' && s.args.some((a) => a.startsWith('rate_limit:')))
    t.ok(fromClient.length > 0)
    t.same([...new Set(fromClient.map((s) => (s.args[0] ?? '').toLowerCase()))].filter((c) => c !== 'eval' && c !== 'evalsha'), [],
      'the limiter sends nothing but the script (never INCR then EXPIRE)')
    const inScript = new Set(sent.filter((s) => s.source === 'lua').map((s) => (s.args[0] ?? '').toLowerCase()))
    t.ok(inScript.has('incrby') && inScript.has('pttl') && inScript.has('pexpire'), 'INCRBY and PEXPIRE run inside the script')
  })

  t.test('hits answered early are still counted in Redis when the app closes right after', async (t) => {
    const config = loadConfig({ ...TEST_ENV, DATABASE_PATH: ':memory:', LOG_LEVEL: 'warn', REDIS_URL: redis.url, RATE_LIMIT_MAX: '100000' })
    const app = await buildApp(config, { logStream: new LogCapture() })
    app.get(ROUTE, async () => ({ ok: true }))
    await app.ready()
    t.same(await codes([1, 2, 3].map(() => get(app, { remoteAddress: '198.51.100.45' }))), [200, 200, 200])
    t.equal(app.rateLimiter.stats().earlyAdmits, 3, 'answered before Redis (allowance 1000 at this limit)')
    await app.close()
    t.equal(await redis.command('GET', 'rate_limit:ip:198.51.100.45'), '3', 'flushed before the Redis client closed')
  })

  t.test('rotating X-Forwarded-For from one socket does not bypass the limit (no TRUST_PROXY)', async (t) => {
    const { app } = await limitedApp(t, { REDIS_URL: redis.url, RATE_LIMIT_MAX: '3' })
    const all = await codes(Array.from({ length: 8 }, (_v, i) => get(app, { remoteAddress: '198.51.100.50', headers: { 'x-forwarded-for': `203.0.113.${i}` } })))
    t.equal(all.filter((c) => c === 200).length, 3)
    t.equal(await redis.command('GET', 'rate_limit:ip:198.51.100.50'), '8', 'all counted against the socket address')
    t.equal(await redis.command('EXISTS', 'rate_limit:ip:203.0.113.0'), '0', 'the header was ignored')
  })

  t.test('with TRUST_PROXY naming the proxy, the forwarded client address is used', async (t) => {
    const { app } = await limitedApp(t, { REDIS_URL: redis.url, RATE_LIMIT_MAX: '2', TRUST_PROXY: '127.0.0.1, 10.0.0.0/8' })
    // From the trusted proxy: each forwarded client has its own bucket.
    const viaProxy = await codes(Array.from({ length: 4 }, (_v, i) => get(app, { remoteAddress: '127.0.0.1', headers: { 'x-forwarded-for': `203.0.113.${60 + i}` } })))
    t.same(viaProxy, [200, 200, 200, 200])
    t.equal(await redis.command('GET', 'rate_limit:ip:203.0.113.60'), '1')
    // Through two trusted hops, the first untrusted address from the right is the client.
    const twoHops = await codes(Array.from({ length: 3 }, () => get(app, { remoteAddress: '10.1.2.3', headers: { 'x-forwarded-for': '1.1.1.1, 203.0.113.70, 10.9.9.9' } })))
    t.same(twoHops, [200, 200, 429], 'one client behind two proxies is still one bucket')
    t.equal(await redis.command('GET', 'rate_limit:ip:203.0.113.70'), '3')
    t.equal(await redis.command('EXISTS', 'rate_limit:ip:1.1.1.1'), '0', 'a value the client itself put in front is not believed')
    // From an untrusted peer the header is ignored.
    const direct = await codes(Array.from({ length: 3 }, (_v, i) => get(app, { remoteAddress: '198.51.100.61', headers: { 'x-forwarded-for': `203.0.113.${80 + i}` } })))
    t.same(direct, [200, 200, 429])
  })

  t.test('IPv6 addresses in one /64 share a bucket', async (t) => {
    const { app } = await limitedApp(t, { REDIS_URL: redis.url, RATE_LIMIT_MAX: '3' })
    const same64 = ['2001:db8:aa:1::1', '2001:db8:aa:1:ffff::2', '2001:db8:aa:1:1234:5678:9abc:def0', '2001:db8:aa:1::99']
    const results = await codes(same64.map((remoteAddress) => get(app, { remoteAddress })))
    t.equal(results.filter((c) => c === 200).length, 3)
    t.equal(results.filter((c) => c === 429).length, 1, 'the 4th address of the same /64 is refused')
    t.equal(await redis.command('GET', 'rate_limit:ip:2001:db8:aa:1::/64'), '4')
    t.equal((await get(app, { remoteAddress: '2001:db8:aa:2::1' })).statusCode, 200, 'the next /64 is another client')
    t.equal((await get(app, { remoteAddress: '::ffff:198.51.100.70' })).statusCode, 200)
    t.equal(await redis.command('GET', 'rate_limit:ip:198.51.100.70'), '1', 'IPv4-mapped addresses count as IPv4')
  })

  t.test('authenticated requests count against the user, whatever the address; bad tokens against the address', async (t) => {
    const { app } = await limitedApp(t, { REDIS_URL: redis.url, RATE_LIMIT_MAX: '3' })
    const token = app.jwt.sign({ sub: 'user-rl-1', role: 'user', sid: 'A'.repeat(22) })
    const auth = { authorization: `Bearer ${token}` }
    const results = await codes(['198.51.100.80', '198.51.100.81', '2001:db8:80::1', '198.51.100.82'].map((remoteAddress) => get(app, { remoteAddress, headers: auth })))
    t.same(results.filter((c) => c === 200).length, 3, 'four addresses, one user, one bucket')
    t.equal(await redis.command('GET', 'rate_limit:user:user-rl-1'), '4')
    t.equal(await redis.command('EXISTS', 'rate_limit:ip:198.51.100.80'), '0')

    const forged = `${token.slice(0, -3)}AAA`
    const f = await get(app, { remoteAddress: '198.51.100.83', headers: { authorization: `Bearer ${forged}` } })
    t.equal(f.statusCode, 200)
    t.equal(await redis.command('GET', 'rate_limit:ip:198.51.100.83'), '1', 'a token with a bad signature is keyed by address')
  })

  t.test('the limiter runs before authentication: rejected tokens are counted', async (t) => {
    const { app } = await limitedApp(t, { REDIS_URL: redis.url, RATE_LIMIT_MAX: '3' })
    const results = await codes(Array.from({ length: 5 }, () => get(app, { url: '/api/auth/me', remoteAddress: '198.51.100.90', headers: { authorization: 'Bearer not.a.token' } })))
    t.same(results, [401, 401, 401, 429, 429])
  })

  t.test('admin routes have their own limit', async (t) => {
    const { app } = await limitedApp(t, { REDIS_URL: redis.url, RATE_LIMIT_MAX: '100', ADMIN_RATE_LIMIT_MAX: '2' })
    const admin = await Promise.all(Array.from({ length: 3 }, () => get(app, { url: '/api/debug/redis', remoteAddress: '198.51.100.95' })))
    t.same(admin.map((r) => r.statusCode), [401, 401, 429])
    t.equal(admin[0]?.headers['x-ratelimit-limit'], '2')
    t.equal(await redis.command('GET', 'rate_limit:admin:ip:198.51.100.95'), '3')
    const normal = await get(app, { remoteAddress: '198.51.100.95' })
    t.equal(normal.statusCode, 200, 'the global bucket is separate')
    t.equal(normal.headers['x-ratelimit-limit'], '100')
    t.equal(app.rateLimiter.stats().limited.admin, 1)
  })
})

t.test('Redis killed mid-test: the in-process limiter keeps limiting; restored: counting in Redis resumes', skipUnlessRedis(), async (t) => {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  const { app, logs } = await limitedApp(t, { REDIS_URL: redis.url, RATE_LIMIT_MAX: '5', RATE_LIMIT_WINDOW_MS: '60000' })
  const bodies: string[] = []
  const statuses: number[] = []
  const send = async (remoteAddress: string): Promise<number> => {
    const r = await get(app, { remoteAddress })
    bodies.push(r.body)
    statuses.push(r.statusCode)
    return r.statusCode
  }

  t.same([await send('198.51.100.100'), await send('198.51.100.100'), await send('198.51.100.100')], [200, 200, 200])
  t.equal(await redis.command('GET', 'rate_limit:ip:198.51.100.100'), '3')

  await redis.kill()
  // Straight after the kill: the first requests may still find the client "connected".
  const afterKill = [await send('198.51.100.100'), await send('198.51.100.100'), await send('198.51.100.100'), await send('198.51.100.100')]
  t.same(afterKill, [200, 200, 429, 429], 'carries on from the count it last saw in Redis: 5 admitted in all, then 429')
  t.equal(app.redisState.mode, 'fallback')

  const fresh = []
  for (let i = 0; i < 8; i++) fresh.push(await send('198.51.100.101'))
  t.same(fresh, [200, 200, 200, 200, 200, 429, 429, 429], 'a new client: N admitted in process, then 429')
  t.notOk(statuses.some((s) => s >= 500), 'no 5xx')
  t.notOk(bodies.some((b) => /Connection is closed|ECONNREFUSED|Stream isn't writeable|ioredis/i.test(b)), 'no Redis error text in any body')
  t.ok(app.rateLimiter.stats().memoryHits >= 8)

  await redis.restart()
  await waitFor(() => app.redisState.available, 5000)
  t.equal(await send('198.51.100.102'), 200)
  t.equal(await send('198.51.100.102'), 200)
  t.equal(await redis.command('GET', 'rate_limit:ip:198.51.100.102'), '2', 'counting in Redis resumed by itself')
  const pttl = Number(await redis.command('PTTL', 'rate_limit:ip:198.51.100.102'))
  t.ok(pttl > 0 && pttl <= 60_000, 'with its TTL')
  t.ok(logs.lines.every((l) => !JSON.stringify(l).includes('\n    at ')), 'no stack traces logged')
})

t.test('Redis frozen: no request waits longer than the command timeout, then none waits at all', skipUnlessRedis(), async (t) => {
  const redis = await startRedis()
  t.teardown(async () => { redis.resume(); await redis.stop() })
  // A 4 s command timeout: one timeout and two are each 2 s from the bound below.
  const { app } = await limitedApp(t, { REDIS_URL: redis.url, RATE_LIMIT_MAX: '3', REDIS_COMMAND_TIMEOUT_MS: '4000' })
  t.equal((await get(app, { remoteAddress: '198.51.100.110' })).statusCode, 200)

  redis.pause()
  let started = performance.now()
  const first = await codes(Array.from({ length: 3 }, () => get(app, { remoteAddress: '198.51.100.111' })))
  const firstMs = performance.now() - started
  t.same(first, [200, 200, 200])
  t.ok(firstMs < 6000, `the requests that met the frozen Redis waited one command timeout at most, not two (${firstMs.toFixed(0)} ms; command timeout 4000 ms)`)
  t.equal(app.redisState.mode, 'fallback')

  started = performance.now()
  const next = await codes(Array.from({ length: 2 }, () => get(app, { remoteAddress: '198.51.100.111' })))
  const nextMs = performance.now() - started
  t.same(next, [429, 429], 'still limited, in process')
  t.ok(nextMs < 2000, `later requests do not touch Redis (${nextMs.toFixed(0)} ms; one that did would wait the 4000 ms command timeout)`)
})

t.test('without Redis (single instance) the in-process limiter is the limiter', async (t) => {
  const { app } = await limitedApp(t, { RATE_LIMIT_MAX: '2' })
  t.equal(app.redisState.status, 'disabled')
  t.same(await codes([get(app), get(app), get(app)]), [200, 200, 429])
  t.equal(app.rateLimiter.stats().redisHits, 0)
})

t.test('unknown URLs count against the limit too', async (t) => {
  const { app } = await build(t, { RATE_LIMIT_MAX: '3' })
  const codes: number[] = []
  for (let i = 0; i < 5; i++) codes.push((await app.inject(`/api/probe-${i}`)).statusCode)
  t.same(codes, [404, 404, 404, 429, 429], 'route probing is limited like any request')
})

t.test('malformed URLs: the usual error body, the limiter\'s headers, and counted', async (t) => {
  const { app } = await build(t, { RATE_LIMIT_MAX: '3' })
  const bad = await app.inject('/api/stocks/%E0%A4%A')
  t.equal(bad.statusCode, 400)
  t.same(bad.json(), { statusCode: 400, error: 'Bad Request', message: 'The URL is not validly percent-encoded' }, 'no code, no echo of the path')
  t.equal(bad.headers['x-ratelimit-limit'], '3')
  t.equal(bad.headers['x-ratelimit-remaining'], '2')
  const long = await app.inject(`/api/stocks/${'A'.repeat(101)}`)
  t.equal(long.statusCode, 400, 'a ticker past the router\'s parameter length is a 400 like any malformed one')
  t.same(long.json(), { statusCode: 400, error: 'Bad Request', message: 'A path parameter is too long' })
  const codes = []
  for (let i = 0; i < 2; i++) codes.push((await app.inject('/api/stocks/%E0%A4%A')).statusCode)
  t.same(codes, [400, 429], 'the fourth request in the window is refused')
  const refused = await app.inject('/api/stocks/%E0%A4%A')
  t.equal(refused.statusCode, 429)
  t.match(refused.json(), { statusCode: 429, error: 'Too Many Requests', message: /^Rate limit exceeded, retry in / })
  t.match(refused.headers['retry-after'], /^\d+$/)
})

t.test('malformed URLs with Redis counting: the same answers once the count comes back from Redis', skipUnlessRedis(), async (t) => {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  const { app } = await build(t, { REDIS_URL: redis.url, RATE_LIMIT_MAX: '2' })
  const codes = []
  for (let i = 0; i < 3; i++) codes.push((await app.inject('/api/stocks/%E0%A4%A')).statusCode)
  t.same(codes, [400, 400, 429])
  t.ok(app.rateLimiter.stats().redisHits >= 1, 'counted in Redis')
  t.equal(await redis.command('GET', 'rate_limit:ip:127.0.0.1'), '3')
})
