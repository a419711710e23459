/**
 * CORS for browser front ends on other origins, with `@fastify/cors`, driven by CORS_ORIGINS
 * (a comma-separated allow-list of exact origins). Closed by default: with CORS_ORIGINS unset
 * the plugin is not registered, and no answer carries a CORS header.
 *
 * An allowed origin is reflected in `Access-Control-Allow-Origin` with `Vary: Origin` and
 * `Access-Control-Allow-Credentials: true` (the front end sends credentials); any other
 * origin, or a request without one, gets no CORS header at all, and its preflight is the
 * usual 404. A preflight from an allowed origin is answered 204 in this plugin's hook, before
 * authentication and the rate limiter.
 *
 * Registered right after config, before under-pressure, so that its onRequest hook runs first
 * on every request: the shed 503s and the rate limiter's 429s (route hooks, and the 404
 * handler's) carry the CORS headers too; without them a browser reports a network error
 * instead of an answer with Retry-After.
 */
import fp from 'fastify-plugin'
import cors from '@fastify/cors'
import { corsOrigins } from '../src/cors-origins.js'

/** Request headers a browser may send cross-origin. */
export const CORS_ALLOWED_HEADERS = ['Authorization', 'Content-Type', 'Cache-Control', 'Idempotency-Key']
/** Response headers a browser script may read. */
export const CORS_EXPOSED_HEADERS = ['Retry-After', 'X-Cache', 'Age', 'x-ratelimit-limit', 'x-ratelimit-remaining', 'x-ratelimit-reset']
export const CORS_METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE']
/** How long a browser may cache a preflight's answer (Chromium caps it at 2 h). */
export const CORS_MAX_AGE_SECONDS = 600

export default fp(async function corsPlugin (fastify) {
  const list = corsOrigins(fastify.config.CORS_ORIGINS)
  if (list.length === 0) return
  // Browsers send the origin serialised: lower-case scheme and host, default port left out.
  const allowed = new Set(list.map((entry) => new URL(entry).origin))
  await fastify.register(cors, {
    // false (not merely no match) for anything else: then not one CORS header is written.
    origin: (origin, callback) => { callback(null, origin !== undefined && allowed.has(origin)) },
    credentials: true,
    methods: CORS_METHODS,
    allowedHeaders: CORS_ALLOWED_HEADERS,
    exposedHeaders: CORS_EXPOSED_HEADERS,
    maxAge: CORS_MAX_AGE_SECONDS,
    strictPreflight: true,
  })
  fastify.log.child({ component: 'cors' }).info({ origins: [...allowed] }, 'CORS: these origins may call the API with credentials')
}, { name: 'cors', fastify: '5.x', dependencies: ['config'] })
