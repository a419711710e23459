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

const Int = (def: number, min = 0, max = Number.MAX_SAFE_INTEGER, description?: string) =>
  Type.Integer({ default: def, minimum: min, maximum: max, ...(description ? { description } : {}) })
const Bool = (def: boolean) => Type.Boolean({ default: def })
const OneOf = <const T extends string[]>(values: readonly [...T], def: T[number]) =>
  Type.Enum<T>(values, { default: def })
const Opt = <T extends TSchema>(schema: T) => Type.Optional(schema)

export const ConfigSchema = Type.Object({
  // --- process -----------------------------------------------------------------------
  NODE_ENV: OneOf(['development', 'production', 'test'] as const, 'development'),
  HOST: Type.String({ default: '0.0.0.0', minLength: 1 }),
  PORT: Int(3000, 0, 65535),
  LOG_LEVEL: OneOf(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const, 'info'),
  BODY_LIMIT_BYTES: Int(1_048_576, 1024, 100 * 1_048_576),
  SHUTDOWN_TIMEOUT_MS: Int(10_000, 100, 60_000),
  SHUTDOWN_DELAY_MS: Int(1000, 0, 60_000),

  // --- redis (connection and fallback state) -----------------------------------------
  REDIS_URL: Opt(Type.String({ pattern: '^rediss?://' })),
  REDIS_KEY_PREFIX: Type.String({ default: '', pattern: '^[A-Za-z0-9:_.\\-]*$' }),
  REDIS_CONNECT_TIMEOUT_MS: Int(2000, 50, 60_000),
  REDIS_COMMAND_TIMEOUT_MS: Int(500, 10, 60_000),
  REDIS_MAX_RETRIES_PER_REQUEST: Int(1, 0, 10),
  REDIS_KEEPALIVE_MS: Int(30_000, 0, 3_600_000),
  REDIS_FAMILY: Type.Union([Type.Literal(4), Type.Literal(6), Type.Literal(0)], { default: 4 }),
  REDIS_READY_CHECK: Bool(true),
  REDIS_LAZY_CONNECT: Bool(false),
  REDIS_TLS_CA: Opt(Type.String({ minLength: 1 })),
  REDIS_TLS_REJECT_UNAUTHORIZED: Bool(true),
  FALLBACK_MAX_ENTRIES: Int(50_000, 100, 10_000_000),
  FALLBACK_MAX_BYTES: Int(64 * 1_048_576, 65_536, 4096 * 1_048_576),

  // --- identity and sessions ---------------------------------------------------------
  DATABASE_PATH: Type.String({ default: './data/ai-capital.db', minLength: 1 }),
  DATABASE_URL: Opt(Type.String({
    pattern: '^(sqlite:|postgres(ql)?://)',
    description: 'Unset or sqlite:<path>: the embedded SQLite file (DATABASE_PATH when no path is given). postgres://user:password@host:5432/db: PostgreSQL, shared by several instances.',
  })),
  DATABASE_POOL_MAX: Int(10, 1, 1000, 'PostgreSQL: connections per instance.'),
  DATABASE_CONNECT_TIMEOUT_MS: Int(2000, 50, 60_000, 'PostgreSQL: how long opening a connection may take before the request fails (503).'),
  DATABASE_STATEMENT_TIMEOUT_MS: Int(5000, 50, 600_000, 'PostgreSQL: statement_timeout on the server; the client stops waiting a second later (a frozen server), and the request fails (503).'),
  JWT_SECRET: Opt(Type.String({ minLength: 32 })),
  JWT_ISSUER: Type.String({ default: 'ai-capital-api', minLength: 1 }),
  JWT_AUDIENCE: Type.String({ default: 'ai-capital', minLength: 1 }),
  JWT_EXPIRES_IN: Type.String({ default: '15m', pattern: '^[0-9]{1,6}(s|m|h|d)?$' }),
  SESSION_TTL_SECONDS: Int(3600, 60, 30 * 86_400),
  SESSION_FALLBACK: OneOf(['allow', 'deny'] as const, 'allow'),
  ADMIN_EMAIL: Opt(Type.String({ minLength: 3, maxLength: 254 })),
  ADMIN_PASSWORD: Opt(Type.String({ minLength: 8, maxLength: 128 })),

  // --- rate limiting -----------------------------------------------------------------
  RATE_LIMIT_MAX: Int(300, 1, 1_000_000_000),
  RATE_LIMIT_WINDOW_MS: Int(60_000, 100, 86_400_000),
  LOGIN_RATE_LIMIT_MAX: Int(5, 1, 1_000_000),
  LOGIN_RATE_LIMIT_WINDOW_MS: Int(900_000, 100, 86_400_000),
  LOGIN_EMAIL_RATE_LIMIT_MAX: Int(20, 1, 1_000_000),
  LOGIN_EMAIL_RATE_LIMIT_WINDOW_MS: Int(3_600_000, 100, 86_400_000),
  REGISTER_RATE_LIMIT_MAX: Int(10, 1, 1_000_000),
  REGISTER_RATE_LIMIT_WINDOW_MS: Int(3_600_000, 100, 86_400_000),
  ADMIN_RATE_LIMIT_MAX: Int(60, 1, 1_000_000_000),
  TRUST_PROXY: Opt(Type.Refine(Type.String(), (v) => trustProxyProblem(v) === null, (v) => trustProxyProblem(v) ?? 'is invalid')),

  // --- cache and quotes --------------------------------------------------------------
  QUOTE_PROVIDER: OneOf(['simulated', 'finnhub'] as const, 'simulated'),
  FINNHUB_API_KEY: Opt(Type.String({ minLength: 1 })),
  FINNHUB_BASE_URL: Type.String({ default: 'https://finnhub.io/api/v1', pattern: '^https?://[^\\s]+$' }),
  FINNHUB_TIMEOUT_MS: Int(3000, 50, 60_000),
  FINNHUB_RETRIES: Int(1, 0, 5),
  FINNHUB_BREAKER_THRESHOLD: Int(5, 1, 1000),
  FINNHUB_BREAKER_COOLDOWN_MS: Int(10_000, 100, 600_000),
  QUOTE_TTL_SECONDS: Int(20, 1, 86_400),
  QUOTE_GRACE_SECONDS: Int(300, 0, 86_400),
  QUOTE_SOFT_TIMEOUT_MS: Int(1000, 0, 60_000),
  QUOTE_BATCH_CONCURRENCY: Int(8, 1, 50),
  CACHE_L1_ENABLED: Bool(true),
  CACHE_L1_MAX_ENTRIES: Int(10_000, 1, 10_000_000),
  CACHE_L1_MAX_BYTES: Int(32 * 1_048_576, 65_536, 4096 * 1_048_576),
  CACHE_LOCK_TTL_MS: Int(3000, 100, 60_000),
  CACHE_LOADER_TIMEOUT_MS: Int(10_000, 100, 120_000),

  // --- locks and jobs ----------------------------------------------------------------
  REDLOCK_URLS: Opt(Type.String({ pattern: '^rediss?://[^,\\s]+(\\s*,\\s*rediss?://[^,\\s]+)*$' })),
  LOCK_WAIT_MS: Int(2000, 0, 60_000),
  LOCK_RETRY_DELAY_MS: Int(50, 5, 5000),
  SCHEDULER_ENABLED: Bool(true),

  // --- portfolio ---------------------------------------------------------------------
  PORTFOLIO_TTL_SECONDS: Int(300, 1, 86_400),
  PORTFOLIO_LOCK_TTL_MS: Int(30_000, 100, 600_000),
  IDEMPOTENCY_TTL_SECONDS: Int(86_400, 60, 30 * 86_400),
  IDEMPOTENCY_PURGE_INTERVAL_MS: Int(600_000, 1000, 86_400_000),
  IDEMPOTENCY_MAX_KEYS_PER_USER: Int(1000, 1, 1_000_000),
  PORTFOLIO_MAX_POSITIONS: Int(200, 1, 10_000),
  QUOTES_PREWARM_INTERVAL_MS: Int(15_000, 1000, 3_600_000),
  PORTFOLIO_SNAPSHOT_CRON: Type.String({ default: '0 22 * * *', minLength: 9, maxLength: 100 }),

  // --- operability -------------------------------------------------------------------
  METRICS_ENABLED: Bool(true),
  METRICS_TOKEN: Opt(Type.String({ minLength: 16, maxLength: 512, pattern: '^[\\x21-\\x7e]+$' })),
  REDIS_INFO_INTERVAL_MS: Int(10_000, 100, 3_600_000),
  DOCS_ENABLED: Bool(true),
  MAX_EVENT_LOOP_DELAY_MS: Int(1000, 0, 60_000),
  MAX_HEAP_USED_BYTES: Int(0, 0, Number.MAX_SAFE_INTEGER),
  MAX_RSS_BYTES: Int(0, 0, Number.MAX_SAFE_INTEGER),
  PRESSURE_SAMPLE_INTERVAL_MS: Int(1000, 50, 60_000),
  PRESSURE_RETRY_AFTER_SECONDS: Int(10, 1, 3600),
})

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
  if (config.REDIS_TLS_CA !== undefined && !existsSync(config.REDIS_TLS_CA)) {
    problems.push(`REDIS_TLS_CA: file not found (${config.REDIS_TLS_CA})`)
  }
  return problems
}

