/**
 * Rate limiting with `@fastify/rate-limit`, counting with the service's window counter as
 * its store (src/rate-limit/store.ts): in Redis while Redis is in use, in process while it
 * is not, never waiting on a dead Redis.
 *
 * Every route is limited by the global limit (RATE_LIMIT_MAX per RATE_LIMIT_WINDOW_MS),
 * keyed by user for a valid bearer token and by client address (IPv6 by /64) otherwise.
 * A route changes that in its own options:
 *  - `config: { rateLimit: false }`: not limited (health probes, the metrics scrape);
 *  - `config: { rateLimit: { max, timeWindow, … } }`: its own limit (the library's route
 *    options; `fastify.rateLimiter.limit({...})` builds one with its key, message and metric);
 *  - `config: { attemptLimits: [...] }`: limits on failed attempts (login), on top of the
 *    rate limit: an attempt is counted when it arrives (so parallel guesses cannot overrun the
 *    limit) and refused with a 429 past a limit before the handler runs; an answer below 400
 *    forgives: the attempt's keys are reset, so good logins never run into the limit.
 * A plugin can put its whole prefix under one limit with an `onRequest` hook from
 * `fastify.rateLimit(options)` (the admin routes do, with `rateLimiter.admin`).
 *
 * The limit's hook comes first among the route's onRequest hooks, so requests that an
 * authentication hook refuses are counted too. Headers: `x-ratelimit-limit`,
 * `x-ratelimit-remaining`, `x-ratelimit-reset` (seconds) on every limited answer, and
 * `retry-after` on a 429, whose body is the service's `{ statusCode, error, message }`.
 * Adds `fastify.rateLimiter` (the limits' builders, hooks for handlers outside the router,
 * stats for the metrics).
 */
import fp from 'fastify-plugin'
import fastifyRateLimit, { type RateLimitOptions } from '@fastify/rate-limit'
import type { FastifyInstance, FastifyReply, FastifyRequest, onRequestAsyncHookHandler, onSendHookHandler, preValidationAsyncHookHandler } from 'fastify'
import { clientKey, type TokenVerifier } from '../src/rate-limit/client-key.js'
import { tooManyRequests, type LimitName, type RouteLimit } from '../src/rate-limit/limits.js'
import { counterStore } from '../src/rate-limit/store.js'
import { WindowCounter } from '../src/engines/counters/window-counter.js'
import { registerRateLimitMetrics } from '../src/metrics/rate-limit-collectors.js'

declare module 'fastify' {
  interface FastifyInstance {
    rateLimiter: RateLimiter
  }
  interface FastifyContextConfig {
    /**
     * Limits on failed attempts: each attempt counts when it arrives, one answered below 400
     * resets the keys it counted on. A limit whose key is null for a request does not apply.
     */
    attemptLimits?: RouteLimit[]
  }
}

const HEADER_LIMIT = 'x-ratelimit-limit'
const HEADER_REMAINING = 'x-ratelimit-remaining'
const HEADER_RESET = 'x-ratelimit-reset'

export interface RateLimiter {
  readonly counter: WindowCounter
  /** `user:<id>` for a valid bearer token, else `ip:<address>` (IPv6 by /64). */
  clientOf: (request: FastifyRequest) => string
  /** Route options for a limit of a route's own (`config: { rateLimit: rateLimiter.limit({...}) }`). */
  limit: (limit: RouteLimit) => RateLimitOptions
  /** The admin limit (ADMIN_RATE_LIMIT_MAX per client), as route options. */
  readonly admin: RateLimitOptions
  /** The global limit as a hook, for handlers outside the router (404, malformed URLs). */
  readonly hook: onRequestAsyncHookHandler
  stats: () => ReturnType<WindowCounter['stats']> & { limited: Record<LimitName, number> }
}

function hookList<T> (hooks: T | T[] | undefined): T[] {
  if (hooks === undefined) return []
  return Array.isArray(hooks) ? hooks : [hooks]
}

