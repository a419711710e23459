/**
 * Redis Sentinel: REDIS_SENTINELS + REDIS_SENTINEL_NAME (+ the two passwords) find the master
 * through real `redis-server --sentinel` processes (test/helpers/sentinel.ts); the state
 * machine, its log lines, /api/health and /api/debug/redis work as with REDIS_URL; passwords
 * never show; a killed master is replaced by the sentinels and the service follows.
 * The forced failover under load is in sentinel-failover.test.ts.
 */
import t from 'tap'
import { loadConfig } from '../src/config.js'
import { LOG_CONNECTED, LOG_CONNECTION_FAILED, LOG_OPERATION_FAILED } from '../src/engines/redis/state.js'
import { AUTH_ENV, adminLogin, bearer, registerAndLogin } from './auth-helpers.js'
import { build, configProblems, TEST_ENV, waitFor, type LogCapture, type TapTest } from './helper.js'
import { getFreePort, startRedis } from './helpers/redis-server.js'
import { skipUnlessRedis, startFakeSentinel, startSentinelTopology, type SentinelTopology } from './helpers/sentinel.js'

t.setTimeout(300_000)

const DATA_PASSWORD = 'data-node-secret-7f3a'
const SENTINEL_PASSWORD = 'sentinel-secret-91bc'

t.test('configuration: each half of Sentinel needs the other, and REDIS_URL is the other topology', async (t) => {
  t.match(configProblems({ REDIS_SENTINELS: '127.0.0.1:26379' }), [/^REDIS_SENTINEL_NAME: required with REDIS_SENTINELS/])
  t.match(configProblems({ REDIS_SENTINEL_NAME: 'mymaster' }), [/^REDIS_SENTINELS: required with REDIS_SENTINEL_NAME/])
  t.match(configProblems({ REDIS_SENTINELS: 'a:26379,b:26379', REDIS_SENTINEL_NAME: 'mymaster', REDIS_URL: 'redis://127.0.0.1:6380' }),
    [/^REDIS_URL: set either REDIS_URL .* or REDIS_SENTINELS .*, not both/])
  t.match(configProblems({ REDIS_URL: 'redis://127.0.0.1:6380', REDIS_PASSWORD: 'x' }), [/^REDIS_PASSWORD: only used with REDIS_SENTINELS; with REDIS_URL put the password in the URL/])
  t.match(configProblems({ REDIS_SENTINEL_PASSWORD: 'x' }), [/^REDIS_SENTINEL_PASSWORD: only used with REDIS_SENTINELS/])
  t.match(configProblems({ REDIS_SENTINELS: 'a:99999', REDIS_SENTINEL_NAME: 'm' }), [/^REDIS_SENTINELS: port out of range/])
  const malformed = configProblems({ REDIS_SENTINELS: 'redis://a:26379', REDIS_SENTINEL_NAME: 'm', REDIS_SENTINEL_PASSWORD: SENTINEL_PASSWORD })
  t.match(malformed, [/^REDIS_SENTINELS: /], 'a URL is not a host:port list')
  const all = configProblems({ REDIS_SENTINEL_NAME: 'mymaster', REDIS_SENTINEL_PASSWORD: SENTINEL_PASSWORD, REDIS_PASSWORD: DATA_PASSWORD })
  t.notMatch(all.join('\n'), new RegExp(`${SENTINEL_PASSWORD}|${DATA_PASSWORD}`), 'no password in the messages')
  const ok = loadConfig({ ...TEST_ENV, REDIS_SENTINELS: ' 10.0.0.1:26379 , sentinel-b:26380', REDIS_SENTINEL_NAME: 'mymaster' })
  t.equal(ok.REDIS_SENTINEL_NAME, 'mymaster')
})

function env (topo: SentinelTopology, extra: Record<string, string> = {}): Record<string, string> {
  return { ...AUTH_ENV, RATE_LIMIT_MAX: '1000000', REDIS_SENTINELS: topo.sentinelsEnv, REDIS_SENTINEL_NAME: topo.name, ...extra }
}

function noSecrets (t: TapTest, logs: LogCapture, ...secrets: string[]): void {
  for (const secret of secrets) t.notOk(logs.text.includes(secret), `the logs never show ${secret.slice(0, 4)}…`)
}

