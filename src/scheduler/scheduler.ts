/**
 * Jobs that run once per tick across all instances.
 *
 * A tick has an id every instance computes alike from the wall clock: `floor(now / every)`
 * for an interval, the scheduled time (ms, UTC) for a cron expression. To run a tick an
 * instance must take `lock:job:<name>:<tick>`, which lives at least one interval and is
 * NOT released after the run: an instance arriving late finds it still held and cannot
 * re-run a tick another instance finished early. An instance more than half an interval
 * late does not try at all. While the run lasts it also holds `lock:job:<name>` (released
 * after the run), so a job slower than its interval never overlaps itself; both locks are
 * extended while the run lasts. The run lock lives the job's `lockTtlMs` (at most 60 s when
 * unset), not an interval: an instance that dies mid-run frees it within that, so a daily
 * job's next tick is not skipped as "previous run in progress".
 *
 * Time: cron expressions and market-hours windows are read in the scheduler's time zone
 * (SCHEDULER_TZ, UTC by default), so they follow its daylight-saving switches: a job at
 * 09:30 America/New_York runs at 14:30 UTC in winter and 13:30 UTC in summer. A job with
 * `hours` (`Mon-Fri 09:30-16:00`) has no ticks outside that window: its next tick is the
 * first one inside it (an interval job's ticks stay aligned to multiples of the interval).
 *
 * Fails closed: when the lock cannot be taken in Redis (configured but down, or no
 * majority of REDLOCK_URLS), the tick is skipped and the log says so once per outage and
 * job. Without Redis configured (one instance by definition) in-process locks are used.
 */
import { Cron } from 'croner'
import { isLocksUnavailable } from '../engines/locks/errors.js'
import type { Lease, Locks } from '../engines/locks/locks.js'
import { isInWindow, isTimeZone, nextOpening, parseMarketWindow, type MarketWindow } from './market-hours.js'

/** The run lock's TTL for a job that names none (it is extended while the job runs). */
const DEFAULT_RUN_LOCK_TTL_MS = 60_000

export interface TickInfo {
  /** `floor(now / every)` or, for cron, the scheduled time in ms. Part of the lock key. */
  id: string
  scheduledAt: Date
}

export interface JobSpec {
  name: string
  /** Interval in ms (ticks aligned to multiples of it since the epoch). */
  every?: number
  /** Cron expression (5 or 6 fields), in the scheduler's time zone. */
  cron?: string
  /**
   * Market hours: ticks only inside this window of the scheduler's time zone, written
   * `Mon-Fri 09:30-16:00` (see market-hours.ts). Unset: every tick.
   */
  hours?: string
  /** TTL of the job's run lock (extended while it runs); the tick lock lives at least one interval in any case. */
  lockTtlMs?: number
  run: (signal: AbortSignal, tick: TickInfo) => Promise<void>
}

export type SkipReason = 'redis unavailable' | 'previous run in progress' | 'late' | 'outside market hours'

export interface JobStats {
  name: string
  schedule: string
  lockTtlMs: number
  running: boolean
  lastRunAt: string | null
  lastDurationMs: number | null
  lastError: string | null
  nextRunAt: string | null
  /** Ticks this instance ran. */
  runs: number
  /** Ticks this instance could not run (redis unavailable, overlap, late). */
  skips: number
  lastSkipReason: SkipReason | null
  /** Runs that threw. */
  failures: number
  /** Ticks another instance had already taken. */
  ranElsewhere: number
}

export interface SchedulerLogger {
  info (obj: object, msg: string): void
  warn (obj: object, msg: string): void
  error (obj: object, msg: string): void
  debug (obj: object, msg: string): void
}

export interface SchedulerOptions {
  locks: Pick<Locks, 'claim'>
  enabled: boolean
  log: SchedulerLogger
  /** How long `stop()` waits for running jobs after aborting them. */
  stopTimeoutMs?: number
  /** IANA zone in which cron expressions and market hours are read (SCHEDULER_TZ); UTC by default. */
  timeZone?: string
  now?: () => number
}

const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/
const MIN_EVERY_MS = 100
const MAX_EVERY_MS = 31 * 86_400_000
/** setTimeout's ceiling; longer waits are chained. */
const MAX_TIMER_MS = 2_147_483_647

