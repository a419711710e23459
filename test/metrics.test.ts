/**
 * GET /metrics: every family the issue names is there after the routes were exercised
 * (against a private redis-server and a fake Finnhub), with values that match the
 * concerns' own stats; route labels are patterns, never raw URLs; METRICS_TOKEN guards the
 * route (401 without it) and rate limiting never refuses it; Redis INFO is read on a
 * timer, not per scrape, and its figures disappear (redis_up 0) while Redis is away.
 */
import t from 'tap'
import type { FastifyInstance } from 'fastify'
import { build, waitFor, sleep, type TapTest } from './helper.js'
import { startRedis, skipUnlessRedis, type RedisProcess } from './helpers/redis-server.js'
import { AUTH_ENV, bearer, login, register } from './auth-helpers.js'
import { startFakeFinnhub } from './quotes-fake-finnhub.js'
import { loadConfig, ConfigError } from '../src/config.js'
import { tokenChecker } from '../routes/metrics.js'

/** Every family the issue asks for (and a few more the service exports). */
const REQUIRED_FAMILIES = [
  // HTTP
  'aic_http_request_duration_seconds',
  // Redis state, fallback, command latency
  'aic_redis_state', 'aic_redis_fallback_active', 'aic_redis_fallback_activations_total', 'aic_redis_command_duration_seconds',
  // caches: hits by layer, misses, stale serves, loads, load errors
  'aic_cache_hits_total', 'aic_cache_misses_total', 'aic_cache_stale_serves_total', 'aic_cache_loads_total', 'aic_cache_load_errors_total',
  // locks
  'aic_lock_acquisitions_total', 'aic_lock_contentions_total', 'aic_lock_failures_total', 'aic_lock_extensions_total',
  // rate limiting
  'aic_rate_limit_rejections_total',
  // upstream quote provider: calls, errors, latency
  'aic_quote_provider_calls_total', 'aic_quote_provider_errors_total', 'aic_quote_provider_request_duration_seconds',
  // jobs
  'aic_job_runs_total', 'aic_job_skips_total', 'aic_job_failures_total',
  // Redis INFO under redis_exporter's names
  'redis_up', 'redis_connected_clients', 'redis_memory_used_bytes', 'redis_memory_max_bytes', 'redis_keyspace_hits_total',
  'redis_keyspace_misses_total', 'redis_instantaneous_ops_per_sec', 'redis_evicted_keys_total', 'redis_expired_keys_total',
  'redis_db_keys', 'redis_uptime_in_seconds',
  // extras
  'aic_http_requests_shed_total', 'aic_portfolio_writes_total', 'aic_auth_logins_total', 'process_cpu_user_seconds_total',
]

interface Sample { name: string, labels: Record<string, string>, value: number }
interface Exposition { types: Map<string, string>, samples: Sample[], text: string }

/** Prometheus text format → family types and samples (enough of the format for our output). */
function parse (text: string): Exposition {
  const types = new Map<string, string>()
  const samples: Sample[] = []
  for (const line of text.split('\n')) {
    if (line === '') continue
    const type = /^# TYPE (\S+) (\S+)$/.exec(line)
    if (type) {
      types.set(type[1] as string, type[2] as string)
      continue
    }
    if (line.startsWith('#')) continue
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line)
    if (!m) throw new Error(`not an exposition line: ${line}`)
    const labels: Record<string, string> = {}
    for (const [, k, v] of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[k as string] = v as string
    samples.push({ name: m[1] as string, labels, value: Number(m[3]) })
  }
  return { types, samples, text }
}

/** Samples of a family (histograms: its _bucket/_sum/_count lines), optionally filtered by labels. */
function samplesOf (e: Exposition, family: string, labels: Record<string, string> = {}, suffix = ''): Sample[] {
  const names = suffix !== '' ? [family + suffix] : [family, `${family}_bucket`, `${family}_sum`, `${family}_count`]
  return e.samples.filter((s) => names.includes(s.name) && Object.entries(labels).every(([k, v]) => s.labels[k] === v))
}

