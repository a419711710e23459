/**
 * Server-side sessions: `session:<sid>` (JSON, TTL sliding at most once a minute) and a
 * per-user index `user_sessions:<userId>` for logout-everywhere: a sorted set of session ids
 * scored by their expiry (Redis's clock, ms), with its own sliding TTL. A login is one script
 * call whatever the count: it writes the session and trims the expired ids by score in the
 * same call. An index of the older type (a plain set) is converted the first time it is met.
 * Every call goes through the resilient store, so a dead Redis is never awaited; the
 * per-request check reads the same Redis state directly and falls back the same way.
 *
 * Outages. Sessions created while Redis is away live in the in-process store, and are looked
 * up there whenever Redis misses (also after it returns). A logout during an outage leaves a
 * tombstone (tombstones.ts: per session, or per user for logout everywhere) that every check
 * consults and that is replayed into Redis when it comes back. A token whose session
 * cannot be checked because Redis is unreachable is accepted (policy `allow`: signature and
 * expiry are still verified) or refused (`deny`). With Redis not configured at all, memory is
 * the session store and a miss is a miss.
 *
 * Sessions created while Redis is away (or refuses the write) are written into Redis when it
 * returns, with their remaining TTL, so that every instance accepts them: each one on its own
 * (a refusal keeps that one queued for the next return, logged once), never one logged out
 * meanwhile, and the in-process copy is dropped once Redis has it. The queue is bounded by
 * FALLBACK_MAX_ENTRIES; the oldest beyond it stay known to this instance only.
 *
 * Token rotation. A session records the id of its current token (`tid`, the token's `jti`)
 * and refuses its other tokens; `rotate` (POST /api/auth/refresh) swaps in a new id with a
 * compare-and-set on the whole record, so of two refreshes with one token only one wins.
 * While Redis is away: a session made in the outage lives in memory and rotates there; a
 * session held in Redis cannot be rotated (`unavailable`: the caller answers 503 and the token
 * keeps working until it expires, under `allow`). A token that is not checked against its
 * session (Redis unreachable, `allow`) cannot be checked against the current id either: this
 * instance remembers the rotations it made and refuses the tokens they replaced, but another
 * instance accepts a replaced token until it expires (at most JWT_EXPIRES_IN), as it would a
 * token logged out elsewhere.
 *
 * Redis Cluster. `session:<sid>` and `user_sessions:<userId>` keep the names the guide gives
 * them, so they usually hash to different slots: on a cluster no call spans both. A login
 * writes the index first, then the session (each one atomic on its own node); a refresh is a
 * compare-and-set on the session, then the index's slide; a logout deletes the sessions (one
 * DEL per slot) and removes their ids from the index, sent at once; the checks of one turn are
 * one script call per slot. What is lost is only the atomicity between the two keys, which no
 * reader relies on: an id in the index whose session is gone is dropped by the next login's
 * trim or ignored by a logout, and a session not (yet) in the index is still checked by its key.
 */
import { randomBytes } from 'node:crypto'
import type { ChainableCommander, Redis } from 'ioredis'
import { isCommandRefusal, type RedisStatus } from '../engines/redis/state.js'
import { clientTopology, groupBySlot } from '../engines/redis/slots.js'
import type { MemoryStore } from '../engines/store/memory-store.js'
import type { ResilientStore } from '../engines/store/resilient-store.js'
import { Batcher } from '../engines/batcher.js'
import { isRole, type Role, type SessionRecord, type SessionSource, type SessionView, type TokenClaims } from './types.js'
import { dropOldest } from './token-cache.js'
import { Tombstones, type PendingTombstones } from './tombstones.js'

export const sessionKey = (sid: string): string => `session:${sid}`
export const userSessionsKey = (userId: string): string => `user_sessions:${userId}`

/** 128 random bits, base64url. */
export const SESSION_ID_RE = /^[A-Za-z0-9_-]{22}$/

export type SessionFallbackPolicy = 'allow' | 'deny'

export interface SessionLogger {
  error (obj: object, msg: string): void
  warn (obj: object, msg: string): void
  info (obj: object, msg: string): void
}

/** What the sessions read of the shared Redis state (`RedisState` has it all). */
export interface SessionRedisState {
  readonly status: RedisStatus
  readonly client: Redis | null
  /** True while callers should talk to Redis. */
  readonly available: boolean
  /** A command failed: the state decides whether to switch to the fallback. */
  reportFailure (err: unknown, operation?: string): void
}

export interface SessionStoreOptions {
  store: ResilientStore
  /**
   * The shared Redis state (the one the store uses): its client gets the session script;
   * `disabled` makes memory authoritative.
   */
  state: SessionRedisState
  ttlSeconds: number
  fallback: SessionFallbackPolicy
  /** The longest a token lives: tombstones must outlive any token they stop. */
  tokenTtlSeconds: number
  /** How many outage logouts are kept (FALLBACK_MAX_ENTRIES); see tombstones.ts. */
  maxTombstones?: number
  slideEveryMs?: number
  log: SessionLogger
}

export interface NewSession {
  userId: string
  email?: string
  role: Role
  ip: string
  userAgent?: string | undefined
}

export interface SessionStats {
  created: number
  checks: number
  accepted: Record<SessionSource, number>
  rejected: { missing: number, revoked: number, mismatch: number, denied: number, overflow: number, superseded: number }
  revoked: number
  /** Tokens replaced by a refresh. */
  rotated: number
  revokedAll: number
  reconciled: number
  /** Sessions created in an outage (or while Redis refused the write) and written into Redis later. */
  replayed: number
  /** Writes of those that Redis refused (each stays queued for the next return). */
  replayRefused: number
  /** Of those, dropped from the replay queue because more were made than `maxTombstones` keeps. */
  replayDropped: number
  /** Outage logouts dropped because more were made than `maxTombstones` keeps. */
  tombstonesDropped: number
}

// For each session key: GET, and a sliding PEXPIRE when the last one is at least ARGV[2] ms
// old. All the checks of one event-loop turn go in one call (one round trip, one write),
// each session key once however many requests checked it. A missing key answers false,
// which reaches the client as nil.
const TOUCH_LUA = `
local out = {}
local ttlMs = tonumber(ARGV[1])
local slideMs = tonumber(ARGV[2])
for i, key in ipairs(KEYS) do
  local v = redis.call('GET', key)
  if not v then
    out[i] = false
  else
    local ttl = redis.call('PTTL', key)
    local extended = 0
    if ttl < 0 or ttlMs - ttl >= slideMs then
      redis.call('PEXPIRE', key, ttlMs)
      ttl = ttlMs
      extended = 1
    end
    out[i] = {v, ttl, extended}
  end
end
return out`

