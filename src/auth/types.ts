/** The shapes shared by the auth and session code: roles, token claims, sessions. */
import type { Role } from '../db/users-repo.js'

export type { Role }

export const ROLES: readonly Role[] = ['user', 'admin']

/** What the service signs into a token (plus iss, aud, iat and exp added by the signer). */
export interface TokenPayload {
  /** The user's id. */
  sub: string
  role: Role
  /** The session id: `session:<sid>` in Redis. */
  sid: string
  /**
   * The token id: the session records the id of its current token, and refuses the others
   * (a refresh rotates it). Absent only in tokens issued before token ids existed.
   */
  jti?: string
}

/** A verified token's claims. */
export interface TokenClaims extends TokenPayload {
  iat: number
  exp: number
  iss: string
  aud: string | string[]
}

/** Where a request's session was confirmed. `fallback`: Redis unreachable, accepted by policy. */
export type SessionSource = 'redis' | 'memory' | 'fallback'

export interface SessionRecord {
  userId: string
  /** The account's email at login, so that answering "who am I" needs no database read. */
  email?: string
  role: Role
  /** ISO time of the login. */
  createdAt: string
  ip: string
  userAgent: string | null
  /** The id (`jti`) of the session's current token; older tokens of the session are refused. */
  tid?: string
}

export interface SessionView {
  id: string
  expiresAt: Date
  source: SessionSource
  /** From the session record; absent when the session could not be read (Redis down, policy allow). */
  email?: string | undefined
  /** For a new session: the id its first token must carry (`jti`). */
  tokenId?: string
}

/** `request.user` after `authenticate`. */
export interface AuthUser extends TokenPayload {
  /** When the token expires (seconds since the epoch). */
  exp: number
  session: SessionView
}

export function isRole (value: unknown): value is Role {
  return value === 'user' || value === 'admin'
}

/** One rule for admin, used everywhere. */
export function isAdmin (user: { role: unknown } | null | undefined): boolean {
  return user?.role === 'admin'
}

/** The authentication guard's counters (for the metrics). */
export interface AuthStats {
  authenticated: number
  rejected: { missing: number, malformed: number, invalid: number, expired: number, session: number }
  forbidden: number
}
