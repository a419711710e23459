/**
 * Adds JWT authentication: `@fastify/jwt` with HS256 pinned (sign and verify), `exp`,
 * issuer and audience required; `identity` (accounts and token issuing); and two guards:
 * `authenticate` (a valid token whose session still exists → `request.user`) and
 * `requireAdmin` (the one admin rule: `role === 'admin'`; while the session cannot be read,
 * the user's stored role must say so too). Creates or promotes the admin named by
 * ADMIN_EMAIL / ADMIN_PASSWORD at boot.
 */
import fastifyJwt from '@fastify/jwt'
import type { FastifyBaseLogger, FastifyReply, FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'
import type { Config } from '../src/config.js'
import { UnauthorizedError, ForbiddenError } from '../src/errors.js'
import { Accounts } from '../src/auth/accounts.js'
import { durationToSeconds } from '../src/auth/duration.js'
import { resolveSecret, shownPath } from '../src/auth/secret.js'
import { SESSION_ID_RE } from '../src/auth/sessions.js'
import { CheckedStrings, dropOldest } from '../src/auth/token-cache.js'
import { isAdmin, isRole, type Role, type AuthStats, type AuthUser, type SessionView, type TokenClaims, type TokenPayload } from '../src/auth/types.js'
import type { UsersRepo } from '../src/db/users-repo.js'
import { registerAuthMetrics } from '../src/metrics/auth-collectors.js'

declare module '@fastify/jwt' {
  interface FastifyJWT {
    payload: TokenPayload
    user: AuthUser
  }
}

declare module 'fastify' {
  interface FastifyInstance {
    identity: ReturnType<typeof createIdentity>
    authenticate: ReturnType<typeof createGuards>['authenticate']
    requireAdmin: ReturnType<typeof createGuards>['requireAdmin']
  }
}

export const ALGORITHM = 'HS256'
const BEARER_RE = /^Bearer ([A-Za-z0-9_-]+\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*)$/i
/** Verified tokens remembered. */
const MAX_CACHED_TOKENS = 10_000
/** Stored roles remembered (per user, for role checks while sessions cannot be read). */
const MAX_CACHED_ROLES = 10_000
/** How long a stored role is trusted without reading it again. */
const ROLE_CACHE_MS = 10_000

export interface TokenCodec {
  sign (payload: TokenPayload): string
  /** Throws unless signature, algorithm, exp/nbf, iss and aud are right. */
  verify (token: string): TokenClaims
  /** Token lifetime in seconds. */
  expiresIn: number
}

/** Accounts plus token issuing and (cached) verification; the decorator's type. */
export function createIdentity (users: UsersRepo, tokens: TokenCodec) {
  const accounts = new Accounts(users)
  // Tokens that verified, by their exact text, until their own expiry (never longer): a
  // client sends the same token many times, and a string lookup is far cheaper than an
  // HMAC (or fast-jwt's cache, which hashes every token with SHA-256 first). Only a
  // byte-identical token can hit, and only after it passed every check.
  const verified = new CheckedStrings<TokenClaims>(MAX_CACHED_TOKENS)
  return {
    accounts,
    /** Token lifetime in seconds (JWT_EXPIRES_IN). */
    expiresIn: tokens.expiresIn,
    /** A signed token, its lifetime in seconds, and its expiry (its `exp`). */
    issueToken (payload: TokenPayload): { token: string, expiresIn: number, expiresAt: Date } {
      const token = tokens.sign(payload)
      return { token, expiresIn: tokens.expiresIn, expiresAt: new Date(expOf(token, tokens.expiresIn) * 1000) }
    },
    /**
     * The claims of a validly signed, unexpired token for this issuer and audience; throws
     * otherwise. It does not look at the session: `authenticate` does that next.
     */
    verifyToken (token: string): TokenClaims {
      const hit = verified.get(token)
      if (hit !== undefined) return hit
      const claims = tokens.verify(token)
      verified.set(token, claims, claims.exp * 1000)
      return claims
    },
  }
}

/** The `exp` the signer wrote into a token it just made (now + lifetime if it cannot be read). */
function expOf (token: string, expiresIn: number): number {
  try {
    const exp = (JSON.parse(Buffer.from(token.split('.')[1] ?? '', 'base64url').toString('utf8')) as { exp?: unknown }).exp
    if (typeof exp === 'number' && Number.isFinite(exp)) return exp
  } catch {}
  return Math.floor(Date.now() / 1000) + expiresIn
}

/** A token id as sessions make them (sessions.ts newTokenId: 96 bits, base64url). */
const TOKEN_ID_RE = /^[A-Za-z0-9_-]{16}$/

/**
 * The role each user has in the database, read at most once per ROLE_CACHE_MS per user
 * (bounded: past `max` users the oldest entry goes). null: no such user.
 */
export function storedRoles (findById: (id: string) => Promise<{ role: Role } | null>, max = MAX_CACHED_ROLES, ttlMs = ROLE_CACHE_MS) {
  const cache = new Map<string, { role: Role | null, until: number }>()
  return async function roleOf (userId: string): Promise<Role | null> {
    const hit = cache.get(userId)
    if (hit !== undefined && hit.until > Date.now()) return hit.role
    const role = (await findById(userId))?.role ?? null
    cache.delete(userId)
    if (cache.size >= max) dropOldest(cache)
    cache.set(userId, { role, until: Date.now() + ttlMs })
    return role
  }
}

/**
 * The guards: `authenticate` (a valid token whose session still exists → `request.user`)
 * and `requireAdmin` (the one admin rule: `role === 'admin'`), with their counters.
 *
 * A token's role is checked against its session record (sessions.ts refuses a token whose
 * role the session does not have). While the session cannot be read (Redis unreachable,
 * SESSION_FALLBACK=allow: `session.source === 'fallback'`), `requireAdmin` checks it against
 * the user's stored role instead (`roleOf`), so a token claiming a role its user does not
 * have (forged with the secret, or issued before a demotion) opens no admin route.
 */
export function createGuards (identity: ReturnType<typeof createIdentity>, checkSession: (claims: TokenClaims) => Promise<SessionView | null>, roleOf: (userId: string) => Promise<Role | null>) {
  const stats: AuthStats = { authenticated: 0, rejected: { missing: 0, malformed: 0, invalid: 0, expired: 0, session: 0 }, forbidden: 0 }

  /** The checked claims of the bearer token in `header`; throws a 401 otherwise. */
  function claimsOf (header: string | undefined, request: FastifyRequest): TokenClaims {
    if (header === undefined || header === '') {
      stats.rejected.missing++
      throw new UnauthorizedError('Missing bearer token (Authorization: Bearer <token>)')
    }
    const match = BEARER_RE.exec(header.trim())
    if (match === null || match[1] === undefined) {
      stats.rejected.malformed++
      throw new UnauthorizedError('The Authorization header must be "Bearer <token>"')
    }
    let claims: TokenClaims
    try {
      claims = identity.verifyToken(match[1])
    } catch (err) {
      const expired = (err as { code?: string }).code === 'FAST_JWT_EXPIRED'
      if (expired) stats.rejected.expired++
      else stats.rejected.invalid++
      request.log.debug({ code: (err as { code?: string }).code }, 'token rejected')
      throw new UnauthorizedError(expired ? 'Token expired' : 'Invalid token')
    }
    if (typeof claims.sub !== 'string' || claims.sub === '' || !isRole(claims.role) || typeof claims.sid !== 'string' || !SESSION_ID_RE.test(claims.sid) ||
        typeof claims.iat !== 'number' || typeof claims.exp !== 'number' || (claims.jti !== undefined && (typeof claims.jti !== 'string' || !TOKEN_ID_RE.test(claims.jti)))) {
      stats.rejected.invalid++
      throw new UnauthorizedError('Invalid token')
    }
    return claims
  }

  async function authenticate (request: FastifyRequest, _reply?: FastifyReply): Promise<void> {
    const header = request.headers.authorization
    // identity.verifyToken caches verified tokens (the one token cache, shared with the rate
    // limiter's key): a token's signature is checked once, not on every request.
    const claims = claimsOf(header, request)
    const session = await checkSession(claims)
    if (session === null) {
      stats.rejected.session++
      throw new UnauthorizedError('Session expired or revoked')
    }
    stats.authenticated++
    request.user = { sub: claims.sub, role: claims.role, sid: claims.sid, jti: claims.jti, exp: claims.exp, session }
  }

  async function requireAdmin (request: FastifyRequest, _reply: FastifyReply): Promise<void> {
    // Authenticates by itself when it runs first, so a route guarded by it alone is never open.
    if ((request.user as AuthUser | null) === null) await authenticate(request)
    if (!isAdmin(request.user) || (request.user.session.source === 'fallback' && !isAdmin({ role: await roleOf(request.user.sub) }))) {
      stats.forbidden++
      throw new ForbiddenError('This endpoint requires the admin role')
    }
  }

  return {
    authenticate,
    requireAdmin,
    /** The guards' counters and the accounts' (for the metrics). */
    stats: () => ({ ...stats, rejected: { ...stats.rejected }, accounts: identity.accounts.stats() }),
  }
}

/** JWT_EXPIRES_IN in seconds; throws unless it is between 10 s and 24 h. */
function tokenLifetime (config: Config): number {
  const expiresIn = durationToSeconds(config.JWT_EXPIRES_IN)
  if (expiresIn < 10 || expiresIn > 86_400) throw new Error(`JWT_EXPIRES_IN must be between 10s and 24h (got ${config.JWT_EXPIRES_IN})`)
  return expiresIn
}

/** Creates or promotes the admin named by ADMIN_EMAIL / ADMIN_PASSWORD (both or neither). */
async function ensureAdminFromConfig (config: Config, identity: ReturnType<typeof createIdentity>, log: FastifyBaseLogger): Promise<void> {
  const { ADMIN_EMAIL, ADMIN_PASSWORD } = config
  if ((ADMIN_EMAIL === undefined) !== (ADMIN_PASSWORD === undefined)) {
    throw new Error('ADMIN_EMAIL and ADMIN_PASSWORD must be set together (or use `npm run cli -- create-admin <email>`)')
  }
  if (ADMIN_EMAIL === undefined || ADMIN_PASSWORD === undefined) return
  try {
    const { user, action } = await identity.accounts.ensureAdmin(ADMIN_EMAIL, ADMIN_PASSWORD)
    log.info({ userId: user.id, email: user.email, action }, 'admin account from ADMIN_EMAIL')
  } catch (err) {
    throw new Error(`ADMIN_EMAIL/ADMIN_PASSWORD: ${err instanceof Error ? err.message : String(err)}`, { cause: err })
  }
}

export default fp(async function authPlugin (fastify) {
  const { config, metrics } = fastify
  const log = fastify.log.child({ component: 'auth' })
  const { secret, source, path, created } = resolveSecret(config)
  if (source === 'generated') {
    log.warn('⚠️ JWT_SECRET is not set: using a random secret for this process only. Tokens die with the process and other instances reject them. Set JWT_SECRET (at least 32 characters) outside development.')
  } else if (source === 'file' && path !== undefined) {
    log.warn({ path: shownPath(path), created }, `⚠️ JWT_SECRET is not set: using the development secret in ${shownPath(path)}${created === true ? ' (made now, mode 0600)' : ''}, which the CLI reads too. Set JWT_SECRET outside development.`)
  }
  const expiresIn = tokenLifetime(config)
  await fastify.register(fastifyJwt, {
    secret,
    sign: { algorithm: ALGORITHM, iss: config.JWT_ISSUER, aud: config.JWT_AUDIENCE, expiresIn },
    verify: {
      algorithms: [ALGORITHM],
      allowedIss: config.JWT_ISSUER,
      allowedAud: config.JWT_AUDIENCE,
      requiredClaims: ['exp', 'iat', 'iss', 'aud', 'sub', 'role', 'sid'],
      // No fast-jwt cache: every caller (authentication, the rate limiter's client key)
      // goes through identity.verifyToken, which caches verified tokens itself.
    },
  })

  const identity = createIdentity(fastify.db.users, {
    sign: (payload) => fastify.jwt.sign({ sub: payload.sub, role: payload.role, sid: payload.sid, ...(payload.jti !== undefined ? { jti: payload.jti } : {}) }),
    verify: (token) => fastify.jwt.verify<TokenClaims>(token),
    expiresIn,
  })
  // The sessions plugin registers after this one: its store is looked up per request.
  const guards = createGuards(identity, (claims) => fastify.sessions.check(claims), storedRoles((id) => identity.accounts.findById(id)))
  registerAuthMetrics(metrics, guards.stats)

  fastify.decorate('identity', identity)
  fastify.decorate('authenticate', guards.authenticate)
  fastify.decorate('requireAdmin', guards.requireAdmin)
  fastify.addHook('onReady', async () => {
    if (!fastify.hasDecorator('sessions')) {
      throw new Error("plugin 'sessions' must be registered after 'auth': authenticate checks every token's session")
    }
  })

  await ensureAdminFromConfig(config, identity, log)
}, { name: 'auth', fastify: '5.x', dependencies: ['config', 'metrics', 'db'] })
