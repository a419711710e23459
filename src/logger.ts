/**
 * Logger options shared by the server and the tests. Redaction covers what can carry a
 * secret: authorization headers, cookies, passwords, and ioredis error objects (an AUTH
 * command's arguments are the password).
 */
import type { DestinationStream, LoggerOptions } from 'pino'
import type { Config } from './config.js'

export const REDACT_PATHS = [
  'req.headers.authorization',
  'req.headers.cookie',
  'res.headers["set-cookie"]',
  'headers.authorization',
  'headers.cookie',
  'password',
  '*.password',
  'token',
  '*.token',
  'err.command.args',
  'err.args',
  'err.previousErrors',
  '*.err.command.args',
  'REDIS_URL',
  '*.REDIS_URL',
]

export function loggerOptions (config: Pick<Config, 'LOG_LEVEL'>, stream?: DestinationStream): LoggerOptions & { stream?: DestinationStream } {
  return {
    level: config.LOG_LEVEL,
    redact: { paths: REDACT_PATHS, censor: '[redacted]' },
    ...(stream ? { stream } : {}),
  }
}
