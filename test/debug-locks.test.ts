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
