/**
 * Accounts and sessions over HTTP: register, login (a short-lived JWT bound to a server-side
 * session), refresh (a new token for the same session; the old one is refused from then on),
 * logout (that session, at once), logout everywhere, and who am I.
 *
 * Two lifetimes, stated in every answer that hands out a token: the access token's
 * (JWT_EXPIRES_IN, 15 min by default, fixed) and the session's (SESSION_TTL_SECONDS, 1 h by
 * default, sliding: every authenticated request, a refresh included, extends it). A client
 * refreshes before `accessTokenExpiresAt`; once the session has ended, it logs in again.
 */
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type, type Static } from 'typebox'
import { DuplicateEmailError, PASSWORD_MAX, PASSWORD_MIN, toPublicUser } from '../src/auth/accounts.js'
import { EMAIL_PATTERN } from '../src/auth/email.js'
import type { AuthUser } from '../src/auth/types.js'
import { ConflictError, ServiceUnavailableError, UnauthorizedError } from '../src/errors.js'
import { ErrorSchema } from '../src/schemas.js'
import { bodyEmailKey, ipClient } from '../src/rate-limit/client-key.js'
import type { RouteLimit } from '../src/rate-limit/limits.js'
import type { Config } from '../src/config.js'

export const CredentialsSchema = Type.Object({
  email: Type.String({ pattern: EMAIL_PATTERN, maxLength: 254, description: 'Compared case-insensitively.' }),
  password: Type.String({ minLength: PASSWORD_MIN, maxLength: PASSWORD_MAX }),
})

export const UserSchema = Type.Object({
  id: Type.String(),
  email: Type.String(),
  role: Type.Union([Type.Literal('user'), Type.Literal('admin')]),
})

const ACCESS_EXPIRES_AT = 'When this access token expires (JWT_EXPIRES_IN after it was issued; fixed). Refresh before then with POST /api/auth/refresh.'
const SESSION_EXPIRES_AT = 'When the session ends unless used again: every authenticated request (a refresh too) extends it by SESSION_TTL_SECONDS. Once it has ended, no refresh works: log in again.'

export const LoginSchema = Type.Object({
  token: Type.String({ description: 'The access token: send it as `Authorization: Bearer <token>`.' }),
  tokenType: Type.Literal('Bearer'),
  expiresIn: Type.Integer({ description: 'Seconds until the access token expires (the same as accessTokenExpiresIn; kept for older clients).' }),
  accessTokenExpiresIn: Type.Integer({ description: 'Seconds until the access token expires.' }),
  accessTokenExpiresAt: Type.String({ format: 'date-time', description: ACCESS_EXPIRES_AT }),
  sessionExpiresAt: Type.String({ format: 'date-time', description: SESSION_EXPIRES_AT }),
  user: UserSchema,
})

export const MeSchema = Type.Object({
  ...UserSchema.properties,
  accessTokenExpiresAt: Type.String({ format: 'date-time', description: 'When the token this request carried expires (fixed).' }),
  sessionExpiresAt: Type.String({ format: 'date-time', description: SESSION_EXPIRES_AT }),
  session: Type.Object({
    id: Type.String(),
    expiresAt: Type.String({ format: 'date-time', description: 'The same as sessionExpiresAt. While Redis is unreachable and the session cannot be read (SESSION_FALLBACK=allow), the token\'s expiry.' }),
  }),
})

const INVALID_CREDENTIALS = 'Invalid email or password'

/**
 * The login limits: failed attempts per address + email and per email (a guess spread over
 * many addresses still stops). Each attempt counts when it arrives, before validation (a
 * malformed attempt is a failed one; `{"email":["x"]}` counts as "x", as validation unwraps
 * it); a successful login resets both counts. No email in the body: only the global limit.
 */
export function loginAttemptLimits (config: Pick<Config, 'LOGIN_RATE_LIMIT_MAX' | 'LOGIN_RATE_LIMIT_WINDOW_MS' | 'LOGIN_EMAIL_RATE_LIMIT_MAX' | 'LOGIN_EMAIL_RATE_LIMIT_WINDOW_MS'>): RouteLimit[] {
  return [{
    name: 'login',
    max: config.LOGIN_RATE_LIMIT_MAX,
    timeWindow: config.LOGIN_RATE_LIMIT_WINDOW_MS,
    key: (request) => {
      const email = bodyEmailKey(request)
      return email === null ? null : `login:${ipClient(request.ip)}:${email}`
    },
    message: 'Too many login attempts',
  }, {
    name: 'loginEmail',
    max: config.LOGIN_EMAIL_RATE_LIMIT_MAX,
    timeWindow: config.LOGIN_EMAIL_RATE_LIMIT_WINDOW_MS,
    key: (request) => {
      const email = bodyEmailKey(request)
      return email === null ? null : `login-email:${email}`
    },
    message: 'Too many login attempts for this account',
  }]
}

function meBody ({ sub, role, exp, session }: AuthUser, email: string): Static<typeof MeSchema> {
  const sessionExpiresAt = session.expiresAt.toISOString()
  return {
    id: sub,
    email,
    role,
    accessTokenExpiresAt: new Date(exp * 1000).toISOString(),
    sessionExpiresAt,
    session: { id: session.id, expiresAt: sessionExpiresAt },
  }
}

/** The answer of login and refresh: the token and both lifetimes. */
function tokenBody (issued: { token: string, expiresIn: number, expiresAt: Date }, sessionExpiresAt: Date, user: Static<typeof UserSchema>): Static<typeof LoginSchema> {
  return {
    token: issued.token,
    tokenType: 'Bearer' as const,
    expiresIn: issued.expiresIn,
    accessTokenExpiresIn: issued.expiresIn,
    accessTokenExpiresAt: issued.expiresAt.toISOString(),
    sessionExpiresAt: sessionExpiresAt.toISOString(),
    user,
  }
}