function value (e: Exposition, family: string, labels: Record<string, string> = {}, suffix = ''): number | undefined {
  const found = samplesOf(e, family, labels, suffix)
  return found.length === 0 ? undefined : found.reduce((sum, s) => sum + s.value, 0)
}

async function scrape (app: FastifyInstance, headers: Record<string, string> = {}): Promise<Exposition> {
  const res = await app.inject({ method: 'GET', url: '/metrics', headers })
  if (res.statusCode !== 200) throw new Error(`/metrics answered ${res.statusCode}: ${res.body}`)
  return parse(res.body)
}

async function privateRedis (t: TapTest): Promise<RedisProcess> {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  return redis
}

t.test('after exercising the routes, /metrics has every family, with the concerns\' figures', skipUnlessRedis(), async (t) => {
  const redis = await privateRedis(t)
  const fake = await startFakeFinnhub()
  t.teardown(() => fake.close())
  const { app } = await build(t, {
    ...AUTH_ENV,
    REDIS_URL: redis.url,
    QUOTE_PROVIDER: 'finnhub',
    FINNHUB_API_KEY: 'test-key',
    FINNHUB_BASE_URL: fake.url,
    FINNHUB_RETRIES: '0',
    QUOTE_TTL_SECONDS: '1',
    QUOTE_SOFT_TIMEOUT_MS: '0',
    REDIS_INFO_INTERVAL_MS: '200',
    QUOTES_PREWARM_INTERVAL_MS: '1000',
    RATE_LIMIT_MAX: '60',
    LOG_LEVEL: 'warn',
  })
  await waitFor(() => app.redisState.status === 'connected', 5000)

  // quotes: a miss, a hit, a second ticker, an unknown ticker (a provider error)
  t.equal((await app.inject('/api/stocks/AAPL')).headers['x-cache'], 'MISS')
  t.equal((await app.inject('/api/stocks/AAPL')).headers['x-cache'], 'HIT')
  t.equal((await app.inject('/api/stocks/msft')).statusCode, 200)
  fake.modes.set('ZZZZ', 'zero')
  t.equal((await app.inject('/api/stocks/ZZZZ')).statusCode, 404)
  // a stale serve: the quote expires, the provider fails
  await sleep(1100)
  fake.mode = 'fail'
  t.equal((await app.inject('/api/stocks/AAPL')).headers['x-cache'], 'STALE')
  fake.mode = 'ok'

  // auth, a locked portfolio write, cached reads
  await register(app, 'metrics@example.com')
  const user = await login(app, 'metrics@example.com')
  const trade = await app.inject({ method: 'POST', url: '/api/portfolio/transactions', headers: bearer(user.token), payload: { ticker: 'AAPL', side: 'buy', shares: 2, price: 100 } })
  t.equal(trade.statusCode, 201, trade.body)
  t.equal((await app.inject({ url: '/api/portfolio', headers: bearer(user.token) })).statusCode, 200)
  t.equal((await app.inject({ url: '/api/portfolio', headers: bearer(user.token) })).statusCode, 200)
  t.equal((await app.inject({ url: '/api/auth/me' })).statusCode, 401)
  t.equal((await app.inject('/no/such/route/123')).statusCode, 404)

  // a job run (quotes-prewarm every second)
  await waitFor(() => (app.scheduler.jobs().find((j) => j.name === 'quotes-prewarm')?.runs ?? 0) >= 1, 5000)
  // rate limiting: the same client until 429
  let limited = false
  for (let i = 0; i < 100 && !limited; i++) limited = (await app.inject('/api/stocks/AAPL')).statusCode === 429
  t.ok(limited, 'the flood was refused')
  // INFO read by the timer
  await waitFor(async () => value(await scrape(app), 'redis_up') === 1, 5000)

  const e = await scrape(app)
  for (const family of REQUIRED_FAMILIES) {
    t.ok(e.types.has(family), `# TYPE ${family}`)
    t.ok(samplesOf(e, family).length > 0, `${family} has samples`)
  }
  t.equal(e.types.get('aic_http_request_duration_seconds'), 'histogram')
  t.equal(e.types.get('aic_cache_hits_total'), 'counter')
  t.equal(e.types.get('redis_memory_used_bytes'), 'gauge')

  // HTTP: labelled by route pattern; never a raw URL
  const quoteRoute = { method: 'GET', route: '/api/stocks/:ticker' }
  t.ok((value(e, 'aic_http_request_duration_seconds', { ...quoteRoute, status_code: '200' }, '_count') ?? 0) >= 3)
  t.ok((value(e, 'aic_http_request_duration_seconds', { ...quoteRoute, status_code: '404' }, '_count') ?? 0) >= 1)
  t.ok((value(e, 'aic_http_request_duration_seconds', { ...quoteRoute, status_code: '429' }, '_count') ?? 0) >= 1)
  t.ok((value(e, 'aic_http_request_duration_seconds', { route: 'unmatched', status_code: '404' }, '_count') ?? 0) >= 1)
  const buckets = samplesOf(e, 'aic_http_request_duration_seconds', { ...quoteRoute, status_code: '200' }, '_bucket')
  t.same(buckets.map((b) => b.value), [...buckets.map((b) => b.value)].sort((a, b) => a - b), 'buckets are cumulative')
  t.equal(buckets.at(-1)?.labels.le, '+Inf')
  t.equal(buckets.at(-1)?.value, value(e, 'aic_http_request_duration_seconds', { ...quoteRoute, status_code: '200' }, '_count'), '+Inf bucket = count')
  t.ok((value(e, 'aic_http_request_duration_seconds', { ...quoteRoute, status_code: '200' }, '_sum') ?? 0) > 0)
  const routes = new Set(samplesOf(e, 'aic_http_request_duration_seconds').map((s) => s.labels.route))
  t.notOk([...routes].some((r) => r === undefined || /AAPL|msft|ZZZZ|\/no\/such/.test(r)), `route labels are patterns: ${[...routes].join(', ')}`)

  // Redis
  t.equal(value(e, 'aic_redis_state', { state: 'connected' }), 1)
  t.equal(value(e, 'aic_redis_state'), 1, 'exactly one state is 1')
  t.equal(value(e, 'aic_redis_fallback_active'), 0)
  t.ok((value(e, 'aic_redis_command_duration_seconds', { outcome: 'ok' }, '_count') ?? 0) > 0, 'Redis commands were timed')
  t.ok(samplesOf(e, 'aic_redis_command_duration_seconds', {}, '_count').every((s) => /^[a-z]+$/.test(s.labels.command ?? '')), 'labelled by command name')
  t.equal(value(e, 'redis_up'), 1)
  t.ok((value(e, 'redis_connected_clients') ?? 0) >= 2, 'the service\'s connections')
  t.ok((value(e, 'redis_memory_used_bytes') ?? 0) > 0)
  t.ok((value(e, 'redis_db_keys', { db: 'db0' }) ?? 0) >= 1, 'stock:AAPL and friends')
  t.ok((value(e, 'redis_keyspace_hits_total') ?? -1) >= 0)

  // caches, compared with the cache's own counters
  const cache = app.cache.stats().caches
  for (const [name, c] of Object.entries(cache)) {
    t.equal(value(e, 'aic_cache_hits_total', { cache: name, layer: 'l1' }), c.hitsL1, `${name} L1 hits`)
    t.equal(value(e, 'aic_cache_hits_total', { cache: name, layer: 'l2' }), c.hitsL2, `${name} L2 hits`)
    t.equal(value(e, 'aic_cache_misses_total', { cache: name }), c.misses, `${name} misses`)
    t.equal(value(e, 'aic_cache_stale_serves_total', { cache: name }), c.staleServes, `${name} stale serves`)
    t.equal(value(e, 'aic_cache_loads_total', { cache: name }), c.loads, `${name} loads`)
    t.equal(value(e, 'aic_cache_load_errors_total', { cache: name }), c.loadErrors, `${name} load errors`)
  }
  t.ok((value(e, 'aic_cache_hits_total', { cache: 'quotes', layer: 'l1' }) ?? 0) >= 1)
  t.ok((value(e, 'aic_cache_stale_serves_total', { cache: 'quotes' }) ?? 0) >= 1)
  t.ok((value(e, 'aic_cache_loads_total', { cache: 'portfolios' }) ?? 0) >= 1)

  // locks
  const locks = app.locks.stats()
  t.ok(locks.acquisitions >= 1)
  t.equal(value(e, 'aic_lock_acquisitions_total'), locks.acquisitions)
  t.equal(value(e, 'aic_lock_contentions_total'), locks.contentions)
  t.equal(value(e, 'aic_lock_failures_total'), locks.failures)
  t.equal(value(e, 'aic_lock_extensions_total'), locks.extensions)

  // rate limiting
  t.ok((value(e, 'aic_rate_limit_rejections_total', { limit: 'global' }) ?? 0) >= 1)

  // quote provider: calls and errors (the quotes cache's loads), HTTP latency from fetch
  t.equal(value(e, 'aic_quote_provider_calls_total', { provider: 'finnhub' }), cache.quotes?.loads)
  t.ok((value(e, 'aic_quote_provider_errors_total', { provider: 'finnhub' }) ?? 0) >= 2, 'the unknown ticker and the failed refresh')
  t.equal(value(e, 'aic_quote_provider_http_requests_total', { provider: 'finnhub' }), fake.calls, 'every HTTP request the fake received')
  t.equal(value(e, 'aic_quote_provider_request_duration_seconds', { provider: 'finnhub' }, '_count'), fake.calls, 'each one timed')
  t.ok((value(e, 'aic_quote_provider_request_duration_seconds', { outcome: '5xx' }, '_count') ?? 0) >= 1, 'the failed one by its outcome')

  // jobs
  const prewarm = app.scheduler.jobs().find((j) => j.name === 'quotes-prewarm')
  t.ok((value(e, 'aic_job_runs_total', { job: 'quotes-prewarm' }) ?? 0) >= 1)
  t.ok((value(e, 'aic_job_runs_total', { job: 'quotes-prewarm' }) ?? 0) <= (prewarm?.runs ?? 0))
  t.equal(value(e, 'aic_job_failures_total', { job: 'quotes-prewarm' }), 0)

  // portfolio and auth
  t.equal(value(e, 'aic_portfolio_writes_total', { kind: 'trade' }), 1)
  t.equal(value(e, 'aic_auth_logins_total', { outcome: 'success' }), 1)
  t.equal(value(e, 'aic_auth_rejections_total', { reason: 'missing' }), 1)
})

