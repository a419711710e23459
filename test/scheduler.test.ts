/**
 * The scheduler against a real redis-server: three app instances run a 1 s job five
 * times in five seconds, never twice for one tick; an instance arriving late cannot re-run
 * a tick another finished early (the tick lock is not released); with Redis down ticks are
 * skipped, not run, and the log says so once; without REDIS_URL jobs run under in-process
 * locks; a long job keeps its lock and never overlaps itself; cron ticks; validation;
 * shutdown aborts a running job; SCHEDULER_ENABLED=false.
 */
import t from 'tap'
import type { FastifyInstance } from 'fastify'
import { isLockError, LockUnavailableError } from '../src/engines/locks/errors.js'
import type { JobStats } from '../src/scheduler/scheduler.js'
import { build, sleep, waitFor, type TapTest } from './helper.js'
import { skipUnlessRedis, startRedis, type RedisProcess } from './helpers/redis-server.js'

const redisOpts = skipUnlessRedis()
// Short enough to keep the outage tests quick, long enough that a busy machine (load 15 on
// two cores) does not time a healthy Redis out and turn a run into a skip.
const FAST = { REDIS_COMMAND_TIMEOUT_MS: '1500', REDIS_CONNECT_TIMEOUT_MS: '3000' }
const SKIP_LOG = 'job tick skipped: Redis is unavailable and jobs never run without their lock (fail closed); skipping until it is back'

/** One job's stats (other plugins declare jobs of their own). */
function jobOf (app: FastifyInstance, name: string): JobStats {
  const job = app.scheduler.jobs().find((j) => j.name === name)
  if (job === undefined) throw new Error(`no job ${name}`)
  return job
}

async function server (t: TapTest): Promise<RedisProcess> {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  return redis
}

t.test('three instances, a job every second for five seconds: five runs in all, never two for one tick', redisOpts, async (t) => {
  const redis = await server(t)
  const apps: FastifyInstance[] = []
  for (let i = 0; i < 3; i++) apps.push((await build(t, { REDIS_URL: redis.url, ...FAST })).app)
  const runs: Array<{ instance: number, tick: string }> = []
  // Start just after a tick boundary so that the five-second window holds five ticks.
  await sleep(1000 - (Date.now() % 1000) + 100)
  const started = Date.now()
  apps.forEach((app, instance) => {
    app.scheduler.add({
      name: 'every-second',
      every: 1000,
      run: async (_signal, tick) => {
        runs.push({ instance, tick: tick.id })
        await sleep(30)
      },
    })
  })
  await sleep(5000 - (Date.now() - started))
  await Promise.all(apps.map(async (app) => app.scheduler.stop()))

  // On a busy machine a timer can fire more than half an interval late, and the scheduler
  // then skips that tick as late (by design): the count is bounded, the uniqueness is exact.
  t.ok(runs.length >= 2 && runs.length <= 6, `${runs.length} runs in five seconds`)
  t.equal(new Set(runs.map((r) => r.tick)).size, runs.length, 'never two runs for one tick')
  const stats = apps.map((app) => jobOf(app, 'every-second'))
  t.equal(stats.reduce((sum, s) => sum + s.runs, 0), runs.length, 'the counters agree')
  t.equal(stats.reduce((sum, s) => sum + s.failures, 0), 0, 'no failure')
  const skips = stats.reduce((sum, s) => sum + s.skips, 0)
  t.ok(stats.every((s) => s.skips === 0 || s.lastSkipReason === 'late'), 'a skip, if any, is a late timer, never a lock problem')
  t.ok(stats.reduce((sum, s) => sum + s.ranElsewhere, 0) >= 2 * runs.length - 2 - skips, 'the other instances saw each tick taken')
  const ticks = runs.map((r) => Number(r.tick)).sort((a, b) => a - b)
  if (skips === 0) t.same(ticks, ticks.map((_, i) => ticks[0]! + i), 'consecutive ticks, none missed')
  const ttl = Number(await redis.command('PTTL', `lock:job:every-second:${ticks.at(-1)}`))
  t.ok(ttl > 0 && ttl <= 1000, `the last tick's lock is left to expire (PTTL ${ttl} ms), not released`)
})

