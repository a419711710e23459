/**
 * The admin debug endpoints against private redis-servers: who may call them, every INFO
 * figure with its type, the URL's password never shown, 200 with info null while Redis is
 * down, and the key listing through SCAN on a server whose KEYS command is renamed away.
 */
import t from 'tap'
import type { FastifyInstance } from 'fastify'
import { build, type TapTest } from './helper.js'
import { skipUnlessRedis, startRedis, type RedisProcess } from './helpers/redis-server.js'
import { AUTH_ENV, adminLogin, bearer, registerAndLogin } from './auth-helpers.js'
import { escapeGlob, parseInfo } from '../src/debug/redis-info.js'

const redisOpts = skipUnlessRedis()

interface DebugBody {
  redis: { status: string, mode: string, responseTime: number | null, url: string | null, info: Record<string, unknown> | null }
  fallback: { active: boolean, since: string, activations: number }
  timestamp: string
}

interface KeysBody {
  source: string
  prefix: string
  count: number
  complete: boolean
  keys: Array<{ key: string, type: string, ttlMs: number | null }>
}

async function setup (t: TapTest, opts: Parameters<typeof startRedis>[0] = {}, env: Record<string, string> = {}): Promise<{ app: FastifyInstance, redis: RedisProcess, admin: string }> {
  const redis = await startRedis(opts)
  t.teardown(() => redis.stop())
  const { app } = await build(t, { ...AUTH_ENV, REDIS_URL: redis.url, ...env })
  const admin = (await adminLogin(app)).token
  return { app, redis, admin }
}

const INFO_FIELDS: Record<string, string> = {
  version: 'string',
  uptimeSeconds: 'number',
  connectedClients: 'number',
  usedMemory: 'number',
  usedMemoryHuman: 'string',
  maxmemory: 'number',
  maxmemoryPolicy: 'string',
  keyspaceHits: 'number',
  keyspaceMisses: 'number',
  hitRate: 'number',
  instantaneousOpsPerSec: 'number',
  evictedKeys: 'number',
  expiredKeys: 'number',
  keys: 'number',
}

t.test('GET /api/debug/redis: 401 without a token, 403 for a user, 200 for an admin with every field', redisOpts, async (t) => {
  const password = 's3cret-Redis-pass'
  const { app, admin } = await setup(t, { password, args: ['--maxmemory', '64mb', '--maxmemory-policy', 'allkeys-lru'] })
  const user = await registerAndLogin(app, 'user@example.com')

  const anonymous = await app.inject('/api/debug/redis')
  t.equal(anonymous.statusCode, 401)
  t.equal(anonymous.json<{ error: string }>().error, 'Unauthorized')
  const forbidden = await app.inject({ url: '/api/debug/redis', headers: bearer(user.token) })
  t.equal(forbidden.statusCode, 403)
  t.same(forbidden.json(), { statusCode: 403, error: 'Forbidden', message: 'This endpoint requires the admin role' })

  const res = await app.inject({ url: '/api/debug/redis', headers: bearer(admin) })
  t.equal(res.statusCode, 200)
  t.notOk(res.body.includes(password), 'the Redis password never appears in the body')
  const body = res.json<DebugBody>()
  t.same(Object.keys(body).sort(), ['fallback', 'redis', 'timestamp'])
  t.equal(body.redis.status, 'connected')
  t.equal(body.redis.mode, 'redis')
  t.type(body.redis.responseTime, 'number')
  t.match(body.redis.url, /^redis:\/\/:\*\*\*@127\.0\.0\.1:\d+$/)
  const info = body.redis.info ?? {}
  t.same(Object.keys(info).sort(), Object.keys(INFO_FIELDS).sort(), 'exactly the documented INFO fields')
  for (const [field, type] of Object.entries(INFO_FIELDS)) t.type(info[field], type, `info.${field} is a ${type}`)
  t.match(info.version, /^\d+\.\d+\.\d+/)
  t.equal(info.maxmemory, 64 * 1024 * 1024)
  t.equal(info.maxmemoryPolicy, 'allkeys-lru')
  t.ok(Number(info.hitRate) >= 0 && Number(info.hitRate) <= 1, 'hitRate within 0..1')
  t.ok(Number(info.keys) >= 3, 'sessions and the index are counted')
  t.ok(Number(info.connectedClients) >= 1)
  t.same(body.fallback, { active: false, since: body.fallback.since, activations: 0 })
  t.ok(Number.isFinite(Date.parse(body.timestamp)))
})

