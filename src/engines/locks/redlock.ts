/**
 * The Redlock algorithm over N independent Redis masters (one is fine: then it is a plain
 * SET NX PX lock with a compare-and-delete release).
 *
 *  - acquire: SET key token PX ttl NX on every master at once; the lock is ours when a
 *    majority (N/2+1) said OK and time is left of its validity, which is the TTL minus
 *    the time the round took minus the clock drift (ttl × driftFactor + 2 ms). Otherwise
 *    what was taken is released again at once.
 *  - extend: a Lua compare-and-PEXPIRE on every master, with the same majority rule.
 *  - release: a Lua compare-and-delete on every master. Never a bare DEL: a holder whose
 *    lock expired cannot delete the lock somebody else took since.
 *
 * One attempt never waits on more masters than it must: it settles as soon as a majority
 * agrees or a majority can no longer be reached (a release, once a majority answered).
 * Every command error is reported to the master's `onError` (the state machine), and no
 * command is queued for a dead master (the clients have their offline queue off and a
 * command timeout). The commands of one event-loop turn go to a master in one write.
 *
 * Why not `@sesamecare-oss/redlock` (v1.4.0): it runs with ioredis 6 (its types compile, its
 * scripts load through EVALSHA/EVAL, the key prefix is applied), but it does not fit:
 *  1. every script starts with `SELECT <settings.db>` (default 0), so with REDIS_URL
 *     `redis://host/3` the locks land in database 0, not 3, and one setting serves all masters;
 *  2. a release that finds the lock already gone (expired, taken over) counts as a failure and
 *     is retried `retryCount` times: measured 2.1 s and then an ExecutionError, so its
 *     `using()` throws ~2 s after a routine that succeeded;
 *  3. acquisition waits `retryCount` × `retryDelay` plus each round's time, not a bound in ms,
 *     and "held by another" and "masters unreachable" come out as the same ExecutionError;
 *  4. `acquire` does not check the remaining validity before handing out a lock.
 */
import type { Redis } from 'ioredis'

export interface LockMaster {
  readonly client: Redis
  /** A label for logs and the debug view (a redacted URL). */
  readonly name: string
  /** Told about every failed command, so the master's state machine can switch. */
  readonly onError: (err: unknown, operation: string) => void
}

export interface RedlockOptions {
  masters: readonly LockMaster[]
  /** Share of the TTL assumed lost to clock drift between this process and the masters. */
  driftFactor?: number
}

export type AcquireOutcome =
  | { ok: true, validUntil: number }
  /** busy: another owner holds it; unavailable: too few masters answered to decide. */
  | { ok: false, reason: 'busy' | 'unavailable' }

export type ExtendOutcome =
  | { ok: true, validUntil: number }
  /** lost: a majority no longer holds our token (expired or taken over). */
  | { ok: false, reason: 'lost' | 'unavailable' }

const RELEASE_LUA = `
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0`

const EXTEND_LUA = `
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0`

interface LockCommands<R> {
  set (key: string, token: string, px: 'PX', ttlMs: number, nx: 'NX'): R
  aicLockRelease (key: string, token: string): R
  aicLockExtend (key: string, token: string, ttlMs: number): R
}
type ScriptClient = Redis & LockCommands<Promise<unknown>>
type ScriptPipeline = ReturnType<Redis['pipeline']> & LockCommands<unknown>

/** EVALSHA with a NOSCRIPT fallback, key prefix applied (ioredis `defineCommand`); idempotent. */
function scripts (client: Redis): ScriptClient {
  if (!('aicLockRelease' in client)) client.defineCommand('aicLockRelease', { numberOfKeys: 1, lua: RELEASE_LUA })
  if (!('aicLockExtend' in client)) client.defineCommand('aicLockExtend', { numberOfKeys: 1, lua: EXTEND_LUA })
  return client as ScriptClient
}

type LockOp =
  | { kind: 'set', key: string, token: string, ttlMs: number }
  | { kind: 'extend', key: string, token: string, ttlMs: number }
  | { kind: 'release', key: string, token: string }

interface Queued { op: LockOp, resolve: (value: unknown) => void, reject: (err: unknown) => void }

function send<R> (target: LockCommands<R>, op: LockOp): R {
  switch (op.kind) {
    case 'set': return target.set(op.key, op.token, 'PX', op.ttlMs, 'NX')
    case 'extend': return target.aicLockExtend(op.key, op.token, op.ttlMs)
    case 'release': return target.aicLockRelease(op.key, op.token)
  }
}

/**
 * Lock commands for one master, written together: what the event loop's current turn
 * queued goes out as one pipeline (one socket write) right after it (setImmediate). Under
 * load that turns a write per command into a write per turn; alone, a command goes out
 * as it is. Replies, errors and timeouts stay per command.
 */
class Batcher {
  readonly #client: ScriptClient
  #queue: Queued[] = []

