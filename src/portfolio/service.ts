/**
 * Portfolios: reads through the cache, writes under a per-user lock with a version-checked
 * commit, idempotent retries, and the two scheduled jobs. Plain TypeScript: the lock
 * service, the cache and the quotes are passed in (the plugin wires the real ones).
 *
 * A write: take `lock:portfolio:<userId>` → read the portfolio and its version → compute
 * the change → price the result → commit only if the version is unchanged (with the
 * idempotency record in the same transaction) → invalidate `portfolio:<userId>` on every
 * instance → release. The lock keeps writers from colliding; the version check is what
 * keeps the data right when the lock fails (expired during a pause, Redis lost, two
 * instances on in-process locks).
 *
 * A read: `view` builds the priced view (the loader behind the cached GET route, which
 * caches it as `portfolio:<userId>`); `isCurrent` accepts a cached view only if its version
 * is still the stored one (one primary-key lookup). An invalidation that has not reached
 * this instance yet (pub/sub is asynchronous, and queued while Redis is away) therefore
 * never serves an old portfolio. While the database cannot answer that lookup, the cached
 * view is answered as STALE rather than not at all; writes then fail whole (503 with
 * Retry-After), never half-written.
 */
import { createHash } from 'node:crypto'
import { ConflictError, NotFoundError, UnprocessableError } from '../errors.js'
import { TooManyRequestsError, retryText } from '../rate-limit/limits.js'
import type { TwoTierCache } from '../engines/cache/two-tier-cache.js'
import { isDatabaseUnavailable } from '../db/errors.js'
import { applyTrade, checkTrade, type Position, type Trade } from './ledger.js'
import {
  IdempotencyKeyTakenError, VersionConflictError, type PortfolioCommit, type PortfolioRepo, type PortfolioState,
  type TransactionRecord,
} from './repo.js'
import { fetchPrices, valuePortfolio, type PortfolioView, type QuoteSource } from './valuation.js'
import { createPortfolioJobs } from './jobs.js'

/** What the service needs from the locks concern (`fastify.locks`). */
export interface LockService {
  using<T> (resource: string, ttlMs: number, fn: (signal: AbortSignal) => Promise<T>): Promise<T>
}

export interface PortfolioLogger {
  info (obj: object, msg: string): void
  warn (obj: object, msg: string): void
  debug (obj: object, msg: string): void
}

export interface PortfolioServiceOptions {
  repo: PortfolioRepo
  locks: LockService
  cache: Pick<TwoTierCache, 'invalidate'>
  quotes: QuoteSource
  log: PortfolioLogger
  /** PORTFOLIO_TTL_SECONDS */
  portfolioTtlSeconds: number
  /** PORTFOLIO_LOCK_TTL_MS */
  lockTtlMs: number
  /** IDEMPOTENCY_TTL_SECONDS */
  idempotencyTtlSeconds: number
  /** PORTFOLIO_MAX_POSITIONS: a buy of a ticker not held is refused (422) at this many positions. */
  maxPositions?: number
  /** IDEMPOTENCY_MAX_KEYS_PER_USER: a write with a new key is refused (429) while the user has this many live. */
  maxKeysPerUser?: number
  now?: () => number
}

export interface TradeResult {
  statusCode: number
  view: PortfolioView
  /** True when this is the stored answer to an earlier request with the same Idempotency-Key. */
  replayed: boolean
}

export interface HistoryEntry {
  date: string
  takenAt: string
  version: number
  positions: number
  cost: number
  value: number | null
  gain: number | null
  gainPercent: number | null
}

export interface PortfolioStats {
  reads: number
  /** Cached views refused because the stored version had moved on. */
  staleCopies: number
  /** Cached views answered as STALE because the database could not confirm their version. */
  servedWithoutDatabase: number
  /** Views with unpriced positions, answered but not cached. */
  uncached: number
  trades: number
  removals: number
  /** Idempotent replays answered from the stored response. */
  replays: number
  /** Same Idempotency-Key with a different request (422). */
  keyMismatches: number
  /** Commits refused by the version check. */
  conflicts: number
  /** Writes abandoned because the lock was lost before the commit. */
  lockLost: number
  invalidateFailures: number
}

