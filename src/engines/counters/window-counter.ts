/**
 * Fixed-window hit counting for the rate limiter, in Redis while Redis is in use and in
 * process otherwise.
 *
 * Redis: every hit is counted in Redis. Hits are sent together as ONE script call per
 * batch, with the hits of one client added in one INCRBY (the count and the expiry are set
 * inside the script: a counter never exists without a TTL, and never keeps a TTL longer
 * than its window; each hit still gets its own exact count). A batch leaves at the end of
 * the event-loop turn when a request is waiting for it, when MAX_BATCH clients are queued,
 * or when a client's held hits reach half its early allowance (below); otherwise up to
 * COALESCE_MS later, every hit in it already answered. One
 * command per batch instead of one per request is where the stock Redis store's throughput
 * goes; one INCRBY per client per batch keeps a flood from one client cheap for Redis too.
 * Until its batch leaves, a hit answered at once is only a number on its client's window
 * (no record, no callback): counting costs the request a map lookup and a few additions.
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
 * On a Redis Cluster the keys of one script call must share a slot: a batch is split by the
 * slot of its keys (`rate_limit:<client>` keep their names, no hash tag), one call per slot,
 * sent at once. A batch of N clients then costs up to N calls instead of one; each is still
 * one round trip, in parallel, to the master that owns the slot.
 *
 * A dead Redis is never awaited: in fallback mode hits go straight to memory; a batch that
 * fails or times out (the client's command timeout) flips the shared state and its hits
 * are answered from memory.
 */
import type { Redis } from 'ioredis'
import { Batcher } from '../batcher.js'
import { clientTopology, groupBySlot } from '../redis/slots.js'

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

/** Every key the limiter writes starts with this (after the client's REDIS_KEY_PREFIX). */
export const KEY_PREFIX = 'rate_limit:'

/**
 * Largest number of distinct keys in one script call (a bigger batch is split), and the
 * number of queued clients that sends the batch without waiting for the hold to end.
 */
export const MAX_BATCH = 256

/**
 * How long hits that nobody waits for may be held to share a script call. Holding them does
 * not loosen the bound (that is the early allowance); it only makes a busy client's hits
 * reach Redis in fewer, larger calls: each call is a write and a read on the Redis socket,
 * and on a small machine those wake-ups cost the service more than the counting does.
 * A busy client's batch leaves sooner, once its held hits reach half its allowance (see `hit`),
 * so the allowance never runs dry while its hits are held and its requests do not wait.
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

/**
 * Receives a hit's count, node-style (never an error: a failed batch is answered from
 * memory), so that a caller with a callback of that shape (the rate-limit store's) passes it
 * straight through.
 */
export type HitCallback = (err: null, hit: Hit) => void

/** A request waiting for Redis's count of its hit (the `index`-th hit queued on its window). */
interface Waiter {
  index: number
  resolve: HitCallback
}

/** One client's window as this instance knows it. */
export interface Window {
  /** `ip:…` or `user:…`: the map key here, and `rate_limit:<client>` in Redis. */
  readonly client: string
  windowMs: number
  /** Hits in the window: Redis's last count, or this instance's own count in fallback. */
  count: number
  resetAt: number
  /** Hits sent (or queued) to Redis and not answered yet. */
  inFlight: number
  /** Of those, admitted before the answer. */
  early: number
  /** Hits queued for the next script call (not sent yet), and how many of them were admitted early. */
  queued: number
  queuedEarly: number
  /** Requests among the queued hits that wait for Redis's count (null: none). */
  waiters: Waiter[] | null
}