// The index half of a login, shared by CREATE_LUA and INDEX_ADD_LUA: index_kind answers
// -1 for an index of the older type (a plain set), raises WRONGTYPE for any other non-index,
// else 1; index_add trims the expired ids by score, adds `sid` scored by its expiry on
// Redis's clock, and slides the index's TTL to the longest session it lists.
const INDEX_LUA_BODY = `
local function index_kind (index)
  local kind = redis.call('TYPE', index).ok
  if kind == 'set' then return -1 end
  if kind ~= 'zset' and kind ~= 'none' then
    return redis.error_reply('WRONGTYPE the session index is a ' .. kind)
  end
  return 1
end
local function index_add (index, sid, ttl)
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  redis.call('ZREMRANGEBYSCORE', index, '-inf', now)
  redis.call('ZADD', index, now + ttl, sid)
  if redis.call('PTTL', index) < ttl then redis.call('PEXPIRE', index, ttl) end
end`

// A login (and the replay of a session made in an outage): writes the session and adds it to
// the user's index, scored by its expiry on Redis's clock, trimming the expired ids by score in
// the same call, so that a login costs one command whatever the user's session count. The
// index's TTL slides to the longest session it lists. ARGV[4] = '1': only if the session key is
// absent (a replay must not overwrite what another instance changed since). Answers 1 (written),
// 0 (the session key existed), -1 (the index is a plain set of an older version: convert it
// first); an index of any other type is refused with WRONGTYPE before anything is written.
const CREATE_LUA = `${INDEX_LUA_BODY}
local kind = index_kind(KEYS[2])
if kind ~= 1 then return kind end
local ttl = tonumber(ARGV[2])
if ARGV[4] == '1' then
  if not redis.call('SET', KEYS[1], ARGV[1], 'PX', ttl, 'NX') then return 0 end
else
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ttl)
end
index_add(KEYS[2], ARGV[3], ttl)
return 1`

// A session was extended: its id's score in the index (only if listed), and the index's TTL.
// An index still of the older type (a plain set) only gets its TTL, as it did then.
const SLIDE_LUA_BODY = `
local function slide (index, sid, ttl)
  if redis.call('TYPE', index).ok == 'zset' then
    local t = redis.call('TIME')
    redis.call('ZADD', index, 'XX', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + ttl, sid)
  end
  if redis.call('PTTL', index) < ttl then redis.call('PEXPIRE', index, ttl) end
end`
const SLIDE_LUA = `${SLIDE_LUA_BODY}
slide(KEYS[1], ARGV[1], tonumber(ARGV[2]))
return 1`

// Converts an index of the older type (a set) into the sorted set, scoring each listed id by
// its session's remaining TTL and dropping the dead ones. KEYS[1] the index, KEYS[1 + i] the
// session key of ARGV[i]. Answers 0 without a change when the set no longer lists exactly
// ARGV (a login meanwhile): the caller reads it again.
const MIGRATE_LUA = `
if redis.call('TYPE', KEYS[1]).ok ~= 'set' then return 1 end
if redis.call('SCARD', KEYS[1]) ~= #ARGV then return 0 end
for _, id in ipairs(ARGV) do
  if redis.call('SISMEMBER', KEYS[1], id) == 0 then return 0 end
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('DEL', KEYS[1])
local longest = 0
for i, id in ipairs(ARGV) do
  local pttl = redis.call('PTTL', KEYS[i + 1])
  if pttl > 0 then
    redis.call('ZADD', KEYS[1], now + pttl, id)
    if pttl > longest then longest = pttl end
  end
end
if longest > 0 then redis.call('PEXPIRE', KEYS[1], longest) end
return 1`

// Cluster: the index half of CREATE_LUA, on the index alone (the session is SET by itself).
// Answers 1, or -1 for an index of the older type; WRONGTYPE for any other type.
const INDEX_ADD_LUA = `${INDEX_LUA_BODY}
local kind = index_kind(KEYS[1])
if kind ~= 1 then return kind end
index_add(KEYS[1], ARGV[2], tonumber(ARGV[1]))
return 1`

// Cluster: the session half of SWAP_LUA (the compare-and-set); the index slides after it.
const CAS_LUA = `
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0`

// Cluster: MIGRATE_LUA on the index alone, with the sessions' PTTLs read before (ARGV: n,
// the n ids, their n PTTLs).
const MIGRATE_SCORED_LUA = `
if redis.call('TYPE', KEYS[1]).ok ~= 'set' then return 1 end
local n = tonumber(ARGV[1])
if redis.call('SCARD', KEYS[1]) ~= n then return 0 end
for i = 1, n do
  if redis.call('SISMEMBER', KEYS[1], ARGV[1 + i]) == 0 then return 0 end
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('DEL', KEYS[1])
local longest = 0
for i = 1, n do
  local pttl = tonumber(ARGV[1 + n + i])
  if pttl > 0 then
    redis.call('ZADD', KEYS[1], now + pttl, ARGV[1 + i])
    if pttl > longest then longest = pttl end
  end
end
if longest > 0 then redis.call('PEXPIRE', KEYS[1], longest) end
return 1`

/** Keys per script call at most; a bigger turn is split. */
const MAX_BATCH = 256
/** After a login Redis refused while staying in use: when its session is offered to Redis again. */
const REPLAY_RETRY_MS = 2_000
/** Parsed session records kept (by session id, checked against the raw JSON). */
const MAX_PARSED = 10_000

type TouchReply = [string, number, number] | null
type TouchClient = Redis & { aicSessionTouch (numKeys: number, ...args: Array<string | number>): Promise<TouchReply[]> }
type SwapClient = Redis & { aicSessionSwap (key: string, index: string, expected: string, next: string, ttlMs: number, sid: string): Promise<number> }
type CreateClient = Redis & { aicSessionCreate (key: string, index: string, json: string, ttlMs: number, sid: string, onlyIfAbsent: '0' | '1'): Promise<number> }
type SlideClient = Redis & { aicSessionSlide (index: string, sid: string, ttlMs: number): Promise<number> }
type MigrateClient = Redis & { aicSessionMigrate (numKeys: number, ...args: string[]): Promise<number> }
type ClusterScriptsClient = Redis & {
  aicSessionIndexAdd (index: string, ttlMs: number, sid: string): Promise<number>
  aicSessionCas (key: string, expected: string, next: string, ttlMs: number): Promise<number>
  aicSessionMigrateScored (index: string, ...args: Array<string | number>): Promise<number>
}

