/**
 * GET /api/debug/locks and /api/debug/jobs: 401 without a token, 403 for a user, 200 for
 * an admin; held locks with owner and TTL found by SCAN (on a server whose KEYS command
 * is renamed away) under the key prefix; in-process locks without Redis; each job's
 * schedule, last and next run, duration, error and counters.
 */
import t from 'tap'
import { build, waitFor } from './helper.js'
import { skipUnlessRedis, startRedis } from './helpers/redis-server.js'
import { AUTH_ENV, adminLogin, bearer, registerAndLogin } from './auth-helpers.js'

const redisOpts = skipUnlessRedis()

interface LocksBody {
  instance: string
  backend: string
  masters: Array<{ name: string, reachable: boolean }>
  complete: boolean
  locks: Array<{ resource: string, owner: string | null, instance: string | null, ttlMs: number | null, source: string, masters: number }>
  stats: Record<string, number>
}

interface JobsBody {
  instance: string
  enabled: boolean
  jobs: Array<Record<string, unknown> & { name: string }>
  stats: { runs: number, skips: number, failures: number, jobs: number }
}

t.test('both endpoints: 401 without a token, 403 for a user, 200 for an admin', async (t) => {
  const { app } = await build(t, AUTH_ENV)
  const user = await registerAndLogin(app, 'user@example.com')
  const admin = await adminLogin(app)
  for (const url of ['/api/debug/locks', '/api/debug/jobs']) {
    const anonymous = await app.inject(url)
    t.equal(anonymous.statusCode, 401, `${url} without a token`)
    t.equal(anonymous.json<{ error: string }>().error, 'Unauthorized')
    const forbidden = await app.inject({ url, headers: bearer(user.token) })
    t.equal(forbidden.statusCode, 403, `${url} for a user`)
    t.same(forbidden.json(), { statusCode: 403, error: 'Forbidden', message: 'This endpoint requires the admin role' })
    t.equal((await app.inject({ url, headers: bearer(admin.token) })).statusCode, 200, `${url} for an admin`)
  }
})

t.test('held locks with owner and TTL, found by SCAN under the key prefix (KEYS renamed away)', redisOpts, async (t) => {
  const redis = await startRedis({ args: ['--rename-command', 'KEYS', ''] })
  t.teardown(() => redis.stop())
  const { app } = await build(t, { ...AUTH_ENV, REDIS_URL: redis.url, REDIS_KEY_PREFIX: 'aic:', SCHEDULER_ENABLED: 'false' })
  const admin = (await adminLogin(app)).token
  await redis.command('SET', 'other:lock:not-ours', 'x', 'PX', '60000') // another prefix: not listed
  await redis.command('SET', 'aic:stock:AAPL', 'x', 'PX', '60000') // not a lock
  let release!: () => void
  const holding = app.locks.using('lock:portfolio:u1', 30_000, async () => new Promise<void>((resolve) => { release = resolve }))
  await waitFor(async () => (await redis.command('EXISTS', 'aic:lock:portfolio:u1')) === '1', 2000)

  const res = await app.inject({ url: '/api/debug/locks', headers: bearer(admin) })
  t.equal(res.statusCode, 200)
  const body = res.json<LocksBody>()
  t.equal(body.backend, 'redlock')
  t.same(body.masters, [{ name: redis.url, reachable: true }])
  t.equal(body.complete, true)
  t.equal(body.locks.length, 1, 'only lock:* keys under our prefix')
  const [lock] = body.locks
  t.equal(lock?.resource, 'lock:portfolio:u1')
  t.equal(lock?.owner, await redis.command('GET', 'aic:lock:portfolio:u1'))
  t.equal(lock?.instance, body.instance, 'the owner names this instance')
  t.match(body.instance, /^[^:]+:\d+$/)
  t.ok((lock?.ttlMs ?? 0) > 20_000 && (lock?.ttlMs ?? 0) <= 30_000, `TTL ${lock?.ttlMs}`)
  t.match(lock, { source: 'redis', masters: 1 })
  t.match(body.stats, { acquisitions: 1, failures: 0, held: 1 })
  release()
  await holding
  const after = await app.inject({ url: '/api/debug/locks', headers: bearer(admin) })
  t.same(after.json<LocksBody>().locks, [], 'released locks are gone')
})