/**
 * The in-process windows: a Map with a hard bound on entries, keyed by client (`ip:…`,
 * `user:…`). When full, expired windows go first, then the oldest ones without unanswered
 * hits, then the oldest (a tenth of the bound at a time, so the sweep is amortised).
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

  /** The live window for `client`, created (or restarted when over) as needed. */
  track (client: string, windowMs: number, now = Date.now()): Window {
    let w = this.#windows.get(client)
    if (w === undefined) {
      if (this.#windows.size >= this.#maxEntries) this.#makeRoom(now)
      w = { client, windowMs, count: 0, resetAt: now + windowMs, inFlight: 0, early: 0, queued: 0, queuedEarly: 0, waiters: null }
      this.#windows.set(client, w)
    } else if (w.resetAt <= now) {
      w.count = 0
      w.resetAt = now + windowMs
      w.windowMs = windowMs
    } else if (w.resetAt - now > windowMs) {
      // A window longer than the configured one (the setting shrank) is cut to it.
      w.resetAt = now + windowMs
      w.windowMs = windowMs
    }
    return w
  }

  /** Counts a hit in process (fallback, or Redis disabled). */
  hit (client: string, windowMs: number, now = Date.now()): Hit {
    return countIn(this.track(client, windowMs, now), now)
  }

  /** The current count of a window (0 when absent or over). */
  peek (client: string, now = Date.now()): number {
    const w = this.#windows.get(client)
    return w === undefined || w.resetAt <= now ? 0 : w.count
  }

  get (client: string): Window | undefined {
    return this.#windows.get(client)
  }

  #makeRoom (now: number): void {
    for (const [client, w] of this.#windows) if (w.resetAt <= now && w.inFlight === 0) this.#windows.delete(client)
    let excess = this.#windows.size - this.#maxEntries + Math.max(1, Math.floor(this.#maxEntries / 10))
    for (const pass of [0, 1]) {
      if (excess <= 0) return
      for (const [client, w] of this.#windows) {
        if (pass === 0 && w.inFlight > 0) continue
        // An evicted window with queued hits still goes out with the next call (the queue
        // holds the window itself), and its waiters are still answered.
        this.#windows.delete(client)
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

/** The hits of one window in one script call, taken off the window when the call leaves. */
interface Sent {
  window: Window
  hits: number
  early: number
  waiters: Waiter[] | null
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
  /** Windows forgotten on request (`reset`). */
  resets: number
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
  /** Windows with hits queued for the next call, each once, in the order they were first queued. */
  readonly #batcher: Batcher<Window>
  readonly #stats = { redisHits: 0, memoryHits: 0, earlyAdmits: 0, earlyRefusals: 0, batches: 0, largestBatch: 0, failedBatches: 0, resets: 0 }

  constructor (options: WindowCounterOptions) {
    this.#state = options.state
    this.#batcher = new Batcher<Window>({ send: (windows) => { this.#sendQueued(windows) }, holdMs: options.coalesceMs ?? COALESCE_MS, maxBatch: MAX_BATCH })
    this.memory = new MemoryWindows(options.maxEntries)
    const client = options.state.client
    if (client !== null && !(SCRIPT_NAME in client)) client.defineCommand(SCRIPT_NAME, { lua: HITS_SCRIPT })
  }

  /**
   * Counts one hit of `client` (`ip:…`, `user:…`; the Redis key is `rate_limit:<client>`) in
   * a window of `windowMs` against a limit of `max`, and calls `done` with the count. `done`
   * is called before `hit` returns in fallback mode, for an early admission and for a
   * window known to be over; otherwise once Redis's exact count is back (or, if the batch
   * fails, the in-process count). Hits answered at once allocate nothing beyond the answer:
   * they are a number on their window until the next script call.
   */
  hit (client: string, windowMs: number, max: number, done: HitCallback): void {
    const now = Date.now()
    const w = this.memory.track(client, windowMs, now)
    if (this.#state.client === null || !this.#state.available) {
      this.#stats.memoryHits++
      done(null, countIn(w, now))
      return
    }
    w.inFlight++
    const current = w.count + w.inFlight
    if (w.count > max) {
      this.#stats.earlyRefusals++
      this.#enqueue(w, false, null, false)
      done(null, { current, ttl: w.resetAt - now })
      return
    }
    const allowance = earlyAllowance(max)
    if (current <= max && w.early < allowance) {
      w.early++
      this.#stats.earlyAdmits++
      // Half the allowance held back: send now rather than hold on, so the other half
      // covers the round trip and this client's next requests need not wait for Redis.
      // (Counting the hits already sent as well would make every hit urgent while a
      // call is out.)
      this.#enqueue(w, true, null, 2 * (w.queuedEarly + 1) >= allowance)
      done(null, { current, ttl: w.resetAt - now })
      return
    }
    this.#enqueue(w, false, done, true)
  }

  /** `hit` as a promise. */
  hitAsync (client: string, windowMs: number, max: number): Promise<Hit> {
    return new Promise((resolve) => { this.hit(client, windowMs, max, (_err, hit) => { resolve(hit) }) })
  }

  stats (): WindowCounterStats {
    return { ...this.#stats, memoryWindows: this.memory.size, memoryEvictions: this.memory.evictions }
  }

  /** Sends what is queued now (at shutdown, before the Redis client closes). */
  flush (): void {
    this.#batcher.flush()
  }

  /**
   * Forgets `client`'s window, here and in Redis (a successful login forgives the failed
   * attempts before it). Hits still queued or in flight for it count in the new window. In
   * fallback mode only the in-process window is cleared; Redis is never waited on while it
   * is known to be away, and a failure flips the shared state like a failed batch.
   */
  async reset (client: string): Promise<void> {
    this.#stats.resets++
    const w = this.memory.get(client)
    if (w !== undefined) w.count = 0
    const redis = this.#state.client
    if (redis === null || !this.#state.available) return
    try {
      await redis.del(KEY_PREFIX + client)
    } catch (err) {
      this.#state.reportFailure(err, 'rateLimit')
    }
  }

  /** Queues a hit; `urgent`: the batch leaves at the end of this turn, not after the hold. */
  #enqueue (w: Window, early: boolean, resolve: HitCallback | null, urgent: boolean): void {
    if (w.queued === 0) this.#batcher.add(w)
    if (resolve !== null) (w.waiters ??= []).push({ index: w.queued, resolve })
    w.queued++
    if (early) w.queuedEarly++
    if (urgent) this.#batcher.hurry()
  }

  /** The batcher's send: each queued window's hits, in as few script calls as MAX_BATCH allows. */
  #sendQueued (dirty: Window[]): void {
    // Take each window's queued hits off it: what arrives from now on goes with the next call.
    const sent: Sent[] = new Array(dirty.length)
    for (let i = 0; i < dirty.length; i++) {
      const w = dirty[i] as Window
      sent[i] = { window: w, hits: w.queued, early: w.queuedEarly, waiters: w.waiters }
      w.queued = 0
      w.queuedEarly = 0
      w.waiters = null
    }
    const client = this.#state.client as ScriptClient | null
    if (client === null || !this.#state.available) {
      this.#answerFromMemory(sent)
      return
    }
    for (const group of groupBySlot(sent, (s) => KEY_PREFIX + s.window.client, clientTopology(client))) {
      for (let from = 0; from < group.length; from += MAX_BATCH) {
        this.#send(client, from === 0 && group.length <= MAX_BATCH ? group : group.slice(from, from + MAX_BATCH))
      }
    }
  }

  #send (client: ScriptClient, batch: Sent[]): void {
    const n = batch.length
    const args: Array<string | number> = new Array(1 + 3 * n)
    args[0] = n
    let hits = 0
    for (let i = 0; i < n; i++) {
      const s = batch[i] as Sent
      args[1 + i] = KEY_PREFIX + s.window.client
      args[1 + n + 2 * i] = Math.max(1, Math.ceil(s.window.windowMs))
      args[2 + n + 2 * i] = s.hits
      hits += s.hits
    }
    this.#stats.batches++
    if (hits > this.#stats.largestBatch) this.#stats.largestBatch = hits
    client[SCRIPT_NAME](...args).then((reply) => {
      const values = reply as unknown[]
      const now = Date.now()
      for (let i = 0; i < n; i++) {
        const s = batch[i] as Sent
        const total = Number(values[2 * i])
        const ttl = Number(values[2 * i + 1])
        if (!Number.isFinite(total) || !Number.isFinite(ttl)) {
          this.#answerFromMemory([s])
          continue
        }
        this.#stats.redisHits += s.hits
        const w = s.window
        settle(s)
        // Replies come back in the order batches were sent: the latest is Redis's count.
        w.count = total
        w.resetAt = now + ttl
        // The batch's hits are counts total - hits + 1 … total, in the order they were queued.
        if (s.waiters !== null) for (const waiter of s.waiters) waiter.resolve(null, { current: total - s.hits + waiter.index + 1, ttl })
      }
    }, (err: unknown) => {
      this.#stats.failedBatches++
      this.#state.reportFailure(err, 'rateLimit')
      this.#answerFromMemory(batch)
    })
  }

  #answerFromMemory (batch: Sent[]): void {
    const now = Date.now()
    for (const s of batch) {
      this.#stats.memoryHits += s.hits
      settle(s)
      const w = this.memory.track(s.window.client, s.window.windowMs, now)
      const before = w.count
      w.count += s.hits
      const ttl = w.resetAt - now
      if (s.waiters !== null) for (const waiter of s.waiters) waiter.resolve(null, { current: before + waiter.index + 1, ttl })
    }
  }
}

function settle (s: Sent): void {
  s.window.inFlight -= s.hits
  s.window.early -= s.early
}
