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
 * its socket open. What a failure does depends on its class (reply-errors.ts): a server-wide
 * one (transport, routing, refused writes, not ready, auth) switches the state; a refusal of
 * one command (a wrong type, a denied or unknown command) makes only that call fall back.
 *
 * The way back is a write probe (`SET <prefix>health:probe:<instance> 1 PX 5000` and its DEL
 * in one MULTI/EXEC, so no key is left behind), on every
 * new connection and every probe interval while in fallback, never a PING: a Redis that
 * answers PING but refuses writes (READONLY replica, MISCONF, OOM, NOPERM on writes) would
 * otherwise be taken back and dropped again on the next write, once a probe interval.
 * No caller ever awaits a dead Redis: the offline queue is off and every command has a timeout.
 */
import { EventEmitter } from 'node:events'
import { readFileSync } from 'node:fs'
import { hostname } from 'node:os'
import { Cluster, Redis, type ClusterOptions, type RedisOptions } from 'ioredis'
import { redactUrl, urlSecrets } from './redact.js'
import { classifyRedisError, commandSlots, isCommandRefusal, type ClassifiedError, type ReplyErrorClass } from './reply-errors.js'
import { keySlot, SLOT_COUNT } from './slots.js'

export { classifyRedisError, isCommandRefusal, type ReplyErrorClass }

export type RedisStatus = 'disabled' | 'connecting' | 'connected' | 'disconnected'
export type RedisMode = 'redis' | 'fallback'

export interface StateLogger {
  info (obj: object, msg: string): void
  warn (obj: object, msg: string): void
  error (obj: object, msg: string): void
  debug (obj: object, msg: string): void
}

/** Where the master is found instead of a fixed URL: Redis Sentinel. */
export interface SentinelOptions {
  sentinels: Array<{ host: string, port: number }>
  /** The master group name (`sentinel monitor <name> …`). */
  name: string
  /** The sentinels' own password (requirepass on the sentinels). */
  sentinelPassword?: string | undefined
  /** The data nodes' password (master and replicas). */
  password?: string | undefined
}

/** A Redis Cluster: seed nodes (the client learns the others) and the nodes' password. */
export interface ClusterSeedOptions {
  nodes: Array<{ host: string, port: number }>
  password?: string | undefined
}

export interface RedisStateOptions {
  url?: string | undefined
  /** Instead of `url`: find the master through these sentinels and follow its failovers. */
  sentinel?: SentinelOptions | undefined
  /** Instead of `url`: a Redis Cluster (an ioredis Cluster client). */
  cluster?: ClusterSeedOptions | undefined
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
  /** Names this instance's write-probe key (`health:probe:<instanceId>`); hostname:pid by default. */
  instanceId?: string
  log: StateLogger
}

/** The last failure seen, for /api/debug/redis: its class, the redacted message, when. */
export interface RedisFailure {
  class: ReplyErrorClass
  message: string
  at: string
}

export interface RedisStateSnapshot {
  status: RedisStatus
  mode: RedisMode
  since: string
  activations: number
  lastError: RedisFailure | null
  url: string | null
  /** With Sentinel: the group, the sentinels and the master this client writes to now (null while not connected). */
  sentinel: { name: string, sentinels: string[], master: string | null } | null
  /** With a cluster: the seed nodes and the masters the client knows now (host:port). */
  cluster: { seeds: string[], masters: string[] } | null
}

export const LOG_CONNECTED = '✅ Redis connected successfully'
export const LOG_CONNECTION_FAILED = '❌ Redis connection failed'
export const LOG_OPERATION_FAILED = '⚠️ Redis operation failed, using fallback'
/** A refusal of one command: that call used its fallback, Redis stays in use. Rate-limited per reason. */
export const LOG_COMMAND_REFUSED = 'Redis refused a command: that call used the fallback, Redis stays in use'
/** While in fallback, each new reason why Redis still cannot be used, once. */
export const LOG_STILL_FAILING = 'Redis still unusable: new reason'

