/**
 * Accounts: registration, credential checks and the admin bootstrap, over a `UsersRepo`.
 * No Fastify here; the auth plugin, the routes and the CLI share it.
 */
import { DuplicateEmailError, type Role, type UserRecord, type UsersRepo } from '../db/users-repo.js'
import { isEmail, normaliseEmail } from './email.js'
import { dummyHash, hashPassword, needsRehash, verifyPassword } from './password.js'

export { DuplicateEmailError }

export const PASSWORD_MIN = 8
export const PASSWORD_MAX = 128

export interface PublicUser {
  id: string
  email: string
  role: Role
}

export function toPublicUser (user: UserRecord): PublicUser {
  return { id: user.id, email: user.email, role: user.role }
}

export class InvalidAccountInputError extends Error {
  constructor (message: string) {
    super(message)
    this.name = 'InvalidAccountInputError'
  }
}

export type AdminAction = 'created' | 'promoted' | 'updated' | 'unchanged'

export interface AccountStats {
  registered: number
  loginSucceeded: number
  loginFailed: number
}

export class Accounts {
  readonly #users: UsersRepo
  readonly #stats: AccountStats = { registered: 0, loginSucceeded: 0, loginFailed: 0 }

  constructor (users: UsersRepo) {
    this.#users = users
  }

  stats (): AccountStats {
    return { ...this.#stats }
  }

  /** Throws `DuplicateEmailError` when the (normalised) email has an account. */
  async register (email: string, password: string, role: Role = 'user'): Promise<PublicUser> {
    const normalised = checkInput(email, password)
    if (await this.#users.findByEmail(normalised) !== null) throw new DuplicateEmailError(normalised)
    const user = await this.#users.create({ email: normalised, passwordHash: await hashPassword(password), role })
    this.#stats.registered++
    return toPublicUser(user)
  }

  /**
   * The user when email and password match, else null. Exactly one scrypt runs either way
   * (against a dummy hash for an unknown email), so the two failures take the same time.
   */
  async verifyCredentials (email: string, password: string): Promise<UserRecord | null> {
    const user = await this.#users.findByEmail(normaliseEmail(email))
    const ok = await verifyPassword(password, user?.passwordHash ?? await dummyHash())
    if (user === null || !ok) {
      this.#stats.loginFailed++
      return null
    }
    this.#stats.loginSucceeded++
    if (needsRehash(user.passwordHash)) await this.#users.setPasswordHash(user.id, await hashPassword(password))
    return user
  }

  async findById (id: string): Promise<UserRecord | null> {
    return this.#users.findById(id)
  }

  async findByEmail (email: string): Promise<UserRecord | null> {
    return this.#users.findByEmail(normaliseEmail(email))
  }

  /**
   * Makes `email` an admin whose password is `password`: creates the user, or promotes it and
   * sets the password. Setting the password matters: someone could have registered the admin's
   * address as an ordinary user first, and promotion alone would hand them the admin role.
   */
  async ensureAdmin (email: string, password: string): Promise<{ user: PublicUser, action: AdminAction }> {
    const normalised = checkInput(email, password)
    const existing = await this.#users.findByEmail(normalised)
    if (existing === null) {
      try {
        const user = await this.#users.create({ email: normalised, passwordHash: await hashPassword(password), role: 'admin' })
        return { user: toPublicUser(user), action: 'created' }
      } catch (err) {
        // Another process created it in between: fall through to the update path.
        if (!(err instanceof DuplicateEmailError)) throw err
        return this.ensureAdmin(email, password)
      }
    }
    const samePassword = await verifyPassword(password, existing.passwordHash)
    if (!samePassword) await this.#users.setPasswordHash(existing.id, await hashPassword(password))
    if (existing.role !== 'admin') await this.#users.setRole(existing.id, 'admin')
    const action: AdminAction = existing.role !== 'admin' ? 'promoted' : samePassword ? 'unchanged' : 'updated'
    return { user: { ...toPublicUser(existing), role: 'admin' }, action }
  }
}

/** Validates and normalises; the routes' schemas say the same, this guards the CLI and boot. */
function checkInput (email: string, password: string): string {
  const normalised = normaliseEmail(email)
  if (!isEmail(normalised)) throw new InvalidAccountInputError(`not a valid email address: ${JSON.stringify(email)}`)
  if (password.length < PASSWORD_MIN || password.length > PASSWORD_MAX) {
    throw new InvalidAccountInputError(`the password must be ${PASSWORD_MIN} to ${PASSWORD_MAX} characters long`)
  }
  return normalised
}
