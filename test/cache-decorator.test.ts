/**
 * The caching decorator (plugins/cache.ts): a route that declares `config: { cache }` and
 * nothing else gets two-tier caching of its handler's result, X-Cache and Age, one handler
 * call per key across instances, and invalidation by key or prefix. Two app instances share
 * a private redis-server.
 */
import t from 'tap'
import type { FastifyInstance } from 'fastify'
import { buildApp } from '../src/app.js'
import { loadConfig } from '../src/config.js'
import { LogCapture, TEST_ENV, sleep, waitFor, type TapTest } from './helper.js'
import { skipUnlessRedis, startRedis, type RedisProcess } from './helpers/redis-server.js'

const redisOpts = skipUnlessRedis()

interface Calls { n: number }

async function instance (t: TapTest, redis: RedisProcess | null, calls: Calls): Promise<FastifyInstance> {
  const config = loadConfig({
    ...TEST_ENV,
    ...(redis ? { REDIS_URL: redis.url } : {}),
    LOG_LEVEL: 'warn',
    RATE_LIMIT_MAX: '1000000',
    SCHEDULER_ENABLED: 'false',
  })
  const app = await buildApp(config, { logStream: new LogCapture() })
  // A new route: caching from its options alone.
  app.get('/things/:id', {
    config: { cache: { key: (request) => `thing:${(request.params as { id: string }).id}`, ttl: 60, grace: 30 } },
  }, async (request) => {
    calls.n++
    await sleep(300)
    return { id: (request.params as { id: string }).id, call: calls.n }
  })
  await app.ready()
  t.teardown(() => app.close())
  return app
}

async function privateRedis (t: TapTest): Promise<RedisProcess> {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  return redis
}

async function get (app: FastifyInstance, url: string) {
  const res = await app.inject({ method: 'GET', url })
  return { status: res.statusCode, cache: res.headers['x-cache'], age: res.headers.age, body: res.json<{ id: string, call: number }>() }
}

t.test('a route with config.cache: one handler call across two instances, HIT with Age, invalidation by prefix', redisOpts, async (t) => {
  const redis = await privateRedis(t)
  const calls: Calls = { n: 0 }
  const a = await instance(t, redis, calls)
  const b = await instance(t, redis, calls)
  await waitFor(() => a.cache.stats().invalidation.subscribed && b.cache.stats().invalidation.subscribed, 5000)

  const first = await Promise.all([
    ...Array.from({ length: 20 }, () => get(a, '/things/1')),
    ...Array.from({ length: 20 }, () => get(b, '/things/1')),
  ])
  t.equal(calls.n, 1, 'one handler call for 40 concurrent requests on two instances')
  t.ok(first.every((r) => r.status === 200 && r.cache === 'MISS' && r.body.call === 1), 'all answered with that one result, X-Cache: MISS')
  t.equal(await redis.command('EXISTS', 'thing:1'), '1', 'stored in Redis under the route\'s key')
  const pttl = Number(await redis.command('PTTL', 'thing:1'))
  t.ok(pttl > 0 && pttl <= 60_000, `with the route's ttl (PTTL ${pttl})`)
  const grace = Number(await redis.command('PTTL', 'stale:{thing:1}'))
  t.ok(grace > 60_000 && grace <= 90_000, `its grace copy with the route's ttl + grace (PTTL ${grace})`)

  for (const app of [a, b]) {
    const hit = await get(app, '/things/1')
    t.same([hit.status, hit.cache, hit.body.call], [200, 'HIT', 1], 'then a HIT on each instance')
    t.match(hit.age, /^\d+$/, 'with Age')
  }
  t.equal(calls.n, 1)
  await waitFor(async () => Number((await get(a, '/things/1')).age) >= 1, 5000)
  t.pass('Age counts the seconds since the load')

  await get(a, '/things/2')
  t.equal(calls.n, 2)
  t.equal((await get(b, '/things/2')).cache, 'HIT')

  t.equal(await a.cache.invalidatePrefix('thing:'), true)
  await waitFor(() => b.cache.peek('thing:1') === undefined && b.cache.peek('thing:2') === undefined, 5000)
  t.equal(await redis.command('EXISTS', 'thing:1', 'thing:2', 'stale:{thing:1}', 'stale:{thing:2}'), '0', 'gone from Redis, grace copies too')
  const again = await get(b, '/things/1')
  t.same([again.cache, again.body.call], ['MISS', 3], 'the next request runs the handler again')

  await b.cache.invalidate('thing:1')
  await waitFor(() => a.cache.peek('thing:1') === undefined, 5000)
  t.equal((await get(a, '/things/1')).cache, 'MISS', 'and by key')
  t.equal(calls.n, 4)
})

t.test('without Redis the route still caches in process', async (t) => {
  const calls: Calls = { n: 0 }
  const app = await instance(t, null, calls)
  const answers = await Promise.all([1, 2, 3].map(() => get(app, '/things/x')))
  t.equal(calls.n, 1)
  t.same(answers.map((r) => r.cache), ['MISS', 'MISS', 'MISS'])
  t.equal((await get(app, '/things/x')).cache, 'HIT')
})

t.test('a route whose cache options are wrong fails the boot with a clear message', async (t) => {
  const config = loadConfig({ ...TEST_ENV, LOG_LEVEL: 'warn', SCHEDULER_ENABLED: 'false' })
  const app = await buildApp(config, { logStream: new LogCapture() })
  t.teardown(() => app.close())
  t.throws(() => app.get('/bad', { config: { cache: { key: () => 'bad:1', ttl: 0 } } }, async () => ({})),
    /route \/bad: config\.cache\.ttl must be a positive number of seconds/)
})
