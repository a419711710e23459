/**
 * The primary store's schema, as an ordered list of migrations applied at boot. To change
 * the schema, append an entry with the next version; never edit or reorder an entry that
 * has shipped (a database remembers which versions it has, not what they contained).
 *
 * Each entry is SQL for SQLite and for PostgreSQL (one string when both read it the same).
 * The two runners differ in how they keep several instances from migrating at once:
 * SQLite in one IMMEDIATE transaction (the file's write lock), PostgreSQL in one
 * transaction under `pg_advisory_xact_lock` (the second instance waits, then finds nothing
 * left to do).
 */
import type { Database } from 'better-sqlite3'
import type pg from 'pg'

export interface Migration {
  /** 1, 2, 3 … strictly increasing; the order they run in. */
  version: number
  /** Short kebab-case description, stored next to the version. */
  name: string
  /** SQL run inside the migration's transaction: the same for both stores, or one per store. */
  up: string | { sqlite: string, postgres: string }
}

const sqliteSql = (m: Migration): string => typeof m.up === 'string' ? m.up : m.up.sqlite
const postgresSql = (m: Migration): string => typeof m.up === 'string' ? m.up : m.up.postgres

export const migrations: Migration[] = [
  {
    version: 1,
    name: 'create-users',
    up: {
      sqlite: `
      CREATE TABLE users (
        id            TEXT PRIMARY KEY,
        email         TEXT NOT NULL UNIQUE,
        password_hash TEXT NOT NULL,
        role          TEXT NOT NULL DEFAULT 'user' CHECK (role IN ('user', 'admin')),
        created_at    TEXT NOT NULL,
        updated_at    TEXT NOT NULL
      ) STRICT;
    `,
      // COLLATE "C": ids, tickers and timestamps compare byte by byte, as in SQLite,
      // whatever the database's locale (keyset paging and expiry checks rely on it).
      postgres: `
      CREATE TABLE users (
        id            TEXT COLLATE "C" PRIMARY KEY,
        email         TEXT NOT NULL UNIQUE,
        password_hash TEXT NOT NULL,
        role          TEXT NOT NULL DEFAULT 'user' CHECK (role IN ('user', 'admin')),
        created_at    TEXT COLLATE "C" NOT NULL,
        updated_at    TEXT COLLATE "C" NOT NULL
      );
    `,
    },
  },
  {
    version: 2,
    name: 'create-portfolios',
    // One row per portfolio carries its version: every write moves it from the version it
    // read to the next one or fails (compare-and-swap), so a writer whose lock expired
    // cannot overwrite newer data. UNIQUE (user_id, version) on the log backs that up.
    up: {
      sqlite: `
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
      postgres: `
      CREATE TABLE portfolios (
        user_id    TEXT COLLATE "C" PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
        version    INTEGER NOT NULL CHECK (version >= 1),
        created_at TEXT COLLATE "C" NOT NULL,
        updated_at TEXT COLLATE "C" NOT NULL
      );
      CREATE TABLE portfolio_positions (
        user_id    TEXT COLLATE "C" NOT NULL REFERENCES portfolios (user_id) ON DELETE CASCADE,
        ticker     TEXT COLLATE "C" NOT NULL,
        shares     DOUBLE PRECISION NOT NULL CHECK (shares > 0),
        avg_cost   DOUBLE PRECISION NOT NULL CHECK (avg_cost > 0),
        updated_at TEXT COLLATE "C" NOT NULL,
        PRIMARY KEY (user_id, ticker)
      );
      CREATE INDEX portfolio_positions_ticker ON portfolio_positions (ticker);
      CREATE TABLE portfolio_transactions (
        id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        user_id    TEXT COLLATE "C" NOT NULL REFERENCES portfolios (user_id) ON DELETE CASCADE,
        version    INTEGER NOT NULL,
        kind       TEXT NOT NULL CHECK (kind IN ('buy', 'sell', 'remove')),
        ticker     TEXT COLLATE "C" NOT NULL,
        shares     DOUBLE PRECISION NOT NULL CHECK (shares > 0),
        price      DOUBLE PRECISION CHECK (price IS NULL OR price > 0),
        created_at TEXT COLLATE "C" NOT NULL,
        UNIQUE (user_id, version)
      );
    `,
    },
  },
  {
    version: 3,
    name: 'create-idempotency-keys',
    up: {
      sqlite: `
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
      postgres: `
      CREATE TABLE idempotency_keys (
        user_id      TEXT COLLATE "C" NOT NULL REFERENCES users (id) ON DELETE CASCADE,
        key          TEXT COLLATE "C" NOT NULL,
        request_hash TEXT NOT NULL,
        status_code  INTEGER NOT NULL,
        response     TEXT NOT NULL,
        created_at   TEXT COLLATE "C" NOT NULL,
        expires_at   TEXT COLLATE "C" NOT NULL,
        PRIMARY KEY (user_id, key)
      );
      CREATE INDEX idempotency_keys_expires ON idempotency_keys (expires_at);
    `,
    },
  },
  {
    version: 4,
    name: 'create-portfolio-snapshots',
    up: {
      sqlite: `
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
      postgres: `
      CREATE TABLE portfolio_snapshots (
        user_id   TEXT COLLATE "C" NOT NULL REFERENCES portfolios (user_id) ON DELETE CASCADE,
        day       TEXT COLLATE "C" NOT NULL,
        taken_at  TEXT COLLATE "C" NOT NULL,
        version   INTEGER NOT NULL,
        positions INTEGER NOT NULL,
        cost      DOUBLE PRECISION NOT NULL,
        value     DOUBLE PRECISION,
        PRIMARY KEY (user_id, day)
      );
    `,
    },
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
        db.exec(sqliteSql(m))
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

/** Any constant: the advisory lock every instance's migrator takes. */
export const MIGRATION_LOCK_KEY = 727_274_001

/**
 * Applies the pending migrations on PostgreSQL in one transaction that first takes
 * `pg_advisory_xact_lock`: instances booting together queue on the lock, the first applies
 * everything, the others then read the versions it recorded and apply nothing. The lock is
 * released with the transaction (commit, rollback, or the connection dropping), so a
 * crashed migrator never leaves it held. DDL is transactional in PostgreSQL: a failing
 * migration rolls back every migration of the run.
 */
export async function runPostgresMigrations (client: pg.ClientBase, list: readonly Migration[] = migrations): Promise<MigrationResult> {
  checkMigrations(list)
  await client.query('BEGIN')
  try {
    // No statement timeout for this transaction: waiting for another instance's migration is expected.
    await client.query('SET LOCAL statement_timeout = 0')
    await client.query('SELECT pg_advisory_xact_lock($1)', [MIGRATION_LOCK_KEY])
    await client.query(`CREATE TABLE IF NOT EXISTS schema_migrations (
      version    INTEGER PRIMARY KEY,
      name       TEXT NOT NULL,
      applied_at TEXT NOT NULL
    )`)
    const rows = (await client.query<{ version: number }>('SELECT version FROM schema_migrations ORDER BY version')).rows
    const done = new Set(rows.map((r) => r.version))
    const known = new Set(list.map((m) => m.version))
    const applied: number[] = []
    for (const m of list) {
      if (done.has(m.version)) continue
      try {
        await client.query(postgresSql(m))
      } catch (err) {
        throw new Error(`migration ${m.version} (${m.name}) failed: ${err instanceof Error ? err.message : String(err)}`, { cause: err })
      }
      await client.query('INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)', [m.version, m.name, new Date().toISOString()])
      applied.push(m.version)
      done.add(m.version)
    }
    await client.query('COMMIT')
    return {
      applied,
      current: Math.max(0, ...done),
      unknown: [...done].filter((v) => !known.has(v)).sort((a, b) => a - b),
    }
  } catch (err) {
    await client.query('ROLLBACK').catch(() => {})
    throw err
  }
}
