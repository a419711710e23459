/**
 * The primary store: users, portfolios, idempotency records and snapshots, behind one seam
 * (`PrimaryStore` with its repositories) over one typed query API (Kysely).
 *
 * - `DATABASE_URL` unset or `sqlite:<path>`: one SQLite file (better-sqlite3, WAL), the
 *   embedded default; `DATABASE_PATH` names the file when the URL does not.
 * - `postgres://…` / `postgresql://…`: PostgreSQL through a `pg` pool whose connects and
 *   queries are bounded (`DATABASE_CONNECT_TIMEOUT_MS`, `DATABASE_STATEMENT_TIMEOUT_MS`),
 *   so a frozen server costs a request a bounded wait, never a hang.
 *
 * Migrations are applied on open: under the SQLite file's write lock, or under a PostgreSQL
 * advisory lock, so instances booting together never race. Plain TypeScript with no
 * Fastify: the CLI and the tests open it the same way the plugin does.
 */
import { mkdirSync } from 'node:fs'
import { dirname, resolve } from 'node:path'
import BetterSqlite3, { type Database } from 'better-sqlite3'
import pg from 'pg'
import { Kysely, PostgresDialect, SqliteDialect, sql, type PostgresPool, type PostgresPoolClient } from 'kysely'
import { redactUrl } from '../config.js'
import { runMigrations, runPostgresMigrations, migrations as defaultMigrations, type Migration, type MigrationResult } from './migrations.js'
import { KyselyUsersRepo, type UsersRepo } from './users-repo.js'
import { KyselyPortfolioRepo, type PortfolioRepo } from '../portfolio/repo.js'
import { isUnavailableCause } from './errors.js'
import type { Tables } from './schema.js'

export { DuplicateEmailError, type Role, type UserRecord, type UsersRepo } from './users-repo.js'
export { migrations, type Migration } from './migrations.js'
export { databaseUnavailable, isDatabaseUnavailable, DATABASE_RETRY_AFTER_SECONDS } from './errors.js'

export type DatabaseKind = 'sqlite' | 'postgres'

export interface OpenDatabaseOptions {
  /** `sqlite:<path>`, `postgres://…`; unset: SQLite at `path`. */
  url?: string | undefined
  /** A file path, or `:memory:` (tests). Used when `url` is unset or `sqlite:` alone. */
  path?: string
  migrations?: readonly Migration[]
  /** SQLite: how long a writer waits for another process's write lock. */
  busyTimeoutMs?: number
  /** PostgreSQL: pool size. */
  poolMax?: number
  /** PostgreSQL: how long a new connection may take (connect + startup). */
  connectTimeoutMs?: number
  /** PostgreSQL: statement_timeout on the server, and the client's own wait for an answer (plus a second). */
  statementTimeoutMs?: number
  /** PostgreSQL: called for errors of idle pooled connections (the server went away). */
  onPoolError?: (err: Error) => void
}

export interface DatabaseProbe {
  ok: boolean
  /** Round trip in ms; null when it failed. */
  responseTime: number | null
  error?: string
}

export interface PrimaryStore {
  readonly kind: DatabaseKind
  /** The typed query API over either store. */
  readonly kysely: Kysely<Tables>
  /** The raw better-sqlite3 handle (SQLite only; null on PostgreSQL). */
  readonly sqlite: Database | null
  readonly users: UsersRepo
  readonly portfolios: PortfolioRepo
  /** SQLite: the absolute path or `:memory:`; PostgreSQL: the URL with its password hidden. */
  readonly location: string
  /** SQLite: `wal` (or `memory`); PostgreSQL: null. */
  readonly journalMode: string | null
  readonly migrations: MigrationResult
  /** Runs `fn` in one transaction (SQLite: BEGIN IMMEDIATE, taking the write lock first). */
  transaction<T> (fn: (trx: Kysely<Tables>) => Promise<T>): Promise<T>
  /** One `SELECT 1` round trip, bounded; cached for a second so health checks never flood the database. */
  probe (): Promise<DatabaseProbe>
  /** True when the database answers (readiness). */
  healthy (): Promise<boolean>
  /** Statements sent to the database since open (BEGIN and COMMIT included): the pool's own count. */
  roundTrips (): number
  close (): Promise<void>
}