export const portfolioKey = (userId: string): string => `portfolio:${userId}`
export const portfolioLockKey = (userId: string): string => `lock:portfolio:${userId}`

const TRADE_SCOPE = 'POST /api/portfolio/transactions'

/** The fingerprint a key is bound to: the route and the normalised body. */
export function requestHash (trade: Trade): string {
  return createHash('sha256')
    .update(JSON.stringify([TRADE_SCOPE, trade.ticker, trade.side, trade.shares, trade.price]))
    .digest('base64url')
}

const DAY_MS = 86_400_000

export function createPortfolioService (options: PortfolioServiceOptions) {
  const { repo, locks, cache, quotes, log } = options
  const now = options.now ?? Date.now
  const maxPositions = options.maxPositions ?? Infinity
  const maxKeys = options.maxKeysPerUser ?? Infinity
  /** How the GET route caches a view (plugins/cache.ts's route option). */
  const policy = { ttl: options.portfolioTtlSeconds, name: 'portfolios' }
  const stats: PortfolioStats = {
    reads: 0, staleCopies: 0, servedWithoutDatabase: 0, uncached: 0, trades: 0, removals: 0, replays: 0, keyMismatches: 0, conflicts: 0, lockLost: 0, invalidateFailures: 0,
  }

  async function price (userId: string, version: number, positions: readonly Position[]): Promise<PortfolioView> {
    const prices = await fetchPrices(quotes, positions.map((p) => p.ticker), (err) => {
      log.warn({ userId, err: describe(err) }, 'portfolio pricing: a quote batch failed')
    })
    return valuePortfolio(userId, version, positions, prices, new Date(now()))
  }

  /**
   * Loads the quotes a write will price with before it takes the lock, so the lock is not
   * held across a provider call (the priced view is then an L1 hit under the lock).
   */
  async function warmQuotes (userId: string, ticker?: string): Promise<void> {
    const { positions } = await repo.read(userId)
    const tickers = positions.map((p) => p.ticker)
    if (ticker !== undefined) tickers.push(ticker)
    if (tickers.length > 0) await fetchPrices(quotes, tickers)
  }

  async function buildView (userId: string): Promise<PortfolioView> {
    const state = await repo.read(userId)
    return price(userId, state.version, state.positions)
  }

  async function invalidate (userId: string): Promise<void> {
    try {
      await cache.invalidate(portfolioKey(userId))
    } catch (err) {
      // The commit stands; reads compare versions, so a missed invalidation is not served.
      stats.invalidateFailures++
      log.warn({ userId, err: describe(err) }, 'portfolio cache invalidation failed')
    }
  }

  async function commit (signal: AbortSignal, change: PortfolioCommit): Promise<void> {
    if (signal.aborted) {
      stats.lockLost++
      log.warn({ userId: change.userId }, 'portfolio write abandoned: the lock was lost before the commit')
      throw signal.reason instanceof Error ? signal.reason : new ConflictError('The portfolio lock was lost before the write; nothing was changed. Retry the request.')
    }
    try {
      await repo.commit(change)
    } catch (err) {
      if (err instanceof VersionConflictError) {
        stats.conflicts++
        log.warn({ userId: change.userId, expected: err.expected, actual: err.actual }, 'portfolio write refused: the version changed after it was read')
        throw Object.assign(new ConflictError('The portfolio changed while this request was applied; nothing was changed. Retry the request.'), { versionConflict: true })
      }
      throw err
    }
  }

  /**
   * Runs `fn` under the user's lock. Once `fn` has committed, the write is the answer: an
   * error from the lock afterwards (a release that could not reach Redis) is logged, not
   * turned into a failure the client would retry.
   */
  async function underLock<T> (userId: string, fn: (signal: AbortSignal, done: (result: T) => T) => Promise<T>): Promise<T> {
    let committed: { result: T } | undefined
    const done = (result: T): T => {
      committed = { result }
      return result
    }
    try {
      return await locks.using(portfolioLockKey(userId), options.lockTtlMs, (signal) => fn(signal, done))
    } catch (err) {
      if (committed !== undefined) {
        log.warn({ userId, err: describe(err) }, 'portfolio lock release failed after the commit (it expires by its TTL)')
        return committed.result
      }
      throw err
    }
  }

  async function replay (userId: string, key: string, hash: string): Promise<TradeResult | null> {
    const record = await repo.findIdempotency(userId, key, new Date(now()).toISOString())
    if (record === null) return null
    if (record.requestHash !== hash) {
      stats.keyMismatches++
      throw new UnprocessableError('This Idempotency-Key was already used with a different request; use a new key for a new request')
    }
    stats.replays++
    return { statusCode: record.statusCode, view: JSON.parse(record.response) as PortfolioView, replayed: true }
  }

  function replacePosition (positions: readonly Position[], ticker: string, next: Position | null): Position[] {
    const others = positions.filter((p) => p.ticker !== ticker)
    return next === null ? others : [...others, next]
  }

  return {
    policy,

    /** The cache key of the user's priced portfolio. */
    key: portfolioKey,

    /** The user's priced portfolio (the GET route's loader). */
    async view (userId: string): Promise<PortfolioView> {
      return buildView(userId)
    },

    /** A view with a position that could not be priced is answered but not cached. */
    cacheable (view: PortfolioView): boolean {
      if (view.unpriced.length === 0) return true
      stats.uncached++
      return false
    },

    /** Whether a cached view is still the stored version (one primary-key lookup; 'stale' when the database cannot say); counts a read. */
    async isCurrent (userId: string, view: PortfolioView): Promise<boolean | 'stale'> {
      stats.reads++
      let stored: number
      try {
        stored = await repo.version(userId)
      } catch (err) {
        // The database is down or frozen: a copy from the cache is the best answer there is.
        if (!isDatabaseUnavailable(err)) throw err
        stats.servedWithoutDatabase++
        log.debug({ userId }, 'portfolio answered from the cache without the database (STALE)')
        return 'stale'
      }
      if (view.version === stored) return true
      stats.staleCopies++
      return false
    },

    /**
     * A buy or a sell. With `idempotencyKey`: the same key and request within the TTL
     * answer the first response without a second effect; another request → 422.
     */
    async trade (userId: string, input: Trade, idempotencyKey?: string): Promise<TradeResult> {
      const trade = checkTrade(input)
      const hash = idempotencyKey !== undefined ? requestHash(trade) : null
      if (idempotencyKey !== undefined && hash !== null) {
        const prior = await replay(userId, idempotencyKey, hash)
        if (prior !== null) return prior
      }
      await warmQuotes(userId, trade.ticker)
      return underLock<TradeResult>(userId, async (signal, done) => {
        // Again under the lock: a request with the same key may have committed while we waited.
        if (idempotencyKey !== undefined && hash !== null) {
          const prior = await replay(userId, idempotencyKey, hash)
          if (prior !== null) return prior
          // Each record keeps the whole response: the number kept per user bounds what one user can store.
          const live = await repo.liveIdempotency(userId, new Date(now()).toISOString())
          if (live.count >= maxKeys) throw tooManyKeys(maxKeys, live.firstExpiry, now())
        }
        const state = await repo.read(userId)
        const held = state.positions.find((p) => p.ticker === trade.ticker) ?? null
        if (held === null && trade.side === 'buy' && state.positions.length >= maxPositions) {
          throw new UnprocessableError(`A portfolio holds at most ${maxPositions} positions: sell or remove one before buying ${trade.ticker}`)
        }
        const next = applyTrade(held, trade)
        const view = await price(userId, state.version + 1, replacePosition(state.positions, trade.ticker, next))
        const at = new Date(now())
        try {
          await commit(signal, {
            userId,
            expectedVersion: state.version,
            ticker: trade.ticker,
            position: next,
            transaction: { kind: trade.side, shares: trade.shares, price: trade.price },
            ...(idempotencyKey !== undefined && hash !== null
              ? {
                  idempotency: {
                    key: idempotencyKey,
                    requestHash: hash,
                    statusCode: 201,
                    response: JSON.stringify(view),
                    expiresAt: new Date(at.getTime() + options.idempotencyTtlSeconds * 1000).toISOString(),
                  },
                }
              : {}),
            at: at.toISOString(),
          })
        } catch (err) {
          const versionConflict = (err as { versionConflict?: boolean }).versionConflict === true
          if ((err instanceof IdempotencyKeyTakenError || versionConflict) && hash !== null && idempotencyKey !== undefined) {
            // Another request with this key committed first (only possible when the lock failed,
            // e.g. instances without Redis): answer its response. The key's unique constraint
            // in the store is what guarantees it applied once.
            const prior = await replay(userId, idempotencyKey, hash)
            if (prior !== null) return prior
            if (versionConflict) throw err
            throw new ConflictError('A request with this Idempotency-Key is being processed; retry it')
          }
          throw err
        }
        stats.trades++
        await invalidate(userId)
        return done({ statusCode: 201, view, replayed: false })
      })
    },

    /** Removes the whole position (404 when the user holds none of it). */
    async removePosition (userId: string, ticker: string): Promise<PortfolioView> {
      await warmQuotes(userId)
      return underLock<PortfolioView>(userId, async (signal, done) => {
        const state = await repo.read(userId)
        const current = state.positions.find((p) => p.ticker === ticker)
        if (current === undefined) throw new NotFoundError(`No ${ticker} position in this portfolio`)
        const view = await price(userId, state.version + 1, replacePosition(state.positions, ticker, null))
        const at = new Date(now()).toISOString()
        await commit(signal, {
          userId,
          expectedVersion: state.version,
          ticker,
          position: null,
          transaction: { kind: 'remove', shares: current.shares, price: null },
          at,
        })
        stats.removals++
        await invalidate(userId)
        return done(view)
      })
    },

    /** Daily snapshots of the last `days` days (today included), oldest first. */
    async history (userId: string, days: number): Promise<HistoryEntry[]> {
      const fromDay = new Date(now() - (days - 1) * DAY_MS).toISOString().slice(0, 10)
      const rows = await repo.snapshots(userId, fromDay)
      return rows.map((r) => {
        const gain = r.value === null ? null : Math.round((r.value - r.cost) * 100) / 100
        return {
          date: r.day,
          takenAt: r.takenAt,
          version: r.version,
          positions: r.positions,
          cost: r.cost,
          value: r.value,
          gain,
          gainPercent: gain === null ? null : r.cost > 0 ? Math.round((gain / r.cost) * 10_000) / 100 : 0,
        }
      })
    },

    async transactions (userId: string, limit?: number): Promise<TransactionRecord[]> {
      return repo.transactions(userId, limit)
    },

    async state (userId: string): Promise<PortfolioState> {
      return repo.read(userId)
    },

    jobs: createPortfolioJobs({ repo, quotes, log, now }),

    /** Deletes the idempotency records past their TTL (run on a timer by every instance; no lock needed). */
    async purgeExpiredKeys (): Promise<number> {
      return repo.purgeIdempotency(new Date(now()).toISOString())
    },

    stats (): PortfolioStats {
      return { ...stats }
    },
  }
}

export type PortfolioService = ReturnType<typeof createPortfolioService>

function tooManyKeys (max: number, firstExpiry: string | null, now: number): Error {
  const seconds = Math.max(1, Math.ceil(((firstExpiry === null ? now : Date.parse(firstExpiry)) - now) / 1000))
  return Object.assign(
    new TooManyRequestsError(`At most ${max} Idempotency-Keys are kept per user at a time; nothing was written, retry in ${retryText(seconds)} or without a key`),
    { headers: { 'retry-after': String(seconds) } },
  )
}

function describe (err: unknown): string {
  return err instanceof Error ? err.message : String(err)
}
