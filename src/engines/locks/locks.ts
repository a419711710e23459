/**
 * The lock service behind `fastify.locks`: `using(resource, ttl, fn)` for request work, and
 * `claim(resource, ttl)` for the scheduler's tick locks. Three backends, chosen per call:
 *
 *   redlock   Redis masters (the main Redis, or the REDLOCK_URLS servers): Redlock.
 *   local     no Redis configured: in-process locks are the real thing (one instance).
 *   fallback  the main Redis is the only master and it is down: in-process locks, safe
 *             within this instance; across instances the store's version check is what
 *             keeps data correct. Never chosen for REDLOCK_URLS: an operator who listed
 *             masters gets a LockUnavailableError when a majority is unreachable, never a
 *             weaker lock.
 *
 * Every acquisition first queues in process (LocalLocks), so one instance polls Redis with
 * one request per resource at a time, and never holds one resource twice while Redis comes
 * and goes. The wait for a busy lock is bounded by LOCK_WAIT_MS, then a LockBusyError.
 * The engine's errors (./errors.ts) carry `retryAfterMs`; the app maps them to HTTP.
 */
import { randomUUID } from 'node:crypto'
import { hostname } from 'node:os'
import { LockBusyError, LockLostError, LockUnavailableError } from './errors.js'
import { scanLocks } from './listing.js'
import { LocalLocks } from './local-locks.js'
import { Redlock, type LockMaster } from './redlock.js'

export type LockBackend = 'redlock' | 'local' | 'fallback'

export interface LocksLogger {
  info (obj: object, msg: string): void
  warn (obj: object, msg: string): void
  debug (obj: object, msg: string): void
}

export interface LocksOptions {
  /** Redlock masters; none: in-process locks only (no Redis configured). */
  masters: readonly LockMaster[]
  /** The only master is the main Redis: use the in-process fallback while it is down. */
  followsMainRedis: boolean
  /** Whether the main Redis is usable now (RedisState.available). */
  mainAvailable: () => boolean
  /** Longest wait for a busy lock in `using`. */
  waitMs: number
  /** Pause between two tries of a busy lock, randomised by ±50%. */
  retryDelayMs: number
  /** REDIS_KEY_PREFIX, for SCAN patterns (ioredis applies it to commands, not to SCAN). */
  keyPrefix: string
  driftFactor?: number
  /** Identifies this process in owner tokens; `<hostname>:<pid>` by default. */
  instanceId?: string
  log: LocksLogger
}

export interface LocksStats {
  /** Locks taken (all backends). */
  acquisitions: number
  /** Acquisitions that found the lock busy at least once (whether they got it or not). */
  contentions: number
  /** LockBusyErrors: still busy after LOCK_WAIT_MS (a claim that finds the lock busy is a contention only). */
  timeouts: number
  /** LockUnavailableErrors: too few masters reachable. */
  unavailable: number
  /** timeouts + unavailable. */
  failures: number
  extensions: number
  extensionFailures: number
  /** Holders whose lock expired or was taken over while they still worked (signal aborted). */
  lost: number
  /** Locks taken in process because the main Redis was down. */
  fallbackAcquisitions: number
}

export interface HeldLock {
  resource: string
  /** The owner token, `<hostname>:<pid>:<random>`; null when the key holds something else. */
  owner: string | null
  /** `<hostname>:<pid>` of the holder, when the owner is one of our tokens. */
  instance: string | null
  ttlMs: number | null
  source: 'redis' | 'local'
  /** How many masters hold it with this owner (1 for in-process locks). */
  masters: number
}

export interface LocksListing {
  backend: LockBackend
  masters: Array<{ name: string, reachable: boolean }>
  complete: boolean
  locks: HeldLock[]
}

/** What `forceRelease` removed: the owner token found, and on how many masters (0: in process). */
export interface ForcedRelease {
  backend: LockBackend
  owner: string | null
  masters: number
}

/** Every lock's key starts with this (before REDIS_KEY_PREFIX). */
export const LOCK_NAMESPACE = 'lock:'

export type LockedFn<T> = (signal: AbortSignal) => Promise<T>