/** Which store a config names; throws with the variable's name on a malformed URL. */
export function databaseTarget (url: string | undefined, path: string): { kind: 'sqlite', path: string } | { kind: 'postgres', url: string } {
  const value = url?.trim() ?? ''
  if (value === '') return { kind: 'sqlite', path }
  if (/^postgres(ql)?:\/\//i.test(value)) return { kind: 'postgres', url: value }
  if (/^sqlite:/i.test(value)) {
    let rest = value.slice('sqlite:'.length)
    if (rest.startsWith('//')) rest = rest.slice(2)
    return { kind: 'sqlite', path: rest === '' ? path : rest }
  }
  throw new Error('DATABASE_URL: expected sqlite:<path>, postgres://… or postgresql://…')
}

const PROBE_CACHE_MS = 1000

/** A `probe` that runs at most once per second and at most one at a time, bounded by `timeoutMs`. */
function cachedProbe (run: () => Promise<void>, timeoutMs: number): () => Promise<DatabaseProbe> {
  let last: { at: number, result: DatabaseProbe } | undefined
  let inFlight: Promise<DatabaseProbe> | undefined
  return async () => {
    if (last !== undefined && Date.now() - last.at < PROBE_CACHE_MS) return last.result
    inFlight ??= (async (): Promise<DatabaseProbe> => {
      const started = performance.now()
      let timer: NodeJS.Timeout | undefined
      try {
        await Promise.race([
          run(),
          new Promise((_resolve, reject) => { timer = setTimeout(() => reject(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs) }),
        ])
        return { ok: true, responseTime: Math.round((performance.now() - started) * 100) / 100 }
      } catch (err) {
        return { ok: false, responseTime: null, error: err instanceof Error ? err.message : String(err) }
      } finally {
        clearTimeout(timer)
      }
    })().then((result) => {
      last = { at: Date.now(), result }
      inFlight = undefined
      return result
    })
    return inFlight
  }
}

export async function openDatabase (options: OpenDatabaseOptions): Promise<PrimaryStore> {
  const target = databaseTarget(options.url, options.path ?? ':memory:')
  return target.kind === 'postgres' ? openPostgres(target.url, options) : openSqlite(target.path, options)
}

interface SqliteHandle {
  sqlite: Database
  kysely: Kysely<Tables>
  journalMode: string
  refs: number
  statements: number
}

/**
 * Open SQLite files of this process, by absolute path. Every store opened on one file in one
 * process shares one connection (and Kysely's one-connection mutex): a transaction awaits
 * between its statements, and a second connection of the same process asking for the write
 * lock meanwhile would block the thread in busy_timeout while the holder cannot run. Other
 * processes on the file (other instances) wait on the file lock as before. `:memory:` is
 * never shared: each open is a database of its own.
 */
const sqliteHandles = new Map<string, SqliteHandle>()

function sqliteHandle (path: string, options: OpenDatabaseOptions): SqliteHandle {
  const shared = path === ':memory:' ? undefined : sqliteHandles.get(path)
  if (shared !== undefined && shared.sqlite.open) {
    shared.refs++
    return shared
  }
  if (path !== ':memory:') mkdirSync(dirname(path), { recursive: true })
  const sqlite = new BetterSqlite3(path)
  try {
    sqlite.pragma(`busy_timeout = ${Math.max(0, Math.trunc(options.busyTimeoutMs ?? 5000))}`)
    // WAL: readers never block the writer; `:memory:` databases stay in "memory" mode.
    const journalMode = String(sqlite.pragma('journal_mode = WAL', { simple: true }))
    sqlite.pragma('synchronous = NORMAL')
    sqlite.pragma('foreign_keys = ON')
    const handle: SqliteHandle = {
      sqlite,
      journalMode,
      refs: 1,
      statements: 0,
      kysely: new Kysely<Tables>({
        dialect: new SqliteDialect({ database: sqlite }),
        log: () => { handle.statements++ },
      }),
    }
    if (path !== ':memory:') sqliteHandles.set(path, handle)
    return handle
  } catch (err) {
    sqlite.close()
    throw err
  }
}

function releaseSqlite (path: string, handle: SqliteHandle): void {
  handle.refs--
  if (handle.refs > 0) return
  if (sqliteHandles.get(path) === handle) sqliteHandles.delete(path)
  if (handle.sqlite.open) handle.sqlite.close()
}

function openSqlite (file: string, options: OpenDatabaseOptions): PrimaryStore {
  const path = file === ':memory:' ? ':memory:' : resolve(file)
  const handle = sqliteHandle(path, options)
  const { sqlite, kysely } = handle
  let released = false
  const release = (): void => {
    if (released) return
    released = true
    releaseSqlite(path, handle)
  }
  try {
    const result = runMigrations(sqlite, options.migrations ?? defaultMigrations)
    const probeStatement = sqlite.prepare('SELECT max(version) AS v FROM schema_migrations')
    const transaction = <T>(fn: (trx: Kysely<Tables>) => Promise<T>): Promise<T> => runTransaction(kysely, 'BEGIN IMMEDIATE', fn)
    const store: PrimaryStore = {
      kind: 'sqlite',
      kysely,
      sqlite,
      users: new KyselyUsersRepo(kysely),
      portfolios: null as unknown as PortfolioRepo,
      location: path,
      journalMode: handle.journalMode,
      migrations: result,
      transaction,
      probe: async () => {
        if (!sqlite.open) return { ok: false, responseTime: null, error: 'the database is closed' }
        const started = performance.now()
        try {
          probeStatement.get()
          return { ok: true, responseTime: Math.round((performance.now() - started) * 100) / 100 }
        } catch (err) {
          return { ok: false, responseTime: null, error: err instanceof Error ? err.message : String(err) }
        }
      },
      healthy: async () => (await store.probe()).ok,
      roundTrips: () => handle.statements,
      close: async () => { release() },
    }
    Object.assign(store, { portfolios: new KyselyPortfolioRepo(store) })
    return store
  } catch (err) {
    release()
    throw err
  }
}

/**
 * The pool Kysely draws from: counts every statement, and throws away a connection whose
 * query failed for want of an answer (a timed-out query may still be running on it; pg
 * would otherwise hand the same connection to the next request).
 */
class GuardedPool implements PostgresPool {
  statements = 0
  constructor (readonly pool: pg.Pool) {}

  async connect (): Promise<PostgresPoolClient> {
    const client = await this.pool.connect()
    let broken = false
    // While checked out, a socket error (the server reset the connection) is emitted on the
    // client, not the pool: without a listener it would end the process.
    const onError = (): void => { broken = true }
    client.on('error', onError)
    const query = async (text: string, values: readonly unknown[]) => {
      this.statements++
      try {
        return await client.query(text, [...values])
      } catch (err) {
        if (isUnavailableCause(err)) broken = true
        throw err
      }
    }
    return {
      query: query as unknown as PostgresPoolClient['query'],
      release: (destroy?: boolean) => {
        client.off('error', onError)
        client.release(destroy === true || broken ? true : undefined)
      },
    }
  }

  async end (): Promise<void> {
    await this.pool.end()
  }
}

async function openPostgres (url: string, options: OpenDatabaseOptions): Promise<PrimaryStore> {
  const connectTimeoutMs = options.connectTimeoutMs ?? 2000
  const statementTimeoutMs = options.statementTimeoutMs ?? 5000
  const pool = new pg.Pool({
    connectionString: url,
    max: options.poolMax ?? 10,
    connectionTimeoutMillis: connectTimeoutMs,
    // The server cancels a statement past this; the client stops waiting a second later
    // (a frozen server answers nothing, not even the cancellation).
    statement_timeout: statementTimeoutMs,
    query_timeout: statementTimeoutMs + 1000,
    idle_in_transaction_session_timeout: Math.max(statementTimeoutMs * 2, 10_000),
    application_name: 'ai-capital-api',
    keepAlive: true,
    idleTimeoutMillis: 30_000,
  })
  // An idle connection that dies (server restart) emits here; unhandled, it would end the process.
  pool.on('error', (err) => { options.onPoolError?.(err) })

  let result: MigrationResult
  try {
    const client = await pool.connect()
    let broken = false
    const onError = (): void => { broken = true }
    client.on('error', onError)
    try {
      result = await runPostgresMigrations(client, options.migrations ?? defaultMigrations)
    } finally {
      client.off('error', onError)
      client.release(broken ? true : undefined)
    }
  } catch (err) {
    await pool.end().catch(() => {})
    throw err
  }

  const guardedPool = new GuardedPool(pool)
  const kysely = new Kysely<Tables>({ dialect: new PostgresDialect({ pool: guardedPool }) })
  const transaction = <T>(fn: (trx: Kysely<Tables>) => Promise<T>): Promise<T> => runTransaction(kysely, 'BEGIN', fn)
  let closed = false
  const store: PrimaryStore = {
    kind: 'postgres',
    kysely,
    sqlite: null,
    users: new KyselyUsersRepo(kysely),
    portfolios: null as unknown as PortfolioRepo,
    location: redactUrl(url),
    journalMode: null,
    migrations: result,
    transaction,
    probe: cachedProbe(async () => { await sql`SELECT 1`.execute(kysely) }, connectTimeoutMs + statementTimeoutMs),
    healthy: async () => (await store.probe()).ok,
    roundTrips: () => guardedPool.statements,
    close: async () => {
      if (closed) return
      closed = true
      await kysely.destroy()
      // Kysely ends the pool only if it ever used it: a store opened only to migrate (the
      // `cli migrate` step) would keep its idle connection, and the process, for idleTimeoutMillis.
      if (!pool.ending) await pool.end()
    },
  }
  Object.assign(store, { portfolios: new KyselyPortfolioRepo(store) })
  return store
}

/**
 * BEGIN (or BEGIN IMMEDIATE) … COMMIT on one connection, ROLLBACK on any error. Written out
 * rather than Kysely's `transaction()` because SQLite needs IMMEDIATE: the write lock is
 * taken at BEGIN, so the version check and the writes see one consistent file.
 */
async function runTransaction<T> (kysely: Kysely<Tables>, begin: string, fn: (trx: Kysely<Tables>) => Promise<T>): Promise<T> {
  return kysely.connection().execute(async (conn) => {
    await sql.raw(begin).execute(conn)
    try {
      const result = await fn(conn)
      await sql.raw('COMMIT').execute(conn)
      return result
    } catch (err) {
      // Also after a failed COMMIT (SQLite busy): the transaction must not stay open.
      await sql.raw('ROLLBACK').execute(conn).catch(() => {})
      throw err
    }
  })
}
