/**
 * The Redis state machine every concern reads: one ioredis client, its status, and whether
 * the service is using Redis or its in-process fallbacks right now.
 *
 *   disabled    no REDIS_URL: single-instance mode, fallbacks are the real thing
 *   connecting  configured, first connection not yet made
 *   connected   Redis answers; mode "redis"
 *   disconnected configured but unreachable or failing; mode "fallback"
 *
 * The state flips to fallback on the first failed or timed-out command (reported by the
 * callers through `reportFailure`), not only on socket events, because a frozen server keeps
 * its socket open. A background probe flips it back. No caller ever awaits a dead Redis:
 * the offline queue is off and every command has a timeout.
 */
import { EventEmitter } from 'node:events'
import { readFileSync } from 'node:fs'
import { Redis, type RedisOptions } from 'ioredis'
import { redactUrl, urlSecrets } from './redact.js'

export type RedisStatus = 'disabled' | 'connecting' | 'connected' | 'disconnected'
export type RedisMode = 'redis' | 'fallback'

export interface StateLogger {
  info (obj: object, msg: string): void
  warn (obj: object, msg: string): void
  error (obj: object, msg: string): void
  debug (obj: object, msg: string): void
}

export interface RedisStateOptions {
  url?: string | undefined
  keyPrefix?: string
  connectTimeoutMs?: number
  commandTimeoutMs?: number
  maxRetriesPerRequest?: number
  keepAliveMs?: number
  family?: 0 | 4 | 6
  /** Wait for INFO loading:0 before a new connection is used (ioredis enableReadyCheck). */
  readyCheck?: boolean
  /** `start()` dials in the background and returns at once instead of waiting for the connection. */
  lazyConnect?: boolean
  tlsCa?: string | undefined
  tlsRejectUnauthorized?: boolean
  /** PING timeout for health and the probe; kept below the command timeout. */
  pingTimeoutMs?: number
  /** How long a PING result is reused. */
  pingCacheMs?: number
  probeIntervalMs?: number
  /** Upper bound of the reconnect backoff. */
  reconnectCapMs?: number
  log: StateLogger
}

export interface RedisStateSnapshot {
  status: RedisStatus
  mode: RedisMode
  since: string
  activations: number
  lastError: string | null
  url: string | null
}

export const LOG_CONNECTED = '✅ Redis connected successfully'
export const LOG_CONNECTION_FAILED = '❌ Redis connection failed'
export const LOG_OPERATION_FAILED = '⚠️ Redis operation failed, using fallback'

export class RedisState extends EventEmitter {
  readonly client: Redis | null
  readonly url: string | null
  status: RedisStatus
  mode: RedisMode = 'fallback'
  since = new Date()
  activations = 0
  lastError: string | null = null
  /** Commands Redis refused (OOM, WRONGTYPE) while it stayed reachable. */
  commandRefusals = 0

  readonly #opts: Required<Omit<RedisStateOptions, 'url' | 'tlsCa'>>
  readonly #secrets: string[]
  #probeTimer: NodeJS.Timeout | null = null
  #pingInFlight: Promise<number | null> | null = null
  #lastPing: { at: number, ms: number | null } = { at: 0, ms: null }
  #failureLogged = false
  readonly #refusalLoggedAt = new Map<string, number>()
  #closing = false