interface Job {
  spec: JobSpec
  cron: Cron | null
  /** `hours`, parsed in the scheduler's zone; null: every tick. */
  window: MarketWindow | null
  schedule: string
  stats: JobStats
  timer: NodeJS.Timeout | null
  /** The tick armed last, so a timer firing a hair early never re-arms the same tick. */
  armed: { id: string, at: number } | null
  controller: AbortController | null
  running: Promise<void> | null
  /** Skipping because Redis is unavailable (logged once per outage). */
  closed: boolean
}

export class Scheduler {
  readonly enabled: boolean
  readonly timeZone: string
  readonly #locks: Pick<Locks, 'claim'>
  readonly #log: SchedulerLogger
  readonly #jobs = new Map<string, Job>()
  readonly #stopTimeoutMs: number
  readonly #now: () => number
  #started = false
  #stopped = false
  readonly #totals = { runs: 0, skips: 0, failures: 0 }

  constructor (options: SchedulerOptions) {
    this.enabled = options.enabled
    this.timeZone = options.timeZone ?? 'UTC'
    if (!isTimeZone(this.timeZone)) throw new TypeError(`scheduler: "${this.timeZone}" is not a time zone (an IANA name such as America/New_York or UTC)`)
    this.#locks = options.locks
    this.#log = options.log
    this.#stopTimeoutMs = options.stopTimeoutMs ?? 10_000
    this.#now = options.now ?? Date.now
  }

