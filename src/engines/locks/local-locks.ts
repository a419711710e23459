/**
 * In-process locks: a table of owner-token mutexes with a TTL and a FIFO queue of waiters
 * per resource. They are the whole story when Redis is not configured (one instance), the
 * fallback while the main Redis is down, and, with Redis up, the first stage of every
 * acquisition: requests of one instance for one resource queue here, so only one of them
 * at a time polls Redis, and an instance never holds a resource twice while its Redis
 * comes and goes.
 *
 * Not an LRU: an entry is never evicted, it leaves on release or at its expiry.
 */

export interface LocalLockInfo {
  resource: string
  owner: string
  ttlMs: number
}

interface Entry {
  token: string
  expiresAt: number
  /** Only while somebody waits for this entry: its expiry must wake them. */
  timer: NodeJS.Timeout | null
}

interface Waiter {
  token: string
  ttlMs: number
  resolve: (granted: boolean) => void
  timer: NodeJS.Timeout | null
}

/** Expired entries nobody asks about again (a job's tick locks) are swept every this many takes. */
const SWEEP_EVERY = 256

export class LocalLocks {
  readonly #held = new Map<string, Entry>()
  readonly #queues = new Map<string, Waiter[]>()
  #takes = 0

  /** Takes the lock now or not at all; newcomers never jump a queue of waiters. */
  tryAcquire (resource: string, token: string, ttlMs: number): boolean {
    if (this.#live(resource) !== undefined || this.#queues.has(resource)) return false
    this.#take(resource, token, ttlMs)
    return true
  }

  /**
   * Waits in line until the lock is ours (true) or `waitMs` has passed (false). The lock is
   * handed to the first waiter at release or expiry, so no later caller can barge in.
   */
  acquire (resource: string, token: string, ttlMs: number, waitMs: number): Promise<boolean> {
    if (this.tryAcquire(resource, token, ttlMs)) return Promise.resolve(true)
    if (waitMs <= 0) return Promise.resolve(false)
    return new Promise<boolean>((resolve) => {
      const waiter: Waiter = { token, ttlMs, resolve, timer: null }
      waiter.timer = setTimeout(() => {
        const queue = this.#queues.get(resource)
        const at = queue?.indexOf(waiter) ?? -1
        if (queue !== undefined && at >= 0) {
          queue.splice(at, 1)
          if (queue.length === 0) this.#queues.delete(resource)
        }
        resolve(false)
      }, waitMs)
      const queue = this.#queues.get(resource)
      if (queue === undefined) this.#queues.set(resource, [waiter])
      else queue.push(waiter)
      this.#armExpiry(resource)
    })
  }

  /** Pushes the expiry out while `token` still holds the lock. */
  extend (resource: string, token: string, ttlMs: number): boolean {
    const entry = this.#live(resource)
    if (entry === undefined || entry.token !== token) return false
    entry.expiresAt = Date.now() + ttlMs
    if (entry.timer !== null) {
      clearTimeout(entry.timer)
      entry.timer = null
      this.#armExpiry(resource)
    }
    return true
  }

  /** Compare-and-delete: only the holder's own token releases the lock. */
  release (resource: string, token: string): boolean {
    const entry = this.#held.get(resource)
    if (entry === undefined || entry.token !== token) return false
    this.#drop(resource, entry)
    return true
  }

  /** Frees `resource` whoever holds it (an operator's force-release): the owner's token, or null when it was not held. */
  forceRelease (resource: string): string | null {
    const entry = this.#live(resource)
    if (entry === undefined) return null
    this.#drop(resource, entry)
    return entry.token
  }

  holds (resource: string, token: string): boolean {
    return this.#live(resource)?.token === token
  }

  /** Entries kept, expired ones included until the next sweep. */
  get size (): number {
    return this.#held.size
  }

  list (now = Date.now()): LocalLockInfo[] {
    this.#sweep()
    return [...this.#held].map(([resource, entry]) => ({ resource, owner: entry.token, ttlMs: Math.max(0, entry.expiresAt - now) }))
  }

  /** The entry, unless it has expired (then it is dropped and the lock handed on). */
  #live (resource: string): Entry | undefined {
    const entry = this.#held.get(resource)
    if (entry === undefined || entry.expiresAt > Date.now()) return entry
    this.#drop(resource, entry)
    return this.#held.get(resource)
  }

  #take (resource: string, token: string, ttlMs: number): void {
    this.#held.set(resource, { token, expiresAt: Date.now() + ttlMs, timer: null })
    if (++this.#takes % SWEEP_EVERY === 0) this.#sweep()
  }

  /** While somebody waits, the holder's expiry needs a timer to hand the lock on. */
  #armExpiry (resource: string): void {
    const entry = this.#held.get(resource)
    if (entry === undefined || entry.timer !== null || !this.#queues.has(resource)) return
    entry.timer = setTimeout(() => {
      entry.timer = null
      if (this.#held.get(resource) === entry) this.#live(resource)
      this.#armExpiry(resource)
    }, Math.max(0, entry.expiresAt - Date.now()) + 1)
    entry.timer.unref()
  }

  /** Frees the lock and hands it straight to the first waiter, if any. */
  #drop (resource: string, entry: Entry): void {
    if (entry.timer !== null) clearTimeout(entry.timer)
    this.#held.delete(resource)
    const queue = this.#queues.get(resource)
    const next = queue?.shift()
    if (queue !== undefined && queue.length === 0) this.#queues.delete(resource)
    if (next === undefined) return
    if (next.timer !== null) clearTimeout(next.timer)
    this.#take(resource, next.token, next.ttlMs)
    this.#armExpiry(resource)
    next.resolve(true)
  }

  #sweep (): void {
    const now = Date.now()
    for (const [resource, entry] of this.#held) {
      if (entry.expiresAt <= now && !this.#queues.has(resource)) this.#drop(resource, entry)
    }
  }
}