t.test('boot through password-protected sentinels: connected to the master, writes land there, health and debug show it', skipUnlessRedis(), async (t) => {
  const topo = await startSentinelTopology({ password: DATA_PASSWORD, sentinelPassword: SENTINEL_PASSWORD })
  t.teardown(() => topo.stop())
  await topo.waitSettled(60_000)
  const masterPort = await topo.masterPort()
  const replicaPort = topo.nodes.find((n) => n.port !== masterPort)!.port

  const { app, logs } = await build(t, env(topo, { REDIS_PASSWORD: DATA_PASSWORD, REDIS_SENTINEL_PASSWORD: SENTINEL_PASSWORD }))
  await waitFor(() => app.redisState.available, 30_000)
  t.equal(app.redisState.status, 'connected')
  t.equal(app.redisState.masterAddress, `127.0.0.1:${masterPort}`, 'the socket reaches the master the sentinels name')
  t.equal(logs.count(LOG_CONNECTED), 1, 'one ✅ line')
  t.equal(logs.withMsg(LOG_CONNECTED)[0]!.master, `127.0.0.1:${masterPort}`, 'which names the master')

  const quote = await app.inject({ method: 'GET', url: '/api/stocks/AAPL' })
  t.equal(quote.statusCode, 200)
  t.equal(quote.headers['x-cache'], 'MISS')
  const { sid, token } = await registerAndLogin(app, 'sentinel-boot@example.com')
  t.equal(await topo.node(masterPort).command('EXISTS', 'stock:AAPL', `session:${sid}`), '2', 'the quote and the session are on the master')
  await waitFor(async () => await topo.node(replicaPort).command('EXISTS', `session:${sid}`) === '1', 30_000)
  t.pass('and replicated to the replica')
  t.equal((await app.inject({ method: 'GET', url: '/api/auth/me', headers: bearer(token) })).statusCode, 200)

  const health = await app.inject({ method: 'GET', url: '/api/health' })
  t.equal(health.statusCode, 200)
  t.match(health.json(), { redis: { status: 'connected', mode: 'redis' } })

  const admin = await adminLogin(app)
  const debug = await app.inject({ method: 'GET', url: '/api/debug/redis', headers: bearer(admin.token) })
  t.equal(debug.statusCode, 200)
  const redis = debug.json<{ redis: { url: string, sentinel: { name: string, sentinels: string[], master: string } } }>().redis
  t.same(redis.sentinel, { name: topo.name, sentinels: topo.sentinelsEnv.split(','), master: `127.0.0.1:${masterPort}` })
  t.equal(redis.url, `sentinel://${topo.sentinelsEnv}/${topo.name}`)
  t.notOk(debug.body.includes(DATA_PASSWORD) || debug.body.includes(SENTINEL_PASSWORD), 'no password in /api/debug/redis')
  noSecrets(t, logs, DATA_PASSWORD, SENTINEL_PASSWORD)
})

t.test('wrong passwords: the service boots in fallback, says why once, and never shows a password', skipUnlessRedis(), async (t) => {
  const topo = await startSentinelTopology({ password: DATA_PASSWORD, sentinelPassword: SENTINEL_PASSWORD })
  t.teardown(() => topo.stop())
  await topo.waitSettled(60_000)

  const wrongData = 'wrong-data-password-55'
  const data = await build(t, env(topo, { REDIS_PASSWORD: wrongData, REDIS_SENTINEL_PASSWORD: SENTINEL_PASSWORD, REDIS_CONNECT_TIMEOUT_MS: '1000' }))
  await waitFor(() => data.app.redisState.lastFailure !== null, 30_000)
  t.equal(data.app.redisState.mode, 'fallback')
  t.equal(data.app.redisState.lastFailure?.class, 'auth', 'the data nodes refused the password')
  t.equal(data.logs.count(LOG_CONNECTION_FAILED), 1, 'one ❌ line')
  t.equal(data.logs.count(LOG_CONNECTED), 0)
  t.equal((await data.app.inject({ method: 'GET', url: '/api/stocks/MSFT' })).statusCode, 200, 'requests are served from the fallback')
  noSecrets(t, data.logs, wrongData, DATA_PASSWORD, SENTINEL_PASSWORD)

  const wrongSentinel = 'wrong-sentinel-password-66'
  const sentinel = await build(t, env(topo, { REDIS_PASSWORD: DATA_PASSWORD, REDIS_SENTINEL_PASSWORD: wrongSentinel, REDIS_CONNECT_TIMEOUT_MS: '1000' }))
  await waitFor(() => sentinel.app.redisState.lastFailure !== null, 30_000)
  t.equal(sentinel.app.redisState.mode, 'fallback')
  t.match(sentinel.app.redisState.lastError, /All sentinels are unreachable/, 'no sentinel would answer')
  t.equal(sentinel.logs.count(LOG_CONNECTED), 0)
  noSecrets(t, sentinel.logs, wrongSentinel, DATA_PASSWORD, SENTINEL_PASSWORD)
})

