/**
 * Logouts this instance made: one tombstone per revoked session (`sid` → its user) and one
 * per user logged out everywhere (`userId` → the time: sessions created before it are
 * revoked). Every session check that cannot ask Redis consults them. Those made while Redis
 * is away are replayed into it when it returns; those made in Redis start out replayed, kept
 * so that a token logged out here is not trusted unchecked in a later outage.
 *
 * They are kept apart from the in-process fallback store on purpose: that store evicts its
 * least recently used entries, so a flood of logins or rate-limit counters during a long
 * outage would push logouts out and bring revoked tokens back to life. Here only tombstones
 * compete for room. They all live as long (`ttlMs`), so the oldest are the first to expire.
 * Those already replayed into Redis are kept too (this instance still refuses their tokens in a
 * later outage) but make room first. When more than `max` that Redis lacks are alive, the
 * oldest is dropped anyway and `overflowed` turns true: the caller must then stop trusting
 * tokens it cannot check, until `clearOverflow()` or until every dropped one would have expired.
 */
interface Tombstone { until: number, replayed: boolean }
interface SessionTombstone extends Tombstone { userId: string }
interface UserTombstone extends Tombstone { before: number }

/** The tombstones not yet replayed into Redis, as handed to `markReplayed` afterwards. */
export interface PendingTombstones {
  sessions: Array<[sid: string, tombstone: SessionTombstone]>
  users: Array<[userId: string, tombstone: UserTombstone]>
}

export class Tombstones {
  readonly #sessions = new Map<string, SessionTombstone>()
  readonly #users = new Map<string, UserTombstone>()
  readonly #max: number
  readonly #ttlMs: number
  readonly #now: () => number
  /** Until when a dropped logout may still stop a token (0: none dropped). */
  #overflowUntil = 0
  #dropped = 0
  #episodes = 0

  constructor (options: { max: number, ttlMs: number, now?: () => number }) {
    this.#max = Math.max(1, options.max)
    this.#ttlMs = options.ttlMs
    this.#now = options.now ?? Date.now
  }

  get size (): number {
    return this.#sessions.size + this.#users.size
  }

  /**
   * True while a logout dropped before it reached Redis may still stop a live token: from
   * the drop until the dropped tombstone would have expired, or until `clearOverflow()`.
   */
  get overflowed (): boolean {
    return this.#overflowUntil > this.#now()
  }

  /** How many overflows began (a drop while none was on): one log line each. */
  get overflowEpisodes (): number {
    return this.#episodes
  }

  /** Tombstones dropped before their time and before Redis had them, in all. */
  get dropped (): number {
    return this.#dropped
  }

  /**
   * `inRedis`: the logout was made in Redis already, and is kept only so that this instance
   * refuses the session's tokens in an outage; `ttlMs` then need only cover their lifetime.
   */
  revokeSession (sid: string, userId: string, inRedis = false, ttlMs = this.#ttlMs): void {
    this.#sessions.delete(sid) // re-inserted last: insertion order is age order
    this.#sessions.set(sid, { userId, until: this.#now() + ttlMs, replayed: inRedis })
    this.#bound()
  }

  /** Every session of `userId` created at or before `before` (ms) is revoked. */
  revokeUser (userId: string, before: number): void {
    this.#users.delete(userId)
    this.#users.set(userId, { before, until: this.#now() + this.#ttlMs, replayed: false })
    this.#bound()
  }

  isRevoked (sid: string, userId: string, createdAtMs: number): boolean {
    const now = this.#now()
    const session = this.#sessions.get(sid)
    if (session !== undefined && session.until > now) return true
    const user = this.#users.get(userId)
    return user !== undefined && user.until > now && !(createdAtMs > user.before)
  }

  /** The live tombstones Redis does not have yet. */
  pending (): PendingTombstones {
    const now = this.#now()
    const live = <T extends Tombstone>(map: Map<string, T>): Array<[string, T]> => [...map].filter(([, t]) => t.until > now && !t.replayed)
    return { sessions: live(this.#sessions), users: live(this.#users) }
  }

  /**
   * Redis has these now. They stay, so that this instance keeps refusing those tokens in a
   * later outage, but they are the first to make room and are not counted as dropped. A
   * tombstone written again since `pending()` is a new one, and stays pending.
   */
  markReplayed (replayed: PendingTombstones): void {
    for (const [sid, t] of replayed.sessions) if (this.#sessions.get(sid) === t) t.replayed = true
    for (const [userId, t] of replayed.users) if (this.#users.get(userId) === t) t.replayed = true
  }

  clearOverflow (): void {
    this.#overflowUntil = 0
  }

  #bound (): void {
    if (this.size <= this.#max) return
    const now = this.#now()
    const maps: Array<Map<string, Tombstone>> = [this.#sessions, this.#users]
    // Expired ones first (the oldest: they all live as long), then the ones Redis has.
    for (const map of maps) {
      for (const [key, t] of map) {
        if (t.until > now) break
        map.delete(key)
      }
    }
    for (const map of maps) {
      for (const [key, t] of map) {
        if (this.size <= this.#max) return
        if (t.replayed) map.delete(key)
      }
    }
    while (this.size > this.#max) {
      const session = first(this.#sessions)
      const user = first(this.#users)
      // The older of the two oldest goes.
      let victim: [Map<string, Tombstone>, string, Tombstone]
      if (session !== null && (user === null || session[1].until <= user[1].until)) victim = [this.#sessions, ...session]
      else if (user !== null) victim = [this.#users, ...user]
      else return // cannot happen: size > max ≥ 1
      const [map, key, t] = victim
      map.delete(key)
      this.#dropped++
      if (!this.overflowed) this.#episodes++
      this.#overflowUntil = Math.max(this.#overflowUntil, t.until)
    }
  }
}

function first<T> (map: Map<string, T>): [string, T] | null {
  const entry = map.entries().next()
  return entry.done === true ? null : entry.value
}