t.test('an instance arriving late cannot re-run a tick another instance finished early', redisOpts, async (t) => {
  const redis = await server(t)
  const env = { REDIS_URL: redis.url, SCHEDULER_ENABLED: 'false', ...FAST }
  const a = (await build(t, env)).app
  const b = (await build(t, env)).app
  let runs = 0
  // A minute's interval: the tick stays current (less than half an interval old) however
  // slow the machine is between the two instances' attempts.
  const every = 60_000
  for (const app of [a, b]) app.scheduler.add({ name: 'quick', every, run: async () => { runs++ } })
  const current = { id: String(Math.floor(Date.now() / every)), scheduledAt: new Date() }
  t.equal(await a.scheduler.runTick('quick', current), 'ran')
  await sleep(300)
  t.equal(await b.scheduler.runTick('quick', current), 'elsewhere', 'the late instance finds the tick taken')
  t.equal(runs, 1, 'the job ran once')
  t.equal(await redis.command('EXISTS', 'lock:job:quick'), '0', 'the run lock was released')
  t.ok(Number(await redis.command('PTTL', `lock:job:quick:${current.id}`)) > 30_000, 'the tick lock lives on (one interval)')
  const late = { id: String(Number(current.id) - 1), scheduledAt: new Date(current.scheduledAt.getTime() - every) }
  t.equal(await b.scheduler.runTick('quick', late), 'skipped', 'a tick more than half an interval old is not tried')
  t.equal(jobOf(b, 'quick').lastSkipReason, 'late')
})

t.test('Redis down: ticks are skipped, not run, and the log says so once; they resume when it is back', redisOpts, async (t) => {
  const redis = await server(t)
  const { app, logs } = await build(t, { REDIS_URL: redis.url, ...FAST })
  await redis.kill()
  await waitFor(() => !app.redisState.available, 3000)
  let runs = 0
  app.scheduler.add({ name: 'fail-closed', every: 500, run: async () => { runs++ } })
  await waitFor(() => jobOf(app, 'fail-closed').skips >= 3, 15_000)
  t.equal(runs, 0, 'never run without the lock')
  const job = jobOf(app, 'fail-closed')
  t.match(job.lastSkipReason, /^(redis unavailable|late)$/, 'skipped for Redis (or, on a busy machine, a late timer)')
  t.equal(job.runs, 0)
  const lines = logs.withMsg(SKIP_LOG).filter((l) => l.job === 'fail-closed')
  t.equal(lines.length, 1, 'one log line for the outage, not one per tick')
  t.match(lines[0], { level: 40 })
  await redis.restart()
  await waitFor(() => runs >= 1, 15_000)
  t.equal(logs.withMsg('job ticks resume: the lock can be taken again').filter((l) => l.job === 'fail-closed').length, 1)
})

t.test('Redis freezing during the lock claim itself: the tick is skipped, never run under an in-process lock', redisOpts, async (t) => {
  const redis = await server(t)
  const { app, logs } = await build(t, { REDIS_URL: redis.url, SCHEDULER_ENABLED: 'false', ...FAST })
  let runs = 0
  app.scheduler.add({ name: 'frozen-claim', every: 60_000, run: async () => { runs++ } })
  // Still connected and believed up: the claim goes to Redis, which then never answers.
  t.equal(app.locks.backend(), 'redlock', 'the claim starts against Redis')
  redis.pause()
  t.teardown(() => redis.resume())
  const outcome = await app.scheduler.runTick('frozen-claim', { id: 'frozen', scheduledAt: new Date() })
  t.equal(outcome, 'skipped')
  t.equal(runs, 0, 'never run without the Redis lock')
  const job = jobOf(app, 'frozen-claim')
  t.equal(job.lastSkipReason, 'redis unavailable')
  t.equal(job.runs, 0)
  t.equal(logs.withMsg(SKIP_LOG).filter((l) => l.job === 'frozen-claim').length, 1, 'the skip is logged')

  // The claim itself, which the run lock's claim would otherwise cover for: each time Redis
  // is believed up when the claim starts, and freezes under it. Strict claims (the
  // scheduler's) refuse; lenient ones take the in-process lock, as documented.
  const freezeUnder = async (claim: () => Promise<unknown>): Promise<unknown> => {
    redis.resume()
    await waitFor(() => app.redisState.mode === 'redis', 5000)
    redis.pause()
    t.equal(app.locks.backend(), 'redlock', 'believed up when the claim starts')
    return claim().then((lease) => lease, (err: unknown) => err)
  }
  const unavailableBefore = app.locks.stats().unavailable
  const refused = await freezeUnder(async () => app.locks.claim('lock:job:frozen-claim:strict', 60_000, { strict: true }))
  t.ok(refused instanceof LockUnavailableError, 'a strict claim frozen mid-way is refused: locks unavailable')
  t.equal(app.locks.stats().unavailable, unavailableBefore + 1)
  const lease = await freezeUnder(async () => app.locks.claim('lock:job:frozen-claim:lenient', 60_000, { strict: false })) as { backend?: string } | null
  t.equal(lease?.backend, 'fallback', 'a lenient one falls back to the in-process lock')
})

