/**
 * Portfolios in the primary store, behind the same seam as users: `PortfolioRepo` is the
 * interface, `KyselyPortfolioRepo` its one implementation over SQLite or PostgreSQL.
 *
 * Every write is a compare-and-swap on the portfolio's version: `commit` names the version
 * its change was computed from and applies it only if that is still the current one, in
 * one transaction with the position, the log entry and (optionally) the idempotency
 * record. A writer whose lock expired mid-write (GC pause, SIGSTOP) gets
 * `VersionConflictError` and changes nothing, whatever the lock service believed.
 */
import { sql, type Kysely } from 'kysely'
import type { Position } from './ledger.js'
import { guarded, isUniqueViolation } from '../db/errors.js'
import type { Tables, TransactionKind } from '../db/schema.js'

export type { TransactionKind } from '../db/schema.js'

/** Expired idempotency records deleted per statement: one batch is a few milliseconds of the event loop. */
export const PURGE_BATCH = 1000

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

/** What the repository needs from the store: the query API and a transaction runner. */
export interface RepoStore {
  readonly kysely: Kysely<Tables>
  transaction<T> (fn: (trx: Kysely<Tables>) => Promise<T>): Promise<T>
}

interface JoinedRow { user_id: string, version: number, updated_at: string, ticker: string | null, shares: number | null, avg_cost: number | null }

/** Rows of portfolio ⟕ positions (ordered by user, then ticker) → one state per portfolio. */
function statesOf (rows: readonly JoinedRow[]): PortfolioState[] {
  const states: PortfolioState[] = []
  let current: PortfolioState | undefined
  for (const r of rows) {
    if (current?.userId !== r.user_id) {
      current = { userId: r.user_id, version: r.version, positions: [], updatedAt: r.updated_at }
      states.push(current)
    }
    if (r.ticker !== null && r.shares !== null && r.avg_cost !== null) current.positions.push({ ticker: r.ticker, shares: r.shares, avgCost: r.avg_cost })
  }
  return states
}

export class KyselyPortfolioRepo implements PortfolioRepo {
  readonly #store: RepoStore

  constructor (store: RepoStore) {
    this.#store = store
  }

