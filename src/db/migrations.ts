/**
 * The primary store's schema, as an ordered list of migrations applied at boot. To change
 * the schema, append an entry with the next version; never edit or reorder an entry that
 * has shipped (a database remembers which versions it has, not what they contained).
 */
import type { Database } from 'better-sqlite3'

export interface Migration {
  /** 1, 2, 3 … strictly increasing; the order they run in. */
  version: number
  /** Short kebab-case description, stored next to the version. */
  name: string
  /** SQL run inside the migration's transaction, or a function for anything else. */
  up: string | ((db: Database) => void)
}

export const migrations: Migration[] = [
  {
    version: 1,
    name: 'create-users',
    up: `
      CREATE TABLE users (
        id            TEXT PRIMARY KEY,
        email         TEXT NOT NULL UNIQUE,
        password_hash TEXT NOT NULL,
        role          TEXT NOT NULL DEFAULT 'user' CHECK (role IN ('user', 'admin')),
        created_at    TEXT NOT NULL,
        updated_at    TEXT NOT NULL
      ) STRICT;
    `,
  },
  {
    version: 2,
    name: 'create-portfolios',
    // One row per portfolio carries its version: every write moves it from the version it
    // read to the next one or fails (compare-and-swap), so a writer whose lock expired
    // cannot overwrite newer data. UNIQUE (user_id, version) on the log backs that up.
    up: `
      CREATE TABLE portfolios (
        user_id    TEXT PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
        version    INTEGER NOT NULL CHECK (version >= 1),
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
      ) STRICT;
      CREATE TABLE portfolio_positions (
        user_id    TEXT NOT NULL REFERENCES portfolios (user_id) ON DELETE CASCADE,
        ticker     TEXT NOT NULL,
        shares     REAL NOT NULL CHECK (shares > 0),
        avg_cost   REAL NOT NULL CHECK (avg_cost > 0),
        updated_at TEXT NOT NULL,
        PRIMARY KEY (user_id, ticker)
      ) STRICT, WITHOUT ROWID;
      CREATE INDEX portfolio_positions_ticker ON portfolio_positions (ticker);
      CREATE TABLE portfolio_transactions (
        id         INTEGER PRIMARY KEY,
        user_id    TEXT NOT NULL REFERENCES portfolios (user_id) ON DELETE CASCADE,
        version    INTEGER NOT NULL,
        kind       TEXT NOT NULL CHECK (kind IN ('buy', 'sell', 'remove')),
        ticker     TEXT NOT NULL,
        shares     REAL NOT NULL CHECK (shares > 0),
        price      REAL CHECK (price IS NULL OR price > 0),
        created_at TEXT NOT NULL,
        UNIQUE (user_id, version)
      ) STRICT;
    `,
  },
  {
    version: 3,
    name: 'create-idempotency-keys',
    up: `
      CREATE TABLE idempotency_keys (
        user_id      TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
        key          TEXT NOT NULL,
        request_hash TEXT NOT NULL,
        status_code  INTEGER NOT NULL,
        response     TEXT NOT NULL,
        created_at   TEXT NOT NULL,
        expires_at   TEXT NOT NULL,
        PRIMARY KEY (user_id, key)
      ) STRICT, WITHOUT ROWID;
      CREATE INDEX idempotency_keys_expires ON idempotency_keys (expires_at);
    `,
  },
  {
    version: 4,
    name: 'create-portfolio-snapshots',
    up: `
      CREATE TABLE portfolio_snapshots (
        user_id   TEXT NOT NULL REFERENCES portfolios (user_id) ON DELETE CASCADE,
        day       TEXT NOT NULL,
        taken_at  TEXT NOT NULL,
        version   INTEGER NOT NULL,
        positions INTEGER NOT NULL,
        cost      REAL NOT NULL,
        value     REAL,
        PRIMARY KEY (user_id, day)
      ) STRICT, WITHOUT ROWID;
    `,
  },
  // Append new migrations here (version 5, 6 …).
]

export interface MigrationResult {
  /** Versions applied by this call, in order. */
  applied: number[]
  /** The highest version in the database afterwards. */
  current: number
  /** Versions present in the database that this build does not know (a newer build ran). */
  unknown: number[]
}

/** Throws when the list is not strictly increasing positive integers with names. */
export function checkMigrations (list: readonly Migration[]): void {
  let previous = 0
  for (const m of list) {
    if (!Number.isInteger(m.version) || m.version <= previous) {
      throw new Error(`migrations must have strictly increasing integer versions: ${m.version} after ${previous}`)
    }
    if (!/^[a-z0-9][a-z0-9-]*$/.test(m.name)) throw new Error(`migration ${m.version}: name must be kebab-case (${m.name})`)
    previous = m.version
  }
}

/**
 * Applies the pending migrations in one IMMEDIATE transaction: two processes booting on the
 * same file at once serialise on the write lock, and the second finds nothing left to do.
 * A failing migration rolls back every migration of this call, so the database is never
 * left half-migrated.
 */
export function runMigrations (db: Database, list: readonly Migration[] = migrations): MigrationResult {
  checkMigrations(list)
  db.exec(`CREATE TABLE IF NOT EXISTS schema_migrations (
    version    INTEGER PRIMARY KEY,
    name       TEXT NOT NULL,
    applied_at TEXT NOT NULL
  )`)
  const migrate = db.transaction((): MigrationResult => {
    const rows = db.prepare('SELECT version FROM schema_migrations ORDER BY version').all() as Array<{ version: number }>
    const done = new Set(rows.map((r) => r.version))
    const known = new Set(list.map((m) => m.version))
    const record = db.prepare('INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)')
    const applied: number[] = []
    for (const m of list) {
      if (done.has(m.version)) continue
      try {
        if (typeof m.up === 'string') db.exec(m.up)
        else m.up(db)
      } catch (err) {
        throw new Error(`migration ${m.version} (${m.name}) failed: ${err instanceof Error ? err.message : String(err)}`, { cause: err })
      }
      record.run(m.version, m.name, new Date().toISOString())
      applied.push(m.version)
      done.add(m.version)
    }
    return {
      applied,
      current: Math.max(0, ...done),
      unknown: [...done].filter((v) => !known.has(v)).sort((a, b) => a - b),
    }
  })
  return migrate.immediate()
}