const auth: FastifyPluginAsyncTypebox = async (fastify) => {
  const { identity, sessions, authenticate, rateLimiter, config } = fastify
  const { accounts } = identity

  fastify.post('/api/auth/register', {
    config: {
      // Every attempt, whatever its body: bounds bulk sign-ups and probing which emails have
      // accounts (the 409). Instead of the global limit, which is looser.
      rateLimit: rateLimiter.limit({
        name: 'register',
        max: config.REGISTER_RATE_LIMIT_MAX,
        timeWindow: config.REGISTER_RATE_LIMIT_WINDOW_MS,
        key: (request) => `register:${ipClient(request.ip)}`,
        message: 'Too many registrations from this address',
      }),
    },
    schema: {
      tags: ['auth'],
      summary: 'Create an account (role "user")',
      body: CredentialsSchema,
      response: { 201: UserSchema, 400: ErrorSchema, 409: ErrorSchema, 413: ErrorSchema },
    },
  }, async (request, reply) => {
    try {
      const user = await accounts.register(request.body.email, request.body.password)
      return reply.code(201).send(user)
    } catch (err) {
      if (err instanceof DuplicateEmailError) throw new ConflictError('An account with this email already exists')
      throw err
    }
  })

  fastify.post('/api/auth/login', {
    config: {
      // Failed attempts per address + email and per email, on top of the global limit.
      attemptLimits: loginAttemptLimits(config),
    },
    schema: {
      tags: ['auth'],
      summary: 'Exchange email and password for a bearer token',
      body: CredentialsSchema,
      response: { 200: LoginSchema, 400: ErrorSchema, 401: ErrorSchema, 413: ErrorSchema },
    },
  }, async (request) => {
    const user = await accounts.verifyCredentials(request.body.email, request.body.password)
    if (user === null) throw new UnauthorizedError(INVALID_CREDENTIALS)
    const session = await sessions.create({ userId: user.id, email: user.email, role: user.role, ip: request.ip, userAgent: request.headers['user-agent'] })
    const issued = identity.issueToken({ sub: user.id, role: user.role, sid: session.id, jti: session.tokenId })
    return tokenBody(issued, session.expiresAt, toPublicUser(user))
  })

  fastify.post('/api/auth/refresh', {
    onRequest: [authenticate],
    schema: {
      tags: ['auth'],
      summary: 'A new access token for this session; the token sent is refused from now on',
      description: 'Send the current token (not an expired one) before it expires. Of two refreshes with one token only the first succeeds. ' +
        'While Redis is unreachable a session kept in Redis cannot be refreshed (503): the current token keeps working until it expires.',
      security: [{ bearerAuth: [] }],
      response: { 200: LoginSchema, 401: ErrorSchema, 503: ErrorSchema },
    },
  }, async (request, reply) => {
    const user = request.user
    const rotated = await sessions.rotate({ sid: user.sid, sub: user.sub, role: user.role, jti: user.jti, iat: 0, exp: user.exp })
    if (rotated.outcome === 'unavailable') {
      void reply.header('retry-after', '5')
      throw new ServiceUnavailableError('The session store is unavailable, so the token cannot be refreshed now; the current token stays valid until it expires. Retry shortly.')
    }
    if (rotated.outcome === 'refused') throw new UnauthorizedError('Session expired or revoked, or this token was already refreshed')
    const email = rotated.email ?? (await accounts.findById(user.sub))?.email
    if (email === undefined) throw new UnauthorizedError('Session expired or revoked')
    const issued = identity.issueToken({ sub: user.sub, role: user.role, sid: user.sid, jti: rotated.tokenId })
    return tokenBody(issued, rotated.expiresAt, { id: user.sub, email, role: user.role })
  })

  fastify.post('/api/auth/logout', {
    onRequest: [authenticate],
    schema: {
      tags: ['auth'],
      summary: 'End this session; its token is refused from now on',
      security: [{ bearerAuth: [] }],
      response: { 204: Type.Null(), 401: ErrorSchema },
    },
  }, async (request, reply) => {
    await sessions.revoke(request.user.sid, request.user.sub)
    return reply.code(204).send(null)
  })

  fastify.delete('/api/auth/sessions', {
    onRequest: [authenticate],
    schema: {
      tags: ['auth'],
      summary: 'Log out everywhere: end every session of this user',
      security: [{ bearerAuth: [] }],
      response: { 200: Type.Object({ revoked: Type.Integer() }), 401: ErrorSchema },
    },
  }, async (request) => {
    return { revoked: await sessions.revokeAll(request.user.sub) }
  })

  fastify.get('/api/auth/me', {
    onRequest: [authenticate],
    schema: {
      tags: ['auth'],
      summary: 'The signed-in user and session',
      security: [{ bearerAuth: [] }],
      response: { 200: MeSchema, 401: ErrorSchema },
    },
  }, (request) => {
    const user = request.user
    // The session recorded the email at login (answered at once, no promise); only a session
    // that could not be read (Redis down, SESSION_FALLBACK=allow) needs the database.
    if (user.session.email !== undefined) return meBody(user, user.session.email)
    return accounts.findById(user.sub).then((found) => {
      if (found === null) throw new UnauthorizedError('Session expired or revoked')
      return meBody(user, found.email)
    })
  })
}

export default auth
