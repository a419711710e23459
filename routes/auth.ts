/**
 * Accounts and sessions over HTTP: register, login (a short-lived JWT bound to a server-side
 * session), logout (that session, at once), logout everywhere, and who am I.
 */
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type, type Static } from 'typebox'
import { DuplicateEmailError, PASSWORD_MAX, PASSWORD_MIN, toPublicUser } from '../src/auth/accounts.js'
import { EMAIL_PATTERN } from '../src/auth/email.js'
import type { AuthUser } from '../src/auth/types.js'
import { ConflictError, UnauthorizedError } from '../src/errors.js'
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

export const LoginSchema = Type.Object({
  token: Type.String(),
  tokenType: Type.Literal('Bearer'),
  expiresIn: Type.Integer({ description: 'Seconds until the token expires.' }),
  user: UserSchema,
})

export const MeSchema = Type.Object({
  ...UserSchema.properties,
  session: Type.Object({
    id: Type.String(),
    expiresAt: Type.String({ format: 'date-time', description: 'When the session ends unless used again (sliding).' }),
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

function meBody ({ sub, role, session }: AuthUser, email: string): Static<typeof MeSchema> {
  return { id: sub, email, role, session: { id: session.id, expiresAt: session.expiresAt.toISOString() } }
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
    const { token, expiresIn } = identity.issueToken({ sub: user.id, role: user.role, sid: session.id })
    return { token, tokenType: 'Bearer' as const, expiresIn, user: toPublicUser(user) }
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
