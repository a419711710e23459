/**
 * Redis Cluster: REDIS_CLUSTER_NODES against a private 3-master cluster (test/helpers/cluster.ts).
 * Two app instances boot, say connected once, serve every route with keys on all three
 * masters, never switch to the fallback and never see MOVED or CROSSSLOT; the rate limit is
 * exact across them; a logout on one revokes on the other; the debug routes see every node.
 * A killed master is in cluster-failover.test.ts.
 */
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { Redis } from 'ioredis'
import t from 'tap'
import { loadConfig, parseSentinels } from '../src/config.js'
import { LOG_COMMAND_REFUSED, LOG_CONNECTED, LOG_CONNECTION_FAILED, LOG_OPERATION_FAILED } from '../src/engines/redis/state.js'
import { AUTH_ENV, adminLogin, bearer, login, me, register } from './auth-helpers.js'
import { build, configProblems, TEST_ENV, waitFor, type TestApp } from './helper.js'
import { clusterNodes, skipUnlessCluster, startRedisCluster } from './helpers/cluster.js'

t.setTimeout(300_000)

const PASSWORD = 'cluster-node-secret-4c1d'

t.test('configuration: REDIS_CLUSTER_NODES is a third topology, never with REDIS_URL or REDIS_SENTINELS', async (t) => {
  const nodes = '10.0.0.1:7000,10.0.0.2:7000'
  t.match(configProblems({ REDIS_CLUSTER_NODES: nodes, REDIS_URL: 'redis://127.0.0.1:6380' }),
    [/^REDIS_CLUSTER_NODES: set either REDIS_CLUSTER_NODES .* or REDIS_URL .*, not both/])
  t.match(configProblems({ REDIS_CLUSTER_NODES: nodes, REDIS_SENTINELS: 'a:26379', REDIS_SENTINEL_NAME: 'm' }),
    [/^REDIS_CLUSTER_NODES: set either REDIS_CLUSTER_NODES .* or REDIS_SENTINELS .*, not both/])
  t.match(configProblems({ REDIS_CLUSTER_NODES: 'a:99999' }), [/^REDIS_CLUSTER_NODES: port out of range/])
  t.match(configProblems({ REDIS_CLUSTER_NODES: 'redis://a:7000' }), [/^REDIS_CLUSTER_NODES: /], 'a URL is not a host:port list')
  t.same(configProblems({ REDIS_CLUSTER_NODES: nodes, REDIS_PASSWORD: PASSWORD }), [], 'REDIS_PASSWORD is the nodes\' password')
  const ok = loadConfig({ ...TEST_ENV, REDIS_CLUSTER_NODES: '10.0.0.1:7000 , redis-b:7001' })
  t.same(parseSentinels(ok.REDIS_CLUSTER_NODES!), [{ host: '10.0.0.1', port: 7000 }, { host: 'redis-b', port: 7001 }])
})

/** The keys (up to 1000) a master holds. */
async function keysOn (address: string, password: string | undefined): Promise<string[]> {
  const [host, port] = address.split(':') as [string, string]
  const client = new Redis({ host, port: Number(port), password, lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null })
  client.on('error', () => {})
  try {
    await client.connect()
    return (await client.scan('0', 'COUNT', 1000))[1]
  } finally {
    client.disconnect()
  }
}

function tempDb (t: { teardown (fn: () => void): void }): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'aic-cluster-'))
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  return path.join(dir, 'shared.db')
}

