/**
 * The service's error codes. Every error a handler throws on purpose is made here, so its
 * message is written for the client; anything else that reaches the root handler with a
 * 5xx status is an accident and is answered with a generic message.
 */
import createError from '@fastify/error'

export const ServiceUnavailableError = createError('AIC_UNAVAILABLE', '%s', 503)
export const NotFoundError = createError('AIC_NOT_FOUND', '%s', 404)
export const ConflictError = createError('AIC_CONFLICT', '%s', 409)
export const BadRequestError = createError('AIC_BAD_REQUEST', '%s', 400)
export const UnauthorizedError = createError('AIC_UNAUTHORIZED', '%s', 401)
export const ForbiddenError = createError('AIC_FORBIDDEN', '%s', 403)
export const UnprocessableError = createError('AIC_UNPROCESSABLE', '%s', 422)
export const BadGatewayError = createError('AIC_BAD_GATEWAY', '%s', 502)
export const GatewayTimeoutError = createError('AIC_GATEWAY_TIMEOUT', '%s', 504)

/** Errors whose message was written for the client, even with a 5xx status. */
export function isServiceError (err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code
  return typeof code === 'string' && code.startsWith('AIC_')
}
