/**
 * Fixed-window hit counting for the rate limiter, in Redis while Redis is in use and in
 * process otherwise.
 *
 * Redis: every hit is counted in Redis. Hits are sent together as ONE script call per
 * batch, with the hits of one client added in one INCRBY (the count and the expiry are set
 * inside the script: a counter never exists without a TTL, and never keeps a TTL longer
 * than its window; each hit still gets its own exact count). A batch leaves at the end of
 * the event-loop turn when a request is waiting for it, and up to COALESCE_MS later when
 * every hit in it was already answered (or as soon as MAX_BATCH hits are queued). One command per batch instead of one per request
 * is where the stock Redis store's throughput goes; one INCRBY per client per batch keeps a
 * flood from one client cheap for Redis too.
 *
 * Whether a request waits for Redis's answer:
 *  - the window is already known to be over its limit (Redis said so, counts only grow
 *    within a window): refused at once, still counted;
 *  - an "early" allowance of min(1000, ⌊max/100⌋) hits per client may be admitted before
 *    Redis answers, when this instance's view (Redis's last count + its own unanswered
 *    hits) is within the limit;
 *  - otherwise the request waits for Redis's count (exact).
 * The bound that buys: each instance admits at most that allowance beyond the limit per
 * client and window (an early hit is only over the limit if other instances' hits arrived
 * in between; once one is answered over the limit, the instance refuses at once). With one
 * instance, or a limit below 100 (the login limits), admission is exact.
 *
 * In process: a bounded map of windows that also mirrors every count Redis returns, so
 * when Redis goes away mid-window this instance carries on from the last count it saw
 * instead of handing every client a fresh budget. While Redis is away each instance counts
 * alone: the effective limit is up to N × instances.
 *
 * A dead Redis is never awaited: in fallback mode hits go straight to memory; a batch that
 * fails or times out (the client's command timeout) flips the shared state and its hits
 * are answered from memory.
 */
import type { Redis } from 'ioredis'

/** What the counter reads from the shared Redis state (a `RedisState` fits). */
export interface CounterState {
  readonly client: Redis | null
  readonly available: boolean
  reportFailure (err: unknown, operation?: string): void
}

export interface Hit {
  /** Hits in the current window, this one included. */
  current: number
  /** Milliseconds until the window ends. */
  ttl: number
}

export type HitCallback = (err: Error | null, hit: Hit) => void

/** Every key the limiter writes starts with this (after the client's REDIS_KEY_PREFIX). */
export const KEY_PREFIX = 'rate_limit:'

/** Largest number of distinct keys in one script call; a bigger batch is split. */
export const MAX_BATCH = 256

/**
 * How long hits that nobody waits for may be held to share a script call. Holding them does
 * not loosen the bound (that is the early allowance); it only makes a busy client's hits
 * reach Redis in fewer, larger calls: each call is a write and a read on the Redis socket,
 * and on a small machine those wake-ups cost the service more than the counting does.
 */
export const COALESCE_MS = 20

/**
 * Most early admissions per client an instance may have unanswered by Redis (the allowance
 * is 1% of the limit up to this). Large enough that a busy client does not wait for Redis
 * on every turn; the over-admission it allows stays within 1% of the limit per instance.
 */
export const MAX_EARLY = 1000

/** The early allowance for a limit: 1% of it, at most MAX_EARLY (1000), 0 below 100. */
export function earlyAllowance (max: number): number {
  return Math.min(MAX_EARLY, Math.floor(max / 100))
}

/**
 * KEYS: the counters; ARGV[2i-1]: the window of KEYS[i] in ms, ARGV[2i]: its hits in this
 * batch. Returns the count after the hits and the PTTL, per key. A counter without a TTL
 * (left by an old INCR-then-EXPIRE writer) or with one longer than its window gets the
 * window's; a value that is not a number is replaced, never an error that would fail the
 * whole batch.
 */
export const HITS_SCRIPT = `
local out = {}
for i = 1, #KEYS do
  local key = KEYS[i]
  local window = tonumber(ARGV[2 * i - 1])
  local hits = tonumber(ARGV[2 * i])
  local count = redis.pcall('INCRBY', key, hits)
  if type(count) == 'table' then
    redis.call('SET', key, hits, 'PX', window)
    count = hits
  end
  local ttl = redis.call('PTTL', key)
  if ttl < 0 or ttl > window then
    redis.call('PEXPIRE', key, window)
    ttl = window
  end
  out[2 * i - 1] = count
  out[2 * i] = ttl
end
return out`

const SCRIPT_NAME = 'aicRateLimitHits'
type ScriptClient = Redis & Record<typeof SCRIPT_NAME, (...args: Array<string | number>) => Promise<unknown>>

/** One client's window as this instance knows it. */
export interface Window {
  /** Hits in the window: Redis's last count, or this instance's own count in fallback. */
  count: number
  resetAt: number
  /** Hits sent (or queued) to Redis and not answered yet. */
  inFlight: number
  /** Of those, admitted before the answer. */
  early: number
}