  constructor (client: Redis) {
    this.#client = scripts(client)
  }

  run (op: LockOp): Promise<unknown> {
    return new Promise((resolve, reject) => {
      if (this.#queue.push({ op, resolve, reject }) === 1) setImmediate(() => this.#flush())
    })
  }

  #flush (): void {
    const queue = this.#queue
    this.#queue = []
    const [only] = queue
    if (queue.length === 1 && only !== undefined) {
      send(this.#client, only.op).then(only.resolve, only.reject)
      return
    }
    // A cluster pipeline's keys must share a slot; these are any locks': each on its own.
    if ((this.#client as { isCluster?: boolean }).isCluster === true) {
      for (const item of queue) send(this.#client, item.op).then(item.resolve, item.reject)
      return
    }
    const pipeline = this.#client.pipeline() as ScriptPipeline
    for (const item of queue) send(pipeline, item.op)
    pipeline.exec().then((results) => {
      queue.forEach((item, i) => {
        const [err, value] = results?.[i] ?? [new Error('no reply in the pipeline'), null]
        if (err !== null) item.reject(err)
        else item.resolve(value)
      })
    }, (err: unknown) => { for (const item of queue) item.reject(err) })
  }
}

interface Tally { yes: number, no: number, error: number }

export class Redlock {
  readonly masters: readonly LockMaster[]
  readonly quorum: number
  readonly driftFactor: number
  readonly #batchers: Batcher[]

  constructor (options: RedlockOptions) {
    if (options.masters.length === 0) throw new Error('Redlock needs at least one master')
    this.masters = options.masters
    this.quorum = Math.floor(options.masters.length / 2) + 1
    this.driftFactor = options.driftFactor ?? 0.01
    this.#batchers = this.masters.map((m) => new Batcher(m.client))
  }

  /** One attempt; the caller decides whether and when to try again. */
  async acquire (key: string, token: string, ttlMs: number): Promise<AcquireOutcome> {
    const start = Date.now()
    const tally = await this.#vote('lock.acquire', { kind: 'set', key, token, ttlMs }, (reply) => reply === 'OK')
    const validUntil = start + ttlMs - this.#drift(ttlMs)
    if (tally.yes >= this.quorum && validUntil > Date.now()) return { ok: true, validUntil }
    // A minority (or a majority that took too long) may hold our token, and masters that
    // had not answered yet may still take it: give it back now rather than block them
    // until the TTL. Only when every master said "busy" is there nothing to give back.
    if (tally.no < this.masters.length) await this.release(key, token)
    return { ok: false, reason: this.#unreachable(tally) ? 'unavailable' : 'busy' }
  }

  async extend (key: string, token: string, ttlMs: number): Promise<ExtendOutcome> {
    const start = Date.now()
    const tally = await this.#vote('lock.extend', { kind: 'extend', key, token, ttlMs }, (reply) => Number(reply) === 1)
    const validUntil = start + ttlMs - this.#drift(ttlMs)
    if (tally.yes >= this.quorum && validUntil > Date.now()) return { ok: true, validUntil }
    return { ok: false, reason: this.#unreachable(tally) ? 'unavailable' : 'lost' }
  }

  /**
   * Compare-and-delete on every master; never throws (an unreleased lock expires). Settles
   * once a majority has answered, so a frozen master does not hold up the caller; the
   * command to it still goes out.
   */
  async release (key: string, token: string): Promise<void> {
    await this.#vote('lock.release', { kind: 'release', key, token }, (reply) => Number(reply) === 1, true)
  }

  #drift (ttlMs: number): number {
    return Math.round(ttlMs * this.driftFactor) + 2
  }

  /** True when the errors alone make a majority impossible: not a "no", a "cannot tell". */
  #unreachable (tally: Tally): boolean {
    return tally.error > this.masters.length - this.quorum
  }

  /**
   * Sends `op` to every master; settles once a majority said yes or can no longer say it
   * (`anyAnswer`: once a majority answered at all).
   */
  #vote (operation: string, op: LockOp, yes: (reply: unknown) => boolean, anyAnswer = false): Promise<Tally> {
    const n = this.masters.length
    const tally: Tally = { yes: 0, no: 0, error: 0 }
    return new Promise<Tally>((resolve) => {
      let settled = false
      const check = (): void => {
        if (settled) return
        const against = tally.no + tally.error
        const answered = tally.yes + against
        if (tally.yes >= this.quorum || against > n - this.quorum || answered === n || (anyAnswer && answered >= this.quorum)) {
          settled = true
          resolve({ ...tally })
        }
      }
      this.masters.forEach((master, i) => {
        this.#batchers[i]!.run(op).then((reply) => {
          if (yes(reply)) tally.yes++
          else tally.no++
          check()
        }, (err: unknown) => {
          tally.error++
          master.onError(err, operation)
          check()
        })
      })
    })
  }
}