function redactValue (key: string, value: unknown): unknown {
  if (/SECRET|PASSWORD|TOKEN|KEY$/.test(key) && !key.endsWith('PREFIX')) return '***'
  if (key.endsWith('_URL') || key.endsWith('_URLS')) return typeof value === 'string' ? redactUrl(value) : value
  return value
}

/**
 * `redis://user:secret@host` → `redis://user:***@host`, and `?password=…` → `?password=***`
 * (ioredis reads both); works on comma-separated lists. Errs on the side of hiding: the
 * password runs from the first ':' after `//` to the LAST '@' of the URL, so a raw '@', ',',
 * '#' or '?' inside it (each of which would cut a parsed URL short) never leaves a piece in
 * the logs. A list splits only where a new URL begins.
 */
export function redactUrl (value: string): string {
  return value.split(/,(?=\s*[A-Za-z][A-Za-z0-9+.-]*:\/\/)/).map(redactOneUrl).join(',')
}

function redactOneUrl (url: string): string {
  const span = passwordSpan(url)
  const hidden = span === null ? url : `${url.slice(0, span[0])}***${url.slice(span[1])}`
  return hidden.replace(/([?&]password=)[^&#]*/gi, '$1***')
}

/** Where a URL's password is, read as generously as `redactUrl` reads it: [start, end), or null. */
function passwordSpan (url: string): [number, number] | null {
  const scheme = url.indexOf('//')
  const from = scheme === -1 ? 0 : scheme + 2
  const at = url.lastIndexOf('@')
  const colon = url.indexOf(':', from)
  // No ':' before the '@': a user name alone, not a secret.
  return at >= from && colon !== -1 && colon < at ? [colon + 1, at] : null
}

/**
 * The password of a URL as it may appear in text (an error message): the span `redactUrl`
 * hides, its percent-decoded form, and what the URL parser (ioredis) reads. Empty strings left out.
 */
export function urlSecrets (url: string): string[] {
  const found: string[] = []
  const span = passwordSpan(url)
  if (span !== null) found.push(url.slice(span[0], span[1]))
  try {
    const parsed = new URL(url).password
    found.push(parsed)
  } catch {}
  for (const secret of [...found]) {
    try { found.push(decodeURIComponent(secret)) } catch {}
  }
  for (const [, secret] of url.matchAll(/[?&]password=([^&#]*)/gi)) if (secret !== undefined) found.push(secret)
  // Longest first, so that a shorter one never splits a longer one before it is replaced.
  return [...new Set(found.filter((s) => s.length > 0))].sort((a, b) => b.length - a.length)
}

function dedupe (items: string[]): string[] {
  return [...new Set(items)]
}
