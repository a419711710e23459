/**
 * Rate limiting: `@fastify/rate-limit` on every route (health probes opt out with
 * `config: { rateLimit: false }`), counting in Redis while Redis is in use and in process
 * while it is not (src/rate-limit/window-counter.ts), keyed by user for a valid bearer
 * token and by client address (IPv6 by /64) otherwise.
 *
 * Beyond the global limit:
 *  - admin routes (`/api/debug/*`) have their own limit instead of the global one;
 *  - the login route also counts every attempt per address + email and per email (so a
 *    guess spread over many addresses still stops), before the handler runs, so a correct
 *    password after the limit is still a 429.
 * The limiter runs before a route's own onRequest hooks (authentication), so requests
 * with bad tokens are counted too. Adds `fastify.rateLimiter` (stats for metrics, the
 * client key of a request).
 */
import fp from 'fastify-plugin'
import rateLimit, { type FastifyRateLimitStore } from '@fastify/rate-limit'
import type { FastifyInstance, FastifyReply, FastifyRequest, RouteOptions } from 'fastify'
import { clientKey, emailKey, ipClient, type TokenVerifier } from '../src/rate-limit/client-key.js'
import { TooManyRequestsError, LOGIN_URL, isAdminUrl, retryText } from '../src/rate-limit/limits.js'
import { WindowCounter, type Hit } from '../src/rate-limit/window-counter.js'

declare module 'fastify' {
  interface FastifyInstance {
    rateLimiter: ReturnType<typeof createRateLimiter>
  }
}

const HEADER_LIMIT = 'x-ratelimit-limit'
const HEADER_REMAINING = 'x-ratelimit-remaining'
const HEADER_RESET = 'x-ratelimit-reset'

export function createRateLimiter (fastify: FastifyInstance) {
  const config = fastify.config
  const counter = new WindowCounter({ state: fastify.redisState, maxEntries: config.FALLBACK_MAX_ENTRIES })
  const limited = { global: 0, admin: 0, login: 0, loginEmail: 0 }
  // Looked up per request: the auth plugin may be registered before or after this one.
  // `identity.verifyToken` caches verified tokens until their exp, so a token is checked
  // once, not on every request; plain `jwt.verify` is the fallback.
  const verifier = (): TokenVerifier | undefined => {
    const identity = (fastify as unknown as { identity?: { verifyToken (token: string): unknown } }).identity
    if (identity !== undefined) return { verify: (token) => identity.verifyToken(token) }
    return (fastify as unknown as { jwt?: TokenVerifier }).jwt
  }

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

  return {
    counter,
    limited,

    /** `user:<id>` for a valid bearer token, else `ip:<address>` (IPv6 by /64). */
    clientOf (request: FastifyRequest): string {
      return clientKey(request, verifier())
    },

    /**
     * The login limits, as a preValidation hook (the body is parsed, not yet validated, so
     * malformed attempts count too). Per address + email first: an address already over
     * its limit does not also use up the account's budget.
     */
    async loginHook (request: FastifyRequest, reply: FastifyReply): Promise<void> {
      const email = emailKey((request.body as { email?: unknown } | null | undefined)?.email)
      if (email === null) return
      const pair = await counter.hitAsync(`login:${ipClient(request.ip)}:${email}`, config.LOGIN_RATE_LIMIT_WINDOW_MS, config.LOGIN_RATE_LIMIT_MAX)
      if (pair.current > config.LOGIN_RATE_LIMIT_MAX) {
        limited.login++
        refuse(reply, config.LOGIN_RATE_LIMIT_MAX, pair, 'Too many login attempts')
      }
      const perEmail = await counter.hitAsync(`login-email:${email}`, config.LOGIN_EMAIL_RATE_LIMIT_WINDOW_MS, config.LOGIN_EMAIL_RATE_LIMIT_MAX)
      if (perEmail.current > config.LOGIN_EMAIL_RATE_LIMIT_MAX) {
        limited.loginEmail++
        refuse(reply, config.LOGIN_EMAIL_RATE_LIMIT_MAX, perEmail, 'Too many login attempts for this account')
      }
      tighten(reply, config.LOGIN_RATE_LIMIT_MAX, pair)
      tighten(reply, config.LOGIN_EMAIL_RATE_LIMIT_MAX, perEmail)
    },

    stats () {
      return { ...counter.stats(), limited: { ...limited } }
    },
  }
}

/** A store class for `@fastify/rate-limit` over our counter; keys are namespaced by the key generators. */
function storeClass (counter: WindowCounter) {
  return class RateLimitStore implements FastifyRateLimitStore {
    incr (key: string, callback: (error: Error | null, result?: Hit) => void, timeWindow: number, max: number): void {
      counter.hit(key, timeWindow, max, callback)
    }

    child (): FastifyRateLimitStore {
      return this
    }
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
  const config = fastify.config
  const limiter = createRateLimiter(fastify)
  fastify.decorate('rateLimiter', limiter)
  // Registered after the redis plugin, so this runs before its client closes: hits held
  // back to share a call are still counted.
  fastify.addHook('onClose', async () => { limiter.counter.flush() })

  const onRequestBefore = new WeakMap<RouteOptions, number>()
  fastify.addHook('onRoute', (route) => {
    const url = route.url ?? route.path
    if (isAdminUrl(url) && route.config?.rateLimit === undefined) {
      route.config = {
        ...route.config,
        rateLimit: {
          max: config.ADMIN_RATE_LIMIT_MAX,
          timeWindow: config.RATE_LIMIT_WINDOW_MS,
          keyGenerator: (request) => `admin:${limiter.clientOf(request)}`,
          onExceeded: () => { limiter.limited.admin++ },
        },
      }
    }
    if (url === LOGIN_URL && methodsOf(route).includes('POST')) {
      route.preValidation = [...hookList(route.preValidation), limiter.loginHook]
    }
    onRequestBefore.set(route, hookList(route.onRequest).length)
  })

  await fastify.register(rateLimit, {
    global: true,
    hook: 'onRequest',
    max: config.RATE_LIMIT_MAX,
    timeWindow: config.RATE_LIMIT_WINDOW_MS,
    store: storeClass(limiter.counter),
    keyGenerator: (request) => limiter.clientOf(request),
    // Never skip: when Redis fails the counter answers from memory instead.
    skipOnError: false,
    onExceeded: () => { limiter.limited.global++ },
    errorResponseBuilder: (_request, context) => new TooManyRequestsError(`Rate limit exceeded, retry in ${retryText(Math.ceil(context.ttl / 1000))}`),
  })

  // @fastify/rate-limit appends its hook after the route's own onRequest hooks; move it to
  // the front so that requests an authentication hook rejects are counted as well.
  fastify.addHook('onRoute', (route) => {
    const before = onRequestBefore.get(route)
    const hooks = route.onRequest
    if (before === undefined || before === 0 || !Array.isArray(hooks) || hooks.length !== before + 1) return
    route.onRequest = [hooks[before], ...hooks.slice(0, before)] as typeof hooks
  })
}, { name: 'rate-limit', fastify: '5.x', dependencies: ['config', 'redis'] })