type CheckClaims = Pick<TokenClaims, 'sid' | 'sub' | 'role' | 'iat' | 'exp' | 'jti'>

/** What `rotate` did: a new current token id, a refusal (a 401), or no way to tell (a 503). */
export type RotateResult =
  | { outcome: 'rotated', tokenId: string, expiresAt: Date, email: string | undefined }
  | { outcome: 'refused' }
  | { outcome: 'unavailable' }

/** 96 random bits, base64url: a token id (`jti`). */
export function newTokenId (): string {
  return randomBytes(12).toString('base64url')
}

// Compare-and-set of a whole session record: the new one only if the old is still there
// unchanged (not refreshed meanwhile by another request, not revoked, not expired); the
// session's id in the index (KEYS[2]) slides with it.
const SWAP_LUA = `${SLIDE_LUA_BODY}
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  slide(KEYS[2], ARGV[4], tonumber(ARGV[3]))
  return 1
end
return 0`
type CheckResult = SessionView | null

/** One check waiting for the script call of this turn. */
interface Waiter { claims: CheckClaims, resolve: (result: CheckResult | Promise<CheckResult>) => void }

/** One session key in the script call of this turn, and every check waiting for it. */
interface PendingTouch { sid: string, client: TouchClient, waiters: Waiter[] }

/** A session made in memory that Redis does not have yet. `logged`: its refusal was logged. */
interface OutageSession { userId: string, logged: boolean }

/** A session record and its login time, parsed once per distinct raw value. */
interface Parsed { raw: string, record: SessionRecord | null, createdAtMs: number }

interface Found { record: SessionRecord | null, createdAtMs: number, pttl: number, source: 'redis' | 'memory' }

