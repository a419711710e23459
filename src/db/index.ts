/**
 * The primary store: one SQLite file (better-sqlite3), WAL journal, migrations applied on
 * open, and the repositories built on it. Plain TypeScript with no Fastify, so the CLI and
 * the tests open it the same way the plugin does.
 */
import { mkdirSync } from 'node:fs'
import { dirname, resolve } from 'node:path'
import BetterSqlite3, { type Database } from 'better-sqlite3'
import { runMigrations, migrations as defaultMigrations, type Migration, type MigrationResult } from './migrations.js'
import { SqliteUsersRepo, type UsersRepo } from './users-repo.js'

export { DuplicateEmailError, type Role, type UserRecord, type UsersRepo } from './users-repo.js'
export { migrations, type Migration } from './migrations.js'

export interface OpenDatabaseOptions {
  /** A file path, or `:memory:` (tests). */
  path: string
  migrations?: readonly Migration[]
  /** How long a writer waits for another process's write lock. */
  busyTimeoutMs?: number
}

export interface PrimaryStore {
  /** The raw handle, for repositories that other concerns add. */
  readonly sqlite: Database
  readonly users: UsersRepo
  /** Absolute path, or `:memory:`. */
  readonly path: string
  readonly journalMode: string
  readonly migrations: MigrationResult
  /** True when the database answers a query that reads the file (readiness). */
  healthy (): boolean
  close (): void
}

export function openDatabase (options: OpenDatabaseOptions): PrimaryStore {
  const inMemory = options.path === ':memory:'
  const path = inMemory ? ':memory:' : resolve(options.path)
  if (!inMemory) mkdirSync(dirname(path), { recursive: true })

  const sqlite = new BetterSqlite3(path)
  try {
    sqlite.pragma(`busy_timeout = ${Math.max(0, Math.trunc(options.busyTimeoutMs ?? 5000))}`)
    // WAL: readers never block the writer; `:memory:` databases stay in "memory" mode.
    const journalMode = String(sqlite.pragma('journal_mode = WAL', { simple: true }))
    sqlite.pragma('synchronous = NORMAL')
    sqlite.pragma('foreign_keys = ON')
    const result = runMigrations(sqlite, options.migrations ?? defaultMigrations)
    const users = new SqliteUsersRepo(sqlite)
    const probe = sqlite.prepare('SELECT max(version) AS v FROM schema_migrations')

    return {
      sqlite,
      users,
      path,
      journalMode,
      migrations: result,
      healthy () {
        if (!sqlite.open) return false
        try {
          probe.get()
          return true
        } catch {
          return false
        }
      },
      close () {
        if (sqlite.open) sqlite.close()
      },
    }
  } catch (err) {
    sqlite.close()
    throw err
  }
}
