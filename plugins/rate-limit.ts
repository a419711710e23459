/**
 * Rate limiting on every route (health probes and the scrape opt out with
 * `config: { rateLimit: false }`), counting in Redis while Redis is in use and in process
 * while it is not (src/engines/counters/window-counter.ts), keyed by user for a valid bearer
 * token and by client address (IPv6 by /64) otherwise.
 *
 * Each limited route gets one synchronous onRequest hook, first in its list (so requests an
 * authentication hook rejects are counted too), built once per route with its limit in a
 * closure. This replaces `@fastify/rate-limit`: its async hook (an awaited key generator,
 * a promise around the store, `request.routeOptions` rebuilt per request) cost about 5 µs
 * of CPU per request on this service, more than counting the hit itself (README, Benchmarks).
 * The contract is the same: `x-ratelimit-limit`, `x-ratelimit-remaining` and
 * `x-ratelimit-reset` (seconds) on every limited answer; over the limit, a 429
 * `{ statusCode, error, message }` with `retry-after` from the root error handler.
 *
 * Beyond the global limit:
 *  - admin routes (`/api/debug/*`) have their own limit instead of the global one;
 *  - the login route also counts every attempt per address + email and per email (so a
 *    guess spread over many addresses still stops), before the handler runs, so a correct
 *    password after the limit is still a 429;
 *  - the registration route also counts every attempt per address (REGISTER_RATE_LIMIT_MAX),
 *    bounding both account creation in bulk and probing which emails have accounts;
 *  - unknown URLs are limited like any route (`rateLimiter.hook` on the 404 handler).
 * Adds `fastify.rateLimiter` (the hook, stats for metrics, the client key of a request).
 */
import fp from 'fastify-plugin'
import type { FastifyInstance, FastifyReply, FastifyRequest, RouteOptions } from 'fastify'
import { clientKey, emailKey, ipClient, type TokenVerifier } from '../src/rate-limit/client-key.js'
import { TooManyRequestsError, LOGIN_URL, REGISTER_URL, isAdminUrl, retryText } from '../src/rate-limit/limits.js'
import { WindowCounter, type Hit } from '../src/engines/counters/window-counter.js'
import { registerRateLimitMetrics } from '../src/metrics/rate-limit-collectors.js'

declare module 'fastify' {
  interface FastifyInstance {
    rateLimiter: ReturnType<typeof createRateLimiter>
  }
  interface FastifyContextConfig {
    /** `false`: the route is not limited (health probes, the metrics scrape). */
    rateLimit?: false
  }
}

/** An onRequest (or preHandler) hook in callback style. */
export type LimitHook = (request: FastifyRequest, reply: FastifyReply, done: (err?: Error) => void) => void

/** One limit: at most `max` hits per `windowMs` per key, the key from the request. */
interface Limit {
  max: number
  windowMs: number
  keyOf (request: FastifyRequest): string
  /** Counted when a request is refused. */
  name: 'global' | 'admin'
}

const HEADER_LIMIT = 'x-ratelimit-limit'
const HEADER_REMAINING = 'x-ratelimit-remaining'
const HEADER_RESET = 'x-ratelimit-reset'