/**
 * The in-process windows: a Map with a hard bound on entries. When full, expired windows
 * go first, then the oldest ones without unanswered hits, then the oldest (a tenth of the
 * bound at a time, so the sweep is amortised).
 */
export class MemoryWindows {
  readonly #windows = new Map<string, Window>()
  readonly #maxEntries: number
  evictions = 0

  constructor (maxEntries: number) {
    this.#maxEntries = Math.max(1, maxEntries)
  }

  get size (): number {
    return this.#windows.size
  }

  /** The live window for `key`, created (or restarted when over) as needed. */
  track (key: string, windowMs: number, now = Date.now()): Window {
    let w = this.#windows.get(key)
    if (w === undefined) {
      if (this.#windows.size >= this.#maxEntries) this.#makeRoom(now)
      w = { count: 0, resetAt: now + windowMs, inFlight: 0, early: 0 }
      this.#windows.set(key, w)
    } else if (w.resetAt <= now) {
      w.count = 0
      w.resetAt = now + windowMs
    } else if (w.resetAt - now > windowMs) {
      // A window longer than the configured one (the setting shrank) is cut to it.
      w.resetAt = now + windowMs
    }
    return w
  }

  /** Counts a hit in process (fallback, or Redis disabled). */
  hit (key: string, windowMs: number, now = Date.now()): Hit {
    return countIn(this.track(key, windowMs, now), now)
  }

  /** The current count of a window (0 when absent or over). */
  peek (key: string, now = Date.now()): number {
    const w = this.#windows.get(key)
    return w === undefined || w.resetAt <= now ? 0 : w.count
  }

  get (key: string): Window | undefined {
    return this.#windows.get(key)
  }

  clear (): void {
    this.#windows.clear()
  }

  #makeRoom (now: number): void {
    for (const [key, w] of this.#windows) if (w.resetAt <= now && w.inFlight === 0) this.#windows.delete(key)
    let excess = this.#windows.size - this.#maxEntries + Math.max(1, Math.floor(this.#maxEntries / 10))
    for (const pass of [0, 1]) {
      if (excess <= 0) return
      for (const [key, w] of this.#windows) {
        if (pass === 0 && w.inFlight > 0) continue
        this.#windows.delete(key)
        this.evictions++
        if (--excess <= 0) return
      }
    }
  }
}

function countIn (w: Window, now: number): Hit {
  w.count++
  return { current: w.count, ttl: w.resetAt - now }
}

interface Pending {
  key: string
  windowMs: number
  window: Window
  /** null when the request was already answered (early admission or known refusal). */
  cb: HitCallback | null
  early: boolean
}

export interface WindowCounterStats {
  /** Hits counted in Redis. */
  redisHits: number
  /** Hits counted in process (Redis disabled, degraded, or a failed batch). */
  memoryHits: number
  /** Redis-mode hits answered before Redis did: admitted within the early allowance, or refused because the window was known to be over. */
  earlyAdmits: number
  earlyRefusals: number
  /** Script calls sent to Redis, and the most hits one carried. */
  batches: number
  largestBatch: number
  /** Batches that failed (each flips the shared state to fallback). */
  failedBatches: number
  /** In-process windows held now, and how many were evicted to stay in bounds. */
  memoryWindows: number
  memoryEvictions: number
}

export interface WindowCounterOptions {
  state: CounterState
  /** Bound on in-process windows. */
  maxEntries: number
  /** How long already-answered hits may wait to share a call (default COALESCE_MS). */
  coalesceMs?: number
}

export class WindowCounter {
  readonly memory: MemoryWindows
  readonly #state: CounterState
  readonly #coalesceMs: number
  #queue: Pending[] = []
  /** Someone waits for the queued batch: it leaves at the end of this turn. */
  #immediate: NodeJS.Immediate | null = null
  /** Only already-answered hits are queued: they may wait COALESCE_MS for company. */
  #timer: NodeJS.Timeout | null = null
  readonly #stats = { redisHits: 0, memoryHits: 0, earlyAdmits: 0, earlyRefusals: 0, batches: 0, largestBatch: 0, failedBatches: 0 }
  readonly #flush = (): void => { this.#flushNow() }

  constructor (options: WindowCounterOptions) {
    this.#state = options.state
    this.#coalesceMs = options.coalesceMs ?? COALESCE_MS
    this.memory = new MemoryWindows(options.maxEntries)
    const client = options.state.client
    if (client !== null && !(SCRIPT_NAME in client)) client.defineCommand(SCRIPT_NAME, { lua: HITS_SCRIPT })
  }

