/**
 * Builds the application: config → plugins in dependency order → routes. The server and
 * the tests build it through this one function.
 */
import Fastify, { type FastifyBaseLogger, type FastifyError, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import type { DestinationStream } from 'pino'
import type { Config } from './config.js'
import { isServiceError } from './errors.js'
import { RequestLogController, createRootLogger } from './logger.js'
import configPlugin from '../plugins/config.js'
import redisPlugin from '../plugins/redis.js'
import cachePlugin from '../plugins/cache.js'
import dbPlugin from '../plugins/db.js'
import authPlugin from '../plugins/auth.js'
import sessionsPlugin from '../plugins/sessions.js'
import rateLimitPlugin from '../plugins/rate-limit.js'
import locksPlugin from '../plugins/locks.js'
import schedulerPlugin from '../plugins/scheduler.js'
import portfolioPlugin from '../plugins/portfolio.js'
import underPressurePlugin from '../plugins/under-pressure.js'
import corsPlugin from '../plugins/cors.js'
import docsPlugin from '../plugins/docs.js'
import metricsPlugin from '../plugins/metrics.js'
import { trustProxyOption } from './rate-limit/trust-proxy.js'
import healthRoutes from '../routes/health.js'
import stocksRoutes from '../routes/stocks.js'
import authRoutes from '../routes/auth.js'
import debugRoutes from '../routes/debug.js'
import debugLocksRoutes from '../routes/debug-locks.js'
import debugCacheRoutes from '../routes/debug-cache.js'
import portfolioRoutes from '../routes/portfolio.js'

export interface BuildOptions {
  /** Where logs go (tests capture them); stdout by default. */
  logStream?: DestinationStream
}

export async function buildApp (config: Config, options: BuildOptions = {}): Promise<FastifyInstance> {
  const app = Fastify({
    // Request loggers become pino children on first use, not on every request.
    loggerInstance: createRootLogger(config, options.logStream) as unknown as FastifyBaseLogger,
    // Fastify's per-request info lines are not even built when info is off.
    logController: new RequestLogController(),
    bodyLimit: config.BODY_LIMIT_BYTES,
    trustProxy: trustProxyOption(config.TRUST_PROXY),
    return503OnClosing: true,
    forceCloseConnections: 'idle',
    ajv: { customOptions: { removeAdditional: true, coerceTypes: 'array', useDefaults: true, allErrors: false } },
    // URLs the router refuses (bad percent-encoding, an over-long path parameter): the usual
    // error body instead of Fastify's own (which echoes the path), and counted by the limiter.
    frameworkErrors: (err, request, reply) => { answerFrameworkError(app, err, request, reply) },
  }).withTypeProvider<TypeBoxTypeProvider>()

  app.setErrorHandler(function rootErrorHandler (err: FastifyError, request, reply) {
    const statusCode = err.statusCode !== undefined && err.statusCode >= 400 && err.statusCode < 600 ? err.statusCode : 500
    if (statusCode >= 500 && !isServiceError(err)) {
      request.log.error({ err }, 'request failed')
    } else if (statusCode >= 500) {
      request.log.warn({ code: err.code, msg: err.message }, 'request answered with a service error')
    }
    const message = statusCode >= 500 && !isServiceError(err) ? 'Internal Server Error' : err.message
    // Errors may carry headers meant for the client (Retry-After on a busy lock or a 429).
    const headers = (err as FastifyError & { headers?: Record<string, string | number> }).headers
    if (headers !== undefined && typeof headers === 'object') void reply.headers(headers)
    sendError(reply, statusCode, message)
  })

  await app.register(configPlugin, { config })
  // Before under-pressure: its hook runs first, so shed 503s (and 429s) carry CORS headers.
  await app.register(corsPlugin)
  await app.register(underPressurePlugin)
  await app.register(redisPlugin)
  await app.register(dbPlugin)
  await app.register(locksPlugin)
  await app.register(cachePlugin)
  await app.register(authPlugin)
  await app.register(sessionsPlugin)
  await app.register(rateLimitPlugin)
  // After the limiter (its onRoute hook then limits /docs too), before every route it documents.
  await app.register(docsPlugin)
  await app.register(metricsPlugin)
  await app.register(schedulerPlugin)
  await app.register(portfolioPlugin)

  // Unknown URLs are rate limited too, so probing for routes costs the same as using them.
  app.setNotFoundHandler({ preHandler: app.rateLimiter.hook }, function notFound (request, reply) {
    sendError(reply, 404, `Route ${request.method} ${request.url.split('?')[0]} not found`)
  })

  await app.register(healthRoutes)
  await app.register(stocksRoutes)
  await app.register(authRoutes)
  await app.register(debugRoutes)
  await app.register(debugLocksRoutes)
  await app.register(debugCacheRoutes)
  await app.register(portfolioRoutes)
  return app
}

/** What the router's own refusals are answered with (anything else: a 500). */
const FRAMEWORK_ERRORS: Record<string, { statusCode: number, message: string }> = {
  FST_ERR_BAD_URL: { statusCode: 400, message: 'The URL is not validly percent-encoded' },
  // A path parameter (a ticker, an id) that long can only be malformed: a 400, as a bad one is.
  FST_ERR_MAX_PARAM_LENGTH: { statusCode: 400, message: 'A path parameter is too long' },
}

function answerFrameworkError (app: FastifyInstance, err: FastifyError, request: FastifyRequest, reply: FastifyReply): void {
  const known = FRAMEWORK_ERRORS[err.code]
  if (known === undefined) request.log.error({ err }, 'request failed')
  const { statusCode, message } = known ?? { statusCode: 500, message: 'Internal Server Error' }
  // The limiter's hook sets its headers; over the limit it hands back the 429 to send.
  app.rateLimiter.hook(request, reply, (limited) => {
    if (limited === undefined) sendError(reply, statusCode, message)
    else sendError(reply, (limited as FastifyError).statusCode ?? 429, limited.message)
  })
}

/** The one error body of the service: `{ statusCode, error, message }`. */
function sendError (reply: FastifyReply, statusCode: number, message: string): void {
  void reply.code(statusCode).send({ statusCode, error: httpReason(statusCode), message })
}

const REASONS: Record<number, string> = {
  400: 'Bad Request', 401: 'Unauthorized', 403: 'Forbidden', 404: 'Not Found', 405: 'Method Not Allowed',
  406: 'Not Acceptable', 408: 'Request Timeout', 409: 'Conflict', 413: 'Payload Too Large',
  415: 'Unsupported Media Type', 422: 'Unprocessable Entity', 429: 'Too Many Requests',
  500: 'Internal Server Error', 501: 'Not Implemented', 502: 'Bad Gateway', 503: 'Service Unavailable',
  504: 'Gateway Timeout',
}

export function httpReason (statusCode: number): string {
  return REASONS[statusCode] ?? (statusCode >= 500 ? 'Internal Server Error' : 'Error')
}