t.test('METRICS_TOKEN: 401 without the right bearer token, 200 with it; never rate limited', async (t) => {
  const token = 'metrics-token-0123456789abcdef'
  const { app } = await build(t, { METRICS_TOKEN: token, RATE_LIMIT_MAX: '2', LOG_LEVEL: 'warn' })

  const none = await app.inject('/metrics')
  t.equal(none.statusCode, 401)
  t.same(Object.keys(none.json()).sort(), ['error', 'message', 'statusCode'])
  t.match(none.headers['www-authenticate'], /^Bearer/)
  t.notMatch(none.body, /aic_|redis_/, 'no metric in the refusal')
  for (const authorization of [`Bearer ${token}x`, `Bearer ${token.slice(0, -1)}`, `Basic ${token}`, token, 'Bearer ', `Bearer ${token} extra`]) {
    t.equal((await app.inject({ url: '/metrics', headers: { authorization } })).statusCode, 401, `refused: ${authorization.replace(token, '<token>')}`)
  }
  for (let i = 0; i < 5; i++) {
    const ok = await app.inject({ url: '/metrics', headers: { authorization: `Bearer ${token}` } })
    t.equal(ok.statusCode, 200, `scrape ${i + 1} with RATE_LIMIT_MAX=2`)
    t.match(ok.headers['content-type'], /^text\/plain; version=0\.0\.4/)
  }
  t.equal((await app.inject({ url: '/metrics', headers: { authorization: `bearer ${token}` } })).statusCode, 200, 'the scheme is case-insensitive')

  const check = tokenChecker(token)
  t.equal(check(undefined), false)
  t.equal(check(`Bearer\t${token}`), true)
})