  get #db (): Kysely<Tables> {
    return this.#store.kysely
  }

  /** One statement (a join), so the positions belong to the version returned with them in either store. */
  read (userId: string): Promise<PortfolioState> {
    return guarded(async () => {
      const rows = await this.#db.selectFrom('portfolios as p')
        .leftJoin('portfolio_positions as pos', 'pos.user_id', 'p.user_id')
        .select(['p.user_id', 'p.version', 'p.updated_at', 'pos.ticker', 'pos.shares', 'pos.avg_cost'])
        .where('p.user_id', '=', userId)
        .orderBy('pos.ticker')
        .execute()
      return statesOf(rows)[0] ?? { userId, version: 0, positions: [], updatedAt: null }
    })
  }

  version (userId: string): Promise<number> {
    return guarded(async () => {
      const row = await this.#db.selectFrom('portfolios').select('version').where('user_id', '=', userId).executeTakeFirst()
      return row?.version ?? 0
    })
  }

  /**
   * One transaction: the compare-and-swap on the version, the position, the log entry and
   * the idempotency record. The record's primary key (user_id, key) is what makes a key
   * apply once across instances: a second insert fails with a unique violation and the
   * whole write rolls back, whatever the locks did.
   */
  commit (change: PortfolioCommit): Promise<CommitResult> {
    return guarded(() => this.#store.transaction(async (trx) => {
      const { userId, expectedVersion, at } = change
      const swapped = expectedVersion === 0
        ? (await trx.insertInto('portfolios').values({ user_id: userId, version: 1, created_at: at, updated_at: at })
            .onConflict((oc) => oc.column('user_id').doNothing()).executeTakeFirst()).numInsertedOrUpdatedRows === 1n
        : (await trx.updateTable('portfolios').set((eb) => ({ version: eb('version', '+', 1), updated_at: at }))
            .where('user_id', '=', userId).where('version', '=', expectedVersion).executeTakeFirst()).numUpdatedRows === 1n
      if (!swapped) {
        const row = await trx.selectFrom('portfolios').select('version').where('user_id', '=', userId).executeTakeFirst()
        throw new VersionConflictError(userId, expectedVersion, row?.version ?? 0)
      }
      const version = expectedVersion + 1
      if (change.position === null) {
        await trx.deleteFrom('portfolio_positions').where('user_id', '=', userId).where('ticker', '=', change.ticker).execute()
      } else {
        await trx.insertInto('portfolio_positions')
          .values({ user_id: userId, ticker: change.ticker, shares: change.position.shares, avg_cost: change.position.avgCost, updated_at: at })
          .onConflict((oc) => oc.columns(['user_id', 'ticker']).doUpdateSet((eb) => ({
            shares: eb.ref('excluded.shares'), avg_cost: eb.ref('excluded.avg_cost'), updated_at: eb.ref('excluded.updated_at'),
          })))
          .execute()
      }
      const { kind, shares, price } = change.transaction
      const logged = await trx.insertInto('portfolio_transactions')
        .values({ user_id: userId, version, kind, ticker: change.ticker, shares, price, created_at: at })
        .returning('id').executeTakeFirstOrThrow()
      const idem = change.idempotency
      if (idem !== undefined) {
        await trx.deleteFrom('idempotency_keys').where('user_id', '=', userId).where('key', '=', idem.key).where('expires_at', '<=', at).execute()
        try {
          await trx.insertInto('idempotency_keys').values({
            user_id: userId, key: idem.key, request_hash: idem.requestHash, status_code: idem.statusCode, response: idem.response, created_at: at, expires_at: idem.expiresAt,
          }).execute()
        } catch (err) {
          if (isUniqueViolation(err)) throw new IdempotencyKeyTakenError(userId, idem.key)
          throw err
        }
      }
      return { version, transactionId: Number(logged.id) }
    }))
  }

  transactions (userId: string, limit = 100): Promise<TransactionRecord[]> {
    return guarded(async () => {
      const rows = await this.#db.selectFrom('portfolio_transactions')
        .select(['id', 'user_id', 'version', 'kind', 'ticker', 'shares', 'price', 'created_at'])
        .where('user_id', '=', userId).orderBy('version', 'desc').limit(limit).execute()
      return rows.map((r) => ({
        id: Number(r.id), userId: r.user_id, version: r.version, kind: r.kind, ticker: r.ticker, shares: r.shares, price: r.price, createdAt: r.created_at,
      }))
    })
  }

  findIdempotency (userId: string, key: string, now: string): Promise<IdempotencyRecord | null> {
    return guarded(async () => {
      const r = await this.#db.selectFrom('idempotency_keys')
        .select(['user_id', 'key', 'request_hash', 'status_code', 'response', 'created_at', 'expires_at'])
        .where('user_id', '=', userId).where('key', '=', key).where('expires_at', '>', now).executeTakeFirst()
      if (r === undefined) return null
      return {
        userId: r.user_id, key: r.key, requestHash: r.request_hash, statusCode: r.status_code, response: r.response, createdAt: r.created_at, expiresAt: r.expires_at,
      }
    })
  }

  async purgeIdempotency (now: string): Promise<number> {
    let purged = 0
    for (;;) {
      const result = await guarded(() => sql`DELETE FROM idempotency_keys WHERE (user_id, key) IN
        (SELECT user_id, key FROM idempotency_keys WHERE expires_at <= ${now} LIMIT ${PURGE_BATCH})`.execute(this.#db))
      const changes = Number(result.numAffectedRows ?? 0n)
      purged += changes
      if (changes < PURGE_BATCH) return purged
      await new Promise((resolve) => setImmediate(resolve))
    }
  }

  liveIdempotency (userId: string, now: string): Promise<{ count: number, firstExpiry: string | null }> {
    return guarded(async () => {
      const row = await this.#db.selectFrom('idempotency_keys')
        .select((eb) => [eb.fn.countAll<number | string>().as('n'), eb.fn.min('expires_at').as('first')])
        .where('user_id', '=', userId).where('expires_at', '>', now).executeTakeFirst()
      return { count: Number(row?.n ?? 0), firstExpiry: row?.first ?? null }
    })
  }

  heldTickers (): Promise<string[]> {
    return guarded(async () => {
      const rows = await this.#db.selectFrom('portfolio_positions').select('ticker').distinct().orderBy('ticker').execute()
      return rows.map((r) => r.ticker)
    })
  }

  listPortfolios (afterUserId: string, limit: number): Promise<PortfolioState[]> {
    return guarded(async () => {
      const page = this.#db.selectFrom('portfolios').select(['user_id', 'version', 'updated_at'])
        .where('user_id', '>', afterUserId).orderBy('user_id').limit(limit)
      const rows = await this.#db.selectFrom(page.as('p'))
        .leftJoin('portfolio_positions as pos', 'pos.user_id', 'p.user_id')
        .select(['p.user_id', 'p.version', 'p.updated_at', 'pos.ticker', 'pos.shares', 'pos.avg_cost'])
        .orderBy('p.user_id').orderBy('pos.ticker')
        .execute()
      return statesOf(rows)
    })
  }

  saveSnapshots (rows: readonly SnapshotRecord[]): Promise<void> {
    if (rows.length === 0) return Promise.resolve()
    return guarded(() => this.#store.transaction(async (trx) => {
      await trx.insertInto('portfolio_snapshots')
        .values(rows.map((r) => ({ user_id: r.userId, day: r.day, taken_at: r.takenAt, version: r.version, positions: r.positions, cost: r.cost, value: r.value })))
        .onConflict((oc) => oc.columns(['user_id', 'day']).doUpdateSet((eb) => ({
          taken_at: eb.ref('excluded.taken_at'),
          version: eb.ref('excluded.version'),
          positions: eb.ref('excluded.positions'),
          cost: eb.ref('excluded.cost'),
          value: eb.ref('excluded.value'),
        })))
        .execute()
    }))
  }

  snapshots (userId: string, fromDay: string): Promise<SnapshotRecord[]> {
    return guarded(async () => {
      const rows = await this.#db.selectFrom('portfolio_snapshots')
        .select(['user_id', 'day', 'taken_at', 'version', 'positions', 'cost', 'value'])
        .where('user_id', '=', userId).where('day', '>=', fromDay).orderBy('day').execute()
      return rows.map((r) => ({
        userId: r.user_id, day: r.day, takenAt: r.taken_at, version: r.version, positions: r.positions, cost: r.cost, value: r.value,
      }))
    })
  }
}
