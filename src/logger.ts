/**
 * Logger options shared by the server and the tests. Redaction covers what can carry a
 * secret: authorization headers, cookies, passwords, and ioredis error objects (an AUTH
 * command's arguments are the password).
 *
 * Output is JSON lines, except in development on a terminal (NODE_ENV=development and stdout
 * a TTY), where `pino-pretty` makes them readable. Redirected or piped output, containers
 * and production stay JSON, for log collectors.
 */
import { LogController, type FastifyReply, type FastifyRequest } from 'fastify'
import { createRequire } from 'node:module'
import pino, { type DestinationStream, type LoggerOptions } from 'pino'
import type PinoPretty from 'pino-pretty'
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

/** Pretty lines only for a person at a terminal in development; JSON everywhere else. */
export function wantsPrettyLogs (config: Partial<Pick<Config, 'NODE_ENV'>>, stdout: { isTTY?: boolean }): boolean {
  return config.NODE_ENV === 'development' && stdout.isTTY === true
}

/**
 * pino-pretty writing to `stdout`, synchronously (nothing lost when the process exits).
 * Loaded only here: a process that logs JSON (production) never spends the ~0.2 s of its
 * start that loading pino-pretty and its dependencies takes.
 */
export function prettyStream (stdout: NodeJS.WritableStream & { isTTY?: boolean, hasColors?: () => boolean }): DestinationStream {
  const pretty = createRequire(import.meta.url)('pino-pretty') as typeof PinoPretty
  return pretty({
    destination: stdout,
    sync: true,
    colorize: typeof stdout.hasColors === 'function' ? stdout.hasColors() : false,
    translateTime: 'SYS:HH:MM:ss.l',
    ignore: 'pid,hostname',
  })
}

type LogFn = (...args: unknown[]) => void
type LevelName = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace'

/** The part of a pino logger a request logger stands in for. */
export interface ParentLogger {
  level: string
  isLevelEnabled (level: string): boolean
  child (bindings: Record<string, unknown>, options?: Record<string, unknown>): ParentLogger
  bindings (): Record<string, unknown>
  fatal: LogFn, error: LogFn, warn: LogFn, info: LogFn, debug: LogFn, trace: LogFn, silent: LogFn
}

/**
 * A child logger that becomes a real pino child (with its bindings, e.g. the request id)
 * only when something is logged at an enabled level. Fastify gives every request a child
 * logger; with redaction on, making one costs about 0.8 µs, on every request, for a
 * logger that at the default level most requests never use. What is logged is the same:
 * the child is made with the same bindings and options on first use, and kept. The root
 * logger (`createRootLogger`) hands out these for every child: requests' and components'.
 */
export class LazyRequestLogger {
  constructor (
    private readonly parent: ParentLogger,
    private readonly childBindings: Record<string, unknown>,
    private readonly childOptions: Record<string, unknown>,
    /** Set for a logger that stands for an existing one (the root), null until first use otherwise. */
    private real: ParentLogger | null = null,
  ) {}

  private materialize (): ParentLogger {
    if (this.real === null) this.real = this.parent.child(this.childBindings, this.childOptions)
    return this.real
  }

  private log (level: LevelName, args: unknown[]): void {
    // A route-level log level (childOptions.level) decides for itself: make the child.
    if (this.real === null && this.childOptions.level === undefined && !this.parent.isLevelEnabled(level)) return
    const real = this.materialize()
    ;(real[level] as LogFn).apply(real, args)
  }

  get level (): string {
    return this.real?.level ?? (this.childOptions.level as string | undefined) ?? this.parent.level
  }

  set level (level: string) {
    this.materialize().level = level
  }

  isLevelEnabled (level: string): boolean {
    return this.real !== null || this.childOptions.level !== undefined ? this.materialize().isLevelEnabled(level) : this.parent.isLevelEnabled(level)
  }

  bindings (): Record<string, unknown> {
    return this.materialize().bindings()
  }

  /** A lazy child in turn: this logger is made real (it is the parent), its child only when used. */
  child (bindings: Record<string, unknown>, options?: Record<string, unknown>): LazyRequestLogger {
    return new LazyRequestLogger(this.materialize(), bindings, options ?? {})
  }

  fatal (...args: unknown[]): void { this.log('fatal', args) }
  error (...args: unknown[]): void { this.log('error', args) }
  warn (...args: unknown[]): void { this.log('warn', args) }
  info (...args: unknown[]): void { this.log('info', args) }
  debug (...args: unknown[]): void { this.log('debug', args) }
  trace (...args: unknown[]): void { this.log('trace', args) }
  silent (): void {}
}

/**
 * The service's root logger, for Fastify's `loggerInstance`: the pino logger itself, whose
 * children (every request's logger, every component's) are lazy. Handing Fastify a logger
 * whose `child` is lazy, rather than a custom `childLoggerFactory`, also spares the check
 * Fastify runs on every request logger a custom factory returns.
 */
export function createRootLogger (
  config: Pick<Config, 'LOG_LEVEL'> & Partial<Pick<Config, 'NODE_ENV'>>,
  stream?: DestinationStream,
  stdout: NodeJS.WritableStream & { isTTY?: boolean, hasColors?: () => boolean } = process.stdout,
): LazyRequestLogger {
  if (stream === undefined && wantsPrettyLogs(config, stdout)) stream = prettyStream(stdout)
  // Another stdout (a test's) is written to as given; the real one through pino's own fd writer.
  else if (stream === undefined && stdout !== process.stdout) stream = stdout as unknown as DestinationStream
  const base = (stream === undefined ? pino(loggerOptions(config)) : pino(loggerOptions(config), stream)) as unknown as ParentLogger
  return new LazyRequestLogger(base, {}, {}, base)
}

type LevelCheck = { isLevelEnabled (level: string): boolean }

/**
 * Fastify's own request lines ("incoming request", "request completed") are at info. When
 * the request's logger would drop them (the level is above info), they are not built at
 * all: each costs an object, a call through the logger and, for the second, the response
 * time, on every request. Errored requests, and every line at an enabled level, are logged
 * exactly as Fastify does.
 */
export class RequestLogController extends LogController {
  override incomingRequest (request: FastifyRequest, reply: FastifyReply, metadata?: Record<string, unknown>): void {
    if ((request.log as unknown as LevelCheck).isLevelEnabled('info')) super.incomingRequest(request, reply, metadata)
  }

  override requestCompleted (error: Error | null | undefined, request: FastifyRequest, reply: FastifyReply, metadata?: Record<string, unknown>): void {
    if (error || (reply.log as unknown as LevelCheck).isLevelEnabled('info')) super.requestCompleted(error, request, reply, metadata)
  }
}
