/**
 * Portfolios in the primary store, behind the same seam as users: `PortfolioRepo` is the
 * interface, SQLite the embedded implementation (a PostgreSQL one implements the same
 * methods, hence async).
 *
 * Every write is a compare-and-swap on the portfolio's version: `commit` names the version
 * its change was computed from and applies it only if that is still the current one, in
 * one transaction with the position, the log entry and (optionally) the idempotency
 * record. A writer whose lock expired mid-write (GC pause, SIGSTOP) gets
 * `VersionConflictError` and changes nothing, whatever the lock service believed.
 */
import type { Database, Statement } from 'better-sqlite3'
import type { Position } from './ledger.js'

/** Expired idempotency records deleted per statement: one batch is a few milliseconds of the event loop. */
export const PURGE_BATCH = 1000

export type TransactionKind = 'buy' | 'sell' | 'remove'

export interface PortfolioState {
  userId: string
  /** 0 for a portfolio that was never written. */
  version: number
  /** Sorted by ticker. */
  positions: Position[]
  updatedAt: string | null
}

export interface TransactionRecord {
  id: number
  userId: string
  /** The portfolio version this transaction produced. */
  version: number
  kind: TransactionKind
  ticker: string
  shares: number
  price: number | null
  createdAt: string
}

export interface IdempotencyRecord {
  userId: string
  key: string
  requestHash: string
  statusCode: number
  /** The first response's body (JSON text). */
  response: string
  createdAt: string
  expiresAt: string
}

export interface SnapshotRecord {
  userId: string
  /** YYYY-MM-DD (UTC). */
  day: string
  takenAt: string
  version: number
  positions: number
  cost: number
  /** Null when a position had no quote at the time. */
  value: number | null
}

export interface PortfolioCommit {
  userId: string
  /** The version the change was computed from; the commit fails unless it is still current. */
  expectedVersion: number
  /** The affected position afterwards: shares > 0 to keep it, null to delete it. */
  ticker: string
  position: Position | null
  transaction: { kind: TransactionKind, shares: number, price: number | null }
  /** Stored in the same transaction: a replay can never see the effect without the response. */
  idempotency?: { key: string, requestHash: string, statusCode: number, response: string, expiresAt: string }
  at: string
}

export interface CommitResult {
  version: number
  transactionId: number
}

export interface PortfolioRepo {
  read (userId: string): Promise<PortfolioState>
  /** The current version (0 when none): one primary-key lookup. */
  version (userId: string): Promise<number>
  /** Throws `VersionConflictError` (nothing written) or `IdempotencyKeyTakenError`. */
  commit (change: PortfolioCommit): Promise<CommitResult>
  transactions (userId: string, limit?: number): Promise<TransactionRecord[]>
  /** The record for the key unless it expired at `now` (ISO). */
  findIdempotency (userId: string, key: string, now: string): Promise<IdempotencyRecord | null>
  /** Deletes records expired at `now`, in batches that let the event loop run between them; returns how many. */
  purgeIdempotency (now: string): Promise<number>
  /** How many records of the user are live at `now`, and when the first of them expires. */
  liveIdempotency (userId: string, now: string): Promise<{ count: number, firstExpiry: string | null }>
  /** Every ticker held by anyone, sorted. */
  heldTickers (): Promise<string[]>
  /** Portfolios after `afterUserId` in user-id order (keyset paging for jobs). */
  listPortfolios (afterUserId: string, limit: number): Promise<PortfolioState[]>
  /** Insert or replace (one per user per day, so a re-run the same day overwrites). */
  saveSnapshots (rows: readonly SnapshotRecord[]): Promise<void>
  snapshots (userId: string, fromDay: string): Promise<SnapshotRecord[]>
}

/** The version read is no longer current: another writer committed first. */
export class VersionConflictError extends Error {
  constructor (readonly userId: string, readonly expected: number, readonly actual: number) {
    super(`portfolio ${userId}: expected version ${expected}, found ${actual}`)
    this.name = 'VersionConflictError'
  }
}

/** A record for this idempotency key already exists (a concurrent request with the same key won). */
export class IdempotencyKeyTakenError extends Error {
  constructor (readonly userId: string, readonly key: string) {
    super('idempotency key already used')
    this.name = 'IdempotencyKeyTakenError'
  }
}

interface PositionRow { ticker: string, shares: number, avg_cost: number }
interface PortfolioRow { user_id: string, version: number, updated_at: string }
interface TransactionRow { id: number, user_id: string, version: number, kind: TransactionKind, ticker: string, shares: number, price: number | null, created_at: string }
interface IdempotencyRow { user_id: string, key: string, request_hash: string, status_code: number, response: string, created_at: string, expires_at: string }
interface SnapshotRow { user_id: string, day: string, taken_at: string, version: number, positions: number, cost: number, value: number | null }

const toPosition = (r: PositionRow): Position => ({ ticker: r.ticker, shares: r.shares, avgCost: r.avg_cost })

