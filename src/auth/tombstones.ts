/**
 * Logouts made while Redis is away: one tombstone per revoked session (`sid` → its user) and
 * one per user logged out everywhere (`userId` → the time: sessions created before it are
 * revoked). Every session check consults them, and they are replayed into Redis when it
 * returns.
 *
 * They are kept apart from the in-process fallback store on purpose: that store evicts its
 * least recently used entries, so a flood of logins or rate-limit counters during a long
 * outage would push logouts out and bring revoked tokens back to life. Here only tombstones
 * compete for room. They all live as long (`ttlMs`), so the oldest are the first to expire.
 * When more than `max` are alive, the oldest is dropped anyway and `overflowed` turns true:
 * the caller must then stop trusting tokens it cannot check, until `clearOverflow()`.
 */
interface SessionTombstone { userId: string, until: number }
interface UserTombstone { before: number, until: number }

export class Tombstones {
  readonly #sessions = new Map<string, SessionTombstone>()
  readonly #users = new Map<string, UserTombstone>()
  readonly #max: number
  readonly #ttlMs: number
  readonly #now: () => number
  #overflowed = false
  #dropped = 0

  constructor (options: { max: number, ttlMs: number, now?: () => number }) {
    this.#max = Math.max(1, options.max)
    this.#ttlMs = options.ttlMs
    this.#now = options.now ?? Date.now
  }

  get size (): number {
    return this.#sessions.size + this.#users.size
  }

  /** True once a tombstone was dropped before its time (see the file's comment). */
  get overflowed (): boolean {
    return this.#overflowed
  }

  /** Tombstones dropped before their time, in all. */
  get dropped (): number {
    return this.#dropped
  }

  revokeSession (sid: string, userId: string): void {
    this.#sessions.delete(sid) // re-inserted last: insertion order is age order
    this.#sessions.set(sid, { userId, until: this.#now() + this.#ttlMs })
    this.#bound()
  }

  /** Every session of `userId` created at or before `before` (ms) is revoked. */
  revokeUser (userId: string, before: number): void {
    this.#users.delete(userId)
    this.#users.set(userId, { before, until: this.#now() + this.#ttlMs })
    this.#bound()
  }

  isRevoked (sid: string, userId: string, createdAtMs: number): boolean {
    const now = this.#now()
    const session = this.#sessions.get(sid)
    if (session !== undefined && session.until > now) return true
    const user = this.#users.get(userId)
    return user !== undefined && user.until > now && !(createdAtMs > user.before)
  }

  /** The live session tombstones, as [sid, userId]. */
  sessions (): Array<[string, string]> {
    const now = this.#now()
    return [...this.#sessions].filter(([, t]) => t.until > now).map(([sid, t]) => [sid, t.userId])
  }

  /** The live user tombstones, as [userId, before]. */
  users (): Array<[string, number]> {
    const now = this.#now()
    return [...this.#users].filter(([, t]) => t.until > now).map(([userId, t]) => [userId, t.before])
  }

  clearOverflow (): void {
    this.#overflowed = false
  }

  #bound (): void {
    if (this.size <= this.#max) return
    const now = this.#now()
    for (const map of [this.#sessions, this.#users] as Array<Map<string, { until: number }>>) {
      for (const [key, t] of map) {
        if (t.until > now) break
        map.delete(key)
      }
    }
    while (this.size > this.#max) {
      const session = this.#sessions.entries().next().value
      const user = this.#users.entries().next().value
      // The older of the two oldest goes.
      if (user === undefined || (session !== undefined && session[1].until <= user[1].until)) {
        this.#sessions.delete(session![0])
      } else {
        this.#users.delete(user[0])
      }
      this.#dropped++
      this.#overflowed = true
    }
  }
}