export class SessionStore {
  readonly ttlMs: number
  readonly policy: SessionFallbackPolicy
  readonly #store: ResilientStore
  readonly #state: SessionStoreOptions['state']
  readonly #slideMs: number
  readonly #tombstones: Tombstones
  /** JWT_EXPIRES_IN in ms: no token outlives its issue by more. */
  readonly #tokenTtlMs: number
  #overflowLogged = 0
  readonly #log: SessionLogger
  #fallbackLogged = false
  /** This turn's checks by session id (what `#touches` holds, found by id). */
  readonly #pending = new Map<string, PendingTouch>()
  /** The shared per-turn batcher: this turn's session keys leave in one script call. */
  readonly #touches: Batcher<PendingTouch>
  /** Sessions created in memory while Redis was away or refused them, to write into Redis when it returns. */
  readonly #outage = new Map<string, OutageSession>()
  readonly #maxOutage: number
  #outageDropLogged = false
  /** The replay in progress (replays run one at a time). */
  #replaying: Promise<void> = Promise.resolve()
  #replayTimer: NodeJS.Timeout | null = null
  readonly #parsed = new Map<string, Parsed>()
  /**
   * The current token id of each session this instance rotated (until every token it
   * replaced has expired): a token checked without its session (Redis unreachable, policy
   * allow) is refused here when a refresh replaced it.
   */
  readonly #rotations = new Map<string, { tid: string, until: number }>()
  readonly #maxRotations: number
  readonly #stats: Omit<SessionStats, 'tombstonesDropped'> = {
    created: 0,
    checks: 0,
    accepted: { redis: 0, memory: 0, fallback: 0 },
    rejected: { missing: 0, revoked: 0, mismatch: 0, denied: 0, overflow: 0, superseded: 0 },
    revoked: 0,
    rotated: 0,
    revokedAll: 0,
    reconciled: 0,
    replayed: 0,
    replayRefused: 0,
    replayDropped: 0,
  }

  constructor (options: SessionStoreOptions) {
    this.#store = options.store
    this.#state = options.state
    this.ttlMs = options.ttlSeconds * 1000
    this.policy = options.fallback
    this.#slideMs = Math.min(options.slideEveryMs ?? 60_000, this.ttlMs / 2)
    this.#tokenTtlMs = options.tokenTtlSeconds * 1000
    this.#tombstones = new Tombstones({
      max: options.maxTombstones ?? 50_000,
      ttlMs: Math.max(this.ttlMs, options.tokenTtlSeconds * 1000) + 60_000,
    })
    this.#log = options.log
    this.#maxRotations = Math.max(1, options.maxTombstones ?? 50_000)
    this.#maxOutage = Math.max(1, options.maxTombstones ?? 50_000)
    this.#touches = new Batcher<PendingTouch>({ send: (batch) => { this.#flush(batch) } })
    if (options.state.client !== null) defineSessionScripts(options.state.client)
  }

  stats (): SessionStats {
    return { ...structuredClone(this.#stats), tombstonesDropped: this.#tombstones.dropped }
  }

  async create (input: NewSession): Promise<SessionView> {
    const id = randomBytes(16).toString('base64url')
    const tokenId = newTokenId()
    const record: SessionRecord = {
      userId: input.userId,
      ...(input.email !== undefined ? { email: input.email } : {}),
      role: input.role,
      createdAt: new Date().toISOString(),
      ip: input.ip,
      userAgent: input.userAgent?.slice(0, 256) ?? null,
      tid: tokenId,
    }
    const json = JSON.stringify(record)
    const key = sessionKey(id)
    const index = userSessionsKey(input.userId)
    const source = await this.#store.use<'redis' | 'memory'>('session.create', async (client) => {
      await this.#write(client, key, index, json, this.ttlMs, id, false)
      return 'redis'
    }, (memory) => {
      void memory.set(key, json, this.ttlMs)
      this.#memoryIndexAdd(memory, input.userId, id)
      if (this.#state.status !== 'disabled') this.#queueForReplay(id, input.userId)
      return 'memory'
    })
    this.#stats.created++
    return { id, expiresAt: new Date(Date.now() + this.ttlMs), source, email: input.email, tokenId }
  }

  /**
   * Makes a new token id the session's current one, if `claims` is the session's current
   * token (then every other token of the session is refused from now on), and extends the
   * session. See the file's comment for what happens while Redis is away.
   */
  async rotate (claims: CheckClaims): Promise<RotateResult> {
    const key = sessionKey(claims.sid)
    const tokenId = newTokenId()
    // null: Redis did not have the session, or could not be asked; memory decides then.
    const result = await this.#store.use<RotateResult | null>('session.rotate', async (client) => {
      const raw = await client.get(key)
      if (raw === null) return null
      const next = this.#rotatedRecord(raw, claims, tokenId)
      if (next === null) return { outcome: 'refused' }
      const swapped = await swap(client, { key, index: userSessionsKey(claims.sub), expected: raw, next: next.json, ttlMs: this.ttlMs, sid: claims.sid })
      if (swapped !== 1) return { outcome: 'refused' }
      this.#rememberRotation(claims.sid, tokenId)
      return { outcome: 'rotated', tokenId, expiresAt: new Date(Date.now() + this.ttlMs), email: next.email }
    }, () => null)
    const outcome = result ?? this.#rotateInMemory(claims, tokenId)
    if (outcome.outcome === 'rotated') this.#stats.rotated++
    return outcome
  }

  /** A rotation of a session held in memory (made in an outage, or Redis not configured). */
  #rotateInMemory (claims: CheckClaims, tokenId: string): RotateResult {
    const memory = this.#store.memory
    const key = sessionKey(claims.sid)
    const raw = memory.getSync(key)
    if (raw === null) {
      // Not here, and Redis (which may have it) cannot be asked: no way to tell.
      if (this.#state.status !== 'disabled' && !this.#state.available) return { outcome: 'unavailable' }
      return { outcome: 'refused' }
    }
    const next = this.#rotatedRecord(raw, claims, tokenId)
    if (next === null) return { outcome: 'refused' }
    // No await between the read and the write: atomic within this process.
    void memory.set(key, next.json, this.ttlMs)
    void memory.expire(userSessionsKey(claims.sub), this.ttlMs)
    this.#rememberRotation(claims.sid, tokenId)
    return { outcome: 'rotated', tokenId, expiresAt: new Date(Date.now() + this.ttlMs), email: next.email }
  }

  /** The record with `tokenId` as its current token, if `claims` is its current token (else null). */
  #rotatedRecord (raw: string, claims: CheckClaims, tokenId: string): { json: string, email: string | undefined } | null {
    const record = parseRecord(raw)
    if (record === null || record.userId !== claims.sub || record.role !== claims.role) return null
    if (record.tid !== undefined && record.tid !== claims.jti) return null
    if (this.#isRevoked(claims.sid, record.userId, Date.parse(record.createdAt))) return null
    return { json: JSON.stringify({ ...record, tid: tokenId }), email: record.email }
  }

  #rememberRotation (sid: string, tid: string): void {
    if (!this.#rotations.has(sid) && this.#rotations.size >= this.#maxRotations) dropOldest(this.#rotations)
    this.#rotations.delete(sid)
    this.#rotations.set(sid, { tid, until: Date.now() + this.#tokenTtlMs })
  }

  /**
   * The session behind a verified token, extended when due; null when it does not exist,
   * was revoked, belongs to someone else, or cannot be checked and the policy says deny.
   *
   * With Redis in use the check joins this turn's script call (see `#touch`); a failed call
   * is reported to the Redis state and the check is answered from memory, as every other
   * call through the resilient store would be.
   */
  check (claims: CheckClaims): Promise<CheckResult> {
    this.#stats.checks++
    const client = this.#state.client
    if (client === null || !this.#state.available) return this.#checkMemory(claims)
    return new Promise((resolve) => { this.#touch(client as TouchClient, { claims, resolve }) })
  }

  /** Ends one session at once. */
  async revoke (sid: string, userId: string): Promise<void> {
    await this.#store.use('session.revoke', async (client) => {
      const results = await unindex(client, [sessionKey(sid)], userSessionsKey(userId), [sid])
      // The session, which is what a check reads, is gone; an index of another type (the
      // older set) keeps a dead id that its conversion drops.
      const [delErr] = results[0] ?? [new Error('no reply to DEL')]
      if (delErr) throw delErr
      const [zremErr] = results[1] ?? [new Error('no reply to ZREM')]
      if (zremErr && !isCommandRefusal(zremErr)) throw zremErr
      this.#memoryDelete(this.#store.memory, userId, [sid])
      // So that this instance still refuses the token if Redis is unreachable later.
      this.#tombstones.revokeSession(sid, userId, true, this.#tokenTtlMs)
    }, (memory) => {
      this.#memoryDelete(memory, userId, [sid])
      if (this.#state.status === 'disabled') return
      this.#tombstones.revokeSession(sid, userId)
      this.#noteOverflow()
    })
    this.#stats.revoked++
  }

  /** Ends every session of the user; resolves to how many were found. */
  async revokeAll (userId: string): Promise<number> {
    const count = await this.#store.use('session.revokeAll', async (client) => {
      const index = userSessionsKey(userId)
      const ids = await this.#indexIds(client, userId)
      let removed = 0
      if (ids.length > 0) {
        removed = Number(checkResults(await unindex(client, ids.map(sessionKey), index, ids), 2)[0]?.[1])
      }
      // The sessions by id, not a time: a login right after (the same second of a token's
      // `iat`, or another instance's clock) must not be refused in a later outage.
      for (const sid of ids) this.#tombstones.revokeSession(sid, userId, true, this.#tokenTtlMs)
      return removed + this.#memoryDeleteAll(this.#store.memory, userId)
    }, (memory) => {
      const removed = this.#memoryDeleteAll(memory, userId)
      if (this.#state.status !== 'disabled') {
        this.#tombstones.revokeUser(userId, Date.now())
        this.#noteOverflow()
      }
      return removed
    })
    this.#stats.revokedAll++
    return count
  }

  /**
   * Redis is back: apply the logouts made while it was away, so that every instance (not
   * only this one, which keeps its tombstones) refuses those sessions; then write the sessions
   * created in memory meanwhile, so that every instance accepts them.
   */
  async reconcile (): Promise<number> {
    this.#fallbackLogged = false
    const deleted = await this.#replayLogouts()
    // After the logouts: a session logged out in the outage is not written.
    await this.#replaySessions()
    return deleted
  }

  /** The outage logouts into Redis; resolves to how many sessions they removed. */
  async #replayLogouts (): Promise<number> {
    // Logouts dropped after this snapshot (Redis failing again meanwhile) keep the overflow on.
    const dropped = this.#tombstones.dropped
    const pending = this.#tombstones.pending()
    const { sessions, users } = pending
    if (sessions.length === 0 && users.length === 0) {
      this.#endOverflow(dropped)
      return 0
    }
    return this.#store.use('session.reconcile', async (client) => {
      let deleted = 0
      // What Redis now has. A refusal (a key of the wrong type) concerns one entry: the
      // others are still replayed, and that one stays pending for the next return of Redis.
      const replayed: PendingTombstones = { sessions: [], users: [] }
      if (sessions.length > 0) {
        // Each tombstone queued a DEL then a ZREM: the DELs' replies count the sessions removed.
        let replies: NonNullable<ExecResults>
        if (clientTopology(client).cluster) {
          // A pipeline's keys must share a slot on a cluster: each pair on its own, all at once.
          replies = (await Promise.all(sessions.map(async ([sid, { userId }]) => unindex(client, [sessionKey(sid)], userSessionsKey(userId), [sid])))).flat()
        } else {
          const pipe = client.pipeline()
          for (const [sid, { userId }] of sessions) pipe.del(sessionKey(sid)).zrem(userSessionsKey(userId), sid)
          replies = await pipe.exec() ?? []
        }
        for (const [i, entry] of sessions.entries()) {
          const [delErr, removed] = replies[2 * i] ?? [new Error('no reply to DEL')]
          if (delErr) throw delErr
          if (Number(removed) > 0) deleted++
          const [sremErr] = replies[2 * i + 1] ?? [new Error('no reply to ZREM')]
          // A refused ZREM leaves a stale id in an index of another type; the session, which
          // is what a check reads, is gone.
          if (sremErr && !isCommandRefusal(sremErr)) throw sremErr
          replayed.sessions.push(entry)
        }
      }
      for (const entry of users) {
        try {
          deleted += await this.#replayUser(client, entry[0], entry[1].before)
          replayed.users.push(entry)
        } catch (err) {
          if (!isCommandRefusal(err)) throw err
          this.#state.reportFailure(err, 'session.reconcile')
          this.#log.error({ userId: entry[0], reason: err instanceof Error ? err.message : String(err) },
            'sessions: a logout everywhere made during the Redis outage could not be replayed (kept, retried when Redis next returns)')
        }
      }
      this.#stats.reconciled += deleted
      if (deleted > 0) this.#log.info({ deleted }, 'sessions revoked during the Redis outage removed from Redis')
      this.#tombstones.markReplayed(replayed)
      this.#endOverflow(dropped)
      return deleted
    }, () => 0)
  }

  /** Removes the sessions of `userId` created at or before `before` from Redis; resolves to how many. */
  async #replayUser (client: Redis, userId: string, before: number): Promise<number> {
    const index = userSessionsKey(userId)
    const ids = await this.#indexIds(client, userId)
    if (ids.length === 0) return 0
    const values = await mgetBySlot(client, ids.map(sessionKey))
    const stale = ids.filter((_id, i) => {
      const record = parseRecord(values[i] ?? null)
      return record === null || Date.parse(record.createdAt) <= before
    })
    if (stale.length === 0) return 0
    return Number(checkResults(await unindex(client, stale.map(sessionKey), index, stale), 2)[0]?.[1])
  }

  /**
   * Queues one session check for the script call made at the end of this event-loop turn
   * (the shared batcher), so that concurrent requests share one command and one socket write.
   * Checks of the same session share one key in the call (the script's replies for a
   * repeated key would be the same record, extended by the first only) and its answer.
   * A failed call fails every check of the batch; each then takes the fallback path.
   */
  #touch (client: TouchClient, waiter: Waiter): void {
    const sid = waiter.claims.sid
    const pending = this.#pending.get(sid)
    if (pending !== undefined) {
      pending.waiters.push(waiter)
      return
    }
    const touch: PendingTouch = { sid, client, waiters: [waiter] }
    this.#pending.set(sid, touch)
    this.#touches.add(touch, true)
  }

  /** This turn's checks: one script call per MAX_BATCH keys (on a cluster, per slot). */
  #flush (all: PendingTouch[]): void {
    this.#pending.clear()
    const first = all[0]
    if (first === undefined) return
    for (const pending of groupBySlot(all, (p) => sessionKey(p.sid), clientTopology(first.client))) this.#flushGroup(pending)
  }

  #flushGroup (pending: PendingTouch[]): void {
    for (let i = 0; i < pending.length; i += MAX_BATCH) {
      const batch = pending.slice(i, i + MAX_BATCH)
      const client = (batch[0] as PendingTouch).client
      const keys = batch.map((p) => sessionKey(p.sid))
      client.aicSessionTouch(batch.length, ...keys, this.ttlMs, this.#slideMs).then((replies) => {
        for (let j = 0; j < batch.length; j++) {
          const p = batch[j] as PendingTouch
          try {
            this.#touched(client, p, replies[j] ?? null)
          } catch (err) {
            // A reply of an unexpected shape: those checks take the fallback path.
            this.#failed(p.waiters, err)
          }
        }
      }, (err: unknown) => {
        for (const p of batch) this.#failed(p.waiters, err)
      })
    }
  }

  /** The script's answer for one session key, given to every check that waited for it. */
  #touched (client: Redis, pending: PendingTouch, reply: TouchReply): void {
    const { sid, waiters } = pending
    if (reply === null) {
      // Not in Redis: a session made during an outage may still live in memory.
      for (const w of waiters) w.resolve(this.#fromMemory(this.#store.memory, sid).then((found) => this.#conclude(found, w.claims)))
      return
    }
    const { record, createdAtMs } = this.#parse(sid, reply[0])
    const found: Found = { record, createdAtMs, pttl: Number(reply[1]), source: 'redis' }
    if (Number(reply[2]) === 1 && record !== null) {
      // Extended just now: the per-user index slides with it (the id's score, its TTL), before
      // the checks answer.
      ;(client as SlideClient).aicSessionSlide(userSessionsKey(record.userId), sid, this.ttlMs).then(() => {
        for (const w of waiters) w.resolve(this.#conclude(found, w.claims))
      }, (err: unknown) => { this.#failed(waiters, err) })
      return
    }
    for (const w of waiters) w.resolve(this.#conclude(found, w.claims))
  }

  /** Redis failed these checks: report it (once) and answer each from memory. */
  #failed (waiters: Waiter[], err: unknown): void {
    this.#state.reportFailure(err, 'session.check')
    for (const w of waiters) w.resolve(this.#checkMemory(w.claims))
  }

  /** A check without Redis (unreachable, or not configured). */
  async #checkMemory (claims: CheckClaims): Promise<CheckResult> {
    const local = await this.#fromMemory(this.#store.memory, claims.sid)
    if (local === null && this.#state.status !== 'disabled') return this.#unverified(claims)
    return this.#conclude(local, claims)
  }

  /** The answer for one token, from its session record (null: there is none). */
  #conclude (found: Found | null, claims: CheckClaims): CheckResult {
    if (found === null) {
      this.#stats.rejected.missing++
      return null
    }
    const { record, pttl, source } = found
    if (record === null || record.userId !== claims.sub || record.role !== claims.role) {
      this.#stats.rejected.mismatch++
      return null
    }
    if (record.tid !== undefined && record.tid !== claims.jti) {
      this.#stats.rejected.superseded++
      return null
    }
    if (this.#isRevoked(claims.sid, record.userId, found.createdAtMs)) {
      this.#stats.rejected.revoked++
      return null
    }
    this.#stats.accepted[source]++
    return { id: claims.sid, expiresAt: new Date(Date.now() + Math.max(0, pttl)), source, email: record.email }
  }

  /**
   * The record in `raw`, parsed once per session and value: a session is checked on every
   * request, and its JSON only changes when it is written again.
   */
  #parse (sid: string, raw: string): Parsed {
    const cached = this.#parsed.get(sid)
    if (cached !== undefined && cached.raw === raw) return cached
    const record = parseRecord(raw)
    const parsed: Parsed = { raw, record, createdAtMs: record === null ? NaN : Date.parse(record.createdAt) }
    if (cached === undefined && this.#parsed.size >= MAX_PARSED) dropOldest(this.#parsed)
    this.#parsed.set(sid, parsed)
    return parsed
  }

  #unverified (claims: Pick<TokenClaims, 'sid' | 'sub' | 'exp' | 'iat' | 'jti'>): SessionView | null {
    if (!this.#fallbackLogged) {
      this.#fallbackLogged = true
      this.#log.warn({ policy: this.policy }, this.policy === 'allow'
        ? 'sessions: Redis unreachable, accepting signed unexpired tokens without a session check (SESSION_FALLBACK=allow)'
        : 'sessions: Redis unreachable, refusing tokens whose session cannot be checked (SESSION_FALLBACK=deny)')
    }
    // Logouts were dropped (see #noteOverflow): a token may be one of them, so none is trusted.
    if (this.policy === 'deny') {
      this.#stats.rejected.denied++
      return null
    }
    if (this.#tombstones.overflowed) {
      this.#stats.rejected.overflow++
      return null
    }
    if (this.#isRevoked(claims.sid, claims.sub, claims.iat * 1000)) {
      this.#stats.rejected.revoked++
      return null
    }
    const rotation = this.#rotations.get(claims.sid)
    if (rotation !== undefined && rotation.until > Date.now() && rotation.tid !== claims.jti) {
      this.#stats.rejected.superseded++
      return null
    }
    this.#stats.accepted.fallback++
    return { id: claims.sid, expiresAt: new Date(claims.exp * 1000), source: 'fallback' }
  }

  #isRevoked (sid: string, userId: string, createdAtMs: number): boolean {
    return this.#tombstones.size > 0 && this.#tombstones.isRevoked(sid, userId, createdAtMs)
  }

  /** After an outage logout: says once per overflow that logouts are being dropped. */
  #noteOverflow (): void {
    const episode = this.#tombstones.overflowEpisodes
    if (!this.#tombstones.overflowed || this.#overflowLogged === episode) return
    this.#overflowLogged = episode
    this.#log.error({ dropped: this.#tombstones.dropped },
      'sessions: more logouts during this Redis outage than FALLBACK_MAX_ENTRIES keeps; the oldest were dropped, so tokens whose session cannot be checked are refused until Redis is back or those tokens have expired')
  }

  /** Redis has every logout this instance still holds: unverified tokens may be trusted again. */
  #endOverflow (droppedBefore: number): void {
    if (this.#tombstones.dropped !== droppedBefore) return
    this.#tombstones.clearOverflow()
  }

  async #fromMemory (memory: MemoryStore, sid: string): Promise<Found | null> {
    const key = sessionKey(sid)
    const raw = memory.getSync(key)
    if (raw === null) return null
    const { record, createdAtMs } = this.#parse(sid, raw)
    let pttl = await memory.pttl(key) ?? 0
    if (this.ttlMs - pttl >= this.#slideMs) {
      await memory.expire(key, this.ttlMs)
      if (record !== null) await memory.expire(userSessionsKey(record.userId), this.ttlMs)
      pttl = this.ttlMs
    }
    return { record, createdAtMs, pttl, source: 'memory' }
  }

  // The in-memory index is a JSON array; each helper reads and writes it without an await
  // in between, so concurrent requests cannot lose an entry.
  #memoryIds (memory: MemoryStore, userId: string): string[] {
    try {
      const ids: unknown = JSON.parse(memory.getSync(userSessionsKey(userId)) ?? '[]')
      return Array.isArray(ids) ? ids.filter((id): id is string => typeof id === 'string') : []
    } catch {
      return []
    }
  }

  #memoryIndexAdd (memory: MemoryStore, userId: string, sid: string): void {
    const live = this.#memoryIds(memory, userId).filter((id) => memory.getSync(sessionKey(id)) !== null)
    live.push(sid)
    void memory.set(userSessionsKey(userId), JSON.stringify(live), this.ttlMs)
  }

  #memoryDelete (memory: MemoryStore, userId: string, sids: string[]): number {
    let removed = 0
    for (const sid of sids) if (memory.getSync(sessionKey(sid)) !== null) { void memory.del(sessionKey(sid)); removed++ }
    const rest = this.#memoryIds(memory, userId).filter((id) => !sids.includes(id))
    if (rest.length > 0) void memory.set(userSessionsKey(userId), JSON.stringify(rest), this.ttlMs)
    else void memory.del(userSessionsKey(userId))
    return removed
  }

  #memoryDeleteAll (memory: MemoryStore, userId: string): number {
    return this.#memoryDelete(memory, userId, this.#memoryIds(memory, userId))
  }

  /**
   * Writes a session and indexes it (one script call); an index of the older type is
   * converted first. False when `onlyIfAbsent` and the session key already existed.
   */
  async #write (client: Redis, key: string, index: string, json: string, ttlMs: number, sid: string, onlyIfAbsent: boolean): Promise<boolean> {
    const create = client as CreateClient
    const cluster = clientTopology(client).cluster
    for (let attempt = 0; ; attempt++) {
      const written = cluster
        ? await createOnCluster(client as ClusterScriptsClient, { key, index, json, ttlMs, sid, onlyIfAbsent })
        : Number(await create.aicSessionCreate(key, index, json, ttlMs, sid, onlyIfAbsent ? '1' : '0'))
      if (written !== -1) return written === 1
      if (attempt >= 2) throw new Error(`the session index ${index} could not be converted to a sorted set`)
      await this.#migrateIndex(client, index)
    }
  }

  /** The ids the user's index lists (converting an index of the older type first). */
  async #indexIds (client: Redis, userId: string): Promise<string[]> {
    const index = userSessionsKey(userId)
    try {
      return await client.zrange(index, '0', '-1')
    } catch (err) {
      if (!isWrongType(err) || await client.type(index) !== 'set') throw err
    }
    await this.#migrateIndex(client, index)
    return client.zrange(index, '0', '-1')
  }

  /**
   * Converts an index of the older type (a set of ids) into the sorted set scored by expiry,
   * once per user: read its ids, then convert them in one script that checks the set did not
   * change meanwhile (else read again, a few times at most).
   */
  async #migrateIndex (client: Redis, index: string): Promise<void> {
    for (let attempt = 0; attempt < 3; attempt++) {
      const ids = await client.smembers(index)
      const done = clientTopology(client).cluster
        ? await (client as ClusterScriptsClient).aicSessionMigrateScored(index, ids.length, ...ids,
          ...await Promise.all(ids.map(async (id) => client.pttl(sessionKey(id)))))
        : await (client as MigrateClient).aicSessionMigrate(ids.length + 1, index, ...ids.map(sessionKey), ...ids)
      if (Number(done) === 1) return
    }
    throw new Error(`the session index ${index} kept changing while it was converted to a sorted set`)
  }

  /**
   * A session created in memory while Redis was away or refused it: written into Redis when
   * it returns (or soon, when Redis stayed in use and refused only this write).
   */
  #queueForReplay (sid: string, userId: string): void {
    if (this.#outage.size >= this.#maxOutage) {
      dropOldest(this.#outage)
      this.#stats.replayDropped++
      if (!this.#outageDropLogged) {
        this.#outageDropLogged = true
        this.#log.error({ max: this.#maxOutage },
          'sessions: more logins while Redis was away than FALLBACK_MAX_ENTRIES keeps for writing into Redis later; the oldest stay known to this instance only (other instances refuse their tokens)')
      }
    }
    this.#outage.set(sid, { userId, logged: false })
    if (this.#state.available && this.#replayTimer === null) {
      // Redis is still in use (it refused this write alone): try again shortly, once.
      this.#replayTimer = setTimeout(() => {
        this.#replayTimer = null
        if (this.#state.available) this.reconcile().catch(() => {})
      }, REPLAY_RETRY_MS)
      this.#replayTimer.unref()
    }
  }

  /** Stops the pending retry of a refused session write (shutdown). */
  close (): void {
    if (this.#replayTimer !== null) clearTimeout(this.#replayTimer)
    this.#replayTimer = null
  }

  /** How many sessions made in memory wait to be written into Redis. */
  get pendingReplays (): number {
    return this.#outage.size
  }

  /** Writes the queued outage sessions into Redis, one replay at a time. */
  #replaySessions (): Promise<void> {
    const run = this.#replaying.then(() => this.#replaySessionsNow())
    this.#replaying = run.catch(() => {})
    return run
  }

  async #replaySessionsNow (): Promise<void> {
    if (this.#outage.size === 0) return
    const memory = this.#store.memory
    await this.#store.use('session.replay', async (client) => {
      let written = 0
      let failure: unknown = null
      for (const [sid, entry] of [...this.#outage]) {
        const key = sessionKey(sid)
        const raw = memory.getSync(key)
        const parsed = raw === null ? null : this.#parse(sid, raw)
        const pttl = raw === null ? 0 : await memory.pttl(key) ?? 0
        // Expired, logged out (its copy is gone, or a tombstone covers it), or unreadable: nothing to write.
        if (raw === null || parsed === null || parsed.record === null || pttl <= 0 || this.#isRevoked(sid, entry.userId, parsed.createdAtMs)) {
          this.#outage.delete(sid)
          continue
        }
        const index = userSessionsKey(entry.userId)
        try {
          await this.#write(client, key, index, raw, pttl, sid, true)
        } catch (err) {
          if (!isCommandRefusal(err)) { failure = err; break }
          this.#stats.replayRefused++
          if (!entry.logged) {
            entry.logged = true
            this.#state.reportFailure(err, 'session.replay')
            this.#log.error({ userId: entry.userId, reason: err instanceof Error ? err.message : String(err) },
              'sessions: a session created while Redis was away could not be written into Redis (kept here, retried when Redis next returns)')
          }
          continue
        }
        this.#outage.delete(sid)
        // While the call was out: a logout (undo the write) or a refresh (carry it over).
        const now = memory.getSync(key)
        if (now === null || this.#isRevoked(sid, entry.userId, parsed.createdAtMs)) {
          checkResults(await unindex(client, [key], index, [sid]), 2)
          continue
        }
        if (now !== raw) {
          const left = await memory.pttl(key) ?? pttl
          if (await swap(client, { key, index, expected: raw, next: now, ttlMs: Math.max(1, left), sid }) !== 1) continue
        }
        this.#memoryDelete(memory, entry.userId, [sid])
        written++
      }
      this.#stats.replayed += written
      if (written > 0) this.#log.info({ written }, 'sessions created while Redis was away written into Redis')
      if (failure !== null) throw failure
      if (this.#outage.size === 0) this.#outageDropLogged = false
    }, () => {})
  }
}