export class SqlitePortfolioRepo implements PortfolioRepo {
  readonly #db: Database
  readonly #portfolio: Statement<[string], PortfolioRow>
  readonly #positions: Statement<[string], PositionRow>
  readonly #create: Statement<[string, string, string]>
  readonly #bump: Statement<[string, string, number]>
  readonly #upsertPosition: Statement<[string, string, number, number, string]>
  readonly #deletePosition: Statement<[string, string]>
  readonly #logTransaction: Statement<[string, number, TransactionKind, string, number, number | null, string]>
  readonly #transactions: Statement<[string, number], TransactionRow>
  readonly #findKey: Statement<[string, string, string], IdempotencyRow>
  readonly #dropExpiredKey: Statement<[string, string, string]>
  readonly #insertKey: Statement<[string, string, string, number, string, string, string]>
  readonly #purgeKeys: Statement<[string, number]>
  readonly #liveKeys: Statement<[string, string], { n: number, first: string | null }>
  readonly #held: Statement<[], { ticker: string }>
  readonly #page: Statement<[string, number], PortfolioRow>
  readonly #saveSnapshot: Statement<[string, string, string, number, number, number, number | null]>
  readonly #snapshots: Statement<[string, string], SnapshotRow>
  readonly #readTx: (userId: string) => PortfolioState
  readonly #commitTx: { immediate: (change: PortfolioCommit) => CommitResult }
  readonly #pageTx: (after: string, limit: number) => PortfolioState[]

