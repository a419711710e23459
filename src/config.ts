/**
 * The service's whole configuration: one TypeBox schema over environment variables.
 * The `Config` type is derived from the schema, and `.env.example` lists the same names
 * (a test keeps the two in step). Empty strings count as unset so that a `.env` line
 * like `REDIS_URL=` means "no Redis", not "an invalid URL".
 */
import { existsSync } from 'node:fs'
import { Type, type Static, type TSchema } from 'typebox'
import { Value } from 'typebox/value'
import { trustProxyProblem } from './rate-limit/trust-proxy.js'
import { corsOriginsProblem } from './cors-origins.js'
import { isTimeZone, marketWindowProblem } from './scheduler/market-hours.js'
import { redactUrl } from './engines/redis/redact.js'

// Kept importable from here (tests and older call sites); the code lives with the Redis engine.
export { redactUrl, urlSecrets } from './engines/redis/redact.js'

const Int = (def: number, min = 0, max = Number.MAX_SAFE_INTEGER, description?: string) =>
  Type.Integer({ default: def, minimum: min, maximum: max, ...(description ? { description } : {}) })
const Bool = (def: boolean) => Type.Boolean({ default: def })
const OneOf = <const T extends string[]>(values: readonly [...T], def: T[number]) =>
  Type.Enum<T>(values, { default: def })
const Opt = <T extends TSchema>(schema: T) => Type.Optional(schema)

/** Attaches the text the docs are generated from, and an example for a variable with no default. */
function doc<T extends TSchema> (schema: T, description: string, example?: string): T {
  return Object.assign(schema, example === undefined ? { description } : { description, examples: [example] })
}