/** Registers the session script on a client (idempotent). */
export function defineSessionScripts (client: Redis): void {
  // No fixed key count: each call passes its own.
  if (!('aicSessionTouch' in client)) client.defineCommand('aicSessionTouch', { lua: TOUCH_LUA })
  if (!('aicSessionSwap' in client)) client.defineCommand('aicSessionSwap', { lua: SWAP_LUA, numberOfKeys: 2 })
  if (!('aicSessionCreate' in client)) client.defineCommand('aicSessionCreate', { lua: CREATE_LUA, numberOfKeys: 2 })
  if (!('aicSessionSlide' in client)) client.defineCommand('aicSessionSlide', { lua: SLIDE_LUA, numberOfKeys: 1 })
  if (!('aicSessionMigrate' in client)) client.defineCommand('aicSessionMigrate', { lua: MIGRATE_LUA })
  if (!('aicSessionIndexAdd' in client)) client.defineCommand('aicSessionIndexAdd', { lua: INDEX_ADD_LUA, numberOfKeys: 1 })
  if (!('aicSessionCas' in client)) client.defineCommand('aicSessionCas', { lua: CAS_LUA, numberOfKeys: 1 })
  if (!('aicSessionMigrateScored' in client)) client.defineCommand('aicSessionMigrateScored', { lua: MIGRATE_SCORED_LUA, numberOfKeys: 1 })
}

