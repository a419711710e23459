/**
 * Shared by the auth, session, debug and CLI tests: a fixed JWT secret, an env for an
 * in-memory database, and hand-made tokens (node:crypto, no JWT library) for forgery tests.
 */
import { createHmac } from 'node:crypto'
import type { FastifyInstance } from 'fastify'

export const JWT_SECRET = 'test-only-secret-0123456789abcdefghijklmnop'
export const JWT_ISSUER = 'ai-capital-api'
export const JWT_AUDIENCE = 'ai-capital'

/** Merge into build(t, env): in-memory database and a known secret. */
export const AUTH_ENV: Record<string, string> = {
  DATABASE_PATH: ':memory:',
  JWT_SECRET,
  JWT_ISSUER,
  JWT_AUDIENCE,
  // These tests are not about login throttling (the rate-limit plugin's own tests are).
  LOGIN_RATE_LIMIT_MAX: '1000',
  LOGIN_EMAIL_RATE_LIMIT_MAX: '1000',
}

export const PASSWORD = 'correct horse battery'

export interface LoggedIn {
  token: string
  userId: string
  sid: string
  role: string
}

export function bearer (token: string): { authorization: string } {
  return { authorization: `Bearer ${token}` }
}

export function b64url (value: unknown): string {
  return Buffer.from(typeof value === 'string' ? value : JSON.stringify(value)).toString('base64url')
}

/** `header.payload.signature`, HMAC-SHA256 over the first two parts with `secret`. */
export function hs256 (header: object, payload: object, secret: string | Buffer): string {
  const input = `${b64url(header)}.${b64url(payload)}`
  return `${input}.${createHmac('sha256', secret).update(input).digest('base64url')}`
}

export function decodePayload (token: string): Record<string, unknown> {
  return JSON.parse(Buffer.from(token.split('.')[1] ?? '', 'base64url').toString('utf8')) as Record<string, unknown>
}

export async function register (app: FastifyInstance, email: string, password = PASSWORD): Promise<{ id: string, email: string, role: string }> {
  const res = await app.inject({ method: 'POST', url: '/api/auth/register', payload: { email, password } })
  if (res.statusCode !== 201) throw new Error(`register ${email}: ${res.statusCode} ${res.body}`)
  return res.json()
}

export async function login (app: FastifyInstance, email: string, password = PASSWORD, headers: Record<string, string> = {}): Promise<LoggedIn> {
  const res = await app.inject({ method: 'POST', url: '/api/auth/login', payload: { email, password }, headers })
  if (res.statusCode !== 200) throw new Error(`login ${email}: ${res.statusCode} ${res.body}`)
  const { token } = res.json<{ token: string }>()
  const claims = decodePayload(token)
  return { token, userId: String(claims.sub), sid: String(claims.sid), role: String(claims.role) }
}

export async function registerAndLogin (app: FastifyInstance, email: string, password = PASSWORD): Promise<LoggedIn> {
  await register(app, email, password)
  return login(app, email, password)
}

/** An admin made through the accounts service (as ADMIN_EMAIL or the CLI would), logged in. */
export async function adminLogin (app: FastifyInstance, email = 'admin@example.com', password = PASSWORD): Promise<LoggedIn> {
  await app.identity.accounts.ensureAdmin(email, password)
  return login(app, email, password)
}

export async function me (app: FastifyInstance, token: string): Promise<{ statusCode: number, body: Record<string, unknown> }> {
  const res = await app.inject({ method: 'GET', url: '/api/auth/me', headers: bearer(token) })
  return { statusCode: res.statusCode, body: res.json() }
}