t.test('two instances on a 3-master cluster', skipUnlessCluster(), async (t) => {
  const cluster = await startRedisCluster({ masters: 3, password: PASSWORD })
  t.teardown(() => cluster.stop())
  const env = { ...AUTH_ENV, ...cluster.env, DATABASE_PATH: tempDb(t), RATE_LIMIT_MAX: '1000000', REDIS_COMMAND_TIMEOUT_MS: '2000' }
  const apps: TestApp[] = [await build(t, env), await build(t, env)]
  const [a, b] = apps as [TestApp, TestApp]
  for (const { app } of apps) await waitFor(() => app.redisState.available, 30_000)

  t.test('boot: connected once, naming the three masters; no password shown', async (t) => {
    const masters = (await clusterNodes(cluster)).filter((n) => n.role === 'master').map((n) => n.address).sort()
    t.equal(masters.length, 3)
    for (const { app, logs } of apps) {
      t.equal(logs.count(LOG_CONNECTED), 1, 'one ✅ line')
      t.same(logs.withMsg(LOG_CONNECTED)[0]!.masters, masters, 'which names the masters')
      t.equal(app.redisState.url, `cluster://${cluster.env.REDIS_CLUSTER_NODES}`)
      t.notOk(logs.text.includes(PASSWORD), 'the password is never logged')
    }
  })

  t.test('every route works, keys land on all three masters, and nothing switches to the fallback', async (t) => {
    const users = []
    for (let i = 0; i < 6; i++) {
      const email = `cluster-user-${i}@example.com`
      await register(i % 2 === 0 ? a.app : b.app, email)
      users.push(await login(i % 2 === 0 ? b.app : a.app, email))
    }
    const tickers = ['AAPL', 'MSFT', 'NVDA', 'GOOGL', 'AMZN', 'META', 'TSLA', 'NFLX']
    for (const [i, ticker] of tickers.entries()) {
      const app = (i % 2 === 0 ? a : b).app
      t.equal((await app.inject({ method: 'GET', url: `/api/stocks/${ticker}` })).statusCode, 200, `GET /api/stocks/${ticker}`)
    }
    t.equal((await a.app.inject({ method: 'GET', url: `/api/stocks?tickers=${tickers.join(',')}` })).statusCode, 200, 'GET /api/stocks (several)')
    // The cache's shared tier works on a cluster: B reads from Redis what A loaded (keys on
    // several slots in one batch), and a prefix invalidation reaches the keys on every master.
    const l2Before = b.app.cache.stats().caches.quotes?.hitsL2 ?? 0
    const batch = await b.app.inject({ method: 'GET', url: `/api/stocks?tickers=${tickers.filter((_x, i) => i % 2 === 0).join(',')}` })
    t.equal(batch.statusCode, 200, 'GET /api/stocks (several) on B')
    t.equal((b.app.cache.stats().caches.quotes?.hitsL2 ?? 0) - l2Before, 4, "B's batch read the four quotes A loaded from Redis")
    t.equal(await a.app.cache.invalidatePrefix('stock:'), true, 'a prefix invalidation')
    for (const master of (await clusterNodes(cluster)).filter((n) => n.role === 'master')) {
      t.same((await keysOn(master.address, PASSWORD)).filter((k) => k.startsWith('stock:')), [], `no stock: key left on ${master.address}`)
    }
    for (const [i, user] of users.entries()) {
      const app = (i % 2 === 0 ? a : b).app
      t.equal((await me(app, user.token)).statusCode, 200, '/me on either instance')
      const buy = await app.inject({ method: 'POST', url: '/api/portfolio/transactions', headers: bearer(user.token), payload: { ticker: tickers[i]!, side: 'buy', shares: 2, price: 100 } })
      t.equal(buy.statusCode, 201, `buy: ${buy.body}`)
      t.equal((await app.inject({ method: 'GET', url: '/api/portfolio', headers: bearer(user.token) })).statusCode, 200)
      t.equal((await app.inject({ method: 'GET', url: '/api/portfolio/history', headers: bearer(user.token) })).statusCode, 200)
    }
    const refreshed = await a.app.inject({ method: 'POST', url: '/api/auth/refresh', headers: bearer(users[0]!.token) })
    t.equal(refreshed.statusCode, 200, 'refresh (the compare-and-set, then the index slide)')
    const newToken = refreshed.json<{ token: string }>().token
    t.equal((await me(b.app, newToken)).statusCode, 200, 'the new token works on the other instance')
    t.equal((await me(b.app, users[0]!.token)).statusCode, 401, 'and the replaced one is refused there')
    const everywhere = await b.app.inject({ method: 'DELETE', url: '/api/auth/sessions', headers: bearer(users[1]!.token) })
    t.equal(everywhere.statusCode, 200, `logout everywhere: ${everywhere.body}`)
    t.equal((await me(a.app, users[1]!.token)).statusCode, 401)

    const masters = (await clusterNodes(cluster)).filter((n) => n.role === 'master')
    for (const master of masters) {
      const keys = await keysOn(master.address, PASSWORD)
      t.ok(keys.some((k) => /^(session|user_sessions|stock|portfolio|rate_limit):/.test(k)), `master ${master.address} holds service keys (${keys.slice(0, 4).join(', ')}…)`)
    }
    for (const { app, logs } of apps) {
      t.equal(app.redisState.activations, 0, 'no switch to the fallback')
      t.equal(app.redisState.mode, 'redis')
      t.equal(logs.count(LOG_OPERATION_FAILED) + logs.count(LOG_CONNECTION_FAILED), 0, 'no ⚠️/❌ line')
      t.notMatch(logs.text, /MOVED|ASK \d/, 'no redirection reached a caller')
      const crossslot = logs.withMsg(LOG_COMMAND_REFUSED).filter((l) => /CROSSSLOT|same slot/.test(String(l.reason)))
      t.same(crossslot, [], 'no CROSSSLOT, the cache included')
    }
  })

  t.test('the rate limit is exact across the two instances, with clients on several slots', async (t) => {
    const limited = { ...env, RATE_LIMIT_MAX: '10' }
    const c = await build(t, limited)
    const d = await build(t, limited)
    await waitFor(() => c.app.redisState.available && d.app.redisState.available, 30_000)
    const clients = Array.from({ length: 6 }, (_v, i) => `198.51.100.${60 + i}`)
    const results = await Promise.all(clients.flatMap((ip) => Array.from({ length: 16 }, async (_v, i) =>
      (i % 2 === 0 ? c : d).app.inject({ method: 'GET', url: '/api/stocks/AAPL', remoteAddress: ip }).then((r) => ({ ip, code: r.statusCode })))))
    for (const ip of clients) {
      const codes = results.filter((r) => r.ip === ip).map((r) => r.code)
      t.equal(codes.filter((code) => code === 200).length, 10, `${ip}: exactly 10 admitted of 16`)
      t.equal(codes.filter((code) => code === 429).length, 6)
    }
    t.equal(c.app.redisState.activations + d.app.redisState.activations, 0, 'no switch to the fallback')
  })

  t.test('a logout on one instance revokes the token on the other', async (t) => {
    await register(a.app, 'cluster-logout@example.com')
    const user = await login(a.app, 'cluster-logout@example.com')
    t.equal((await me(b.app, user.token)).statusCode, 200)
    t.equal((await b.app.inject({ method: 'POST', url: '/api/auth/logout', headers: bearer(user.token) })).statusCode, 204)
    t.equal((await me(a.app, user.token)).statusCode, 401, 'refused on the instance that issued it')
    t.equal((await me(b.app, user.token)).statusCode, 401)
  })

  t.test('/api/debug/keys lists keys from every master; /api/debug/redis shows every node', async (t) => {
    const admin = await adminLogin(a.app, 'cluster-admin@example.com')
    const listed = await a.app.inject({ method: 'GET', url: '/api/debug/keys?limit=1000', headers: bearer(admin.token) })
    t.equal(listed.statusCode, 200)
    const body = listed.json<{ source: string, keys: Array<{ key: string }>, complete: boolean }>()
    t.equal(body.source, 'redis')
    t.equal(body.complete, true)
    const listedKeys = new Set(body.keys.map((k) => k.key))
    const nodes = await clusterNodes(cluster)
    for (const master of nodes.filter((n) => n.role === 'master')) {
      const held = (await keysOn(master.address, PASSWORD)).filter((k) => !k.startsWith('health:probe:'))
      t.ok(held.length > 0, `${master.address} holds keys`)
      t.ok(held.some((k) => listedKeys.has(k)), `the listing has keys of ${master.address}`)
    }

    const debug = await a.app.inject({ method: 'GET', url: '/api/debug/redis', headers: bearer(admin.token) })
    t.equal(debug.statusCode, 200)
    const redis = debug.json<{ redis: { url: string, cluster: { seeds: string[], nodes: Array<{ address: string, role: string, slots: Array<[number, number]>, up: boolean }> } } }>().redis
    t.same(redis.cluster.seeds, cluster.env.REDIS_CLUSTER_NODES.split(','))
    const masters = redis.cluster.nodes.filter((n) => n.role === 'master')
    t.equal(masters.length, 3, '3 masters')
    t.ok(masters.every((n) => n.up), 'all up')
    t.equal(masters.reduce((sum, n) => sum + n.slots.reduce((s, [from, to]) => s + to - from + 1, 0), 0), 16384, 'serving every slot between them')
    t.notOk(debug.body.includes(PASSWORD))
  })

  t.test('a message published on one instance reaches the subscribers of both (PUBLISH is broadcast across the cluster)', async (t) => {
    // The cache's invalidation channel, as its coherence layer publishes on it; the subscriber
    // is the client's duplicate, a Cluster of its own. (The cache's own invalidation call is
    // not used here: its scripts are multi-key and are being rewritten for a cluster.)
    const admin = await adminLogin(a.app, 'cluster-admin-2@example.com')
    const received = async (app: TestApp['app']): Promise<number> =>
      (await app.inject({ method: 'GET', url: '/api/debug/cache', headers: bearer(admin.token) })).json<{ invalidation: { received: number, subscribed: boolean } }>().invalidation.received
    const subscribed = async (app: TestApp['app']): Promise<boolean> =>
      (await app.inject({ method: 'GET', url: '/api/debug/cache', headers: bearer(admin.token) })).json<{ invalidation: { subscribed: boolean } }>().invalidation.subscribed
    await waitFor(async () => await subscribed(a.app) && await subscribed(b.app), 30_000, 200)
    const before = [await received(a.app), await received(b.app)]
    await a.app.redis!.publish('cache:invalidate', JSON.stringify({ o: 'another-instance', k: ['stock:IBM'] }))
    await waitFor(async () => await received(a.app) > before[0]! && await received(b.app) > before[1]!, 15_000, 200)
    t.pass('both instances received it')
  })
})