/**
 * DEL of session keys and ZREM of their ids from one index, with the replies of
 * `MULTI; DEL …; ZREM …; EXEC`. On a cluster the keys are on other slots than the index: one
 * DEL per slot and the ZREM, sent at once; the DEL's reply is the sum, its error the first.
 */
async function unindex (client: Redis, keys: string[], index: string, ids: string[]): Promise<NonNullable<ExecResults>> {
  const topology = clientTopology(client)
  if (!topology.cluster) {
    const results = await client.multi().del(...keys).zrem(index, ...ids).exec()
    if (results === null) throw new Error('transaction aborted')
    return results
  }
  const settled = await Promise.allSettled([
    client.zrem(index, ...ids),
    ...groupBySlot(keys, (k) => k, topology).map(async (group) => client.del(...group)),
  ])
  const [zrem, ...dels] = settled as [PromiseSettledResult<number>, ...Array<PromiseSettledResult<number>>]
  const delErr = dels.find((d) => d.status === 'rejected')
  const removed = dels.reduce((sum, d) => sum + (d.status === 'fulfilled' ? d.value : 0), 0)
  return [
    delErr !== undefined ? [delErr.reason as Error, null] : [null, removed],
    zrem.status === 'rejected' ? [zrem.reason as Error, null] : [null, zrem.value],
  ]
}