export class RedisState extends EventEmitter {
  /**
   * The client every concern sends commands through. On a cluster it is the ioredis
   * `Cluster` (also `cluster` below), typed as `Redis`: the commands, scripts, MULTI on one
   * slot, pub/sub and `duplicate()` are the same; the difference is that keys of one call
   * must share a slot (slots.ts splits the batches that need it).
   */
  readonly client: Redis | null
  /** The same client when it is a Redis Cluster, null otherwise. */
  readonly cluster: Cluster | null = null
  readonly url: string | null
  status: RedisStatus
  mode: RedisMode = 'fallback'
  since = new Date()
  activations = 0
  /** The last failure's message, redacted (see `lastFailure` for its class and time). */
  lastError: string | null = null
  lastFailure: RedisFailure | null = null
  /** Commands Redis refused (a wrong type, a denied or unknown command) while it stayed in use. */
  commandRefusals = 0
  /** Write probes sent (to come back, or to check writes after a command refusal). */
  writeProbes = 0
  readonly instanceId: string

  /** With Sentinel: the group name and the sentinels as host:port. */
  readonly sentinel: { name: string, sentinels: string[] } | null
  /** Times the client dropped its connection to ask the sentinels for the master again (a READONLY reply). */
  masterLookups = 0
  /** Times a Sentinel connection that had stopped reconnecting (ioredis ended it mid-lookup) was started again. */
  sentinelRestarts = 0