export function createRateLimiter (fastify: FastifyInstance) {
  const config = fastify.config
  const counter = new WindowCounter({ state: fastify.redisState, maxEntries: config.FALLBACK_MAX_ENTRIES })
  const limited = { global: 0, admin: 0, login: 0, loginEmail: 0, register: 0 }
  // Found on first use: the auth plugin may be registered before or after this one.
  // `identity.verifyToken` caches verified tokens until their exp, so a token is checked
  // once, not on every request; plain `jwt.verify` is the fallback.
  let tokenVerifier: TokenVerifier | undefined
  const verifier = (): TokenVerifier | undefined => {
    if (tokenVerifier !== undefined) return tokenVerifier
    const identity = (fastify as unknown as { identity?: { verifyToken (token: string): unknown } }).identity
    if (identity !== undefined) tokenVerifier = { verify: (token) => identity.verifyToken(token) }
    else tokenVerifier = (fastify as unknown as { jwt?: TokenVerifier }).jwt
    return tokenVerifier
  }
  const clientOf = (request: FastifyRequest): string => clientKey(request, verifier())

  /** Sets the headers for `hit` when it is tighter than what the response says so far. */
  function tighten (reply: FastifyReply, max: number, hit: Hit): void {
    const remaining = Math.max(0, max - hit.current)
    const shown = reply.getHeader(HEADER_REMAINING)
    if (shown !== undefined && Number(shown) <= remaining) return
    void reply.header(HEADER_LIMIT, max).header(HEADER_REMAINING, remaining).header(HEADER_RESET, Math.ceil(hit.ttl / 1000))
  }

  function refuse (reply: FastifyReply, max: number, hit: Hit, message: string): never {
    const seconds = Math.ceil(hit.ttl / 1000)
    void reply.header(HEADER_LIMIT, max).header(HEADER_REMAINING, 0).header(HEADER_RESET, seconds).header('retry-after', seconds)
    throw new TooManyRequestsError(`${message}, retry in ${retryText(seconds)}`)
  }

  /** One hit on `key` for a route's own limit (login, registration): refused past `max`, else shown when tighter. */
  async function countAgainst (reply: FastifyReply, name: keyof typeof limited, key: string, windowMs: number, max: number, message: string): Promise<void> {
    const hit = await counter.hitAsync(key, windowMs, max)
    if (hit.current > max) {
      limited[name]++
      refuse(reply, max, hit, message)
    }
    tighten(reply, max, hit)
  }

  /**
   * The onRequest hook for one limit. Synchronous when the counter answers at once (in
   * process, or an early admission), after Redis's count otherwise; never waits on a dead
   * Redis (the counter answers from memory when a batch fails).
   */
  function hookFor (limit: Limit): LimitHook {
    const { max, windowMs } = limit
    const limitText = String(max)
    function answer (reply: FastifyReply, done: (err?: Error) => void, hit: Hit): void {
      const ttlSeconds = Math.ceil(hit.ttl / 1000)
      const seconds = String(ttlSeconds)
      if (hit.current <= max) {
        void reply.header(HEADER_LIMIT, limitText).header(HEADER_REMAINING, String(max - hit.current)).header(HEADER_RESET, seconds)
        done()
        return
      }
      limited[limit.name]++
      void reply.header(HEADER_LIMIT, limitText).header(HEADER_REMAINING, '0').header(HEADER_RESET, seconds).header('retry-after', seconds)
      done(new TooManyRequestsError(`Rate limit exceeded, retry in ${retryText(ttlSeconds)}`))
    }
    return function rateLimitHook (request, reply, done) {
      const hit = counter.hit(limit.keyOf(request), windowMs, max)
      if (hit instanceof Promise) void hit.then((h) => { answer(reply, done, h) })
      else answer(reply, done, hit)
    }
  }

  const globalLimit: Limit = { name: 'global', max: config.RATE_LIMIT_MAX, windowMs: config.RATE_LIMIT_WINDOW_MS, keyOf: clientOf }
  const adminLimit: Limit = { name: 'admin', max: config.ADMIN_RATE_LIMIT_MAX, windowMs: config.RATE_LIMIT_WINDOW_MS, keyOf: (request) => `admin:${clientOf(request)}` }

  return {
    counter,
    limited,
    /** The global limit's hook (for handlers outside the router, e.g. the 404 handler). */
    hook: hookFor(globalLimit),
    /** The admin limit's hook. */
    adminHook: hookFor(adminLimit),

    /** `user:<id>` for a valid bearer token, else `ip:<address>` (IPv6 by /64). */
    clientOf,

    /**
     * The login limits, as a preValidation hook (the body is parsed, not yet validated, so
     * malformed attempts count too). Per address + email first: an address already over
     * its limit does not also use up the account's budget.
     */
    async loginHook (request: FastifyRequest, reply: FastifyReply): Promise<void> {
      const email = emailKey((request.body as { email?: unknown } | null | undefined)?.email)
      if (email === null) return
      await countAgainst(reply, 'login', `login:${ipClient(request.ip)}:${email}`, config.LOGIN_RATE_LIMIT_WINDOW_MS, config.LOGIN_RATE_LIMIT_MAX, 'Too many login attempts')
      await countAgainst(reply, 'loginEmail', `login-email:${email}`, config.LOGIN_EMAIL_RATE_LIMIT_WINDOW_MS, config.LOGIN_EMAIL_RATE_LIMIT_MAX, 'Too many login attempts for this account')
    },

    /**
     * The registration limit per address, as a preValidation hook like the login limits: an
     * attempt counts whatever its body, so probing which emails have accounts (a 409) and
     * creating accounts in bulk are both bounded.
     */
    async registerHook (request: FastifyRequest, reply: FastifyReply): Promise<void> {
      await countAgainst(reply, 'register', `register:${ipClient(request.ip)}`, config.REGISTER_RATE_LIMIT_WINDOW_MS, config.REGISTER_RATE_LIMIT_MAX, 'Too many registrations from this address')
    },

    stats () {
      return { ...counter.stats(), limited: { ...limited } }
    },
  }
}

function methodsOf (route: RouteOptions): string[] {
  return Array.isArray(route.method) ? route.method : [route.method]
}

function hookList<T> (hooks: T | T[] | undefined): T[] {
  if (hooks === undefined) return []
  return Array.isArray(hooks) ? hooks : [hooks]
}

export default fp(async function rateLimitPlugin (fastify) {
  const limiter = createRateLimiter(fastify)
  fastify.decorate('rateLimiter', limiter)
  registerRateLimitMetrics(fastify.metrics, limiter)
  // Registered after the redis plugin, so this runs before its client closes: hits held
  // back to share a call are still counted.
  fastify.addHook('onClose', async () => { limiter.counter.flush() })

  fastify.addHook('onRoute', (route) => {
    if (route.config?.rateLimit === false) return
    const url = route.url ?? route.path
    if (url === LOGIN_URL && methodsOf(route).includes('POST')) {
      route.preValidation = [...hookList(route.preValidation), limiter.loginHook]
    }
    if (url === REGISTER_URL && methodsOf(route).includes('POST')) {
      route.preValidation = [...hookList(route.preValidation), limiter.registerHook]
    }
    // First, before the route's own onRequest hooks (authentication).
    route.onRequest = [isAdminUrl(url) ? limiter.adminHook : limiter.hook, ...hookList(route.onRequest)]
  })
}, { name: 'rate-limit', fastify: '5.x', dependencies: ['config', 'metrics', 'redis'] })
