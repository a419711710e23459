/**
 * The tables of the primary store as Kysely sees them: one typed query API over SQLite
 * (better-sqlite3) and PostgreSQL (pg). Timestamps are ISO-8601 text in both stores (they
 * sort as text); money and shares are 8-byte floats (REAL / DOUBLE PRECISION).
 */
import type { Generated } from 'kysely'

export type Role = 'user' | 'admin'
export type TransactionKind = 'buy' | 'sell' | 'remove'

export interface UsersTable {
  id: string
  email: string
  password_hash: string
  role: Role
  created_at: string
  updated_at: string
}

export interface PortfoliosTable {
  user_id: string
  version: number
  created_at: string
  updated_at: string
}

export interface PortfolioPositionsTable {
  user_id: string
  ticker: string
  shares: number
  avg_cost: number
  updated_at: string
}

export interface PortfolioTransactionsTable {
  /** INTEGER PRIMARY KEY in SQLite, BIGINT identity in PostgreSQL (read as a string there). */
  id: Generated<number | string>
  user_id: string
  version: number
  kind: TransactionKind
  ticker: string
  shares: number
  price: number | null
  created_at: string
}

export interface IdempotencyKeysTable {
  user_id: string
  key: string
  request_hash: string
  status_code: number
  response: string
  created_at: string
  expires_at: string
}

export interface PortfolioSnapshotsTable {
  user_id: string
  day: string
  taken_at: string
  version: number
  positions: number
  cost: number
  value: number | null
}

export interface SchemaMigrationsTable {
  version: number
  name: string
  applied_at: string
}

export interface Tables {
  users: UsersTable
  portfolios: PortfoliosTable
  portfolio_positions: PortfolioPositionsTable
  portfolio_transactions: PortfolioTransactionsTable
  idempotency_keys: IdempotencyKeysTable
  portfolio_snapshots: PortfolioSnapshotsTable
  schema_migrations: SchemaMigrationsTable
}