t.test('without REDIS_URL (one instance) jobs run under in-process locks', async (t) => {
  const { app } = await build(t, {})
  t.equal(app.locks.backend(), 'local')
  const ticks: string[] = []
  app.scheduler.add({ name: 'local', every: 200, run: async (_signal, tick) => { ticks.push(tick.id) } })
  await waitFor(() => ticks.length >= 3, 15_000)
  t.equal(new Set(ticks).size, ticks.length)
  const job = jobOf(app, 'local')
  t.equal(job.failures, 0)
  // A busy machine can fire a timer late, and a late tick is skipped by design.
  t.ok(job.skips === 0 || job.lastSkipReason === 'late', `no skip but late ones (${job.skips}, ${String(job.lastSkipReason)})`)
})

t.test('a long job keeps its locks while it runs and never overlaps itself across instances', redisOpts, async (t) => {
  const redis = await server(t)
  const apps = [(await build(t, { REDIS_URL: redis.url, ...FAST })).app, (await build(t, { REDIS_URL: redis.url, ...FAST })).app]
  let inside = 0
  let maxInside = 0
  let finished = 0
  let lost = 0
  let pttlDuringRun = -1
  for (const app of apps) {
    app.scheduler.add({
      name: 'slow',
      every: 300,
      lockTtlMs: 2000,
      run: async (signal) => {
        inside++
        maxInside = Math.max(maxInside, inside)
        await sleep(2600)
        if (pttlDuringRun < 0) pttlDuringRun = Number(await redis.command('PTTL', 'lock:job:slow'))
        // (stop() at the end aborts a run in progress with another reason)
        if (signal.aborted && isLockError(signal.reason)) lost++
        await sleep(200)
        inside--
        finished++
      },
    })
  }
  await waitFor(() => finished >= 2, 30_000)
  await Promise.all(apps.map(async (app) => app.scheduler.stop()))
  t.equal(lost, 0, 'no run lost its lock')
  t.equal(maxInside, 1, 'one run at a time')
  t.ok(pttlDuringRun > 0, `the run lock (TTL 2000 ms) still held 2600 ms into the run (PTTL ${pttlDuringRun})`)
  const skipped = apps.map((app) => jobOf(app, 'slow')).filter((j) => j.lastSkipReason === 'previous run in progress')
  t.ok(skipped.length >= 1, 'ticks during a run are skipped as overlapping')
})

t.test('the run lock lives the job\'s lockTtlMs, not an interval: an instance that dies mid-run frees it soon', redisOpts, async (t) => {
  const redis = await server(t)
  const { app } = await build(t, { REDIS_URL: redis.url, SCHEDULER_ENABLED: 'false', ...FAST })
  let ttls: number[] = []
  app.scheduler.add({
    name: 'hourly',
    every: 3_600_000,
    lockTtlMs: 5000,
    run: async (_signal, tick) => {
      ttls = [Number(await redis.command('PTTL', 'lock:job:hourly')), Number(await redis.command('PTTL', `lock:job:hourly:${tick.id}`))]
    },
  })
  const now = Date.now()
  t.equal(await app.scheduler.runTick('hourly', { id: String(Math.floor(now / 3_600_000)), scheduledAt: new Date(now) }), 'ran')
  const [run, tickLock] = ttls as [number, number]
  t.ok(run > 0 && run <= 5000, `the run lock: PTTL ${run} ms ≤ lockTtlMs`)
  t.ok(tickLock > 3_590_000, `the tick lock: one interval (PTTL ${tickLock} ms)`)
})