t.test('GET /api/debug/redis while Redis is down: 200, info null, fallback active', redisOpts, async (t) => {
  const { app, redis, admin } = await setup(t, {}, { SESSION_FALLBACK: 'allow' })
  await redis.kill()
  const res = await app.inject({ url: '/api/debug/redis', headers: bearer(admin) })
  t.equal(res.statusCode, 200)
  const body = res.json<DebugBody>()
  t.equal(body.redis.info, null)
  t.equal(body.redis.responseTime, null)
  t.equal(body.redis.mode, 'fallback')
  t.equal(body.redis.status, 'disconnected')
  t.equal(body.fallback.active, true)
  t.ok(body.fallback.activations >= 1)
})

t.test('GET /api/debug/redis without REDIS_URL: disabled, url and info null', async (t) => {
  const { app } = await build(t, AUTH_ENV)
  const admin = (await adminLogin(app)).token
  const body = (await app.inject({ url: '/api/debug/redis', headers: bearer(admin) })).json<DebugBody>()
  t.match(body.redis, { status: 'disabled', mode: 'fallback', responseTime: null, url: null, info: null })
})

t.test('GET /api/debug/keys works on a server whose KEYS command is renamed away', redisOpts, async (t) => {
  const { app, redis, admin } = await setup(t, { args: ['--rename-command', 'KEYS', ''] })
  t.match(await redis.command('KEYS', '*'), /unknown command/i, 'KEYS really is unavailable on this server')
  await redis.command('SET', 'stock:AAPL', '{"price":1}', 'PX', '20000')
  await redis.command('SET', 'stock:MSFT', '{"price":2}')
  await redis.command('HSET', 'stock:meta', 'a', '1')
  await redis.command('SET', 'portfolio:1', 'x', 'EX', '300')

  const user = await registerAndLogin(app, 'nosy@example.com')
  t.equal((await app.inject({ url: '/api/debug/keys?prefix=stock:', headers: bearer(user.token) })).statusCode, 403)
  t.equal((await app.inject('/api/debug/keys?prefix=stock:')).statusCode, 401)

  const res = await app.inject({ url: '/api/debug/keys?prefix=stock:&limit=100', headers: bearer(admin) })
  t.equal(res.statusCode, 200)
  const body = res.json<KeysBody>()
  t.equal(body.source, 'redis')
  t.equal(body.complete, true)
  t.equal(body.count, 3)
  const byKey = Object.fromEntries(body.keys.map((k) => [k.key, k]))
  t.same(Object.keys(byKey).sort(), ['stock:AAPL', 'stock:MSFT', 'stock:meta'])
  t.equal(byKey['stock:AAPL']?.type, 'string')
  t.ok(Number(byKey['stock:AAPL']?.ttlMs) > 15_000 && Number(byKey['stock:AAPL']?.ttlMs) <= 20_000, 'TTL in ms')
  t.equal(byKey['stock:MSFT']?.ttlMs, null, 'no expiry → null')
  t.equal(byKey['stock:meta']?.type, 'hash')
})

t.test('GET /api/debug/keys: glob characters in the prefix match literally', redisOpts, async (t) => {
  const { app, redis, admin } = await setup(t)
  for (const key of ['odd:a*b', 'odd:axb', 'odd:a?c', 'odd:a[1]', 'odd:a1', 'odd:a\\z']) await redis.command('SET', key, '1', 'EX', '60')
  const list = async (prefix: string): Promise<string[]> => {
    const res = await app.inject({ url: `/api/debug/keys?prefix=${encodeURIComponent(prefix)}`, headers: bearer(admin) })
    return res.json<KeysBody>().keys.map((k) => k.key).sort()
  }
  t.same(await list('odd:a*'), ['odd:a*b'], '* is not a wildcard')
  t.same(await list('odd:a?'), ['odd:a?c'], '? is not a wildcard')
  t.same(await list('odd:a['), ['odd:a[1]'], '[ is not a class')
  t.same(await list('odd:a\\'), ['odd:a\\z'], 'a backslash is literal')
  t.same(await list('odd:a'), ['odd:a*b', 'odd:a1', 'odd:a?c', 'odd:a[1]', 'odd:a\\z', 'odd:axb'])
})