export default fp(async function rateLimitPlugin (fastify: FastifyInstance) {
  const config = fastify.config
  const counter = new WindowCounter({ state: fastify.redisState, maxEntries: config.FALLBACK_MAX_ENTRIES })
  const limited: Record<LimitName, number> = { global: 0, admin: 0, login: 0, loginEmail: 0, register: 0 }
  // The verified-token cache of the auth plugin: a token is checked once, not per request.
  const identity = fastify.identity
  const verifier: TokenVerifier = { verify: (token) => identity.verifyToken(token) }
  const clientOf = (request: FastifyRequest): string => clientKey(request, verifier)

  function limit ({ name, max, timeWindow, key, message }: RouteLimit): RateLimitOptions {
    return {
      max,
      timeWindow,
      // A request the limit has no key for counts per client under the limit's name.
      keyGenerator: (request) => key(request) ?? `${name}:${clientOf(request)}`,
      errorResponseBuilder: (_request, context) => tooManyRequests(message, context.ttl),
      onExceeded: () => { limited[name]++ },
    }
  }

  await fastify.register(fastifyRateLimit, {
    global: true,
    max: config.RATE_LIMIT_MAX,
    timeWindow: config.RATE_LIMIT_WINDOW_MS,
    // RATE_LIMIT_STORE=memory: the library's own in-process store, for comparison.
    ...(config.RATE_LIMIT_STORE === 'counter' ? { store: counterStore(counter) } : {}),
    keyGenerator: clientOf,
    errorResponseBuilder: (_request, context) => tooManyRequests('Rate limit exceeded', context.ttl),
    onExceeded: () => { limited.global++ },
  })

  const rateLimiter: RateLimiter = {
    counter,
    clientOf,
    limit,
    admin: limit({
      name: 'admin',
      max: config.ADMIN_RATE_LIMIT_MAX,
      timeWindow: config.RATE_LIMIT_WINDOW_MS,
      key: (request) => `admin:${clientOf(request)}`,
      message: 'Rate limit exceeded',
    }),
    hook: fastify.rateLimit(),
    stats: () => ({ ...counter.stats(), limited: { ...limited } }),
  }
  fastify.decorate('rateLimiter', rateLimiter)
  registerRateLimitMetrics(fastify.metrics, rateLimiter)

  /** Sets the headers for a count when it is tighter than what the response says so far. */
  function tighten (reply: FastifyReply, max: number, remaining: number, resetSeconds: number): void {
    const shown = reply.getHeader(HEADER_REMAINING)
    if (shown !== undefined && Number(shown) <= remaining) return
    void reply.header(HEADER_LIMIT, max).header(HEADER_REMAINING, remaining).header(HEADER_RESET, resetSeconds)
  }

  /** The keys each request was counted on by its route's attempt limits. */
  const attempted = new WeakMap<FastifyRequest, string[]>()

  function attemptHooks (limits: RouteLimit[]): { check: preValidationAsyncHookHandler, forgive: onSendHookHandler } {
    async function check (request: FastifyRequest, reply: FastifyReply): Promise<void> {
      for (const l of limits) {
        const key = l.key(request)
        if (key === null) continue
        const hit = await counter.hitAsync(key, l.timeWindow, l.max)
        const keys = attempted.get(request)
        if (keys === undefined) attempted.set(request, [key])
        else keys.push(key)
        const resetSeconds = Math.ceil(hit.ttl / 1000)
        if (hit.current > l.max) {
          limited[l.name]++
          void reply.header(HEADER_LIMIT, l.max).header(HEADER_REMAINING, 0).header(HEADER_RESET, resetSeconds).header('retry-after', resetSeconds)
          throw tooManyRequests(l.message, hit.ttl)
        }
        tighten(reply, l.max, l.max - hit.current, resetSeconds)
      }
    }
    const forgive: onSendHookHandler = async (request, reply, payload) => {
      const keys = attempted.get(request)
      if (keys !== undefined && reply.statusCode < 400) await Promise.all(keys.map((key) => counter.reset(key)))
      return payload
    }
    return { check, forgive }
  }

  fastify.addHook('onRoute', (route) => {
    // @fastify/rate-limit (registered above, so its onRoute hook ran first) appended its
    // hook to the route's onRequest list: it moves to the front, before authentication.
    if (route.config?.rateLimit !== false && Array.isArray(route.onRequest) && route.onRequest.length > 1) {
      const limiterHook = route.onRequest.pop()
      if (limiterHook !== undefined) route.onRequest.unshift(limiterHook)
    }
    const limits = route.config?.attemptLimits
    if (limits !== undefined && limits.length > 0) {
      const { check, forgive } = attemptHooks(limits)
      route.preValidation = [...hookList(route.preValidation), check]
      route.onSend = [...hookList(route.onSend), forgive]
    }
  })

  // Registered after the redis plugin, so this runs before its client closes: hits held
  // back to share a call are still counted.
  fastify.addHook('onClose', async () => { counter.flush() })
}, { name: 'rate-limit', fastify: '5.x', dependencies: ['config', 'metrics', 'redis', 'auth'] })
