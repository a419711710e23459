/**
 * Market time: SCHEDULER_TZ and market-hours windows, with injected clocks (no waiting).
 * A job at 09:30 New York runs at 14:30 UTC in winter and 13:30 UTC in summer; a
 * Mon-Fri 09:30-16:00 window follows the March and November switches; ticks outside the
 * window are never run; the app reads SCHEDULER_TZ and QUOTES_PREWARM_HOURS.
 */
import t from 'tap'
import { Scheduler } from '../src/scheduler/scheduler.js'
import { isInWindow, localTime, nextOpening, parseMarketWindow } from '../src/scheduler/market-hours.js'
import { PREWARM_JOB, SNAPSHOT_JOB } from '../plugins/portfolio.js'
import { build } from './helper.js'

const NY = 'America/New_York'
const quiet = { info () {}, warn () {}, error () {}, debug () {} }
const at = (iso: string): number => Date.parse(iso)

function scheduler (timeZone?: string, claims: string[] = []): Scheduler {
  return new Scheduler({
    enabled: false,
    log: quiet,
    ...(timeZone !== undefined ? { timeZone } : {}),
    // Another instance always has the tick: enough to see whether a tick got as far as its lock.
    locks: { claim: async (key: string) => { claims.push(key); return null } },
  })
}

const nextIso = (s: Scheduler, name: string, after: string): string | undefined => s.nextTick(name, at(after))?.scheduledAt.toISOString()

t.test('a cron job at 09:30 New York: 14:30 UTC in January, 13:30 UTC in July; UTC by default', async (t) => {
  const ny = scheduler(NY)
  ny.add({ name: 'open', cron: '30 9 * * *', run: async () => {} })
  t.equal(nextIso(ny, 'open', '2026-01-15T00:00:00Z'), '2026-01-15T14:30:00.000Z')
  t.equal(nextIso(ny, 'open', '2026-07-15T00:00:00Z'), '2026-07-15T13:30:00.000Z')
  // Across the March switch (Sunday 2026-03-08, 02:00 → 03:00 local): Saturday EST, Monday EDT.
  t.equal(nextIso(ny, 'open', '2026-03-07T12:00:00Z'), '2026-03-07T14:30:00.000Z')
  t.equal(nextIso(ny, 'open', '2026-03-08T15:00:00Z'), '2026-03-09T13:30:00.000Z')
  t.match(ny.jobs()[0]?.schedule, /cron 30 9 \* \* \* \(America\/New_York\)/)

  const utc = scheduler()
  utc.add({ name: 'open', cron: '30 9 * * *', run: async () => {} })
  t.equal(nextIso(utc, 'open', '2026-07-15T00:00:00Z'), '2026-07-15T09:30:00.000Z', 'without a zone: UTC, as before')
  t.equal(utc.timeZone, 'UTC')
})

t.test('a Mon-Fri 09:30-16:00 New York window around the March and November switches', async (t) => {
  const w = parseMarketWindow('Mon-Fri 09:30-16:00', NY)
  const inside: Array<[string, boolean, string]> = [
    ['2026-03-06T13:45:00Z', false, 'Friday before the switch, 08:45 EST'],
    ['2026-03-06T14:30:00Z', true, 'Friday 09:30 EST: the opening is inside'],
    ['2026-03-06T20:45:00Z', true, 'Friday 15:45 EST'],
    ['2026-03-06T21:00:00Z', false, 'Friday 16:00 EST: the close is outside'],
    ['2026-03-07T15:00:00Z', false, 'Saturday'],
    ['2026-03-09T13:30:00Z', true, 'Monday after the switch, 09:30 EDT'],
    ['2026-03-09T13:29:59Z', false, 'Monday 09:29:59 EDT'],
    ['2026-03-09T19:59:00Z', true, 'Monday 15:59 EDT'],
    ['2026-03-09T20:15:00Z', false, 'Monday 16:15 EDT (15:15 by the winter offset)'],
  ]
  for (const [iso, expected, what] of inside) t.equal(isInWindow(w, at(iso)), expected, `${iso}: ${what}`)
  t.same(localTime(at('2026-03-09T13:30:00Z'), NY), { day: 1, minute: 9 * 60 + 30 })

  t.equal(nextOpening(w, at('2026-03-06T21:00:00Z'))?.toISOString(), '2026-03-09T13:30:00.000Z', 'after Friday\'s close, Monday 09:30 EDT')
  t.equal(nextOpening(w, at('2026-10-30T20:00:00Z'))?.toISOString(), '2026-11-02T14:30:00.000Z', 'and back to EST after the November switch')

  // A prewarm every 15 minutes inside the window.
  const s = scheduler(NY)
  s.add({ name: 'prewarm', every: 15 * 60_000, hours: 'Mon-Fri 09:30-16:00', run: async () => {} })
  t.equal(nextIso(s, 'prewarm', '2026-03-05T12:00:00Z'), '2026-03-05T14:30:00.000Z', 'Thursday before the switch: the first tick at 09:30 EST')
  t.equal(nextIso(s, 'prewarm', '2026-03-05T15:00:00Z'), '2026-03-05T15:15:00.000Z', 'inside the window: the next aligned tick')
  t.equal(nextIso(s, 'prewarm', '2026-03-06T20:45:00Z'), '2026-03-09T13:30:00.000Z', 'after Friday\'s last tick (15:45 EST): Monday 09:30 EDT, not 14:30 UTC')
  t.equal(nextIso(s, 'prewarm', '2026-03-09T19:45:00Z'), '2026-03-10T13:30:00.000Z', 'Monday 15:45 EDT is the last tick of the day')
  t.equal(nextIso(s, 'prewarm', '2026-10-30T19:45:00Z'), '2026-11-02T14:30:00.000Z', 'November: 09:30 EST again')
  t.match(s.jobs()[0]?.schedule, 'every 900000 ms, Mon-Fri 09:30-16:00 (America/New_York)')
})

