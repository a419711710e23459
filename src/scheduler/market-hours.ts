/**
 * Time zones and market-hours windows for the scheduler.
 *
 * A window is written `Mon-Fri 09:30-16:00`: a day range (or a comma list of days and
 * ranges: `Mon,Wed,Fri`, `Mon-Thu,Sat`) and a start and end time, read in a time zone (the
 * scheduler's, SCHEDULER_TZ). It holds from the start (inclusive) to the end (exclusive) on
 * each of its days, in that zone's local time, so it follows the daylight-saving switches:
 * 09:30 New York is 14:30 UTC in January and 13:30 UTC in July. A window never crosses
 * midnight (start before end).
 *
 * The opening times are computed by croner (which handles the zones and their switches);
 * whether an instant is inside is read from `Intl.DateTimeFormat` in the zone.
 */
import { Cron } from 'croner'

const DAYS = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'] as const

export interface MarketWindow {
  /** Days the window is open, 0 = Sunday … 6 = Saturday. */
  days: ReadonlySet<number>
  /** Minutes after local midnight: start inclusive, end exclusive. */
  startMinute: number
  endMinute: number
  timeZone: string
  /** As written, spaces trimmed (`Mon-Fri 09:30-16:00`). */
  text: string
}

/** True when `zone` is an IANA time zone name this runtime knows (`America/New_York`, `UTC`). */
export function isTimeZone (zone: string): boolean {
  if (zone.trim() === '' || zone !== zone.trim()) return false
  try {
    new Intl.DateTimeFormat('en-US', { timeZone: zone })
    return true
  } catch {
    return false
  }
}

function dayIndex (name: string): number {
  const i = DAYS.findIndex((d) => d.toLowerCase() === name.toLowerCase())
  if (i === -1) throw new Error(`"${name}" is not a day (use ${DAYS.join(', ')})`)
  return i
}

function minuteOf (text: string): number {
  const m = /^([01]\d|2[0-3]):([0-5]\d)$/.exec(text)
  if (m === null) {
    if (text === '24:00') return 24 * 60
    throw new Error(`"${text}" is not a time (HH:MM, 00:00 to 24:00)`)
  }
  return Number(m[1]) * 60 + Number(m[2])
}

/** Parses `Mon-Fri 09:30-16:00`; throws an Error saying what is wrong. */
export function parseMarketWindow (text: string, timeZone: string): MarketWindow {
  if (!isTimeZone(timeZone)) throw new Error(`"${timeZone}" is not a time zone (an IANA name such as America/New_York or UTC)`)
  const m = /^\s*([A-Za-z,-]+)\s+(\d{2}:\d{2})-(\d{2}:\d{2})\s*$/.exec(text)
  if (m === null) throw new Error(`"${text}" is not a window (write it as days and hours, e.g. "Mon-Fri 09:30-16:00")`)
  const days = new Set<number>()
  for (const part of (m[1] ?? '').split(',')) {
    const [from, to, ...rest] = part.split('-')
    if (from === undefined || from === '' || rest.length > 0 || to === '') throw new Error(`"${part}" is not a day or a day range (e.g. Mon-Fri)`)
    const a = dayIndex(from)
    const b = to === undefined ? a : dayIndex(to)
    if (b < a) throw new Error(`"${part}": a day range runs forward within the week (Sun … Sat)`)
    for (let d = a; d <= b; d++) days.add(d)
  }
  const startMinute = minuteOf(m[2] ?? '')
  const endMinute = minuteOf(m[3] ?? '')
  if (startMinute >= endMinute) throw new Error(`"${m[2]}-${m[3]}": the start must be before the end (a window does not cross midnight)`)
  return { days, startMinute, endMinute, timeZone, text: `${m[1]} ${m[2]}-${m[3]}` }
}

/** Null when `text` is a valid window, otherwise why not (for the config schema). */
export function marketWindowProblem (text: string): string | null {
  try {
    parseMarketWindow(text, 'UTC')
    return null
  } catch (err) {
    return err instanceof Error ? err.message : String(err)
  }
}

const formatters = new Map<string, Intl.DateTimeFormat>()

/** The weekday (0 = Sunday) and minute of the day of `at` in `timeZone`. */
export function localTime (at: number, timeZone: string): { day: number, minute: number } {
  let f = formatters.get(timeZone)
  if (f === undefined) {
    f = new Intl.DateTimeFormat('en-US', { timeZone, weekday: 'short', hour: '2-digit', minute: '2-digit', hourCycle: 'h23' })
    formatters.set(timeZone, f)
  }
  let day = 0
  let hour = 0
  let minute = 0
  for (const part of f.formatToParts(new Date(at))) {
    if (part.type === 'weekday') day = dayIndex(part.value)
    else if (part.type === 'hour') hour = Number(part.value)
    else if (part.type === 'minute') minute = Number(part.value)
  }
  return { day, minute: hour * 60 + minute }
}

/** True when the instant `at` (ms) is inside the window. */
export function isInWindow (window: MarketWindow, at: number): boolean {
  const { day, minute } = localTime(at, window.timeZone)
  return window.days.has(day) && minute >= window.startMinute && minute < window.endMinute
}

/** The first opening of the window strictly after `after` (ms), or null. */
export function nextOpening (window: MarketWindow, after: number): Date | null {
  const h = Math.floor(window.startMinute / 60)
  const min = window.startMinute % 60
  const cron = new Cron(`${min} ${h} * * ${[...window.days].sort().join(',')}`, { paused: true, timezone: window.timeZone })
  const next = cron.nextRun(new Date(after))
  cron.stop()
  return next
}