t.test('without Redis the in-process locks are listed', async (t) => {
  const { app } = await build(t, { ...AUTH_ENV, SCHEDULER_ENABLED: 'false' })
  const admin = (await adminLogin(app)).token
  let release!: () => void
  const holding = app.locks.using('lock:portfolio:local', 10_000, async () => new Promise<void>((resolve) => { release = resolve }))
  const body = (await app.inject({ url: '/api/debug/locks', headers: bearer(admin) })).json<LocksBody>()
  t.equal(body.backend, 'local')
  t.same(body.masters, [])
  t.match(body.locks, [{ resource: 'lock:portfolio:local', source: 'local', instance: body.instance, masters: 1 }])
  t.ok((body.locks[0]?.ttlMs ?? 0) > 9000)
  release()
  await holding
})

t.test('jobs: schedule, last and next run, duration, last error and counters', async (t) => {
  const { app } = await build(t, AUTH_ENV)
  const admin = (await adminLogin(app)).token
  let calls = 0
  app.scheduler.add({ name: 'debug-demo', every: 150, run: async () => { calls++; if (calls === 1) throw new Error('first run fails') } })
  await waitFor(() => calls >= 1, 3000)
  await waitFor(() => (app.scheduler.jobs().find((j) => j.name === 'debug-demo')?.running === false), 1000)
  const res = await app.inject({ url: '/api/debug/jobs', headers: bearer(admin) })
  t.equal(res.statusCode, 200)
  const body = res.json<JobsBody>()
  t.equal(body.enabled, true)
  const job = body.jobs.find((j) => j.name === 'debug-demo')
  t.match(job, {
    name: 'debug-demo',
    schedule: 'every 150 ms',
    lockTtlMs: 150,
    running: false,
    lastError: 'first run fails',
    failures: 1,
    skips: 0,
    ranElsewhere: 0,
    lastSkipReason: null,
  })
  t.ok((job?.runs as number) >= 1)
  t.type(job?.lastDurationMs, 'number')
  t.ok(Date.parse(String(job?.lastRunAt)) <= Date.now())
  t.ok(Date.parse(String(job?.nextRunAt)) > Date.parse(String(job?.lastRunAt)), 'the next run is after the last')
  t.ok(body.stats.jobs >= 1)
})

interface ReleasedBody { resource: string, backend: string, owner: string | null, masters: number }

/** Holds `resource` with locks.using until the returned release is called. */
function hold (app: import('fastify').FastifyInstance, resource: string): { release: () => Promise<void> } {
  let done!: () => void
  const holding = app.locks.using(resource, 30_000, async () => new Promise<void>((resolve) => { done = resolve }))
  return { release: async () => { done(); await holding } }
}

const forceRelease = (app: import('fastify').FastifyInstance, resource: string, token?: string) =>
  app.inject({ method: 'DELETE', url: `/api/debug/locks/${encodeURIComponent(resource)}`, ...(token !== undefined ? { headers: bearer(token) } : {}) })

t.test('DELETE /api/debug/locks/:resource: admin only; only lock: keys; 404 when not held', async (t) => {
  const { app } = await build(t, { ...AUTH_ENV, SCHEDULER_ENABLED: 'false' })
  const user = await registerAndLogin(app, 'user@example.com')
  const admin = (await adminLogin(app)).token
  t.equal((await forceRelease(app, 'lock:portfolio:u1')).statusCode, 401)
  t.equal((await forceRelease(app, 'lock:portfolio:u1', user.token)).statusCode, 403)
  for (const outside of ['session:abc', 'stock:AAPL', 'lockportfolio', 'rate_limit:ip:1.2.3.4']) {
    const res = await forceRelease(app, outside, admin)
    t.equal(res.statusCode, 400, `${outside} is refused`)
    t.match(res.json(), { statusCode: 400, error: 'Bad Request', message: /^Only locks can be released: the key must start with lock:/ })
  }
  const missing = await forceRelease(app, 'lock:portfolio:nobody', admin)
  t.equal(missing.statusCode, 404)
  t.same(missing.json(), { statusCode: 404, error: 'Not Found', message: 'No lock is held on lock:portfolio:nobody' })
})