  constructor (options: RedisStateOptions) {
    super()
    this.#opts = {
      keyPrefix: '',
      connectTimeoutMs: 2000,
      commandTimeoutMs: 500,
      maxRetriesPerRequest: 1,
      keepAliveMs: 30_000,
      family: 4,
      readyCheck: true,
      lazyConnect: false,
      tlsRejectUnauthorized: true,
      pingTimeoutMs: Math.min(250, options.commandTimeoutMs ?? 500),
      pingCacheMs: 1000,
      probeIntervalMs: 1000,
      reconnectCapMs: 1000,
      ...stripUndefined(options),
    } as Required<Omit<RedisStateOptions, 'url' | 'tlsCa'>>
    this.url = options.url ? redactUrl(options.url) : null
    this.#secrets = options.url ? urlSecrets(options.url) : []
    if (!options.url) {
      this.client = null
      this.status = 'disabled'
      return
    }
    this.status = 'connecting'
    this.client = new Redis(options.url, this.#clientOptions(options))
    this.client.on('ready', () => this.#up())
    this.client.on('error', (err: Error) => this.#connectionProblem(err))
    this.client.on('close', () => this.#connectionProblem(new Error('Connection closed')))
  }

  /** True when callers should talk to Redis now. */
  get available (): boolean {
    return this.mode === 'redis'
  }

  /**
   * Starts connecting and waits at most the connect timeout for the first answer, so that
   * a service whose Redis is there starts in redis mode, and one whose Redis is not starts
   * at once in fallback and switches over when Redis arrives. With `lazyConnect` it does
   * not wait at all: the service starts in fallback and switches over on the first answer.
   */
  async start (): Promise<void> {
    const client = this.client
    if (client === null) return
    this.#probeTimer = setInterval(() => { void this.#probe() }, this.#opts.probeIntervalMs)
    this.#probeTimer.unref()
    if (this.#opts.lazyConnect) {
      client.connect().catch(() => {})
      return
    }
    await new Promise<void>((resolve) => {
      const done = (): void => {
        clearTimeout(timer)
        client.off('ready', done)
        client.off('error', done)
        resolve()
      }
      const timer = setTimeout(done, this.#opts.connectTimeoutMs)
      client.once('ready', done)
      client.once('error', done)
      // connect() rejects on the first failure; ioredis keeps reconnecting by itself.
      client.connect().catch(() => {})
    })
  }

  /**
   * A command failed or timed out: use the fallback from now on, until the probe says
   * Redis answers again. Callers report every failure; only a transition is logged.
   */
  reportFailure (err: unknown, operation?: string): void {
    if (this.client === null || this.#closing) return
    const reason = this.describe(err)
    this.lastError = reason
    if (isCommandRefusal(err)) {
      // Redis answered, it just refused this command (OOM under maxmemory, a wrong type):
      // the caller uses its fallback for this call, but Redis stays in use for the rest.
      // Flipping here would make the state flap every probe interval while memory is full.
      this.commandRefusals++
      const kind = reason.split(' ')[0] ?? 'ERR'
      const last = this.#refusalLoggedAt.get(kind) ?? 0
      if (Date.now() - last >= REFUSAL_LOG_INTERVAL_MS) {
        this.#refusalLoggedAt.set(kind, Date.now())
        this.#opts.log.warn({ reason, operation, mode: this.mode }, LOG_OPERATION_FAILED)
      }
      return
    }
    if (this.mode === 'redis') {
      this.#down()
      this.#opts.log.warn({ reason, operation }, LOG_OPERATION_FAILED)
    }
  }

  /**
   * PING round trip in ms (null when Redis does not answer in time), reused for
   * `pingCacheMs` so that a flood of health checks is not a flood of PINGs.
   */
  async ping (fresh = false): Promise<number | null> {
    if (this.client === null) return null
    if (!fresh && Date.now() - this.#lastPing.at < this.#opts.pingCacheMs) return this.#lastPing.ms
    if (this.#pingInFlight !== null) return this.#pingInFlight
    this.#pingInFlight = this.#doPing().finally(() => { this.#pingInFlight = null })
    return this.#pingInFlight
  }

  /** The ms of the last PING without sending one (for hot paths). */
  get lastPingMs (): number | null {
    return this.#lastPing.ms
  }

  snapshot (): RedisStateSnapshot {
    return {
      status: this.status,
      mode: this.mode,
      since: this.since.toISOString(),
      activations: this.activations,
      lastError: this.lastError,
      url: this.url,
    }
  }

  /** An error as a one-line reason with every secret of the URL taken out. */
  describe (err: unknown): string {
    let text: string
    if (err instanceof Error) {
      const code = (err as NodeJS.ErrnoException).code
      text = code && !err.message.includes(code) ? `${code}: ${err.message}` : err.message
    } else {
      text = String(err)
    }
    for (const secret of this.#secrets) text = text.split(secret).join('***')
    return text
  }

  async close (): Promise<void> {
    this.#closing = true
    if (this.#probeTimer) clearInterval(this.#probeTimer)
    this.#probeTimer = null
    const client = this.client
    if (client === null) return
    client.removeAllListeners('ready')
    if (client.status === 'ready') {
      await Promise.race([client.quit().catch(() => {}), sleep(500)])
    }
    client.disconnect(false)
    client.removeAllListeners()
    client.on('error', () => {})
  }

  #clientOptions (options: RedisStateOptions): RedisOptions {
    const o = this.#opts
    const isTls = options.url?.startsWith('rediss://') ?? false
    return {
      // Always: start() dials. REDIS_LAZY_CONNECT (o.lazyConnect) decides whether boot waits.
      lazyConnect: true,
      enableOfflineQueue: false,
      enableReadyCheck: o.readyCheck,
      connectTimeout: o.connectTimeoutMs,
      commandTimeout: o.commandTimeoutMs,
      maxRetriesPerRequest: o.maxRetriesPerRequest,
      keepAlive: o.keepAliveMs,
      family: o.family,
      keyPrefix: o.keyPrefix,
      // Zombie connections (a peer that vanished without a FIN) are dropped and redialled.
      socketTimeout: Math.max(5000, o.commandTimeoutMs * 10),
      retryStrategy: (times: number) => backoff(times, o.reconnectCapMs),
      reconnectOnError: () => false,
      ...(isTls
        ? {
            tls: {
              rejectUnauthorized: o.tlsRejectUnauthorized,
              ...(options.tlsCa ? { ca: readFileSync(options.tlsCa) } : {}),
            },
          }
        : {}),
    }
  }

  async #doPing (): Promise<number | null> {
    const client = this.client
    if (client === null) return null
    const started = performance.now()
    let timer: NodeJS.Timeout | undefined
    try {
      await Promise.race([
        client.ping(),
        new Promise((_resolve, reject) => {
          timer = setTimeout(() => reject(new Error(`PING timed out after ${this.#opts.pingTimeoutMs} ms`)), this.#opts.pingTimeoutMs)
        }),
      ])
      const ms = Math.round((performance.now() - started) * 100) / 100
      this.#lastPing = { at: Date.now(), ms }
      return ms
    } catch (err) {
      this.#lastPing = { at: Date.now(), ms: null }
      this.reportFailure(err, 'ping')
      return null
    } finally {
      clearTimeout(timer)
    }
  }

  /** While in fallback with a socket that looks ready (a frozen server), PING to come back. */
  async #probe (): Promise<void> {
    if (this.mode === 'redis' || this.client?.status !== 'ready' || this.#closing) return
    const ms = await this.ping(true)
    if (ms !== null) this.#up()
  }

  #up (): void {
    if (this.#closing || this.mode === 'redis') return
    this.status = 'connected'
    this.mode = 'redis'
    this.since = new Date()
    this.#failureLogged = false
    this.#lastPing = { at: 0, ms: null }
    this.#opts.log.info({ url: this.url }, LOG_CONNECTED)
    this.emit('up')
  }

  #down (): void {
    this.status = 'disconnected'
    this.mode = 'fallback'
    this.since = new Date()
    this.activations++
    this.#failureLogged = true
    this.#lastPing = { at: Date.now(), ms: null }
    this.emit('down')
  }

  #connectionProblem (err: Error): void {
    if (this.#closing) return
    const reason = this.describe(err)
    // A 'close' after an 'error' would otherwise hide the real reason.
    if (!(reason === 'Connection closed' && this.lastError !== null && this.mode !== 'redis')) this.lastError = reason
    if (this.mode === 'redis') {
      this.#down()
      this.#opts.log.error({ reason: this.lastError }, LOG_CONNECTION_FAILED)
    } else if (!this.#failureLogged) {
      // First failure since boot (still "connecting"): say it once, then stay quiet.
      this.#failureLogged = true
      this.status = 'disconnected'
      this.activations++
      this.since = new Date()
      this.#opts.log.error({ reason: this.lastError }, LOG_CONNECTION_FAILED)
      this.emit('down')
    }
  }
}

/** A refusal is logged at most this often per kind (OOM, WRONGTYPE). */
const REFUSAL_LOG_INTERVAL_MS = 60_000
const REFUSALS = new Set(['OOM', 'WRONGTYPE'])

/** Redis answered with an error reply that concerns this command only. */
export function isCommandRefusal (err: unknown): boolean {
  if (!(err instanceof Error) || err.name !== 'ReplyError') return false
  return REFUSALS.has(err.message.split(' ')[0] ?? '')
}

/** Capped exponential backoff with jitter: 50, 100, 200 … ms up to the cap, each × [0.5, 1). */
export function backoff (times: number, capMs: number): number {
  const base = Math.min(capMs, 50 * 2 ** Math.min(times, 16))
  return Math.max(10, Math.round(base * (0.5 + Math.random() / 2)))
}

function stripUndefined<T extends object> (obj: T): Partial<T> {
  return Object.fromEntries(Object.entries(obj).filter(([, v]) => v !== undefined)) as Partial<T>
}

function sleep (ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref())
}

export function createRedisState (options: RedisStateOptions): RedisState {
  return new RedisState(options)
}
