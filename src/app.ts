/**
 * Builds the application: config → plugins in dependency order → routes. The server and
 * the tests build it through this one function.
 */
import Fastify, { type FastifyBaseLogger, type FastifyError, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import type { DestinationStream } from 'pino'
import type { Config } from './config.js'
import { fromEngineError, isServiceError, type HttpError } from './errors.js'
import { INVALID_JSON_MESSAGE, UNSUPPORTED_MEDIA_TYPE_MESSAGE, buildValidator, missingBodyMessage, schemaErrorFormatter } from './validation.js'
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
import metricsRoutes from '../routes/metrics.js'
import stocksRoutes from '../routes/stocks.js'
import authRoutes from '../routes/auth.js'
import debugRoutes from '../routes/debug/index.js'
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
    // Shutdown (main.ts): requests that still arrive after close() began, on connections
    // accepted before it, are served (with Connection: close) rather than refused with a 503.
    return503OnClosing: false,
    // close() ends idle keep-alive connections; the drain itself is main.ts's.
    forceCloseConnections: 'idle',
    ...httpTimeouts(config),
    // Bodies are validated without coercion, text parts with it; numbers are finite (validation.ts).
    schemaController: { compilersFactory: { buildValidator: buildValidator() } },
    schemaErrorFormatter,
    // URLs the router refuses (bad percent-encoding, an over-long path parameter): the usual
    // error body instead of Fastify's own (which echoes the path), and counted by the limiter.
    frameworkErrors: (err, request, reply) => { answerFrameworkError(app, err, request, reply) },
  }).withTypeProvider<TypeBoxTypeProvider>()

  app.setErrorHandler(function rootErrorHandler (error: FastifyError, request, reply) {
    // An engine's typed error (a busy lock, …) becomes its service error here, and only here.
    const err = fromEngineError(error) ?? error
    const statusCode = err.statusCode !== undefined && err.statusCode >= 400 && err.statusCode < 600 ? err.statusCode : 500
    if (statusCode >= 500 && !isServiceError(err)) {
      request.log.error({ err }, 'request failed')
    } else if (statusCode >= 500) {
      request.log.warn({ code: err.code, msg: err.message }, 'request answered with a service error')
    }
    const message = statusCode >= 500 && !isServiceError(err) ? 'Internal Server Error' : bodyErrorMessage(err, request) ?? err.message
    // Errors may carry headers meant for the client (Retry-After on a busy lock or a 429).
    const headers = (err as HttpError).headers
    if (headers !== undefined && typeof headers === 'object') void reply.headers(headers)
    sendError(reply, statusCode, message)
  })

  // JSON only: a text/plain body (Fastify parses one by default) is a 415 that says to send
  // JSON, as every other content type is, not a string that fails the schema.
  app.removeContentTypeParser('text/plain')

  await app.register(configPlugin, { config })
  // First after config: every plugin after it registers its own metrics with it.
  await app.register(metricsPlugin)
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
  await app.register(schedulerPlugin)
  await app.register(portfolioPlugin)

  // Unknown URLs are rate limited too, so probing for routes costs the same as using them.
  app.setNotFoundHandler({ preHandler: app.rateLimiter.hook }, function notFound (request, reply) {
    sendError(reply, 404, `Route ${request.method} ${request.url.split('?')[0]} not found`)
  })

  await app.register(healthRoutes)
  await app.register(metricsRoutes)
  await app.register(stocksRoutes)
  await app.register(authRoutes)
  await app.register(debugRoutes, { prefix: '/api/debug' })
  await app.register(portfolioRoutes)
  return app
}

/**
 * The HTTP server's timeouts. requestTimeout bounds receiving a whole request (headers and
 * body: a declared body that never arrives is a 408), headersTimeout the headers alone (it
 * must not exceed requestTimeout), keepAliveTimeout how long an idle keep-alive connection is
 * kept. Node checks the first two every connectionsCheckingInterval (30 s by default), so
 * the interval follows the smaller bound. No socket inactivity timeout (connectionTimeout):
 * it would cut a handler that is still working.
 */
function httpTimeouts (config: Config): { requestTimeout: number, keepAliveTimeout: number, http: { headersTimeout: number, connectionsCheckingInterval: number } } {
  const request = config.HTTP_REQUEST_TIMEOUT_MS
  const headers = Math.min(config.HTTP_HEADERS_TIMEOUT_MS, request)
  const smallest = headers
  return {
    requestTimeout: request,
    keepAliveTimeout: config.HTTP_KEEP_ALIVE_TIMEOUT_MS,
    http: { headersTimeout: headers, connectionsCheckingInterval: Math.max(100, Math.min(1000, Math.floor(smallest / 4))) },
  }
}

/** Body parser refusals, said so that a person knows what to send instead. */
function bodyErrorMessage (err: FastifyError, request: FastifyRequest): string | undefined {
  switch (err.code) {
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE': return UNSUPPORTED_MEDIA_TYPE_MESSAGE
    case 'FST_ERR_CTP_EMPTY_JSON_BODY': return missingBodyMessage(request.routeOptions.schema?.body)
    case 'FST_ERR_CTP_INVALID_JSON_BODY': return INVALID_JSON_MESSAGE
    // The JSON parser's own SyntaxError (its text may quote the body back).
    default: return err.name === 'SyntaxError' && err.statusCode === 400 ? INVALID_JSON_MESSAGE : undefined
  }
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
  // The limiter's hook sets its headers; over the limit it throws the 429 to send.
  app.rateLimiter.hook.call(app, request, reply).then(() => { sendError(reply, statusCode, message) }, (limited: FastifyError) => {
    sendError(reply, limited.statusCode ?? 429, limited.message)
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