  constructor (db: Database) {
    this.#db = db
    this.#portfolio = db.prepare('SELECT user_id, version, updated_at FROM portfolios WHERE user_id = ?')
    this.#positions = db.prepare('SELECT ticker, shares, avg_cost FROM portfolio_positions WHERE user_id = ? ORDER BY ticker')
    this.#create = db.prepare('INSERT INTO portfolios (user_id, version, created_at, updated_at) VALUES (?, 1, ?, ?) ON CONFLICT (user_id) DO NOTHING')
    this.#bump = db.prepare('UPDATE portfolios SET version = version + 1, updated_at = ? WHERE user_id = ? AND version = ?')
    this.#upsertPosition = db.prepare(`INSERT INTO portfolio_positions (user_id, ticker, shares, avg_cost, updated_at) VALUES (?, ?, ?, ?, ?)
      ON CONFLICT (user_id, ticker) DO UPDATE SET shares = excluded.shares, avg_cost = excluded.avg_cost, updated_at = excluded.updated_at`)
    this.#deletePosition = db.prepare('DELETE FROM portfolio_positions WHERE user_id = ? AND ticker = ?')
    this.#logTransaction = db.prepare(`INSERT INTO portfolio_transactions (user_id, version, kind, ticker, shares, price, created_at)
      VALUES (?, ?, ?, ?, ?, ?, ?)`)
    this.#transactions = db.prepare(`SELECT id, user_id, version, kind, ticker, shares, price, created_at FROM portfolio_transactions
      WHERE user_id = ? ORDER BY version DESC LIMIT ?`)
    this.#findKey = db.prepare(`SELECT user_id, key, request_hash, status_code, response, created_at, expires_at FROM idempotency_keys
      WHERE user_id = ? AND key = ? AND expires_at > ?`)
    this.#dropExpiredKey = db.prepare('DELETE FROM idempotency_keys WHERE user_id = ? AND key = ? AND expires_at <= ?')
    this.#insertKey = db.prepare(`INSERT INTO idempotency_keys (user_id, key, request_hash, status_code, response, created_at, expires_at)
      VALUES (?, ?, ?, ?, ?, ?, ?)`)
    this.#liveKeys = db.prepare('SELECT COUNT(*) AS n, MIN(expires_at) AS first FROM idempotency_keys WHERE user_id = ? AND expires_at > ?')
    this.#purgeKeys = db.prepare(`DELETE FROM idempotency_keys WHERE (user_id, key) IN
      (SELECT user_id, key FROM idempotency_keys WHERE expires_at <= ? LIMIT ?)`)
    this.#held = db.prepare('SELECT DISTINCT ticker FROM portfolio_positions ORDER BY ticker')
    this.#page = db.prepare('SELECT user_id, version, updated_at FROM portfolios WHERE user_id > ? ORDER BY user_id LIMIT ?')
    this.#saveSnapshot = db.prepare(`INSERT INTO portfolio_snapshots (user_id, day, taken_at, version, positions, cost, value) VALUES (?, ?, ?, ?, ?, ?, ?)
      ON CONFLICT (user_id, day) DO UPDATE SET taken_at = excluded.taken_at, version = excluded.version,
        positions = excluded.positions, cost = excluded.cost, value = excluded.value`)
    this.#snapshots = db.prepare(`SELECT user_id, day, taken_at, version, positions, cost, value FROM portfolio_snapshots
      WHERE user_id = ? AND day >= ? ORDER BY day`)

    // Reads in one transaction: the positions belong to the version returned with them.
    this.#readTx = db.transaction((userId: string): PortfolioState => {
      const row = this.#portfolio.get(userId)
      if (row === undefined) return { userId, version: 0, positions: [], updatedAt: null }
      return { userId, version: row.version, positions: this.#positions.all(userId).map(toPosition), updatedAt: row.updated_at }
    })
    this.#pageTx = db.transaction((after: string, limit: number): PortfolioState[] =>
      this.#page.all(after, limit).map((row) => ({
        userId: row.user_id,
        version: row.version,
        positions: this.#positions.all(row.user_id).map(toPosition),
        updatedAt: row.updated_at,
      })))
    // IMMEDIATE: the write lock is taken at BEGIN (waiting up to busy_timeout for another
    // process), so the version check and the writes see one consistent database.
    this.#commitTx = db.transaction((change: PortfolioCommit): CommitResult => {
      const { userId, expectedVersion, at } = change
      const swapped = expectedVersion === 0
        ? this.#create.run(userId, at, at).changes === 1
        : this.#bump.run(at, userId, expectedVersion).changes === 1
      if (!swapped) throw new VersionConflictError(userId, expectedVersion, this.#portfolio.get(userId)?.version ?? 0)
      const version = expectedVersion + 1
      if (change.position === null) this.#deletePosition.run(userId, change.ticker)
      else this.#upsertPosition.run(userId, change.ticker, change.position.shares, change.position.avgCost, at)
      const { kind, shares, price } = change.transaction
      const transactionId = Number(this.#logTransaction.run(userId, version, kind, change.ticker, shares, price, at).lastInsertRowid)
      const idem = change.idempotency
      if (idem !== undefined) {
        this.#dropExpiredKey.run(userId, idem.key, at)
        try {
          this.#insertKey.run(userId, idem.key, idem.requestHash, idem.statusCode, idem.response, at, idem.expiresAt)
        } catch (err) {
          if (isUniqueViolation(err)) throw new IdempotencyKeyTakenError(userId, idem.key)
          throw err
        }
      }
      return { version, transactionId }
    })
  }

  async read (userId: string): Promise<PortfolioState> {
    return this.#readTx(userId)
  }

  async version (userId: string): Promise<number> {
    return this.#portfolio.get(userId)?.version ?? 0
  }

  async commit (change: PortfolioCommit): Promise<CommitResult> {
    return this.#commitTx.immediate(change)
  }

  async transactions (userId: string, limit = 100): Promise<TransactionRecord[]> {
    return this.#transactions.all(userId, limit).map((r) => ({
      id: r.id, userId: r.user_id, version: r.version, kind: r.kind, ticker: r.ticker, shares: r.shares, price: r.price, createdAt: r.created_at,
    }))
  }

  async findIdempotency (userId: string, key: string, now: string): Promise<IdempotencyRecord | null> {
    const r = this.#findKey.get(userId, key, now)
    if (r === undefined) return null
    return {
      userId: r.user_id, key: r.key, requestHash: r.request_hash, statusCode: r.status_code, response: r.response, createdAt: r.created_at, expiresAt: r.expires_at,
    }
  }

  async purgeIdempotency (now: string): Promise<number> {
    let purged = 0
    for (;;) {
      const changes = this.#purgeKeys.run(now, PURGE_BATCH).changes
      purged += changes
      if (changes < PURGE_BATCH) return purged
      await new Promise((resolve) => setImmediate(resolve))
    }
  }

  async liveIdempotency (userId: string, now: string): Promise<{ count: number, firstExpiry: string | null }> {
    const row = this.#liveKeys.get(userId, now)
    return { count: row?.n ?? 0, firstExpiry: row?.first ?? null }
  }

  async heldTickers (): Promise<string[]> {
    return this.#held.all().map((r) => r.ticker)
  }

  async listPortfolios (afterUserId: string, limit: number): Promise<PortfolioState[]> {
    return this.#pageTx(afterUserId, limit)
  }

  async saveSnapshots (rows: readonly SnapshotRecord[]): Promise<void> {
    this.#db.transaction(() => {
      for (const r of rows) this.#saveSnapshot.run(r.userId, r.day, r.takenAt, r.version, r.positions, r.cost, r.value)
    }).immediate()
  }

  async snapshots (userId: string, fromDay: string): Promise<SnapshotRecord[]> {
    return this.#snapshots.all(userId, fromDay).map((r) => ({
      userId: r.user_id, day: r.day, takenAt: r.taken_at, version: r.version, positions: r.positions, cost: r.cost, value: r.value,
    }))
  }
}

function isUniqueViolation (err: unknown): boolean {
  const code = (err as { code?: string }).code
  return code === 'SQLITE_CONSTRAINT_PRIMARYKEY' || code === 'SQLITE_CONSTRAINT_UNIQUE'
}
