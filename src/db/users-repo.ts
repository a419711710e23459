/**
 * Users in the primary store. `UsersRepo` is the seam; `KyselyUsersRepo` implements it over
 * either store (SQLite or PostgreSQL) with one typed query API. Uniqueness of the email is
 * the database's: two instances registering one address at once get one user and one
 * `DuplicateEmailError`, whichever instance each request reached.
 */
import { randomUUID } from 'node:crypto'
import type { Kysely, Selectable } from 'kysely'
import { guarded, isUniqueViolation } from './errors.js'
import type { Role, Tables, UsersTable } from './schema.js'

export type { Role } from './schema.js'

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

const COLUMNS = ['id', 'email', 'password_hash', 'role', 'created_at', 'updated_at'] as const

function toRecord (row: Selectable<UsersTable> | undefined): UserRecord | null {
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

export class KyselyUsersRepo implements UsersRepo {
  readonly #db: Kysely<Tables>

  constructor (db: Kysely<Tables>) {
    this.#db = db
  }

  findById (id: string): Promise<UserRecord | null> {
    return guarded(async () => toRecord(await this.#db.selectFrom('users').select(COLUMNS).where('id', '=', id).executeTakeFirst()))
  }

  findByEmail (email: string): Promise<UserRecord | null> {
    return guarded(async () => toRecord(await this.#db.selectFrom('users').select(COLUMNS).where('email', '=', email).executeTakeFirst()))
  }

  create ({ email, passwordHash, role = 'user' }: NewUser): Promise<UserRecord> {
    return guarded(async () => {
      const now = new Date().toISOString()
      const id = randomUUID()
      try {
        await this.#db.insertInto('users')
          .values({ id, email, password_hash: passwordHash, role, created_at: now, updated_at: now })
          .execute()
      } catch (err) {
        if (isUniqueViolation(err)) throw new DuplicateEmailError(email)
        throw err
      }
      return { id, email, passwordHash, role, createdAt: now, updatedAt: now }
    })
  }

  setRole (id: string, role: Role): Promise<boolean> {
    return guarded(async () => {
      const result = await this.#db.updateTable('users').set({ role, updated_at: new Date().toISOString() }).where('id', '=', id).executeTakeFirst()
      return result.numUpdatedRows === 1n
    })
  }

  setPasswordHash (id: string, passwordHash: string): Promise<boolean> {
    return guarded(async () => {
      const result = await this.#db.updateTable('users').set({ password_hash: passwordHash, updated_at: new Date().toISOString() }).where('id', '=', id).executeTakeFirst()
      return result.numUpdatedRows === 1n
    })
  }

  count (): Promise<number> {
    return guarded(async () => {
      const row = await this.#db.selectFrom('users').select((eb) => eb.fn.countAll<number | string>().as('n')).executeTakeFirst()
      return Number(row?.n ?? 0)
    })
  }
}
