/**
 * Users in the primary store. `UsersRepo` is the seam: the SQLite implementation below is
 * the embedded default, and a PostgreSQL one (for several instances) implements the same
 * interface. Methods are async for that reason, even though SQLite answers synchronously.
 */
import { randomUUID } from 'node:crypto'
import type { Database, Statement } from 'better-sqlite3'

export type Role = 'user' | 'admin'

export interface UserRecord {
  id: string
  /** Normalised (trimmed, lower case). */
  email: string
  passwordHash: string
  role: Role
  createdAt: string
  updatedAt: string
}

export interface NewUser {
  email: string
  passwordHash: string
  role?: Role
}

export interface UsersRepo {
  findById (id: string): Promise<UserRecord | null>
  findByEmail (email: string): Promise<UserRecord | null>
  /** Throws `DuplicateEmailError` when the email is taken (also under a concurrent insert). */
  create (user: NewUser): Promise<UserRecord>
  /** False when no such user. */
  setRole (id: string, role: Role): Promise<boolean>
  setPasswordHash (id: string, passwordHash: string): Promise<boolean>
  count (): Promise<number>
}

export class DuplicateEmailError extends Error {
  constructor (readonly email: string) {
    super('a user with this email already exists')
    this.name = 'DuplicateEmailError'
  }
}

interface UserRow {
  id: string
  email: string
  password_hash: string
  role: Role
  created_at: string
  updated_at: string
}

function toRecord (row: UserRow | undefined): UserRecord | null {
  if (row === undefined) return null
  return {
    id: row.id,
    email: row.email,
    passwordHash: row.password_hash,
    role: row.role,
    createdAt: row.created_at,
    updatedAt: row.updated_at,
  }
}

export class SqliteUsersRepo implements UsersRepo {
  readonly #byId: Statement<[string], UserRow>
  readonly #byEmail: Statement<[string], UserRow>
  readonly #insert: Statement<[string, string, string, Role, string, string]>
  readonly #setRole: Statement<[Role, string, string]>
  readonly #setHash: Statement<[string, string, string]>
  readonly #count: Statement<[], { n: number }>

  constructor (db: Database) {
    const columns = 'id, email, password_hash, role, created_at, updated_at'
    this.#byId = db.prepare(`SELECT ${columns} FROM users WHERE id = ?`)
    this.#byEmail = db.prepare(`SELECT ${columns} FROM users WHERE email = ?`)
    this.#insert = db.prepare(`INSERT INTO users (${columns}) VALUES (?, ?, ?, ?, ?, ?)`)
    this.#setRole = db.prepare('UPDATE users SET role = ?, updated_at = ? WHERE id = ?')
    this.#setHash = db.prepare('UPDATE users SET password_hash = ?, updated_at = ? WHERE id = ?')
    this.#count = db.prepare('SELECT count(*) AS n FROM users')
  }

  async findById (id: string): Promise<UserRecord | null> {
    return toRecord(this.#byId.get(id))
  }

  async findByEmail (email: string): Promise<UserRecord | null> {
    return toRecord(this.#byEmail.get(email))
  }

  async create ({ email, passwordHash, role = 'user' }: NewUser): Promise<UserRecord> {
    const now = new Date().toISOString()
    const id = randomUUID()
    try {
      this.#insert.run(id, email, passwordHash, role, now, now)
    } catch (err) {
      if ((err as { code?: string }).code === 'SQLITE_CONSTRAINT_UNIQUE') throw new DuplicateEmailError(email)
      throw err
    }
    return { id, email, passwordHash, role, createdAt: now, updatedAt: now }
  }

  async setRole (id: string, role: Role): Promise<boolean> {
    return this.#setRole.run(role, new Date().toISOString(), id).changes === 1
  }

  async setPasswordHash (id: string, passwordHash: string): Promise<boolean> {
    return this.#setHash.run(passwordHash, new Date().toISOString(), id).changes === 1
  }

  async count (): Promise<number> {
    return this.#count.get()?.n ?? 0
  }
}