t.test('cron jobs tick on their schedule (UTC), with the scheduled time as the tick id', async (t) => {
  const { app } = await build(t, {})
  const ticks: Array<{ id: string, at: number }> = []
  app.scheduler.add({ name: 'cron-every-second', cron: '* * * * * *', run: async (_signal, tick) => { ticks.push({ id: tick.id, at: tick.scheduledAt.getTime() }) } })
  const job = jobOf(app, 'cron-every-second')
  t.equal(job.schedule, 'cron * * * * * * (UTC)')
  t.equal(new Date(job.nextRunAt ?? '').getMilliseconds(), 0, 'next run on a second boundary')
  t.equal(job.lockTtlMs, 1000, 'the lock lives one interval')
  await waitFor(() => ticks.length >= 2, 15_000)
  t.equal(ticks[0]!.id, String(ticks[0]!.at))
  const gap = ticks[1]!.at - ticks[0]!.at
  // 1000 on an idle machine; a tick fired late is skipped, so a busy one can see 2000.
  t.ok(gap > 0 && gap % 1000 === 0, `ticks on whole seconds of the schedule (${gap} ms apart)`)
})

t.test('invalid jobs are refused with a clear message', async (t) => {
  const { app } = await build(t, { SCHEDULER_ENABLED: 'false' })
  const run = async (): Promise<void> => {}
  t.throws(() => app.scheduler.add({ name: 'has space', every: 1000, run }), /name must be/)
  t.throws(() => app.scheduler.add({ name: 'both', every: 1000, cron: '* * * * *', run }), /exactly one of every or cron/)
  t.throws(() => app.scheduler.add({ name: 'neither', run }), /exactly one of every or cron/)
  t.throws(() => app.scheduler.add({ name: 'fast', every: 10, run }), /every must be/)
  t.throws(() => app.scheduler.add({ name: 'bad-cron', cron: 'nope', run }), /invalid cron expression/)
  t.throws(() => app.scheduler.add({ name: 'ttl', every: 1000, lockTtlMs: 5, run }), /lockTtlMs/)
  app.scheduler.add({ name: 'ok', every: 1000, run })
  t.throws(() => app.scheduler.add({ name: 'ok', every: 1000, run }), /already exists/)
})

t.test('SCHEDULER_ENABLED=false: jobs are listed but never run here', async (t) => {
  const { app, logs } = await build(t, { SCHEDULER_ENABLED: 'false' })
  let runs = 0
  app.scheduler.add({ name: 'off', every: 100, run: async () => { runs++ } })
  await sleep(350)
  t.equal(runs, 0)
  t.match(jobOf(app, 'off'), { nextRunAt: null, runs: 0 })
  t.equal(logs.count('scheduler disabled (SCHEDULER_ENABLED=false): jobs do not run on this instance'), 1)
})

t.test('closing the app aborts a running job and waits for it', async (t) => {
  const { app } = await build(t, {})
  let aborted = false
  let finished = false
  app.scheduler.add({
    name: 'until-aborted',
    every: 100,
    run: async (signal) => {
      await new Promise<void>((resolve) => signal.addEventListener('abort', () => { aborted = true; resolve() }))
      finished = true
    },
  })
  await waitFor(() => jobOf(app, 'until-aborted').running, 15_000)
  await app.close()
  t.ok(aborted && finished, 'the job saw the abort and finished before close resolved')
})

t.test('a failing job is counted and logged, and the next tick runs again', async (t) => {
  const { app, logs } = await build(t, {})
  let calls = 0
  app.scheduler.add({ name: 'flaky', every: 150, run: async () => { calls++; if (calls === 1) throw new Error('upstream down') } })
  await waitFor(() => calls >= 2, 15_000)
  await waitFor(() => jobOf(app, 'flaky').lastError === null, 15_000)
  const job = jobOf(app, 'flaky')
  t.equal(job.failures, 1)
  t.ok(job.runs >= 2)
  t.match(logs.withMsg('job failed')[0], { job: 'flaky', reason: 'upstream down' })
  t.ok(app.scheduler.stats().failures >= 1, 'and in the totals')
})