export const MIN_TTL_MS = 100
export const MAX_TTL_MS = 86_400_000
const RESOURCE_RE = /^[\x21-\x7e]{1,512}$/

export class Locks {
  readonly instanceId: string
  readonly waitMs: number
  readonly #redlock: Redlock | null
  readonly #local = new LocalLocks()
  readonly #opts: LocksOptions
  readonly #stats: Omit<LocksStats, 'failures'> = {
    acquisitions: 0, contentions: 0, timeouts: 0, unavailable: 0, extensions: 0, extensionFailures: 0, lost: 0, fallbackAcquisitions: 0,
  }

  #quorumLost = false

  constructor (options: LocksOptions) {
    this.#opts = options
    this.instanceId = options.instanceId ?? `${hostname()}:${process.pid}`
    this.waitMs = options.waitMs
    this.#redlock = options.masters.length > 0
      ? new Redlock({ masters: options.masters, ...(options.driftFactor !== undefined ? { driftFactor: options.driftFactor } : {}) })
      : null
  }

  /** Which backend a lock taken now would use. */
  backend (): LockBackend {
    if (this.#redlock === null) return 'local'
    if (this.#opts.followsMainRedis && !this.#opts.mainAvailable()) return 'fallback'
    return 'redlock'
  }

  get masterCount (): number {
    return this.#redlock?.masters.length ?? 0
  }

  /**
   * Runs `fn` while holding `resource` (the Redis key, before REDIS_KEY_PREFIX). Waits at
   * most LOCK_WAIT_MS, then throws a LockBusyError; throws a LockUnavailableError when a
   * majority of the REDLOCK_URLS masters is unreachable (fn is then never called). The
   * lock is extended while fn runs; `signal` aborts (reason: a LockLostError) if it is
   * lost anyway. Released by owner token when fn settles.
   */
  async using<T> (resource: string, ttlMs: number, fn: LockedFn<T>): Promise<T> {
    checkArgs(resource, ttlMs)
    if (typeof fn !== 'function') throw new TypeError('locks.using: fn must be a function')
    const lease = await this.#acquire(resource, ttlMs, this.waitMs)
    try {
      return await lease.run(fn)
    } finally {
      await lease.release()
    }
  }

  /**
   * One try, no wait: a Lease, or null when somebody else holds `resource`. `strict`
   * (the scheduler): throws a LockUnavailableError instead of falling back to an
   * in-process lock while the main Redis is down. The caller runs work with
   * `lease.run(fn)` and decides whether to release (a tick lock is left to expire).
   */
  async claim (resource: string, ttlMs: number, options: { strict?: boolean } = {}): Promise<Lease | null> {
    checkArgs(resource, ttlMs)
    const strict = options.strict ?? true
    const backend = this.backend()
    if (backend === 'fallback' && strict) {
      this.#stats.unavailable++
      throw new LockUnavailableError(resource)
    }
    const token = this.#token()
    if (!this.#local.tryAcquire(resource, token, ttlMs)) {
      this.#stats.contentions++
      return null
    }
    if (backend !== 'redlock' || this.#redlock === null) return this.#granted(resource, token, ttlMs, backend, Date.now() + ttlMs, false)
    const outcome = await this.#redlock.acquire(resource, token, ttlMs)
    if (outcome.ok) return this.#granted(resource, token, ttlMs, 'redlock', outcome.validUntil, false)
    if (outcome.reason === 'busy') {
      this.#local.release(resource, token)
      this.#stats.contentions++
      return null
    }
    if (!strict && this.#opts.followsMainRedis) return this.#granted(resource, token, ttlMs, 'fallback', Date.now() + ttlMs, false)
    this.#local.release(resource, token)
    throw this.#unavailable(resource)
  }

  /** Held locks: `lock:*` keys on every master (SCAN), or the in-process table without Redis. */
  async list (limit = 500): Promise<LocksListing> {
    const backend = this.backend()
    if (backend !== 'redlock' || this.#redlock === null) {
      const masters = (this.#redlock?.masters ?? []).map((m) => ({ name: m.name, reachable: false }))
      const locks = this.#local.list().slice(0, limit).map((l): HeldLock => ({ ...l, instance: instanceOf(l.owner), source: 'local', masters: 1 }))
      return { backend, masters, complete: this.#local.size <= limit, locks }
    }
    const scans = await Promise.all(this.#redlock.masters.map(async (master) => {
      try {
        return await scanLocks(master.client, this.#opts.keyPrefix, limit)
      } catch (err) {
        master.onError(err, 'lock.list')
        return null
      }
    }))
    const merged = new Map<string, HeldLock>()
    for (const scan of scans) {
      for (const found of scan?.locks ?? []) {
        const known = merged.get(found.resource)
        if (known === undefined) {
          merged.set(found.resource, { ...found, instance: instanceOf(found.owner), source: 'redis', masters: 1 })
        } else if (known.owner === found.owner) {
          known.masters++
          if (found.ttlMs !== null && (known.ttlMs === null || found.ttlMs < known.ttlMs)) known.ttlMs = found.ttlMs
        }
      }
    }
    return {
      backend,
      masters: this.#redlock.masters.map((m, i) => ({ name: m.name, reachable: scans[i] !== null })),
      complete: scans.every((s) => s?.complete === true) && merged.size <= limit,
      locks: [...merged.values()].sort((a, b) => a.resource.localeCompare(b.resource)).slice(0, limit),
    }
  }

  /**
   * Deletes `resource` (a `lock:` key) whoever holds it: an operator's way out of a stuck
   * lock. On every master holding it, a compare-and-delete with the owner found there (a lock
   * taken again in between is left alone), and in this instance's in-process table (the
   * next waiter here gets it). A holder elsewhere finds out at its next extension (lost).
   * Null when nothing held it.
   */
  async forceRelease (resource: string): Promise<ForcedRelease | null> {
    if (!resource.startsWith(LOCK_NAMESPACE) || !RESOURCE_RE.test(resource)) {
      throw new TypeError(`locks: only ${LOCK_NAMESPACE}* keys of 1-512 printable ASCII characters can be released`)
    }
    const backend = this.backend()
    const localOwner = this.#local.forceRelease(resource)
    if (backend !== 'redlock' || this.#redlock === null) return localOwner === null ? null : { backend, owner: localOwner, masters: 0 }
    const owners = await Promise.all(this.#redlock.masters.map(async (master) => {
      try {
        return await master.client.get(resource)
      } catch (err) {
        master.onError(err, 'lock.forceRelease')
        return null
      }
    }))
    const held = owners.filter((owner): owner is string => owner !== null)
    if (held.length === 0) return localOwner === null ? null : { backend, owner: localOwner, masters: 0 }
    for (const owner of new Set(held)) await this.#redlock.release(resource, owner)
    return { backend, owner: held[0] ?? null, masters: held.length }
  }

  stats (): LocksStats & { held: number } {
    return { ...this.#stats, failures: this.#stats.timeouts + this.#stats.unavailable, held: this.#local.size }
  }

  async #acquire (resource: string, ttlMs: number, waitMs: number): Promise<Lease> {
    const deadline = Date.now() + waitMs
    const token = this.#token()
    let contended = false
    if (!this.#local.tryAcquire(resource, token, ttlMs)) {
      contended = true
      if (!(await this.#local.acquire(resource, token, ttlMs, deadline - Date.now()))) throw this.#busy(resource, waitMs)
    }
    for (;;) {
      const backend = this.backend()
      if (backend !== 'redlock' || this.#redlock === null) return this.#granted(resource, token, ttlMs, backend, Date.now() + ttlMs, contended)
      const outcome = await this.#redlock.acquire(resource, token, ttlMs)
      if (outcome.ok) return this.#granted(resource, token, ttlMs, 'redlock', outcome.validUntil, contended)
      if (outcome.reason === 'unavailable') {
        // The main Redis just failed (its state machine has switched to fallback).
        if (this.#opts.followsMainRedis) return this.#granted(resource, token, ttlMs, 'fallback', Date.now() + ttlMs, contended)
        this.#local.release(resource, token)
        throw this.#unavailable(resource)
      }
      contended = true
      const remaining = deadline - Date.now()
      if (remaining <= 0) {
        this.#local.release(resource, token)
        throw this.#busy(resource, waitMs)
      }
      await sleep(Math.min(remaining, Math.round(this.#opts.retryDelayMs * (0.5 + Math.random()))))
    }
  }

  #granted (resource: string, token: string, ttlMs: number, backend: LockBackend, validUntil: number, contended: boolean): Lease {
    this.#stats.acquisitions++
    if (contended) this.#stats.contentions++
    if (backend === 'fallback') this.#stats.fallbackAcquisitions++
    if (backend === 'redlock' && this.#quorumLost) {
      this.#quorumLost = false
      this.#opts.log.info({ masters: this.masterCount }, 'lock servers reachable again: locks and jobs resume')
    }
    return new Lease({ local: this.#local, redlock: backend === 'redlock' ? this.#redlock : null, stats: this.#stats, log: this.#opts.log }, resource, token, ttlMs, backend, validUntil)
  }

  #busy (resource: string, waitedMs: number): LockBusyError {
    this.#stats.contentions++
    this.#stats.timeouts++
    return new LockBusyError(resource, waitedMs)
  }

  #unavailable (resource: string): LockUnavailableError {
    this.#stats.unavailable++
    if (!this.#quorumLost) {
      this.#quorumLost = true
      if (this.#opts.followsMainRedis) {
        // The lock server is the main Redis: writes take in-process locks while it fails
        // (they do not answer 503); only jobs, which never run without their lock, skip.
        this.#opts.log.warn({ masters: this.masterCount }, 'lock server (the main Redis) failed the lock: jobs skip until it answers; writes use in-process locks meanwhile')
      } else {
        this.#opts.log.warn({ masters: this.masterCount, quorum: this.#redlock?.quorum }, 'lock servers unreachable (no majority): locked work is refused and jobs skip until they are back')
      }
    }
    return new LockUnavailableError(resource)
  }

  /** `<hostname>:<pid>:<uuid>`; randomUUID draws from a cached entropy pool (randomBytes cost 6 µs a call). */
  #token (): string {
    return `${this.instanceId}:${randomUUID()}`
  }
}

interface LeaseHost {
  local: LocalLocks
  /** Set for a Redis-backed lease. */
  redlock: Redlock | null
  stats: Omit<LocksStats, 'failures'>
  log: LocksLogger
}

/** A held lock: run work under it (auto-extended), extend it, release it. */
export class Lease {
  readonly resource: string
  readonly token: string
  readonly ttlMs: number
  readonly backend: LockBackend
  /** Until when the lock is ours for sure (ms since the epoch), drift already deducted. */
  validUntil: number
  readonly #host: LeaseHost
  #released = false

  constructor (host: LeaseHost, resource: string, token: string, ttlMs: number, backend: LockBackend, validUntil: number) {
    this.#host = host
    this.resource = resource
    this.token = token
    this.ttlMs = ttlMs
    this.backend = backend
    this.validUntil = validUntil
  }

  /** Pushes the expiry out by the lease's TTL; 'lost' when somebody else holds it now. */
  async extend (): Promise<'ok' | 'lost' | 'unavailable'> {
    const { local, redlock, stats } = this.#host
    const localHeld = local.extend(this.resource, this.token, this.ttlMs)
    if (redlock === null) {
      if (!localHeld) return 'lost'
      this.validUntil = Date.now() + this.ttlMs
      stats.extensions++
      return 'ok'
    }
    const outcome = await redlock.extend(this.resource, this.token, this.ttlMs)
    if (outcome.ok) {
      this.validUntil = outcome.validUntil
      stats.extensions++
      return 'ok'
    }
    stats.extensionFailures++
    return outcome.reason
  }

  /**
   * Runs `fn`, extending the lock every third of its TTL. If an extension finds the lock
   * taken over, or the lock's validity runs out without a successful extension (masters
   * unreachable, or an event loop stalled past it), `signal` aborts with a LockLostError.
   */
  async run<T> (fn: LockedFn<T>): Promise<T> {
    const keeper = new Keeper(this, this.#host)
    try {
      return await fn(keeper.controller.signal)
    } finally {
      await keeper.stop()
    }
  }

  /** Compare-and-delete by owner token (Redis and in process); never throws; idempotent. */
  async release (): Promise<void> {
    if (this.#released) return
    this.#released = true
    const pending = this.#host.redlock?.release(this.resource, this.token)
    // Safe before the Redis release completes: a local waiter's SET NX goes out on the same
    // connections after our compare-and-delete.
    this.#host.local.release(this.resource, this.token)
    await pending
  }
}

/**
 * Keeps a lease alive while its holder works: an extension every third of the TTL, and a
 * watchdog at the end of the validity (armed with the first extension, so a run shorter
 * than a third of the TTL costs one timer). Timers call module functions with the keeper
 * as argument: no closures per run on the hot path.
 */
class Keeper {
  readonly controller = new AbortController()
  readonly #lease: Lease
  readonly #host: LeaseHost
  readonly #every: number
  readonly #retryGap: number
  #done = false
  #extendTimer: NodeJS.Timeout | null = null
  #watchdog: NodeJS.Timeout | null = null
  #inflight: Promise<void> | null = null

  constructor (lease: Lease, host: LeaseHost) {
    this.#lease = lease
    this.#host = host
    this.#every = Math.max(10, Math.floor(lease.ttlMs / 3))
    this.#retryGap = Math.max(10, Math.floor(lease.ttlMs / 10))
    this.#schedule(this.#every)
  }

  async stop (): Promise<void> {
    this.#done = true
    if (this.#extendTimer !== null) clearTimeout(this.#extendTimer)
    if (this.#watchdog !== null) clearTimeout(this.#watchdog)
    if (this.#inflight !== null) await this.#inflight
  }

  lose (why: 'expired' | 'taken over'): void {
    if (this.#done || this.controller.signal.aborted) return
    const lease = this.#lease
    this.#host.stats.lost++
    this.#host.log.warn({ resource: lease.resource, why, backend: lease.backend }, 'lock lost while its holder was still working')
    this.controller.abort(new LockLostError(lease.resource, why))
  }

  onExtendTimer (): void {
    this.#extendTimer = null
    // A stalled event loop may wake us past the validity: the lock may then have been
    // somebody else's in between, and no extension can undo that.
    if (Date.now() >= this.#lease.validUntil) return this.lose('expired')
    if (this.#watchdog === null) this.#armWatchdog()
    this.#inflight = this.#extendOnce().finally(() => { this.#inflight = null })
  }

  async #extendOnce (): Promise<void> {
    const outcome = await this.#lease.extend()
    if (this.#done || this.controller.signal.aborted) return
    if (outcome === 'ok') {
      this.#armWatchdog()
      this.#schedule(this.#every)
    } else if (outcome === 'lost') {
      this.lose('taken over')
    } else if (this.#lease.validUntil - Date.now() > this.#retryGap) {
      this.#schedule(this.#retryGap)
    }
    // else: the watchdog fires at validUntil.
  }

  #schedule (delay: number): void {
    this.#extendTimer = setTimeout(extendTimerFired, delay, this)
    this.#extendTimer.unref()
  }

  #armWatchdog (): void {
    if (this.#watchdog !== null) clearTimeout(this.#watchdog)
    this.#watchdog = setTimeout(watchdogFired, Math.max(0, this.#lease.validUntil - Date.now()), this)
    this.#watchdog.unref()
  }
}

function extendTimerFired (keeper: Keeper): void {
  keeper.onExtendTimer()
}

function watchdogFired (keeper: Keeper): void {
  keeper.lose('expired')
}

function checkArgs (resource: string, ttlMs: number): void {
  if (typeof resource !== 'string' || !RESOURCE_RE.test(resource)) {
    throw new TypeError('locks: resource must be 1-512 printable ASCII characters without spaces')
  }
  if (!Number.isInteger(ttlMs) || ttlMs < MIN_TTL_MS || ttlMs > MAX_TTL_MS) {
    throw new TypeError(`locks: ttlMs must be an integer from ${MIN_TTL_MS} to ${MAX_TTL_MS}`)
  }
}

function instanceOf (owner: string | null): string | null {
  if (owner === null) return null
  const m = /^(.+:\d+):[0-9a-f-]{36}$/.exec(owner)
  return m?.[1] ?? null
}

function sleep (ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms))
}