  /** Declares a job; throws on an invalid spec or a duplicate name. */
  add (spec: JobSpec): void {
    if (typeof spec !== 'object' || spec === null || !NAME_RE.test(String(spec.name))) {
      throw new TypeError('scheduler.add: name must be 1-64 characters of A-Z a-z 0-9 . _ -')
    }
    const label = `scheduler.add(${spec.name})`
    if (this.#jobs.has(spec.name)) throw new Error(`${label}: a job with this name already exists`)
    if ((spec.every === undefined) === (spec.cron === undefined)) throw new TypeError(`${label}: give exactly one of every or cron`)
    if (typeof spec.run !== 'function') throw new TypeError(`${label}: run must be a function`)
    if (spec.every !== undefined && (!Number.isInteger(spec.every) || spec.every < MIN_EVERY_MS || spec.every > MAX_EVERY_MS)) {
      throw new TypeError(`${label}: every must be an integer number of ms from ${MIN_EVERY_MS} to ${MAX_EVERY_MS}`)
    }
    if (spec.lockTtlMs !== undefined && (!Number.isInteger(spec.lockTtlMs) || spec.lockTtlMs < 100)) {
      throw new TypeError(`${label}: lockTtlMs must be an integer ≥ 100`)
    }
    let cron: Cron | null = null
    if (spec.cron !== undefined) {
      try {
        cron = new Cron(spec.cron, { paused: true, timezone: this.timeZone })
      } catch (err) {
        throw new TypeError(`${label}: invalid cron expression: ${err instanceof Error ? err.message : String(err)}`)
      }
      if (cron.nextRun() === null) throw new TypeError(`${label}: the cron expression never fires`)
    }
    let window: MarketWindow | null = null
    if (spec.hours !== undefined) {
      try {
        window = parseMarketWindow(spec.hours, this.timeZone)
      } catch (err) {
        throw new TypeError(`${label}: invalid hours: ${err instanceof Error ? err.message : String(err)}`)
      }
    }
    const base = spec.every !== undefined ? `every ${spec.every} ms` : `cron ${spec.cron ?? ''}`
    const schedule = window === null
      ? (spec.every !== undefined ? base : `${base} (${this.timeZone})`)
      : `${base}, ${window.text} (${this.timeZone})`
    const job: Job = {
      spec,
      cron,
      window,
      schedule,
      timer: null,
      armed: null,
      controller: null,
      running: null,
      closed: false,
      stats: {
        name: spec.name,
        schedule,
        lockTtlMs: 0,
        running: false,
        lastRunAt: null,
        lastDurationMs: null,
        lastError: null,
        nextRunAt: null,
        runs: 0,
        skips: 0,
        lastSkipReason: null,
        failures: 0,
        ranElsewhere: 0,
      },
    }
    job.stats.lockTtlMs = Math.max(spec.lockTtlMs ?? 0, this.#next(job, this.#now())?.intervalMs ?? 0)
    this.#jobs.set(spec.name, job)
    if (this.#started && this.enabled && !this.#stopped) this.#arm(job)
  }

  /** Arms every job (nothing happens when disabled). */
  start (): void {
    if (this.#started || this.#stopped) return
    this.#started = true
    if (!this.enabled) {
      this.#log.info({ jobs: Array.from(this.#jobs, ([name]) => name) }, 'scheduler disabled (SCHEDULER_ENABLED=false): jobs do not run on this instance')
      return
    }
    for (const job of this.#jobs.values()) this.#arm(job)
  }

  /** Stops the timers, aborts running jobs and waits for them (bounded). */
  async stop (): Promise<void> {
    this.#stopped = true
    const running: Array<Promise<void>> = []
    for (const job of this.#jobs.values()) {
      if (job.timer !== null) clearTimeout(job.timer)
      job.timer = null
      job.stats.nextRunAt = null
      job.cron?.stop()
      job.controller?.abort(new Error('the service is shutting down'))
      if (job.running !== null) running.push(job.running)
    }
    if (running.length === 0) return
    let timer: NodeJS.Timeout | undefined
    await Promise.race([
      Promise.allSettled(running),
      new Promise<void>((resolve) => { timer = setTimeout(resolve, this.#stopTimeoutMs) }),
    ])
    clearTimeout(timer)
  }

  jobs (): JobStats[] {
    return [...this.#jobs.values()].map((job) => ({ ...job.stats, running: job.running !== null }))
  }

  stats (): { runs: number, skips: number, failures: number, jobs: number } {
    return { ...this.#totals, jobs: this.#jobs.size }
  }

  /**
   * Tries to run one tick now, as the timer does. Exposed so tests can play an instance
   * that arrives late for a tick.
   */
  async runTick (name: string, tick: TickInfo): Promise<'ran' | 'failed' | 'elsewhere' | 'skipped'> {
    const job = this.#jobs.get(name)
    if (job === undefined) throw new Error(`scheduler: no job named ${name}`)
    return this.#tick(job, tick)
  }

  /** The tick after `after` (ms): its id, its time, and how long its locks live. */
  nextTick (name: string, after = this.#now()): (TickInfo & { intervalMs: number }) | null {
    const job = this.#jobs.get(name)
    return job === undefined ? null : this.#next(job, after)
  }

  /** The first tick after `after` inside the job's window (every tick when it has none). */
  #next (job: Job, after: number): (TickInfo & { intervalMs: number }) | null {
    let from = after
    // A window opens at least once a week; a bound against expressions that never meet it.
    for (let i = 0; i < 10_000; i++) {
      const tick = this.#rawNext(job, from)
      if (tick === null || job.window === null) return tick
      const at = tick.scheduledAt.getTime()
      if (isInWindow(job.window, at)) return tick
      const opening = nextOpening(job.window, at)
      if (opening === null) return null
      // The first tick at or after the opening.
      from = Math.max(at, opening.getTime() - 1)
    }
    return null
  }

  #rawNext (job: Job, after: number): (TickInfo & { intervalMs: number }) | null {
    const every = job.spec.every
    if (every !== undefined) {
      const id = Math.floor(after / every) + 1
      return { id: String(id), scheduledAt: new Date(id * every), intervalMs: every }
    }
    const at = job.cron?.nextRun(new Date(after)) ?? null
    if (at === null) return null
    const following = job.cron?.nextRun(at) ?? null
    return { id: String(at.getTime()), scheduledAt: at, intervalMs: following === null ? 86_400_000 : following.getTime() - at.getTime() }
  }

  #arm (job: Job): void {
    if (this.#stopped) return
    // Never the tick armed last, even when its timer fired a little before its time.
    const after = Math.max(this.#now(), job.armed?.at ?? 0)
    const next = this.#next(job, after)
    if (next === null) {
      job.stats.nextRunAt = null
      return
    }
    job.armed = { id: next.id, at: next.scheduledAt.getTime() }
    job.stats.nextRunAt = next.scheduledAt.toISOString()
    const wait = (): void => {
      const delay = next.scheduledAt.getTime() - this.#now()
      job.timer = setTimeout(delay > MAX_TIMER_MS ? wait : () => {
        job.timer = null
        this.#arm(job)
        this.#tick(job, next).catch((err: unknown) => {
          this.#log.error({ job: job.spec.name, tick: next.id, reason: err instanceof Error ? err.message : String(err) }, 'job tick failed before its run')
        })
      }, Math.max(0, Math.min(delay, MAX_TIMER_MS)))
      job.timer.unref()
    }
    wait()
  }

  async #tick (job: Job, tick: TickInfo): Promise<'ran' | 'failed' | 'elsewhere' | 'skipped'> {
    const { name } = job.spec
    const interval = job.spec.every ?? this.#next(job, tick.scheduledAt.getTime())?.intervalMs ?? 86_400_000
    const ttl = Math.max(job.spec.lockTtlMs ?? 0, interval)
    if (job.window !== null && !isInWindow(job.window, tick.scheduledAt.getTime())) return this.#skip(job, tick, 'outside market hours')
    if (job.running !== null) return this.#skip(job, tick, 'previous run in progress')
    if (this.#now() - tick.scheduledAt.getTime() > interval / 2) return this.#skip(job, tick, 'late')

    let leases: [Lease, Lease | null] | null
    try {
      leases = await this.#claim(job, tick, ttl)
    } catch (err) {
      if (!isLocksUnavailable(err)) throw err
      return this.#skip(job, tick, 'redis unavailable')
    }
    this.#reopened(job)
    if (leases === null) {
      job.stats.ranElsewhere++
      this.#log.debug({ job: name, tick: tick.id }, 'job tick taken by another instance')
      return 'elsewhere'
    }
    const [tickLease, runLease] = leases
    if (runLease === null) return this.#skip(job, tick, 'previous run in progress')

    const controller = new AbortController()
    job.controller = controller
    const started = this.#now()
    let outcome: 'ran' | 'failed' = 'ran'
    const run = (async () => {
      try {
        // Both locks are extended while the job runs; losing either aborts its signal.
        await tickLease.run((tickSignal) => runLease.run(async (runSignal) => {
          await job.spec.run(AbortSignal.any([controller.signal, tickSignal, runSignal]), tick)
        }))
        job.stats.lastError = null
      } catch (err) {
        outcome = 'failed'
        job.stats.failures++
        this.#totals.failures++
        job.stats.lastError = err instanceof Error ? err.message : String(err)
        this.#log.error({ job: name, tick: tick.id, reason: job.stats.lastError }, 'job failed')
      } finally {
        // The run lock goes now; the tick lock is left to expire (see the file's comment).
        await runLease.release()
        job.stats.runs++
        this.#totals.runs++
        job.stats.lastRunAt = new Date(started).toISOString()
        job.stats.lastDurationMs = this.#now() - started
        job.controller = null
        job.running = null
        this.#log.debug({ job: name, tick: tick.id, durationMs: job.stats.lastDurationMs }, 'job ran')
      }
    })()
    job.running = run
    await run
    return outcome
  }

  /** The tick's lock (null: another instance has the tick), then the job's run lock. */
  async #claim (job: Job, tick: TickInfo, ttl: number): Promise<[Lease, Lease | null] | null> {
    const tickLease = await this.#locks.claim(`lock:job:${job.spec.name}:${tick.id}`, ttl, { strict: true })
    if (tickLease === null) return null
    const runTtl = job.spec.lockTtlMs ?? Math.min(ttl, DEFAULT_RUN_LOCK_TTL_MS)
    return [tickLease, await this.#locks.claim(`lock:job:${job.spec.name}`, runTtl, { strict: true })]
  }

  #skip (job: Job, tick: TickInfo, reason: SkipReason): 'skipped' {
    job.stats.skips++
    job.stats.lastSkipReason = reason
    this.#totals.skips++
    if (reason === 'redis unavailable') {
      if (!job.closed) {
        job.closed = true
        this.#log.warn({ job: job.spec.name, tick: tick.id }, 'job tick skipped: Redis is unavailable and jobs never run without their lock (fail closed); skipping until it is back')
      } else {
        this.#log.debug({ job: job.spec.name, tick: tick.id, reason }, 'job tick skipped')
      }
    } else if (reason === 'outside market hours') {
      this.#log.debug({ job: job.spec.name, tick: tick.id, reason }, 'job tick skipped')
    } else {
      this.#log.warn({ job: job.spec.name, tick: tick.id, reason }, 'job tick skipped')
    }
    return 'skipped'
  }

  #reopened (job: Job): void {
    if (!job.closed) return
    job.closed = false
    this.#log.info({ job: job.spec.name }, 'job ticks resume: the lock can be taken again')
  }
}