/** MGET of keys that may be on several slots: one MGET per slot on a cluster, in the keys' order. */
async function mgetBySlot (client: Redis, keys: string[]): Promise<Array<string | null>> {
  const topology = clientTopology(client)
  if (!topology.cluster) return client.mget(...keys)
  const groups = groupBySlot(keys.map((key, i) => ({ key, i })), (e) => e.key, topology)
  const values: Array<string | null> = new Array(keys.length).fill(null)
  await Promise.all(groups.map(async (group) => {
    const got = await client.mget(...group.map((e) => e.key))
    group.forEach((e, j) => { values[e.i] = got[j] ?? null })
  }))
  return values
}

/** SWAP_LUA; on a cluster its two halves: the compare-and-set on the session, then the index's slide. */
async function swap (client: Redis, o: { key: string, index: string, expected: string, next: string, ttlMs: number, sid: string }): Promise<number> {
  if (!clientTopology(client).cluster) return Number(await (client as SwapClient).aicSessionSwap(o.key, o.index, o.expected, o.next, o.ttlMs, o.sid))
  const swapped = Number(await (client as ClusterScriptsClient).aicSessionCas(o.key, o.expected, o.next, o.ttlMs))
  if (swapped === 1) await (client as SlideClient).aicSessionSlide(o.index, o.sid, o.ttlMs)
  return swapped
}

