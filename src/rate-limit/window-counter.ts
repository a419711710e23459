/**
 * Fixed-window hit counting for the rate limiter, in Redis while Redis is in use and in
 * process otherwise.
 *
 * Redis: every hit is counted in Redis before the request is admitted or refused, so the
 * limit is exact across instances. Hits arriving in the same event-loop turn are sent
 * together as ONE script call (INCR + expiry per key inside the script: a counter never
 * exists without a TTL, and never keeps a TTL longer than its window). That is the same
 * exactness as one call per hit, with one round trip and one command per turn instead of
 * one per request, which is where the stock Redis store loses its throughput.
 *
 * In process: a bounded map of windows. It also mirrors every count Redis returns, so when
 * Redis goes away mid-window this instance carries on from the last count it saw instead
 * of handing every client a fresh budget. While Redis is away each instance counts alone:
 * the effective limit is up to N × instances.
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

/** Largest number of keys in one script call; a bigger turn is split. */
export const MAX_BATCH = 256

/**
 * KEYS: the counters; ARGV[i]: the window of KEYS[i] in ms. Returns count and PTTL per key.
 * A counter without a TTL (left by an old INCR-then-EXPIRE writer) or with one longer than
 * its window gets the window's; a value that is not a number is replaced, never an error
 * that would fail the whole batch.
 */
export const HITS_SCRIPT = `
local out = {}
for i = 1, #KEYS do
  local key = KEYS[i]
  local window = tonumber(ARGV[i])
  local count = redis.pcall('INCR', key)
  if type(count) == 'table' then
    redis.call('SET', key, 1, 'PX', window)
    count = 1
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

interface Window {
  count: number
  resetAt: number
}

/**
 * The in-process windows: a Map with a hard bound on entries. When full, expired windows
 * go first, then the oldest ones (a tenth at a time, so the sweep is amortised).
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

  hit (key: string, windowMs: number, now = Date.now()): Hit {
    const w = this.#windows.get(key)
    if (w === undefined || w.resetAt <= now) {
      this.#start(key, 1, now + windowMs, now, w !== undefined)
      return { current: 1, ttl: windowMs }
    }
    // A window longer than the configured one (the setting shrank) is cut to it.
    if (w.resetAt - now > windowMs) w.resetAt = now + windowMs
    w.count++
    return { current: w.count, ttl: w.resetAt - now }
  }

  /** Records what Redis said, so a fallback carries on from the shared count. */
  observe (key: string, count: number, ttlMs: number, now = Date.now()): void {
    const w = this.#windows.get(key)
    if (w === undefined) this.#start(key, count, now + ttlMs, now, false)
    else {
      w.count = count
      w.resetAt = now + ttlMs
    }
  }

  /** The current count of a window (0 when absent or over). */
  peek (key: string, now = Date.now()): number {
    const w = this.#windows.get(key)
    return w === undefined || w.resetAt <= now ? 0 : w.count
  }

  clear (): void {
    this.#windows.clear()
  }

  #start (key: string, count: number, resetAt: number, now: number, existed: boolean): void {
    if (existed) this.#windows.delete(key)
    else if (this.#windows.size >= this.#maxEntries) this.#makeRoom(now)
    this.#windows.set(key, { count, resetAt })
  }

  #makeRoom (now: number): void {
    for (const [key, w] of this.#windows) if (w.resetAt <= now) this.#windows.delete(key)
    let excess = this.#windows.size - this.#maxEntries + Math.max(1, Math.floor(this.#maxEntries / 10))
    if (excess <= 0) return
    for (const key of this.#windows.keys()) {
      this.#windows.delete(key)
      this.evictions++
      if (--excess <= 0) break
    }
  }
}

interface Pending {
  key: string
  windowMs: number
  cb: HitCallback
}

export interface WindowCounterStats {
  /** Hits counted in Redis. */
  redisHits: number
  /** Hits counted in process (Redis disabled, degraded, or a failed batch). */
  memoryHits: number
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
}

export class WindowCounter {
  readonly memory: MemoryWindows
  readonly #state: CounterState
  #queue: Pending[] = []
  #flushScheduled = false
  readonly #stats = { redisHits: 0, memoryHits: 0, batches: 0, largestBatch: 0, failedBatches: 0 }
  readonly #flush = (): void => { this.#flushNow() }

  constructor (options: WindowCounterOptions) {
    this.#state = options.state
    this.memory = new MemoryWindows(options.maxEntries)
    const client = options.state.client
    if (client !== null && !(SCRIPT_NAME in client)) client.defineCommand(SCRIPT_NAME, { lua: HITS_SCRIPT })
  }

  /**
   * Counts one hit on `rate_limit:<key>` in a window of `windowMs`. The callback runs
   * synchronously in fallback mode, and after the turn's batch in Redis mode.
   */
  hit (key: string, windowMs: number, cb: HitCallback): void {
    const fullKey = KEY_PREFIX + key
    if (this.#state.client !== null && this.#state.available) {
      this.#queue.push({ key: fullKey, windowMs, cb })
      if (!this.#flushScheduled) {
        this.#flushScheduled = true
        setImmediate(this.#flush)
      }
      return
    }
    this.#stats.memoryHits++
    cb(null, this.memory.hit(fullKey, windowMs))
  }

  /** `hit` as a promise. */
  hitAsync (key: string, windowMs: number): Promise<Hit> {
    return new Promise((resolve) => { this.hit(key, windowMs, (_err, hit) => resolve(hit)) })
  }

  stats (): WindowCounterStats {
    return { ...this.#stats, memoryWindows: this.memory.size, memoryEvictions: this.memory.evictions }
  }

  #flushNow (): void {
    const queue = this.#queue
    this.#queue = []
    this.#flushScheduled = false
    const client = this.#state.client as ScriptClient | null
    if (client === null || !this.#state.available) {
      this.#answerFromMemory(queue)
      return
    }
    for (let start = 0; start < queue.length; start += MAX_BATCH) {
      this.#send(client, start === 0 && queue.length <= MAX_BATCH ? queue : queue.slice(start, start + MAX_BATCH))
    }
  }

  #send (client: ScriptClient, batch: Pending[]): void {
    const n = batch.length
    const args: Array<string | number> = new Array(1 + 2 * n)
    args[0] = n
    for (let i = 0; i < n; i++) {
      const p = batch[i] as Pending
      args[1 + i] = p.key
      args[1 + n + i] = Math.max(1, Math.ceil(p.windowMs))
    }
    this.#stats.batches++
    if (n > this.#stats.largestBatch) this.#stats.largestBatch = n
    client[SCRIPT_NAME](...args).then((reply) => {
      const values = reply as unknown[]
      const now = Date.now()
      this.#stats.redisHits += n
      for (let i = 0; i < n; i++) {
        const p = batch[i] as Pending
        const current = Number(values[2 * i])
        const ttl = Number(values[2 * i + 1])
        if (!Number.isFinite(current) || !Number.isFinite(ttl)) {
          this.#stats.redisHits--
          this.#stats.memoryHits++
          p.cb(null, this.memory.hit(p.key, p.windowMs, now))
          continue
        }
        this.memory.observe(p.key, current, ttl, now)
        p.cb(null, { current, ttl })
      }
    }, (err: unknown) => {
      this.#stats.failedBatches++
      this.#state.reportFailure(err, 'rateLimit')
      this.#answerFromMemory(batch)
    })
  }

  #answerFromMemory (batch: Pending[]): void {
    const now = Date.now()
    this.#stats.memoryHits += batch.length
    for (const p of batch) p.cb(null, this.memory.hit(p.key, p.windowMs, now))
  }
}