t.test('no sentinel reachable: boot does not wait past the connect timeout, one ❌', skipUnlessRedis(), async (t) => {
  const ports = await Promise.all([getFreePort(), getFreePort(), getFreePort()])
  const started = performance.now()
  const { app, logs } = await build(t, { ...AUTH_ENV, REDIS_SENTINELS: ports.map((p) => `127.0.0.1:${p}`).join(','), REDIS_SENTINEL_NAME: 'mymaster', REDIS_CONNECT_TIMEOUT_MS: '1000' })
  const ms = performance.now() - started
  t.ok(ms < 30_000, `booted in ${ms.toFixed(0)} ms`)
  t.equal(app.redisState.mode, 'fallback')
  await waitFor(() => logs.count(LOG_CONNECTION_FAILED) === 1, 10_000)
  t.equal((await app.inject({ method: 'GET', url: '/api/health' })).json<{ redis: { mode: string } }>().redis.mode, 'fallback')
})

t.test('the master is killed (SIGKILL): the sentinels promote the replica and the service follows, one ❌/✅ pair', skipUnlessRedis(), async (t) => {
  const topo = await startSentinelTopology()
  t.teardown(() => topo.stop())
  await topo.waitSettled(60_000)
  const oldPort = await topo.masterPort()
  const { app, logs } = await build(t, env(topo))
  await waitFor(() => app.redisState.available, 30_000)
  const { token } = await registerAndLogin(app, 'sentinel-kill@example.com')

  await topo.node(oldPort).kill('SIGKILL')
  const newPort = await topo.waitForNewMaster(oldPort, 90_000)
  t.not(newPort, oldPort)
  // A request meanwhile is answered (from the fallback while no master is reachable).
  const during = await app.inject({ method: 'GET', url: '/api/stocks/NVDA' })
  t.equal(during.statusCode, 200)
  await waitFor(() => app.redisState.available && app.redisState.masterAddress === `127.0.0.1:${newPort}`, 60_000)
    .catch((err: Error) => { t.comment(logs.text); t.comment(JSON.stringify(app.redisState.snapshot())); throw err })
  t.pass('the service writes to the new master')
  const { sid } = await registerAndLogin(app, 'sentinel-after-kill@example.com')
  t.equal(await topo.node(newPort).command('EXISTS', `session:${sid}`), '1', 'a session made after the failover is on the new master')
  t.equal((await app.inject({ method: 'GET', url: '/api/auth/me', headers: bearer(token) })).statusCode, 200, 'a session made before (and replicated) still works')
  t.equal(logs.count(LOG_CONNECTION_FAILED) + logs.count(LOG_OPERATION_FAILED), 1, 'one ❌/⚠️ line for the outage')
  t.equal(logs.count(LOG_CONNECTED), 2, 'and one ✅ after it (plus the one at boot)')
})