/** The variables by section, in the order the docs list them. */
const SECTIONS = {
  'process': {
    NODE_ENV: doc(OneOf(['development', 'production', 'test'] as const, 'development'),
      'production refuses unsafe defaults (a missing JWT_SECRET); otherwise informational.'),
    HOST: doc(Type.String({ default: '0.0.0.0', minLength: 1 }),
      'Address to listen on (0.0.0.0: every interface, as a container needs).'),
    PORT: doc(Int(3000, 0, 65535),
      'TCP port to listen on (0: a free port).'),
    LOG_LEVEL: doc(OneOf(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const, 'info'),
      'The lowest level written to the log (silent: nothing).'),
    BODY_LIMIT_BYTES: doc(Int(1_048_576, 1024, 100 * 1_048_576),
      'Largest accepted request body in bytes (larger: 413).'),
    SHUTDOWN_TIMEOUT_MS: doc(Int(10_000, 100, 60_000),
      'On SIGTERM/SIGINT: how long in-flight requests may take before the process exits anyway.'),
    SHUTDOWN_DELAY_MS: doc(Int(1000, 0, 60_000),
      'After the signal, keep accepting connections this long (readiness answers 503) so load balancers stop sending traffic before the port closes. Counts within SHUTDOWN_TIMEOUT_MS.'),
    HTTP_REQUEST_TIMEOUT_MS: doc(Int(30_000, 100, 600_000),
      'Longest time to receive a whole request, headers and body; past it the answer is 408 and the connection closes (a declared body that never arrives no longer holds a connection).'),
    HTTP_HEADERS_TIMEOUT_MS: doc(Int(10_000, 100, 600_000),
      'Longest time to receive the request headers (at most HTTP_REQUEST_TIMEOUT_MS).'),
    HTTP_KEEP_ALIVE_TIMEOUT_MS: doc(Int(72_000, 1000, 3_600_000),
      'How long an idle keep-alive connection is kept open. Keep it above the idle timeout of the load balancer in front (60 s on AWS ALB and nginx), so the balancer closes first.'),
  },
  'redis (connection and fallback state)': {
    REDIS_URL: doc(Opt(Type.String({ pattern: '^rediss?://' })),
      'Unset: single-instance mode, every concern uses its in-process fallback. Forms: redis://host:6379, redis://:password@host:6379/0, redis://user:password@host:6379, rediss://host:6380 (TLS).', 'redis://127.0.0.1:6379'),
    REDIS_SENTINELS: doc(Opt(Type.String({ pattern: '^[^\\s,:]+:[0-9]{1,5}(\\s*,\\s*[^\\s,:]+:[0-9]{1,5})*$' })),
      'Redis Sentinel instead of REDIS_URL: the sentinels as comma-separated host:port (3 or more, on separate machines). The client asks them for the current master of REDIS_SENTINEL_NAME, follows a failover (a READONLY reply or the sentinels\' +switch-master makes it ask again), and never writes to a replica. Not together with REDIS_URL (docs/redis-topologies.md).', 'sentinel-a:26379,sentinel-b:26379,sentinel-c:26379'),
    REDIS_SENTINEL_NAME: doc(Opt(Type.String({ pattern: '^[A-Za-z0-9._\\-]{1,128}$' })),
      'With REDIS_SENTINELS: the master group name the sentinels monitor (`sentinel monitor <name> …`).', 'mymaster'),
    REDIS_SENTINEL_PASSWORD: doc(Opt(Type.String({ minLength: 1 })),
      'With REDIS_SENTINELS: the sentinels\' own password (their requirepass), if they have one. Never logged.'),
    REDIS_CLUSTER_NODES: doc(Opt(Type.String({ pattern: '^[^\\s,:]+:[0-9]{1,5}(\\s*,\\s*[^\\s,:]+:[0-9]{1,5})*$' })),
      'Redis Cluster instead of REDIS_URL: seed nodes as comma-separated host:port (any few nodes of the cluster; the client learns the rest and follows MOVED, ASK and failovers). Not together with REDIS_URL or REDIS_SENTINELS (docs/redis-topologies.md).', 'redis-a:6379,redis-b:6379,redis-c:6379'),
    REDIS_PASSWORD: doc(Opt(Type.String({ minLength: 1 })),
      'With REDIS_SENTINELS or REDIS_CLUSTER_NODES: the password of the data nodes (master and replicas; their requirepass / masterauth). With REDIS_URL, put the password in the URL instead. Never logged.'),
    REDIS_KEY_PREFIX: doc(Type.String({ default: '', pattern: '^[A-Za-z0-9:_.\\-]*$' }),
      'Prepended to every key (default empty, so keys read exactly as in the guide: stock:AAPL).'),
    REDIS_CONNECT_TIMEOUT_MS: doc(Int(2000, 50, 60_000),
      'How long boot and each (re)connection attempt wait for Redis.'),
    REDIS_COMMAND_TIMEOUT_MS: doc(Int(500, 10, 60_000),
      'A command slower than this fails and the service switches to its fallback at once.'),
    REDIS_MAX_RETRIES_PER_REQUEST: doc(Int(1, 0, 10),
      'Retries of one command across a reconnect before it fails.'),
    REDIS_KEEPALIVE_MS: doc(Int(30_000, 0, 3_600_000),
      'TCP keep-alive initial delay for the Redis socket (0 disables).'),
    REDIS_FAMILY: doc(Type.Union([Type.Literal(4), Type.Literal(6), Type.Literal(0)], { default: 4 }),
      'Address family for the Redis host lookup: 4, 6 or 0 (both).'),
    REDIS_READY_CHECK: doc(Bool(true),
      'Wait for Redis to finish loading its data (INFO loading:0) before using a new connection.'),
    REDIS_LAZY_CONNECT: doc(Bool(false),
      'true: boot never waits for Redis; it is dialled in the background and requests use the fallback until it answers. false: boot waits up to REDIS_CONNECT_TIMEOUT_MS for it.'),
    REDIS_TLS_CA: doc(Opt(Type.String({ minLength: 1 })),
      'For rediss://: a PEM file with the CA that signed the server certificate.', '/etc/ssl/redis-ca.pem'),
    REDIS_TLS_REJECT_UNAUTHORIZED: doc(Bool(true),
      'For rediss://: verify the server certificate (keep true outside tests).'),
    FALLBACK_MAX_ENTRIES: doc(Int(50_000, 100, 10_000_000),
      'Most entries the in-process fallback store holds (sessions, counters, locks while Redis is away); least recently used go first.'),
    FALLBACK_MAX_BYTES: doc(Int(64 * 1_048_576, 65_536, 4096 * 1_048_576),
      'Most bytes (an estimate) the in-process fallback store holds.'),
  },
  'identity and sessions': {
    DATABASE_PATH: doc(Type.String({ default: './data/ai-capital.db', minLength: 1 }),
      'The primary store (users): an SQLite file, created with its directory; migrations run at boot.'),
    DATABASE_URL: doc(Opt(Type.String({
      pattern: '^(sqlite:|postgres(ql)?://)',
      description: 'Unset or sqlite:<path>: the embedded SQLite file (DATABASE_PATH when no path is given). postgres://user:password@host:5432/db: PostgreSQL, shared by several instances.',
    })),
      'Unset or sqlite:<path>: the embedded SQLite file (DATABASE_PATH when no path is given). postgres://user:password@host:5432/db: PostgreSQL, shared by several instances (docs/database.md).', 'postgres://aic:secret@127.0.0.1:5432/aic'),
    DATABASE_POOL_MAX: doc(Int(10, 1, 1000, 'PostgreSQL: connections per instance.'),
      'PostgreSQL: connections per instance.'),
    DATABASE_CONNECT_TIMEOUT_MS: doc(Int(2000, 50, 60_000, 'PostgreSQL: how long opening a connection may take before the request fails (503).'),
      'PostgreSQL: how long opening a connection may take before the request fails (503).'),
    DATABASE_STATEMENT_TIMEOUT_MS: doc(Int(5000, 50, 600_000, 'PostgreSQL: statement_timeout on the server; the client stops waiting a second later (a frozen server), and the request fails (503).'),
      'PostgreSQL: statement_timeout on the server; the client stops waiting a second later.'),
    JWT_SECRET: doc(Opt(Type.String({ minLength: 32 })),
      'HS256 signing secret, at least 32 characters (e.g. `openssl rand -base64 48`). Unset in development: a secret kept in jwt-secret beside the database (./data/jwt-secret, mode 0600), shared by the server and the CLI, with a warning. Unset with NODE_ENV=test: a random per-process secret. Unset in production: boot fails.'),
    JWT_ISSUER: doc(Type.String({ default: 'ai-capital-api', minLength: 1 }),
      'Issuer written into every token and required on every token received.'),
    JWT_AUDIENCE: doc(Type.String({ default: 'ai-capital', minLength: 1 }),
      'Audience written into every token and required on every token received.'),
    JWT_EXPIRES_IN: doc(Type.String({ default: '15m', pattern: '^[0-9]{1,6}(s|m|h|d)?$' }),
      'Token lifetime: 900 (seconds), 900s, 15m, 1h … between 10s and 24h.'),
    SESSION_TTL_SECONDS: doc(Int(3600, 60, 30 * 86_400),
      'Life of session:<id> in Redis, extended on use (at most once a minute).'),
    SESSION_FALLBACK: doc(OneOf(['allow', 'deny'] as const, 'allow'),
      'While Redis is unreachable: allow (accept validly signed, unexpired tokens whose session cannot be checked; a logout elsewhere may be missed until Redis returns) or deny (refuse them: 401).'),
    ADMIN_EMAIL: doc(Opt(Type.String({ minLength: 3, maxLength: 254 })),
      'With ADMIN_PASSWORD: at boot, create this admin or promote the user and set the password. (Or: npm run -s cli -- create-admin <email>, password on stdin; in a deployed build node dist/src/cli.js create-admin <email>.)'),
    ADMIN_PASSWORD: doc(Opt(Type.String({ minLength: 8, maxLength: 128 })),
      'With ADMIN_EMAIL: the admin password set at boot (8 to 128 characters).'),
  },
  'rate limiting': {
    RATE_LIMIT_MAX: doc(Int(300, 1, 1_000_000_000),
      'Requests per client per window on every route except /api/health, /api/health/live, /api/health/ready and /metrics. A client is the user of a valid bearer token, otherwise the address (IPv6 grouped by /64).'),
    RATE_LIMIT_WINDOW_MS: doc(Int(60_000, 100, 86_400_000),
      'Window length in milliseconds (also used for the admin limit).'),
    LOGIN_RATE_LIMIT_MAX: doc(Int(5, 1, 1_000_000),
      'Failed login attempts per address + email per window (an attempt counts when it arrives; a successful login resets the count).'),
    LOGIN_RATE_LIMIT_WINDOW_MS: doc(Int(900_000, 100, 86_400_000),
      'Window of LOGIN_RATE_LIMIT_MAX, in milliseconds.'),
    LOGIN_EMAIL_RATE_LIMIT_MAX: doc(Int(20, 1, 1_000_000),
      'Failed login attempts per email from all addresses together per window (stops a distributed guess; a successful login resets the count).'),
    LOGIN_EMAIL_RATE_LIMIT_WINDOW_MS: doc(Int(3_600_000, 100, 86_400_000),
      'Window of LOGIN_EMAIL_RATE_LIMIT_MAX, in milliseconds.'),
    REGISTER_RATE_LIMIT_MAX: doc(Int(10, 1, 1_000_000),
      'Registration attempts per address per window (every attempt counts: bounds bulk sign-ups and probing which emails have accounts).'),
    REGISTER_RATE_LIMIT_WINDOW_MS: doc(Int(3_600_000, 100, 86_400_000),
      'Window of REGISTER_RATE_LIMIT_MAX, in milliseconds.'),
    ADMIN_RATE_LIMIT_MAX: doc(Int(60, 1, 1_000_000_000),
      'Requests per client per window on admin routes (/api/debug/*), instead of the global limit.'),
    RATE_LIMIT_STORE: doc(OneOf(['counter', 'memory'] as const, 'counter'),
      'Where the limiter counts. counter: in Redis (shared by every instance), in process while Redis is away. memory: @fastify/rate-limit\'s own in-process store, each instance alone, nothing in Redis (for comparison and benchmarks; the login limits still use the counter).'),
    TRUST_PROXY: doc(Opt(Type.Refine(Type.String(), (v) => trustProxyProblem(v) === null, (v) => trustProxyProblem(v) ?? 'is invalid')),
      'Proxies allowed to set X-Forwarded-For: comma-separated addresses or CIDRs (or loopback, linklocal, uniquelocal). Unset: the socket address is the client. Never "true".', '10.0.0.0/8'),
  },
  'cache and quotes': {
    QUOTE_PROVIDER: doc(OneOf(['simulated', 'finnhub'] as const, 'simulated'),
      'Where quotes come from: simulated (default; synthetic, deterministic from ticker and time, labelled source "simulated") or finnhub (real quotes; needs FINNHUB_API_KEY).'),
    FINNHUB_API_KEY: doc(Opt(Type.String({ minLength: 1 })),
      'Finnhub API key (sent in the X-Finnhub-Token header, never in a URL or a log).'),
    FINNHUB_BASE_URL: doc(Type.String({ default: 'https://finnhub.io/api/v1', pattern: '^https?://[^\\s]+$' }),
      'Base URL of the Finnhub API (a test double can stand here).'),
    FINNHUB_TIMEOUT_MS: doc(Int(3000, 50, 60_000),
      'Timeout of one Finnhub request, in milliseconds.'),
    FINNHUB_RETRIES: doc(Int(1, 0, 5),
      'How many times a failed Finnhub request (network, timeout, 429, 5xx) is tried again.'),
    FINNHUB_BREAKER_THRESHOLD: doc(Int(5, 1, 1000),
      'Circuit breaker: after this many failed calls in a row Finnhub is not called for FINNHUB_BREAKER_COOLDOWN_MS (requests fail fast with 503, or get a stale quote), then one trial call.'),
    FINNHUB_BREAKER_COOLDOWN_MS: doc(Int(10_000, 100, 600_000),
      'How long the circuit breaker stays open before one trial call, in milliseconds.'),
    QUOTE_TTL_SECONDS: doc(Int(20, 1, 86_400),
      'How long a quote is fresh (stock:<TICKER> in Redis has this TTL).'),
    QUOTE_GRACE_SECONDS: doc(Int(300, 0, 86_400),
      'How long an expired quote is kept to be served (X-Cache: STALE) when the provider fails.'),
    QUOTE_SOFT_TIMEOUT_MS: doc(Int(1000, 0, 60_000),
      'With a stale quote at hand, wait at most this long for the provider, then serve the stale one while the load finishes in the background (0: always wait).'),
    QUOTE_BATCH_CONCURRENCY: doc(Int(8, 1, 50),
      'Provider calls at once for the misses of one batch request (GET /api/stocks?tickers=…).'),
    CACHE_L1_ENABLED: doc(Bool(true),
      'The in-process cache (L1) in front of Redis (L2): on or off.'),
    CACHE_L1_MAX_ENTRIES: doc(Int(10_000, 1, 10_000_000),
      'Most entries L1 holds (least recently used go first).'),
    CACHE_L1_MAX_BYTES: doc(Int(32 * 1_048_576, 65_536, 4096 * 1_048_576),
      'Most bytes L1 holds (an estimate of the entries memory).'),
    CACHE_LOCK_TTL_MS: doc(Int(3000, 100, 60_000),
      'Life of the fill placeholder a cold key\'s value key holds while one instance loads it and the others wait (renewed while the load runs, so a crashed instance holds the key no longer than this); also the life of the refresh lock of an early refresh.'),
    CACHE_LOADER_TIMEOUT_MS: doc(Int(10_000, 100, 120_000),
      'A load slower than this is abandoned (504 unless a stale value can be served); also the longest any request waits for another instance\'s load.'),
    CACHE_FAILURE_TTL_MS: doc(Int(3000, 0, 60_000, 'How long an upstream failure (5xx or timeout) is remembered, here and for the other instances: the stale value (or the error) is answered meanwhile without calling the upstream again. 0: not remembered.'),
      'How long an upstream failure (5xx or timeout) is remembered, here and for the other instances: the stale value (or the error) is answered meanwhile without calling the upstream again. 0: not remembered.'),
  },
  'locks and jobs': {
    REDLOCK_URLS: doc(Opt(Type.String({ pattern: '^rediss?://[^,\\s]+(\\s*,\\s*rediss?://[^,\\s]+)*$' })),
      'Redlock masters: comma-separated URLs of independent Redis servers (not replicas of each other; use 3 or 5). A lock needs a majority of them; with fewer reachable, writes answer 503 and jobs skip. Unset: the main REDIS_URL is the only master, and while it is down HTTP writes use an in-process lock (the store\'s version check guards across instances).', 'redis://redis-a:6379,redis://redis-b:6379,redis://redis-c:6379'),
    LOCK_WAIT_MS: doc(Int(2000, 0, 60_000),
      'Longest a request waits for a busy lock before a retryable 409 (with Retry-After).'),
    LOCK_RETRY_DELAY_MS: doc(Int(50, 5, 5000),
      'Pause between two tries of a busy lock (each pause is randomised by ±50%).'),
    SCHEDULER_ENABLED: doc(Bool(true),
      'Run scheduled jobs on this instance (each tick still runs on one instance only; while a configured Redis is down, ticks are skipped).'),
    SCHEDULER_TZ: doc(Type.Refine(Type.String({ default: 'UTC' }), (v) => isTimeZone(v), () => 'is not a time zone (an IANA name such as America/New_York or UTC)'),
      'IANA time zone in which cron expressions (PORTFOLIO_SNAPSHOT_CRON) and market hours (QUOTES_PREWARM_HOURS) are read, daylight-saving switches included (e.g. America/New_York).'),
  },
  'portfolio': {
    PORTFOLIO_TTL_SECONDS: doc(Int(300, 1, 86_400),
      'How long GET /api/portfolio is cached (portfolio:<userId>, priced with the cached quotes). Every write drops it on every instance, and a read checks the portfolio\'s version in the primary store, so a cached copy is never older than the last committed write.'),
    PORTFOLIO_LOCK_TTL_MS: doc(Int(30_000, 100, 600_000),
      'Life of lock:portfolio:<userId>, taken by every write (extended while the write runs).'),
    IDEMPOTENCY_TTL_SECONDS: doc(Int(86_400, 60, 30 * 86_400),
      'How long an Idempotency-Key is remembered (in the primary store): a retry with the same key and body gets the first response without a second effect; a different body gets 422.'),
    IDEMPOTENCY_PURGE_INTERVAL_MS: doc(Int(600_000, 1000, 86_400_000),
      'How often each instance deletes the idempotency records past their TTL (no lock: deleting twice is harmless; runs with the scheduler off and Redis away).'),
    IDEMPOTENCY_MAX_KEYS_PER_USER: doc(Int(1000, 1, 1_000_000),
      'Idempotency records one user may have live: a write with a new key past it is a 429 (Retry-After: when the first expires), nothing written. Each record keeps the whole response, so this bounds what one user can store.'),
    PORTFOLIO_MAX_POSITIONS: doc(Int(200, 1, 10_000),
      'Positions one portfolio may hold: a buy of a ticker not held is a 422 at this many.'),
    QUOTES_PREWARM_INTERVAL_MS: doc(Int(15_000, 1000, 3_600_000),
      'Job quotes-prewarm: how often the quotes of every held ticker are loaded into the cache.'),
    QUOTES_PREWARM_HOURS: doc(Opt(Type.Refine(Type.String(), (v) => marketWindowProblem(v) === null, (v) => marketWindowProblem(v) ?? 'is invalid')),
      'Job quotes-prewarm runs only inside this window of SCHEDULER_TZ (days and hours; in the zone America/New_York, "Mon-Fri 09:30-16:00" is US market hours). Unset: always.', 'Mon-Fri 09:30-16:00'),
    PORTFOLIO_SNAPSHOT_CRON: doc(Type.String({ default: '0 22 * * *', minLength: 9, maxLength: 100 }),
      'Job portfolio-snapshot: when each portfolio\'s value is stored for /api/portfolio/history (cron, 5 or 6 fields, read in SCHEDULER_TZ; the default is 22:00 daily, with the default UTC after the US market close). It also deletes expired idempotency records.'),
  },
  'operability': {
    METRICS_ENABLED: doc(Bool(true),
      'GET /metrics (Prometheus text format). false: no route, no per-request timing at all.'),
    METRICS_TOKEN: doc(Opt(Type.String({ minLength: 16, maxLength: 512, pattern: '^[\\x21-\\x7e]+$' })),
      'When set (16+ printable characters, e.g. `openssl rand -hex 24`), GET /metrics requires `Authorization: Bearer <METRICS_TOKEN>` (401 otherwise). Unset: /metrics is open; keep it unreachable from the internet then (a warning is logged when NODE_ENV=production).'),
    REDIS_INFO_INTERVAL_MS: doc(Int(10_000, 100, 3_600_000),
      'How often Redis INFO is read for the redis_* metrics (never per scrape; skipped while Redis is away).'),
    DOCS_ENABLED: doc(Bool(true),
      'GET /docs (Swagger UI) and GET /docs/json (the OpenAPI document).'),
    CORS_ORIGINS: doc(Opt(Type.Refine(Type.String(), (v) => corsOriginsProblem(v) === null, (v) => corsOriginsProblem(v) ?? 'is invalid')),
      'Origins (scheme://host[:port]) whose browser scripts may call the API with credentials, comma-separated, no wildcard. Unset: no CORS headers for any origin (closed).', 'http://localhost:5173,https://app.example.com'),
    MAX_EVENT_LOOP_DELAY_MS: doc(Int(1000, 0, 60_000),
      'Load shedding: while a bound is passed, requests get 503 with Retry-After (except routes marked shed: false: health probes and /metrics). This bound: mean event-loop delay over one sample interval, in ms (0: off).'),
    MAX_HEAP_USED_BYTES: doc(Int(0, 0, Number.MAX_SAFE_INTEGER),
      'Load shedding: V8 heap in use, in bytes, past which requests get 503 (e.g. ~85% of the container memory limit; 0: off).'),
    MAX_RSS_BYTES: doc(Int(0, 0, Number.MAX_SAFE_INTEGER),
      'Load shedding: resident set size, in bytes, past which requests get 503 (0: off).'),
    PRESSURE_SAMPLE_INTERVAL_MS: doc(Int(1000, 50, 60_000),
      'How often the load-shedding figures are sampled, in milliseconds.'),
    PRESSURE_RETRY_AFTER_SECONDS: doc(Int(10, 1, 3600),
      'Retry-After (seconds) sent with a shed 503.'),
    PRESSURE_MEMORY_STUCK_MS: doc(Int(60_000, 0, 86_400_000, 'How long the heap or RSS may stay over its bound, measured after a full garbage collection, before /api/health/live answers 503 so that the orchestrator restarts the process (0: never).'),
      'How long the heap or RSS may stay over its bound after a full garbage collection before /api/health/live answers 503, so that the orchestrator restarts the process (0: never).'),
  },
}