t.test('METRICS_TOKEN must be 16+ printable characters', async (t) => {
  for (const bad of ['short', 'has a space in it 123456']) {
    const err = t.throws(() => loadConfig({ METRICS_TOKEN: bad }), ConfigError) as unknown as ConfigError
    t.match(err.message, /METRICS_TOKEN/)
    t.notMatch(err.message, new RegExp(bad), 'the value is not echoed')
  }
})

t.test('METRICS_ENABLED=false: no /metrics route, and no family registered by any plugin', async (t) => {
  const { app } = await build(t, { METRICS_ENABLED: 'false', LOG_LEVEL: 'warn' })
  t.equal((await app.inject('/metrics')).statusCode, 404)
  t.equal(app.metrics.enabled, false)
  t.same(app.metrics.registry.getMetricsAsArray(), [], 'the plugins\' registrations were ignored')
  t.equal((await app.inject('/api/stocks/AAPL')).statusCode, 200, 'the service works without it')
})

t.test('Redis INFO is read on a timer, not per scrape; while Redis is away its figures are gone and redis_up is 0', skipUnlessRedis(), async (t) => {
  const redis = await privateRedis(t)
  const { app } = await build(t, { REDIS_URL: redis.url, REDIS_INFO_INTERVAL_MS: '60000', LOG_LEVEL: 'silent' })
  await waitFor(() => app.redisState.status === 'connected', 5000)
  await waitFor(async () => value(await scrape(app), 'redis_up') === 1, 5000)

  const infoCalls = async (): Promise<number> => Number(/cmdstat_info:calls=(\d+)/.exec(await redis.command('INFO', 'commandstats'))?.[1] ?? 0)
  const before = await infoCalls()
  for (let i = 0; i < 10; i++) await scrape(app)
  const after = await infoCalls()
  t.equal(after - before, 1, '10 scrapes sent no INFO (the 1 is the redis-cli INFO that read the count)')

  await redis.kill()
  await waitFor(() => app.redisState.mode === 'fallback', 5000)
  const started = Date.now()
  const down = await scrape(app)
  t.ok(Date.now() - started < 1000, 'a scrape never waits for the dead Redis')
  t.equal(value(down, 'redis_up'), 0)
  for (const family of ['redis_connected_clients', 'redis_memory_used_bytes', 'redis_keyspace_hits_total', 'redis_db_keys']) {
    t.equal(samplesOf(down, family).length, 0, `${family}: no sample (not a misleading 0)`)
    t.ok(down.types.has(family), `${family}: the family is still declared`)
  }
  t.equal(value(down, 'aic_redis_state', { state: 'disconnected' }), 1)
  t.equal(value(down, 'aic_redis_fallback_active'), 1)
  t.ok((value(down, 'aic_redis_fallback_activations_total') ?? 0) >= 1)

  await redis.restart()
  await waitFor(async () => value(await scrape(app), 'redis_up') === 1, 10_000)
  t.pass('redis_up is back to 1 when Redis returns (without waiting for the 60 s timer)')
})

t.test('Redis not configured: redis_* declared without samples, state "disabled"', async (t) => {
  const { app } = await build(t, { LOG_LEVEL: 'warn' })
  const e = await scrape(app)
  t.equal(value(e, 'aic_redis_state', { state: 'disabled' }), 1)
  t.ok(e.types.has('redis_up'))
  t.equal(samplesOf(e, 'redis_up').length, 0)
  t.equal(samplesOf(e, 'redis_memory_used_bytes').length, 0)
})