t.test('DELETE /api/debug/locks/:resource without Redis: the in-process lock goes, logged with the admin', async (t) => {
  const { app, logs } = await build(t, { ...AUTH_ENV, SCHEDULER_ENABLED: 'false', LOG_LEVEL: 'info' })
  const admin = await adminLogin(app)
  const held = hold(app, 'lock:portfolio:stuck')
  t.equal(await app.locks.claim('lock:portfolio:stuck', 1000, { strict: false }), null, 'held')
  const res = await forceRelease(app, 'lock:portfolio:stuck', admin.token)
  t.equal(res.statusCode, 200)
  t.match(res.json<ReleasedBody>(), { resource: 'lock:portfolio:stuck', backend: 'local', masters: 0, owner: /:\d+:[0-9a-f-]{36}$/ })
  const lease = await app.locks.claim('lock:portfolio:stuck', 1000, { strict: false })
  t.not(lease, null, 'free for the next holder at once')
  await lease?.release()
  const lines = logs.lines.filter((l) => l.msg === 'lock force-released by an admin')
  t.equal(lines.length, 1, 'logged once')
  t.match(lines[0], { level: 40, resource: 'lock:portfolio:stuck', by: { userId: admin.userId, email: 'admin@example.com' } })
  t.equal((await forceRelease(app, 'lock:portfolio:stuck', admin.token)).statusCode, 404, 'gone')
  await held.release()
})

t.test('DELETE /api/debug/locks/:resource with Redis: deleted under the key prefix; the holder loses it', redisOpts, async (t) => {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  const { app } = await build(t, { ...AUTH_ENV, REDIS_URL: redis.url, REDIS_KEY_PREFIX: 'aic:', SCHEDULER_ENABLED: 'false' })
  const admin = (await adminLogin(app)).token
  const held = hold(app, 'lock:portfolio:r1')
  await waitFor(async () => (await redis.command('EXISTS', 'aic:lock:portfolio:r1')) === '1', 5000)
  const owner = await redis.command('GET', 'aic:lock:portfolio:r1')
  const res = await forceRelease(app, 'lock:portfolio:r1', admin)
  t.equal(res.statusCode, 200)
  t.same(res.json<ReleasedBody>(), { ...res.json<ReleasedBody>(), resource: 'lock:portfolio:r1', backend: 'redlock', masters: 1, owner })
  t.equal(await redis.command('EXISTS', 'aic:lock:portfolio:r1'), '0', 'the key is gone')
  const lease = await app.locks.claim('lock:portfolio:r1', 5000)
  t.not(lease, null, 'another holder can take it')
  await lease?.release()
  t.equal((await forceRelease(app, 'lock:portfolio:r1', admin)).statusCode, 404)
  await held.release()
})

t.test('DELETE /api/debug/locks/:resource with three Redlock masters: deleted on every one', redisOpts, async (t) => {
  const masters = await Promise.all([startRedis(), startRedis(), startRedis()])
  t.teardown(() => Promise.all(masters.map((m) => m.stop())))
  const { app } = await build(t, { ...AUTH_ENV, REDLOCK_URLS: masters.map((m) => m.url).join(','), SCHEDULER_ENABLED: 'false' })
  const admin = (await adminLogin(app)).token
  const held = hold(app, 'lock:job:r3')
  await waitFor(async () => (await Promise.all(masters.map((m) => m.command('EXISTS', 'lock:job:r3')))).every((e) => e === '1'), 5000)
  const res = await forceRelease(app, 'lock:job:r3', admin)
  t.equal(res.statusCode, 200)
  t.match(res.json<ReleasedBody>(), { backend: 'redlock', masters: 3 })
  t.same(await Promise.all(masters.map((m) => m.command('EXISTS', 'lock:job:r3'))), ['0', '0', '0'])
  await held.release()
})

t.test('DELETE /api/debug/locks/:resource while the main Redis is down: the fallback lock goes', redisOpts, async (t) => {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  const { app } = await build(t, { ...AUTH_ENV, REDIS_URL: redis.url, SCHEDULER_ENABLED: 'false' })
  const admin = (await adminLogin(app)).token
  await redis.kill()
  await waitFor(() => app.locks.backend() === 'fallback', 10_000)
  const held = hold(app, 'lock:portfolio:f1')
  await waitFor(async () => (await app.locks.list()).locks.length === 1, 5000)
  const res = await forceRelease(app, 'lock:portfolio:f1', admin)
  t.equal(res.statusCode, 200)
  t.match(res.json<ReleasedBody>(), { backend: 'fallback', masters: 0 })
  t.equal((await forceRelease(app, 'lock:portfolio:f1', admin)).statusCode, 404)
  await held.release()
})