  readonly #opts: Required<Omit<RedisStateOptions, 'url' | 'tlsCa' | 'sentinel' | 'cluster'>>
  readonly #seeds: string[] = []
  /** The write probe's keys on a cluster, one per master, for the masters known when computed. */
  #probeKeys: { masters: string, keys: string[] } = { masters: '', keys: [] }
  readonly #secrets: string[]
  #probeTimer: NodeJS.Timeout | null = null
  #pingInFlight: Promise<number | null> | null = null
  #lastPing: { at: number, ms: number | null } = { at: 0, ms: null }
  #failureLogged = false
  readonly #refusalLog = new Map<string, { at: number, suppressed: number }>()
  /** Reasons already logged during this outage (class/code). */
  readonly #reasonsLogged = new Set<string>()
  #probeInFlight: Promise<unknown> | null = null
  /** The code of the failure that switched to fallback (OOM needs more than one write to come back). */
  #downCode = ''
  #lastWriteCheck = 0
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
      instanceId: `${hostname()}:${process.pid}`,
      ...stripUndefined(options),
    } as Required<Omit<RedisStateOptions, 'url' | 'tlsCa' | 'sentinel' | 'cluster'>>
    this.instanceId = this.#opts.instanceId
    const sentinel = options.sentinel
    this.sentinel = sentinel === undefined
      ? null
      : { name: sentinel.name, sentinels: sentinel.sentinels.map((s) => `${s.host}:${s.port}`) }
    const cluster = options.cluster
    if (cluster !== undefined) this.#seeds = cluster.nodes.map((n) => `${n.host}:${n.port}`)
    this.url = sentinel !== undefined
      ? `sentinel://${this.sentinel!.sentinels.join(',')}/${sentinel.name}`
      : cluster !== undefined
        ? `cluster://${this.#seeds.join(',')}`
        : options.url ? redactUrl(options.url) : null
    this.#secrets = sentinel !== undefined
      ? [sentinel.password, sentinel.sentinelPassword].filter((p): p is string => p !== undefined && p !== '').sort((a, b) => b.length - a.length)
      : cluster !== undefined
        ? (cluster.password !== undefined && cluster.password !== '' ? [cluster.password] : [])
        : options.url ? urlSecrets(options.url) : []
    if (!options.url && sentinel === undefined && cluster === undefined) {
      this.client = null
      this.status = 'disabled'
      return
    }
    this.status = 'connecting'
    if (cluster !== undefined) {
      this.cluster = new Cluster(cluster.nodes.map((n) => ({ host: n.host, port: n.port })), this.#clusterOptions(options, cluster))
      this.client = this.cluster as unknown as Redis
      // A node's own error (a replica down, a master failing over) is not an outage: the
      // commands that needed it fail and are reported, and the write probe decides.
      this.cluster.on('node error', (err: Error, node: string) => { this.#opts.log.debug({ node, reason: this.describe(err) }, 'Redis Cluster node error') })
    } else {
      this.client = sentinel !== undefined
        ? new Redis({ ...this.#clientOptions(options), ...this.#sentinelOptions(sentinel) })
        : new Redis(options.url!, this.#clientOptions(options))
    }
    this.client.on('ready', () => { void this.#verify() })
    this.client.on('error', (err: Error) => this.#connectionProblem(err))
    this.client.on('close', () => this.#connectionProblem(new Error('Connection closed')))
    if (sentinel !== undefined) this.#restartWhenEnded(this.client)
  }

  /**
   * A second connection with the same options (a subscriber), that follows a Sentinel
   * failover as the shared one does (#restartWhenEnded). Null when Redis is not configured.
   */
  duplicate (override?: Partial<RedisOptions>): Redis | null {
    if (this.client === null) return null
    const copy = this.client.duplicate(override)
    if (this.sentinel !== null) this.#restartWhenEnded(copy)
    return copy
  }

  /**
   * ioredis 6.0.0 ends a Sentinel client for good when a `+switch-master` arrives while the
   * client is asking a sentinel for the master (or waiting to ask again): the failover
   * detector stops the connector, the lookup in progress rejects with "Connection is closed",
   * and the client goes to 'end' without the retry strategy being asked. Nothing else ends
   * such a client but its owner's close (the retry strategies always give a delay), and an
   * owner removes the listeners before it closes; so an 'end' heard here, with the listener
   * still on, means: start a fresh lookup after the reconnect backoff.
   * docs/adr/0014-restart-an-ended-sentinel-client.md.
   */
  #restartWhenEnded (client: Redis): void {
    let timer: NodeJS.Timeout | null = null
    let inARow = 0
    const onEnd = (): void => {
      if (this.#closing || timer !== null) return
      timer = setTimeout(() => {
        timer = null
        // Closed meanwhile (by this state or by the connection's owner): leave it closed.
        if (this.#closing || client.status !== 'end' || client.listenerCount('end') === 0) return
        this.sentinelRestarts++
        this.#opts.log.info({ restarts: this.sentinelRestarts }, 'Redis Sentinel client had stopped during a failover; asking the sentinels again')
        client.connect().catch(() => {}) // a failure ends it again, and this runs again
      }, backoff(++inARow, this.#opts.reconnectCapMs))
      timer.unref()
    }
    client.on('end', onEnd)
    client.on('ready', () => { inARow = 0 })
  }

  /** True when the client is a Redis Cluster: keys of one call must share a slot. */
  get isCluster (): boolean {
    return this.cluster !== null
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
    let ticks = 0
    this.#probeTimer = setInterval(() => {
      // A cluster's slot map: every tick while in fallback (a failover to find), every 5th otherwise.
      if (this.cluster !== null && this.cluster.status === 'ready' && (this.mode !== 'redis' || ++ticks % 5 === 0)) this.cluster.refreshSlotsCache()
      void this.#probe()
    }, this.#opts.probeIntervalMs)
    this.#probeTimer.unref()
    if (this.#opts.lazyConnect) {
      client.connect().catch(() => {})
      return
    }
    await new Promise<void>((resolve) => {
      const done = (): void => {
        clearTimeout(timer)
        this.off('up', done)
        this.off('down', done)
        client.off('error', done)
        resolve()
      }
      const timer = setTimeout(done, this.#opts.connectTimeoutMs)
      // 'up' comes after the first write probe on the new connection succeeded.
      this.once('up', done)
      this.once('down', done)
      client.once('error', done)
      // connect() rejects on the first failure; ioredis keeps reconnecting by itself.
      client.connect().catch(() => {})
    })
  }

  /**
   * A command failed or timed out. A server-wide failure (reply-errors.ts) switches to the
   * fallback until a write probe succeeds; only the transition is logged. A refusal of this
   * command alone makes this call fall back and is logged at a bounded rate; it also checks
   * (at most once a probe interval) whether Redis refuses writes in general.
   */
  reportFailure (err: unknown, operation?: string): void {
    if (this.client === null || this.#closing) return
    const c = classifyRedisError(err)
    // "Connection is closed" from a call made while reconnecting is a consequence: keep the cause.
    const reason = this.#hidesReason(c) ? this.describe(err) : this.#record(err, c)
    if (!c.serverWide) {
      this.commandRefusals++
      this.#logRefusal(c, reason, operation, c.code === 'CROSSSLOT' ? commandSlots(err) : undefined)
      if (this.mode === 'redis') void this.#checkWrites()
      return
    }
    if (this.mode === 'redis') {
      this.#down(c.code)
      this.#reasonsLogged.add(reasonKey(c))
      this.#opts.log.warn({ class: c.class, reason, operation }, LOG_OPERATION_FAILED)
    } else if (this.#failureLogged && !this.#hidesReason(c)) {
      this.#newReason(c, reason)
    }
  }

  #hidesReason (c: ClassifiedError): boolean {
    return c.code === 'connection closed' && this.lastFailure !== null && this.mode !== 'redis'
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
      lastError: this.lastFailure === null ? null : { ...this.lastFailure },
      url: this.url,
      sentinel: this.sentinel === null ? null : { ...this.sentinel, master: this.masterAddress },
      cluster: this.cluster === null ? null : { seeds: [...this.#seeds], masters: this.clusterMasters() },
    }
  }

  /** On a cluster: the masters the client knows now, host:port, sorted; [] otherwise. */
  clusterMasters (): string[] {
    const slots = this.cluster?.slots ?? []
    const masters = new Set<string>()
    for (const owners of slots) if (owners?.[0] !== undefined) masters.add(owners[0])
    return [...masters].sort()
  }

  /**
   * The address of the server this client talks to now (host:port of the socket), null while
   * not connected. With Sentinel it is the master the sentinels named at the last (re)connection.
   */
  get masterAddress (): string | null {
    const client = this.client
    if (client === null || client.status !== 'ready' || this.cluster !== null) return null
    const stream = (client as unknown as { stream?: { remoteAddress?: string, remotePort?: number } }).stream
    if (stream?.remoteAddress === undefined || stream.remotePort === undefined) return null
    return `${stream.remoteAddress}:${stream.remotePort}`
  }

  /** An error as a one-line reason with every secret of the URL taken out. */
  describe (err: unknown): string {
    let text: string
    if (err instanceof Error) {
      const code = (err as NodeJS.ErrnoException).code
      text = code && !err.message.includes(code) ? `${code}: ${err.message}` : err.message
      // EXECABORT says only "previous errors": name the first one, which is the reason.
      const previous = (err as Error & { previousErrors?: unknown[] }).previousErrors?.[0]
      if (previous instanceof Error) text = `${text} (${previous.message})`
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

  /**
   * Sentinel: the master is asked of the sentinels at every (re)connection, and the ready
   * check refuses a node whose role is not master (a stale answer during a failover), so the
   * client tries again instead of writing to a replica. Two things make it reconnect:
   *  - the sentinels' `+switch-master` (ioredis `failoverDetector`: a subscription on each
   *    sentinel), at the moment of the switch;
   *  - a `READONLY` reply, which means the node this socket reaches was demoted (a switch
   *    missed, a partition): `reconnectOnError` returns 1, reconnect and fail this command.
   *    Not 2 (resend after the reconnect): the offline queue is off, so a resent command
   *    would fail anyway, later and with a less useful reason. The caller uses its fallback,
   *    the state switches once, and the write probe on the new connection switches it back.
   * Duplicates of the client (the cache's subscriber) copy these options and follow too.
   */
  #sentinelOptions (sentinel: SentinelOptions): RedisOptions {
    const o = this.#opts
    return {
      sentinels: sentinel.sentinels.map((s) => ({ host: s.host, port: s.port })),
      name: sentinel.name,
      role: 'master',
      ...(sentinel.sentinelPassword !== undefined ? { sentinelPassword: sentinel.sentinelPassword } : {}),
      ...(sentinel.password !== undefined ? { password: sentinel.password } : {}),
      // Every sentinel unreachable: ask them all again after this long (the same backoff as a reconnect).
      sentinelRetryStrategy: (times: number) => backoff(times, o.reconnectCapMs),
      sentinelCommandTimeout: o.connectTimeoutMs,
      failoverDetector: true,
      reconnectOnError: (err: Error) => {
        if (!/^READONLY/.test(err.message)) return false
        this.masterLookups++
        return 1
      },
    }
  }

  /**
   * Redis Cluster: the same timeouts and no offline queue, for every node's connection.
   * The client follows MOVED and ASK itself (up to 16 redirections), refreshes its slot map
   * on a node's failure and from the probe timer, and only ever sends to masters. A command caught in
   * a failover (its node gone, CLUSTERDOWN, TRYAGAIN) is retried by ioredis after a short
   * delay and otherwise fails to its caller, who uses the fallback.
   */
  #clusterOptions (options: RedisStateOptions, cluster: ClusterSeedOptions): ClusterOptions {
    const node = this.#clientOptions(options)
    const o = this.#opts
    return {
      lazyConnect: true,
      enableOfflineQueue: false,
      enableReadyCheck: o.readyCheck,
      keyPrefix: o.keyPrefix,
      scaleReads: 'master',
      maxRedirections: 16,
      retryDelayOnFailover: 100,
      retryDelayOnClusterDown: 100,
      retryDelayOnTryAgain: 100,
      slotsRefreshTimeout: o.connectTimeoutMs,
      // Not ioredis's own periodic refresh: its timer can re-arm after disconnect() (a refresh
      // in flight at close), which keeps the process alive. The probe timer refreshes instead.
      clusterRetryStrategy: (times: number) => backoff(times, o.reconnectCapMs),
      redisOptions: {
        connectTimeout: node.connectTimeout,
        commandTimeout: node.commandTimeout,
        maxRetriesPerRequest: node.maxRetriesPerRequest,
        keepAlive: node.keepAlive,
        family: node.family,
        socketTimeout: node.socketTimeout,
        enableReadyCheck: o.readyCheck,
        reconnectOnError: () => false,
        ...(cluster.password !== undefined ? { password: cluster.password } : {}),
      },
    }
  }

  /**
   * The write probe's keys: on one server `health:probe:<instance>`; on a cluster one key
   * per master, `health:probe:<instance>:{<n>}` with the smallest n whose hash tag lands on
   * that master, so that a master down (or refusing writes) keeps the service in fallback
   * until the cluster has replaced it, instead of coming back on another master's answer.
   */
  #writeProbeKeys (): string[] {
    const base = `health:probe:${this.instanceId}`
    const slots = this.cluster?.slots
    if (slots === undefined) return [base]
    const masters = this.clusterMasters()
    const signature = masters.join(',')
    if (this.#probeKeys.masters === signature && this.#probeKeys.keys.length > 0) return this.#probeKeys.keys
    const found = new Map<string, string>()
    for (let n = 0; n < SLOT_COUNT * 4 && found.size < masters.length; n++) {
      const key = `${base}:{${n}}`
      const owner = slots[keySlot(this.#opts.keyPrefix + key)]?.[0]
      if (owner !== undefined && !found.has(owner)) found.set(owner, key)
    }
    const keys = found.size > 0 ? [...found.values()] : [base]
    this.#probeKeys = { masters: signature, keys }
    return keys
  }

  async #doPing (): Promise<number | null> {
    const client = this.client
    if (client === null) return null
    if (client.status !== 'ready') {
      // Reconnecting: nothing to measure, and the reason is already known.
      this.#lastPing = { at: Date.now(), ms: null }
      return null
    }
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

  /**
   * `MULTI; SET health:probe:<instance> 1 PX 5000; DEL …; EXEC` (REDIS_KEY_PREFIX applies):
   * the one question that tells a usable Redis from one that answers but refuses writes.
   * Resolves null on success, else the error.
   */
  async #writeProbe (): Promise<unknown> {
    const client = this.client
    if (client === null) return new Error('Redis is not configured')
    this.writeProbes++
    let timer: NodeJS.Timeout | undefined
    try {
      await Promise.race([
        // SET then DEL in one transaction: a real write, nothing left behind (a refused SET
        // fails the whole EXEC with EXECABORT and its cause, which the classifier reads).
        // On a cluster, one per master, all at once: every master must take writes.
        Promise.all(this.#writeProbeKeys().map((key) => client.multi().set(key, '1', 'PX', 5000).del(key).exec())),
        new Promise((_resolve, reject) => {
          timer = setTimeout(() => reject(new Error(`write probe timed out after ${this.#opts.commandTimeoutMs} ms`)), this.#opts.commandTimeoutMs)
        }),
      ])
      return null
    } catch (err) {
      return err
    } finally {
      clearTimeout(timer)
    }
  }

  /** A new connection is ready: use it once a write went through, else say why not. */
  async #verify (): Promise<void> {
    if (this.#closing || this.mode === 'redis') return
    const err = await this.#probeOnce()
    if (this.#settled()) return
    if (err === null) this.#up()
    else this.#connectionProblem(err)
  }

  /** While in fallback with a socket that looks ready (a frozen or refusing server), probe to come back. */
  async #probe (): Promise<void> {
    if (this.mode === 'redis' || this.client?.status !== 'ready' || this.#closing) return
    const err = await this.#probeOnce()
    if (this.#settled()) return
    if (err === null) this.#up()
    else this.#connectionProblem(err)
  }

  /** Closing, or already back (the state may change while a probe is out). */
  #settled (): boolean {
    return this.#closing || this.mode === 'redis'
  }

  /** One write probe at a time, shared by whoever asks meanwhile. */
  #probeOnce (): Promise<unknown> {
    if (this.#probeInFlight === null) {
      this.#probeInFlight = this.#writeProbe()
        .then((err) => err === null && this.mode !== 'redis' && this.#downCode.includes('OOM') ? this.#memoryHeadroom() : err)
        .finally(() => { this.#probeInFlight = null })
    }
    return this.#probeInFlight
  }

  /**
   * After an OOM under `noeviction`: a small probe write can pass while the writes that
   * failed (a large value, a transaction) still fail, so coming back on the probe alone
   * would flap once per such write. Back only when used_memory is under 90 % of maxmemory.
   */
  async #memoryHeadroom (): Promise<unknown> {
    try {
      const info = await this.client!.info('memory')
      const field = (name: string): string => new RegExp(`^${name}:(.*)$`, 'm').exec(info)?.[1]?.trim() ?? ''
      const max = Number(field('maxmemory'))
      const used = Number(field('used_memory'))
      if (field('maxmemory_policy') !== 'noeviction' || !(max > 0) || used <= max * 0.9) return null
      const err = new Error(`OOM used_memory ${used} is over 90 % of maxmemory ${max}: writes still refused`)
      Object.defineProperty(err, 'name', { value: 'ReplyError' })
      return err
    } catch {
      return null // INFO denied or failed: the write probe's answer stands
    }
  }

  /** After a command refusal: does Redis refuse writes in general (NOPERM on writes, an EXECABORT hiding an OOM)? */
  async #checkWrites (): Promise<void> {
    if (Date.now() - this.#lastWriteCheck < this.#opts.probeIntervalMs) return
    this.#lastWriteCheck = Date.now()
    const err = await this.#probeOnce()
    if (err === null || this.mode !== 'redis' || this.#closing) return
    const c = classifyRedisError(err)
    if (c.class === 'command') {
      // The probe's SET itself was refused (an ACL without write rights): every write is.
      const reason = this.#record(err, c)
      this.#down()
      this.#reasonsLogged.add(reasonKey(c))
      this.#opts.log.warn({ class: c.class, reason, operation: 'write probe' }, LOG_OPERATION_FAILED)
    } else {
      this.reportFailure(err, 'write probe')
    }
  }

  #record (err: unknown, c: ClassifiedError): string {
    const reason = this.describe(err)
    this.lastError = reason
    this.lastFailure = { class: c.class, message: reason, at: new Date().toISOString() }
    return reason
  }

  /** At most one line per reason per REFUSAL_LOG_INTERVAL_MS, with the count of the ones not logged. */
  #logRefusal (c: ClassifiedError, reason: string, operation: string | undefined, keys?: Array<{ key: string, slot: number }>): void {
    const key = reasonKey(c)
    const now = Date.now()
    const entry = this.#refusalLog.get(key)
    if (entry !== undefined && now - entry.at < REFUSAL_LOG_INTERVAL_MS) {
      entry.suppressed++
      return
    }
    this.#refusalLog.set(key, { at: now, suppressed: 0 })
    this.#opts.log.warn({ class: c.class, reason, operation, mode: this.mode, suppressed: entry?.suppressed ?? 0, ...(keys !== undefined ? { keys } : {}) }, LOG_COMMAND_REFUSED)
  }

  /** While in fallback: a reason not seen during this outage is logged once. */
  #newReason (c: ClassifiedError, reason: string): void {
    const key = reasonKey(c)
    if (this.#reasonsLogged.has(key)) return
    this.#reasonsLogged.add(key)
    this.#opts.log.warn({ class: c.class, reason }, LOG_STILL_FAILING)
  }

  #up (): void {
    if (this.#closing || this.mode === 'redis') return
    this.status = 'connected'
    this.mode = 'redis'
    this.since = new Date()
    this.#failureLogged = false
    this.#reasonsLogged.clear()
    this.#lastPing = { at: 0, ms: null }
    this.#opts.log.info(this.sentinel !== null
      ? { url: this.url, master: this.masterAddress }
      : this.cluster !== null ? { url: this.url, masters: this.clusterMasters() } : { url: this.url }, LOG_CONNECTED)
    this.emit('up')
  }

  #down (code = ''): void {
    this.#downCode = code
    this.status = 'disconnected'
    this.mode = 'fallback'
    this.since = new Date()
    this.activations++
    this.#failureLogged = true
    this.#lastPing = { at: Date.now(), ms: null }
    this.emit('down')
  }

  #connectionProblem (err: unknown): void {
    if (this.#closing) return
    const c = classifyRedisError(err)
    const reason = this.describe(err)
    // A 'close' after an 'error' would otherwise hide the real reason.
    const hidesReason = this.#hidesReason(c)
    if (!hidesReason) this.#record(err, c)
    if (this.mode === 'redis') {
      this.#down()
      this.#reasonsLogged.add(reasonKey(c))
      this.#opts.log.error({ class: c.class, reason: this.lastError }, LOG_CONNECTION_FAILED)
    } else if (!this.#failureLogged) {
      // First failure since boot (still "connecting"): say it once, then only new reasons.
      this.#failureLogged = true
      this.status = 'disconnected'
      this.activations++
      this.since = new Date()
      this.#reasonsLogged.add(reasonKey(c))
      this.#opts.log.error({ class: c.class, reason: this.lastError }, LOG_CONNECTION_FAILED)
      this.emit('down')
    } else if (!hidesReason) {
      this.#newReason(c, reason)
    }
  }
}

function reasonKey (c: ClassifiedError): string {
  return `${c.class}/${c.code}`
}

/** A refusal of one command is logged at most this often per reason (WRONGTYPE, unknown command 'X'). */
export const REFUSAL_LOG_INTERVAL_MS = 60_000

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