t.test('GET /api/debug/keys: limit bounded at 1000, partial listings say so', redisOpts, async (t) => {
  const { app, redis, admin } = await setup(t)
  const args: string[] = []
  for (let i = 0; i < 1500; i++) args.push(`bulk:${i}`, 'v')
  await redis.command('MSET', ...args)
  const get = (qs: string) => app.inject({ url: `/api/debug/keys?${qs}`, headers: bearer(admin) })
  const full = (await get('prefix=bulk:&limit=1000')).json<KeysBody>()
  t.equal(full.count, 1000)
  t.equal(full.keys.length, 1000)
  t.equal(full.complete, false)
  const few = (await get('prefix=bulk:&limit=5')).json<KeysBody>()
  t.equal(few.keys.length, 5)
  t.equal(few.complete, false)
  const defaults = (await get('prefix=bulk:')).json<KeysBody>()
  t.equal(defaults.keys.length, 100, 'limit defaults to 100')
  for (const qs of ['limit=1001', 'limit=0', 'limit=-1', 'limit=abc', `prefix=${'x'.repeat(257)}`]) {
    t.equal((await get(qs)).statusCode, 400, qs)
  }
})

t.test('GET /api/debug/keys with REDIS_KEY_PREFIX: scans inside the prefix, shows names without it', redisOpts, async (t) => {
  const { app, redis, admin } = await setup(t, {}, { REDIS_KEY_PREFIX: 'aic:' })
  await redis.command('SET', 'aic:stock:IBM', '1', 'EX', '20')
  await redis.command('SET', 'stock:IBM', 'someone else', 'EX', '20')
  const body = (await app.inject({ url: '/api/debug/keys?prefix=stock:', headers: bearer(admin) })).json<KeysBody>()
  t.same(body.keys.map((k) => k.key), ['stock:IBM'])
  t.equal(body.keys[0]?.type, 'string')
  t.ok(Number(body.keys[0]?.ttlMs) > 0, 'TYPE and PTTL went to the prefixed key')
  t.ok(Number(await redis.command('EXISTS', 'aic:session:' + (await adminLogin(app, 'admin2@example.com')).sid)) === 1, 'sessions use the prefix as well')
})

t.test('GET /api/debug/keys while Redis is down lists the in-process store', redisOpts, async (t) => {
  const { app, redis, admin } = await setup(t, {}, { SESSION_FALLBACK: 'allow' })
  await redis.kill()
  await app.store.set('stock:TSLA', '1', 20_000)
  const res = await app.inject({ url: '/api/debug/keys?prefix=stock:', headers: bearer(admin) })
  t.equal(res.statusCode, 200)
  const body = res.json<KeysBody>()
  t.equal(body.source, 'memory')
  t.same(body.keys.map((k) => k.key), ['stock:TSLA'])
  t.ok(Number(body.keys[0]?.ttlMs) > 0)
})

t.test('parseInfo: numbers as numbers, hitRate null before any lookup, keys of the right db', async (t) => {
  const text = [
    '# Server', 'redis_version:7.2.4', 'uptime_in_seconds:42', '',
    '# Clients', 'connected_clients:3',
    '# Memory', 'used_memory:1048576', 'used_memory_human:1.00M', 'maxmemory:0', 'maxmemory_policy:noeviction',
    '# Stats', 'instantaneous_ops_per_sec:7', 'keyspace_hits:0', 'keyspace_misses:0', 'evicted_keys:1', 'expired_keys:2',
    '# Keyspace', 'db0:keys=12,expires=3,avg_ttl=0', 'db2:keys=5,expires=0,avg_ttl=0',
  ].join('\r\n')
  const info = parseInfo(text)
  t.same(info, {
    version: '7.2.4', uptimeSeconds: 42, connectedClients: 3, usedMemory: 1_048_576, usedMemoryHuman: '1.00M',
    maxmemory: 0, maxmemoryPolicy: 'noeviction', keyspaceHits: 0, keyspaceMisses: 0, hitRate: null,
    instantaneousOpsPerSec: 7, evictedKeys: 1, expiredKeys: 2, keys: 12,
  })
  t.equal(parseInfo(text, 2).keys, 5)
  t.equal(parseInfo(text, 9).keys, 0)
  t.equal(parseInfo(text.replace('keyspace_hits:0', 'keyspace_hits:3').replace('keyspace_misses:0', 'keyspace_misses:1')).hitRate, 0.75)
  t.equal(escapeGlob('a*b?c[d]e\\f^g-h'), 'a\\*b\\?c\\[d\\]e\\\\f\\^g\\-h')
})