export const ConfigSchema = Type.Object({
  ...SECTIONS['process'],
  ...SECTIONS['redis (connection and fallback state)'],
  ...SECTIONS['identity and sessions'],
  ...SECTIONS['rate limiting'],
  ...SECTIONS['cache and quotes'],
  ...SECTIONS['locks and jobs'],
  ...SECTIONS['portfolio'],
  ...SECTIONS['operability'],
})

/** Section titles and their variables, for the generated docs. */
export const CONFIG_SECTIONS = Object.entries(SECTIONS).map(([title, vars]) => ({ title, keys: Object.getOwnPropertyNames(vars) }))

export type Config = Static<typeof ConfigSchema>

export class ConfigError extends Error {
  constructor (readonly problems: string[]) {
    super(`Invalid configuration:\n  - ${problems.join('\n  - ')}`)
    this.name = 'ConfigError'
  }
}

/** Every variable the schema knows, in declaration order. */
export const configKeys = Object.getOwnPropertyNames(ConfigSchema.properties) as Array<keyof Config>

/**
 * Builds the config from an environment. Only the schema's keys are read, so the rest
 * of `process.env` never leaks into the config object (or into a log of it).
 */
export function loadConfig (env: Record<string, string | undefined> = process.env): Config {
  const raw: Record<string, unknown> = {}
  for (const key of configKeys) {
    const value = env[key]
    if (value !== undefined && value.trim() !== '') raw[key] = value.trim()
  }
  const converted = Value.Default(ConfigSchema, Value.Convert(ConfigSchema, raw)) as Record<string, unknown>
  const problems: string[] = []
  const seen = new Set<string>()
  for (const error of Value.Errors(ConfigSchema, converted)) {
    const key = error.instancePath.replace(/^\//, '') || '(config)'
    if (seen.has(key)) continue
    seen.add(key)
    const shown = key in raw ? ` (got ${JSON.stringify(redactValue(key, raw[key]))})` : ''
    problems.push(`${key}: ${describeRule(key) ?? error.message}${shown}`)
  }
  const config = converted as Config
  if (problems.length === 0) problems.push(...crossChecks(config))
  if (problems.length > 0) throw new ConfigError(dedupe(problems))
  return config
}

/** Reads `.env` (when present) into process.env without overriding what is already set. */
export function loadDotEnv (path = '.env'): void {
  if (existsSync(path)) process.loadEnvFile(path)
}

/** "must be one of a, b, c" for enumerations, whose raw errors list every alternative. */
function describeRule (key: string): string | undefined {
  const schema = (ConfigSchema.properties as Record<string, { enum?: unknown[], anyOf?: Array<{ const?: unknown }> }>)[key]
  const options = schema?.enum ?? schema?.anyOf?.map((s) => s.const).filter((v) => v !== undefined)
  return options && options.length > 0 ? `must be one of ${options.join(', ')}` : undefined
}

function crossChecks (config: Config): string[] {
  const problems: string[] = []
  if (config.REDIS_URL !== undefined) {
    try {
      const url = new URL(config.REDIS_URL)
      if (url.hostname === '') problems.push('REDIS_URL: has no host')
      const db = url.pathname.replace(/^\//, '')
      if (db !== '' && !/^\d{1,2}$/.test(db)) problems.push('REDIS_URL: the database must be a number (redis://host:port/0)')
    } catch {
      problems.push('REDIS_URL: is not a valid URL (expected redis://[user:password@]host:port[/db] or rediss://…)')
    }
  }
  problems.push(...sentinelProblems(config), ...clusterProblems(config))
  if (config.REDIS_TLS_CA !== undefined && !existsSync(config.REDIS_TLS_CA)) {
    problems.push(`REDIS_TLS_CA: file not found (${config.REDIS_TLS_CA})`)
  }
  return problems
}

/** REDIS_SENTINELS and its companions: each needs the other, and REDIS_URL is the other topology. */
function sentinelProblems (config: Config): string[] {
  const problems: string[] = []
  const sentinels = config.REDIS_SENTINELS !== undefined
  if (sentinels && config.REDIS_SENTINEL_NAME === undefined) {
    problems.push('REDIS_SENTINEL_NAME: required with REDIS_SENTINELS (the master group name of `sentinel monitor <name> …`, e.g. mymaster)')
  }
  if (!sentinels && config.REDIS_SENTINEL_NAME !== undefined) {
    problems.push('REDIS_SENTINELS: required with REDIS_SENTINEL_NAME (the sentinels as host:port,host:port,…)')
  }
  if (sentinels && config.REDIS_URL !== undefined) {
    problems.push('REDIS_URL: set either REDIS_URL (one Redis) or REDIS_SENTINELS (a master found through Sentinel), not both')
  }
  if (sentinels) {
    const bad = parseSentinels(config.REDIS_SENTINELS ?? '').filter((s) => s.port < 1 || s.port > 65535)
    if (bad.length > 0) problems.push(`REDIS_SENTINELS: port out of range (1-65535): ${bad.map((s) => `${s.host}:${s.port}`).join(', ')}`)
  }
  if (!sentinels && config.REDIS_SENTINEL_PASSWORD !== undefined) {
    problems.push('REDIS_SENTINEL_PASSWORD: only used with REDIS_SENTINELS, which is not set')
  }
  const cluster = config.REDIS_CLUSTER_NODES !== undefined
  if (!sentinels && !cluster && config.REDIS_PASSWORD !== undefined) {
    problems.push(config.REDIS_URL !== undefined
      ? 'REDIS_PASSWORD: only used with REDIS_SENTINELS; with REDIS_URL put the password in the URL (redis://:password@host:6379); REDIS_CLUSTER_NODES takes it too'
      : 'REDIS_PASSWORD: only used with REDIS_SENTINELS, which is not set (or REDIS_CLUSTER_NODES, not set either)')
  }
  return problems
}

/** REDIS_CLUSTER_NODES: the third way to say where Redis is, so never with the other two. */
function clusterProblems (config: Config): string[] {
  if (config.REDIS_CLUSTER_NODES === undefined) return []
  const problems: string[] = []
  if (config.REDIS_URL !== undefined) {
    problems.push('REDIS_CLUSTER_NODES: set either REDIS_CLUSTER_NODES (a Redis Cluster) or REDIS_URL (one Redis), not both')
  }
  if (config.REDIS_SENTINELS !== undefined) {
    problems.push('REDIS_CLUSTER_NODES: set either REDIS_CLUSTER_NODES (a Redis Cluster) or REDIS_SENTINELS (a master found through Sentinel), not both')
  }
  const bad = parseSentinels(config.REDIS_CLUSTER_NODES).filter((s) => s.port < 1 || s.port > 65535)
  if (bad.length > 0) problems.push(`REDIS_CLUSTER_NODES: port out of range (1-65535): ${bad.map((s) => `${s.host}:${s.port}`).join(', ')}`)
  return problems
}

/** `host:port,host:port` → endpoints (validated by the schema's pattern): REDIS_SENTINELS and REDIS_CLUSTER_NODES. */
export function parseSentinels (value: string): Array<{ host: string, port: number }> {
  return value.split(',').map((item) => item.trim()).filter((item) => item !== '').map((item) => {
    const at = item.lastIndexOf(':')
    return { host: item.slice(0, at), port: Number(item.slice(at + 1)) }
  })
}

function redactValue (key: string, value: unknown): unknown {
  if (/SECRET|PASSWORD|TOKEN|KEY$/.test(key) && !key.endsWith('PREFIX')) return '***'
  if (key.endsWith('_URL') || key.endsWith('_URLS')) return typeof value === 'string' ? redactUrl(value) : value
  return value
}

function dedupe (items: string[]): string[] {
  return [...new Set(items)]
}