  /**
   * Counts one hit on `rate_limit:<key>` in a window of `windowMs` against a limit of
   * `max`. The callback runs synchronously in fallback mode and for early answers, and
   * after the batch's reply otherwise.
   */
  hit (key: string, windowMs: number, max: number, cb: HitCallback): void {
    const fullKey = KEY_PREFIX + key
    const now = Date.now()
    const w = this.memory.track(fullKey, windowMs, now)
    if (this.#state.client === null || !this.#state.available) {
      this.#stats.memoryHits++
      cb(null, countIn(w, now))
      return
    }
    w.inFlight++
    const current = w.count + w.inFlight
    if (w.count > max) {
      this.#stats.earlyRefusals++
      this.#enqueue({ key: fullKey, windowMs, window: w, cb: null, early: false })
      cb(null, { current, ttl: w.resetAt - now })
    } else if (current <= max && w.early < earlyAllowance(max)) {
      w.early++
      this.#stats.earlyAdmits++
      this.#enqueue({ key: fullKey, windowMs, window: w, cb: null, early: true })
      cb(null, { current, ttl: w.resetAt - now })
    } else {
      this.#enqueue({ key: fullKey, windowMs, window: w, cb, early: false })
    }
  }

  /** `hit` as a promise. */
  hitAsync (key: string, windowMs: number, max: number): Promise<Hit> {
    return new Promise((resolve) => { this.hit(key, windowMs, max, (_err, hit) => resolve(hit)) })
  }

  stats (): WindowCounterStats {
    return { ...this.#stats, memoryWindows: this.memory.size, memoryEvictions: this.memory.evictions }
  }

  /** Sends what is queued now (at shutdown, before the Redis client closes). */
  flush (): void {
    this.#flushNow()
  }

  #enqueue (p: Pending): void {
    this.#queue.push(p)
    if (this.#immediate !== null) return
    if (p.cb !== null || this.#queue.length >= MAX_BATCH) {
      if (this.#timer !== null) {
        clearTimeout(this.#timer)
        this.#timer = null
      }
      this.#immediate = setImmediate(this.#flush)
    } else if (this.#timer === null) {
      this.#timer = setTimeout(this.#flush, this.#coalesceMs)
    }
  }

  #flushNow (): void {
    if (this.#immediate !== null) clearImmediate(this.#immediate)
    if (this.#timer !== null) clearTimeout(this.#timer)
    this.#immediate = null
    this.#timer = null
    const queue = this.#queue
    if (queue.length === 0) return
    this.#queue = []
    const client = this.#state.client as ScriptClient | null
    if (client === null || !this.#state.available) {
      this.#answerFromMemory(queue)
      return
    }
    // One entry per key, its hits in arrival order.
    const byKey = new Map<string, Pending[]>()
    for (const p of queue) {
      const same = byKey.get(p.key)
      if (same === undefined) byKey.set(p.key, [p])
      else same.push(p)
    }
    let group: Pending[][] = []
    for (const hits of byKey.values()) {
      group.push(hits)
      if (group.length === MAX_BATCH) {
        this.#send(client, group)
        group = []
      }
    }
    if (group.length > 0) this.#send(client, group)
  }

  #send (client: ScriptClient, keys: Pending[][]): void {
    const n = keys.length
    const args: Array<string | number> = new Array(1 + 3 * n)
    args[0] = n
    let hits = 0
    for (let i = 0; i < n; i++) {
      const same = keys[i] as Pending[]
      const first = same[0] as Pending
      args[1 + i] = first.key
      args[1 + n + 2 * i] = Math.max(1, Math.ceil(first.windowMs))
      args[2 + n + 2 * i] = same.length
      hits += same.length
    }
    this.#stats.batches++
    if (hits > this.#stats.largestBatch) this.#stats.largestBatch = hits
    client[SCRIPT_NAME](...args).then((reply) => {
      const values = reply as unknown[]
      const now = Date.now()
      for (let i = 0; i < n; i++) {
        const same = keys[i] as Pending[]
        const total = Number(values[2 * i])
        const ttl = Number(values[2 * i + 1])
        if (!Number.isFinite(total) || !Number.isFinite(ttl)) {
          this.#answerFromMemory(same)
          continue
        }
        this.#stats.redisHits += same.length
        const w = (same[0] as Pending).window
        // Replies come back in the order batches were sent: the latest is Redis's count.
        w.count = total
        w.resetAt = now + ttl
        let current = total - same.length
        for (const p of same) {
          current++
          settle(p)
          if (p.cb !== null) p.cb(null, { current, ttl })
        }
      }
    }, (err: unknown) => {
      this.#stats.failedBatches++
      this.#state.reportFailure(err, 'rateLimit')
      for (const same of keys) this.#answerFromMemory(same)
    })
  }

  #answerFromMemory (batch: Pending[]): void {
    const now = Date.now()
    this.#stats.memoryHits += batch.length
    for (const p of batch) {
      settle(p)
      const hit = this.memory.hit(p.key, p.windowMs, now)
      if (p.cb !== null) p.cb(null, hit)
    }
  }
}

function settle (p: Pending): void {
  p.window.inFlight--
  if (p.early) p.window.early--
}