t.test('READONLY on the node a sentinel named (a stale answer): the client asks the sentinels again and follows, one ⚠️/✅ pair', skipUnlessRedis(), async (t) => {
  const master = await startRedis()
  t.teardown(() => master.stop())
  const replica = await startRedis({ args: ['--replicaof', '127.0.0.1', String(master.port)] })
  t.teardown(() => replica.stop())
  const fake = await startFakeSentinel(master.port)
  t.teardown(() => fake.close())
  // Without the ready check the role is not checked at connect: the first write tells.
  const { app, logs } = await build(t, { ...AUTH_ENV, REDIS_SENTINELS: `127.0.0.1:${fake.port}`, REDIS_SENTINEL_NAME: 'mymaster', REDIS_READY_CHECK: 'false' })
  await waitFor(() => app.redisState.available, 30_000)
  t.equal(app.redisState.masterAddress, `127.0.0.1:${master.port}`)

  // The sentinel now names the replica, and the connection drops (as a demotion's CLIENT KILL does).
  fake.point(replica.port)
  await master.command('CLIENT', 'KILL', 'TYPE', 'normal')
  await waitFor(() => app.redisState.masterAddress === `127.0.0.1:${replica.port}` || logs.count(LOG_OPERATION_FAILED) > 0, 30_000)
  // The replica refuses the write probe (READONLY): the client drops it and asks again.
  const lookupsBefore = fake.lookups
  fake.point(master.port)
  await waitFor(() => app.redisState.available && app.redisState.masterAddress === `127.0.0.1:${master.port}`, 30_000)
  t.ok(app.redisState.masterLookups >= 1, `${app.redisState.masterLookups} READONLY reply(ies) made the client ask the sentinel again`)
  t.ok(fake.lookups > lookupsBefore, 'the sentinel was asked again')
  const { sid } = await registerAndLogin(app, 'readonly-follow@example.com')
  t.equal(await master.command('EXISTS', `session:${sid}`), '1', 'writes land on the master again')
  t.ok(logs.count(LOG_CONNECTED) <= 2, `${logs.count(LOG_CONNECTED)} ✅ lines (boot and the return)`)
})

t.test('+switch-master while the client is asking a sentinel (ioredis 6.0.0 gives up there): the service still reaches the new master', skipUnlessRedis(), async (t) => {
  const oldMaster = await startRedis()
  t.teardown(() => oldMaster.stop())
  const newMaster = await startRedis()
  t.teardown(() => newMaster.stop())
  const fake = await startFakeSentinel(oldMaster.port)
  t.teardown(() => fake.close())
  // A long sentinel command timeout keeps the held lookup open while the switch arrives.
  const { app } = await build(t, { ...AUTH_ENV, REDIS_SENTINELS: `127.0.0.1:${fake.port}`, REDIS_SENTINEL_NAME: 'mymaster', REDIS_CONNECT_TIMEOUT_MS: '30000' })
  await waitFor(() => app.redisState.available && app.cache.stats().invalidation.subscribed && fake.subscribers > 0, 30_000)
  t.equal(app.redisState.masterAddress, `127.0.0.1:${oldMaster.port}`)

  // Both connections drop (the shared one and the cache's subscriber); each asks the sentinel
  // again, and those answers are held.
  fake.hold()
  fake.point(newMaster.port)
  await oldMaster.command('CLIENT', 'KILL', 'TYPE', 'normal')
  await oldMaster.command('CLIENT', 'KILL', 'TYPE', 'pubsub')
  // Two held and the shared one still 'connecting': each client is inside its lookup (not in a
  // reconnect delay, where a switch is harmless).
  await waitFor(() => fake.pending >= 2 && app.redisState.client?.status === 'connecting', 30_000)
  // The sentinels announce the switch meanwhile: the failover detector closes its subscriptions
  // and stops the connector's lookup in progress.
  fake.switchMaster()
  await waitFor(() => fake.subscribers === 0, 30_000)
  fake.release()
  await waitFor(() => app.redisState.available && app.redisState.masterAddress === `127.0.0.1:${newMaster.port}`, 30_000)
    .catch((err: Error) => { t.comment(JSON.stringify(app.redisState.snapshot())); throw err })
  await waitFor(() => app.cache.stats().invalidation.subscribed, 30_000)
  t.pass('the cache subscribes again, through the new master')
  t.ok(app.redisState.sentinelRestarts >= 2, `both ended connections were started again (${app.redisState.sentinelRestarts})`)
  const { sid } = await registerAndLogin(app, 'switch-mid-lookup@example.com')
  t.equal(await newMaster.command('EXISTS', `session:${sid}`), '1', 'writes land on the new master')
})