t.test('a tick outside the window is skipped before any lock is asked for', async (t) => {
  const claims: string[] = []
  const s = scheduler(NY, claims)
  s.add({ name: 'prewarm', every: 15 * 60_000, hours: 'Mon-Fri 09:30-16:00', run: async () => { t.fail('never runs here') } })
  const saturday = new Date('2026-03-07T15:00:00Z')
  t.equal(await s.runTick('prewarm', { id: String(saturday.getTime() / 900_000), scheduledAt: saturday }), 'skipped')
  t.equal(s.jobs()[0]?.lastSkipReason, 'outside market hours')
  t.same(claims, [], 'no lock was asked for')
  const monday = new Date('2026-03-09T13:30:00Z')
  t.equal(await s.runTick('prewarm', { id: String(monday.getTime() / 900_000), scheduledAt: monday }), 'skipped', 'inside the window: too late by the real clock')
  t.equal(s.jobs()[0]?.lastSkipReason, 'late', 'which is another reason: the window let it through')
})

t.test('bad zones and windows are refused with the reason', async (t) => {
  t.throws(() => scheduler('Mars/Olympus'), /not a time zone/)
  const s = scheduler(NY)
  for (const [hours, reason] of [
    ['Fri-Mon 09:30-16:00', /runs forward/],
    ['Mon-Fri 16:00-09:30', /start must be before the end/],
    ['Mon-Fri 9:30-16:00', /not a window/],
    ['Mon-Fry 09:30-16:00', /not a day/],
    ['Mon-Fri 09:30-25:00', /not a time/],
    ['always', /not a window/],
  ] as const) {
    t.throws(() => { s.add({ name: `job-${Math.random().toString(36).slice(2, 8)}`, every: 1000, hours, run: async () => {} }) }, reason, hours)
  }
  const w = parseMarketWindow('Mon,Wed-Thu 00:00-24:00', 'UTC')
  t.same([...w.days].sort(), [1, 3, 4])
  t.ok(isInWindow(w, at('2026-03-11T23:59:00Z')), 'a whole day, up to 24:00')
})

t.test('the app: SCHEDULER_TZ and QUOTES_PREWARM_HOURS reach the jobs', async (t) => {
  const { app } = await build(t, {
    SCHEDULER_ENABLED: 'false',
    SCHEDULER_TZ: NY,
    QUOTES_PREWARM_HOURS: 'Mon-Fri 09:30-16:00',
    QUOTES_PREWARM_INTERVAL_MS: '60000',
    PORTFOLIO_SNAPSHOT_CRON: '0 17 * * 1-5',
    LOG_LEVEL: 'warn',
  })
  const prewarm = app.scheduler.jobs().find((j) => j.name === PREWARM_JOB)
  t.match(prewarm?.schedule, 'Mon-Fri 09:30-16:00 (America/New_York)')
  t.equal(app.scheduler.nextTick(PREWARM_JOB, at('2026-01-17T12:00:00Z'))?.scheduledAt.toISOString(), '2026-01-19T14:30:00.000Z', 'Saturday in January: Monday 09:30 EST')
  t.equal(app.scheduler.nextTick(PREWARM_JOB, at('2026-07-18T12:00:00Z'))?.scheduledAt.toISOString(), '2026-07-20T13:30:00.000Z', 'Saturday in July: Monday 09:30 EDT')
  t.equal(app.scheduler.nextTick(SNAPSHOT_JOB, at('2026-01-15T12:00:00Z'))?.scheduledAt.toISOString(), '2026-01-15T22:00:00.000Z', 'the snapshot cron at 17:00 New York: 22:00 UTC in winter')
  t.equal(app.scheduler.nextTick(SNAPSHOT_JOB, at('2026-07-15T12:00:00Z'))?.scheduledAt.toISOString(), '2026-07-15T21:00:00.000Z', 'and 21:00 UTC in summer')

  const { app: plain } = await build(t, { SCHEDULER_ENABLED: 'false', LOG_LEVEL: 'warn' })
  t.equal(plain.scheduler.nextTick(SNAPSHOT_JOB, at('2026-07-15T12:00:00Z'))?.scheduledAt.toISOString(), '2026-07-15T22:00:00.000Z', 'defaults: UTC, as before')
  t.equal(plain.scheduler.nextTick(PREWARM_JOB, at('2026-07-18T12:00:00.000Z'))?.scheduledAt.toISOString(), '2026-07-18T12:00:15.000Z', 'and the prewarm around the clock')
})