/**
 * CREATE_LUA on a cluster: the index first (its type checked, the id added, the expired
 * trimmed), then the session; 1 written, 0 the session existed (onlyIfAbsent), -1 an index of
 * the older type. An id indexed before its session exists is harmless: checks read the session.
 */
async function createOnCluster (client: ClusterScriptsClient, o: { key: string, index: string, json: string, ttlMs: number, sid: string, onlyIfAbsent: boolean }): Promise<number> {
  const indexed = Number(await client.aicSessionIndexAdd(o.index, o.ttlMs, o.sid))
  if (indexed === -1) return -1
  const set = o.onlyIfAbsent
    ? await client.set(o.key, o.json, 'PX', o.ttlMs, 'NX')
    : await client.set(o.key, o.json, 'PX', o.ttlMs)
  return set === 'OK' ? 1 : 0
}

export function createSessionStore (options: SessionStoreOptions): SessionStore {
  return new SessionStore(options)
}

function parseRecord (raw: string | null): SessionRecord | null {
  if (raw === null) return null
  try {
    const value = JSON.parse(raw) as Partial<SessionRecord>
    if (typeof value.userId !== 'string' || !isRole(value.role) || typeof value.createdAt !== 'string') return null
    return {
      userId: value.userId,
      ...(typeof value.email === 'string' ? { email: value.email } : {}),
      role: value.role,
      createdAt: value.createdAt,
      ip: typeof value.ip === 'string' ? value.ip : '',
      userAgent: typeof value.userAgent === 'string' ? value.userAgent : null,
      ...(typeof value.tid === 'string' ? { tid: value.tid } : {}),
    }
  } catch {
    return null
  }
}

function isWrongType (err: unknown): boolean {
  return err instanceof Error && err.message.startsWith('WRONGTYPE')
}

type ExecResults = Awaited<ReturnType<ChainableCommander['exec']>>

/** MULTI/pipeline results with every per-command error thrown; asserts the count. */
function checkResults (results: ExecResults, expected: number): Array<[null, unknown]> {
  if (results === null) throw new Error('transaction aborted')
  if (results.length !== expected) throw new Error(`expected ${expected} replies, got ${results.length}`)
  for (const [err] of results) if (err) throw err
  return results as Array<[null, unknown]>
}
