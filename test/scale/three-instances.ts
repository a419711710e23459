/**
 * The three-instance checks, whatever the Redis topology: a private PostgreSQL database, the
 * migration step once, then three app processes A, B and C, each in a working directory of
 * its own, sharing only PostgreSQL and the topology's Redis. Every guarantee of a
 * several-instance deployment is checked over HTTP, across the three:
 *
 *  - a user registered on A logs in on B and C; the same email cannot register again elsewhere;
 *  - a token from A works on B; a logout on A revokes on B and C;
 *  - concurrent buys on all three leave shares equal to the acknowledged buys;
 *  - one Idempotency-Key raced over two instances applies once;
 *  - the rate limit is exact across the three (RATE_LIMIT_MAX in total, not per instance);
 *  - a buy on A invalidates the portfolio cached on B and C;
 *  - the scheduled job runs once per tick across the three;
 *  - and all of it through Redis: no instance fell back to its in-process state, Redis refused
 *    no call (CROSSSLOT on a cluster).
 *
 * A topology is `{ env, stop }`: the Redis variables the instances get (REDIS_SENTINELS…, or
 * REDIS_CLUSTER_NODES…) and how to stop it. The topology file owns it and stops it. A topology
 * with several masters (a cluster) also gives `keysByMaster`, each master's keys read on that
 * master: the keys the instances wrote must be on every one of them, or the service did not
 * really spread its state over the cluster.
 */
import type { Test } from 'tap'
import fs from 'node:fs'
import path from 'node:path'
import { LOG_COMMAND_REFUSED, LOG_CONNECTION_FAILED, LOG_OPERATION_FAILED } from '../../src/engines/redis/state.js'
import { createTestDatabase, queryDatabase } from '../helpers/postgres.js'
import { migrateOnce, startInstance, waitFor, type Instance } from './instances.js'

export interface Topology {
  env: Record<string, string>
  stop (): Promise<void>
  /** Every master's keys, by `host:port`, read on that master (for a topology of several masters). */
  keysByMaster? (): Promise<Map<string, string[]>>
}

/** The write probe lands on every master by design (a hash tag per master): not evidence of spreading. */
const PROBE_KEY = /(^|:)health:probe:/

/** The global limit the rate-limit check measures; every other check stays below it per client. */
const RATE_LIMIT_MAX = 40
const BUYS = 24
const PASSWORD = 'correct horse battery'
const JWT_SECRET = 'scale-test-secret-0123456789abcdefghijklmnop'

interface Reply { status: number, headers: Headers, body: unknown }

async function call (base: Instance, method: string, url: string, options: { token?: string, body?: unknown, headers?: Record<string, string> } = {}): Promise<Reply> {
  const res = await fetch(`${base.url}${url}`, {
    method,
    headers: {
      ...(options.body !== undefined ? { 'content-type': 'application/json' } : {}),
      ...(options.token !== undefined ? { authorization: `Bearer ${options.token}` } : {}),
      ...options.headers,
    },
    ...(options.body !== undefined ? { body: JSON.stringify(options.body) } : {}),
    signal: AbortSignal.timeout(30_000),
  })
  const text = await res.text()
  let body: unknown = text
  try { body = JSON.parse(text) } catch { /* not JSON */ }
  return { status: res.status, headers: res.headers, body }
}

async function register (on: Instance, email: string): Promise<Reply> {
  return call(on, 'POST', '/api/auth/register', { body: { email, password: PASSWORD } })
}

async function login (on: Instance, email: string): Promise<{ token: string, userId: string }> {
  const res = await call(on, 'POST', '/api/auth/login', { body: { email, password: PASSWORD } })
  if (res.status !== 200) throw new Error(`login ${email} on ${on.name}: ${res.status} ${JSON.stringify(res.body)}`)
  const { token, user } = res.body as { token: string, user: { id: string } }
  return { token, userId: user.id }
}

/** A counter's value on /metrics (0 when absent). */
async function metric (on: Instance, name: string): Promise<number> {
  const res = await call(on, 'GET', '/metrics')
  const line = String(res.body).split('\n').find((l) => l.startsWith(`${name} `) || l.startsWith(`${name}{`))
  return line === undefined ? 0 : Number(line.slice(line.lastIndexOf(' ') + 1))
}

interface View { version: number, positions: Array<{ ticker: string, shares: number }> }
const sharesOf = (body: unknown, ticker: string): number => (body as View).positions.find((p) => p.ticker === ticker)?.shares ?? 0

function buy (on: Instance, token: string, ticker: string, shares: number, price: number, key?: string): Promise<Reply> {
  return call(on, 'POST', '/api/portfolio/transactions', {
    token,
    body: { ticker, side: 'buy', shares, price },
    ...(key !== undefined ? { headers: { 'idempotency-key': key } } : {}),
  })
}

export async function runThreeInstanceChecks (t: Test, topology: Topology): Promise<void> {
  const started = Date.now()
  const db = await createTestDatabase(t)
  const env: Record<string, string> = {
    NODE_ENV: 'production',
    LOG_LEVEL: 'debug',
    DATABASE_URL: db.url,
    DATABASE_POOL_MAX: '4',
    JWT_SECRET,
    ...topology.env,
    RATE_LIMIT_MAX: String(RATE_LIMIT_MAX),
    // Long enough that the whole burst falls in one window even on a slow machine.
    RATE_LIMIT_WINDOW_MS: '600000',
    REGISTER_RATE_LIMIT_MAX: '1000',
    LOGIN_RATE_LIMIT_MAX: '1000',
    LOGIN_EMAIL_RATE_LIMIT_MAX: '1000',
    // Most buys wait for their turn; the invariant holds whatever the count.
    LOCK_WAIT_MS: '15000',
    // The shortest interval the config allows: a tick every second for the scheduler check.
    QUOTES_PREWARM_INTERVAL_MS: '1000',
    MAX_EVENT_LOOP_DELAY_MS: '0',
    // The checks are about sharing, not timeouts: a Redis command slowed by a loaded machine
    // must not switch an instance to its in-process fallback (and its own counts) midway.
    REDIS_COMMAND_TIMEOUT_MS: '5000',
    DOCS_ENABLED: 'false',
  }

  t.comment(`database created after ${Date.now() - started} ms`)
  const { output: migrated } = await migrateOnce(env)
  t.comment(`migrated after ${Date.now() - started} ms`)
  t.ok(/^postgres .*: schema version \d+, applied \d/m.test(migrated), `the migration step applied the schema before the instances started (${migrated.trim()})`)
  const fallbackLines = [LOG_OPERATION_FAILED, LOG_CONNECTION_FAILED]
  const keepLogs = new RegExp(`^(job ran|job tick taken by another instance|${[...fallbackLines, LOG_COMMAND_REFUSED].map(escapeRegExp).join('|')})`)
  const names = ['a', 'b', 'c']
  // Started together (each boot waits on the others' advisory lock at most); whichever
  // started is stopped in teardown even when another did not.
  const settled = await Promise.allSettled(names.map((name) => startInstance(name, env, { keepLogs })))
  const instances = settled.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []))
  t.teardown(() => Promise.all(instances.map((i) => i.stop())))
  const failed = settled.find((r) => r.status === 'rejected')
  if (failed !== undefined) throw failed.reason
  const [a, b, c] = instances as [Instance, Instance, Instance]
  t.equal(new Set(instances.map((i) => i.dir)).size, 3, 'three working directories')
  t.equal(new Set(instances.map((i) => i.pid)).size, 3, 'three processes')
  t.comment(`three instances ready after ${Date.now() - started} ms`)

  await t.test('a user registered on A logs in on B and C, and cannot register again anywhere', async (t) => {
    const created = await register(a, 'shared@example.com')
    t.equal(created.status, 201, 'registered on A')
    const id = (created.body as { id: string }).id
    for (const other of [b, c]) {
      t.equal((await login(other, 'shared@example.com')).userId, id, `logs in on ${other.name.toUpperCase()}`)
      t.equal((await register(other, 'shared@example.com')).status, 409, `409 for the same email on ${other.name.toUpperCase()}`)
    }
  })

  await t.test("A's token works on B and C; a logout on A revokes it on B and C", async (t) => {
    await register(a, 'session@example.com')
    const { token } = await login(a, 'session@example.com')
    for (const other of [b, c]) t.equal((await call(other, 'GET', '/api/auth/me', { token })).status, 200, `the token works on ${other.name.toUpperCase()}`)
    const write = await buy(b, token, 'MSFT', 1, 300)
    t.equal(write.status, 201, "a portfolio write on B with A's token (no foreign-key failure)")
    const out = await call(a, 'POST', '/api/auth/logout', { token })
    t.ok(out.status < 300, `logout on A (${out.status})`)
    for (const other of [b, c]) t.equal((await call(other, 'GET', '/api/auth/me', { token })).status, 401, `revoked on ${other.name.toUpperCase()}`)
  })

  await t.test(`${BUYS} concurrent buys over the three: shares equal the acknowledged buys`, async (t) => {
    await register(a, 'buyer@example.com')
    const { token } = await login(b, 'buyer@example.com')
    const results = await Promise.all(Array.from({ length: BUYS }, (_v, i) => buy(instances[i % 3]!, token, 'NVDA', 1, 100 + i)))
    const created = results.filter((r) => r.status === 201)
    const others = results.filter((r) => r.status !== 201)
    t.ok(created.length >= 1, `${created.length} of ${BUYS} acknowledged`)
    t.ok(others.every((r) => r.status === 409 && r.headers.get('retry-after') !== null), `the rest are retryable 409s (${others.map((r) => r.status).join(',') || 'none'})`)
    t.equal(new Set(created.map((r) => (r.body as { version: number }).version)).size, created.length, 'every 201 answered a different version')
    for (const on of instances) {
      const view = await call(on, 'GET', '/api/portfolio', { token })
      t.equal(sharesOf(view.body, 'NVDA'), created.length, `shares = acknowledged buys, read on ${on.name.toUpperCase()}`)
    }
    const rows = await queryDatabase<{ n: string }>(db.url, "SELECT count(*) AS n FROM portfolio_transactions WHERE ticker = 'NVDA'")
    t.equal(Number(rows[0]?.n), created.length, 'one stored transaction per acknowledged buy')
  })

  await t.test('one Idempotency-Key raced on A and B applies once', async (t) => {
    await register(a, 'raced@example.com')
    const { token } = await login(a, 'raced@example.com')
    const results = await Promise.all(Array.from({ length: 10 }, (_v, i) => buy(i % 2 === 0 ? a : b, token, 'META', 2, 50, 'raced-key-1')))
    const ok = results.filter((r) => r.status === 201)
    const others = results.filter((r) => r.status !== 201)
    t.ok(ok.length >= 1, `${ok.length} answered 201`)
    t.ok(others.every((r) => r.status === 409), `the rest are retryable 409s (${others.map((r) => r.status).join(',') || 'none'})`)
    t.equal(ok.filter((r) => r.headers.get('idempotent-replayed') === null).length, 1, 'exactly one 201 was not a replay')
    t.equal(new Set(ok.map((r) => (r.body as { version: number }).version)).size, 1, 'every 201 carries the one response')
    const rows = await queryDatabase<{ n: string }>(db.url, "SELECT count(*) AS n FROM portfolio_transactions WHERE ticker = 'META'")
    t.equal(Number(rows[0]?.n), 1, 'one transaction stored')
    t.equal(sharesOf((await call(c, 'GET', '/api/portfolio', { token })).body, 'META'), 2, 'C reads 2 shares')
  })

  await t.test(`the rate limit is exact across the three: ${RATE_LIMIT_MAX} allowed in total`, async (t) => {
    await register(a, 'limited@example.com')
    const { token } = await login(a, 'limited@example.com')
    const total = RATE_LIMIT_MAX * 2
    const results = await Promise.all(Array.from({ length: total }, (_v, i) => call(instances[i % 3]!, 'GET', '/api/auth/me', { token })))
    const allowed = results.filter((r) => r.status === 200).length
    const limited = results.filter((r) => r.status === 429).length
    t.equal(allowed, RATE_LIMIT_MAX, `${allowed} of ${total} allowed`)
    t.equal(limited, total - RATE_LIMIT_MAX, `${limited} answered 429`)
    for (const on of instances) {
      t.equal((await call(on, 'GET', '/api/auth/me', { token })).status, 429, `${on.name.toUpperCase()} still refuses`)
    }
  })

  // Calls Redis refused (CROSSSLOT on a cluster: keys of one call on several slots): each
  // was answered without Redis, so whatever it shared was not shared.
  const refusedCalls = (): Array<{ on: string, operation: string, reason: string }> => instances.flatMap((i) => i.kept
    .filter((l) => l.msg === LOG_COMMAND_REFUSED)
    .map((l) => ({ on: i.name, operation: String(l.operation), reason: String(l.reason) })))

  await t.test('a buy on A invalidates the portfolio cached on B and C', async (t) => {
    await register(a, 'cached@example.com')
    const { token } = await login(a, 'cached@example.com')
    t.equal((await buy(a, token, 'AAPL', 1, 10)).status, 201)
    for (const on of [b, c]) {
      // Read until this instance serves it from its cache.
      await waitFor(`${on.name}: portfolio cached`, 20_000, async () => {
        const r = await call(on, 'GET', '/api/portfolio', { token })
        return r.headers.get('x-cache') === 'HIT' ? true : undefined
      })
    }
    const before = await Promise.all([b, c].map(async (on) => ({ received: await metric(on, 'aic_cache_invalidations_received_total'), stale: await metric(on, 'aic_portfolio_stale_copies_total') })))
    const publishedBefore = await metric(a, 'aic_cache_invalidations_published_total')
    t.equal((await buy(a, token, 'AAPL', 2, 10)).status, 201, 'a second buy on A')
    // The buy awaits its invalidation before answering: A has published it by now, or it is
    // waiting in A's pending set for a Redis it believes away.
    const published = await metric(a, 'aic_cache_invalidations_published_total')
    t.ok(published > publishedBefore, `A published the invalidation before answering (published ${publishedBefore} → ${published}, pending ${await metric(a, 'aic_cache_invalidations_pending')})`)
    // B and C wait at the same time: one deadline, not two.
    const received = await Promise.allSettled([b, c].map((on, i) => waitFor(`${on.name}: an invalidation received`, 20_000, async () => (await metric(on, 'aic_cache_invalidations_received_total')) > before[i]!.received ? true : undefined)))
    for (const [i, on] of [b, c].entries()) {
      const was = before[i]!
      const got = received[i]!
      t.ok(got.status === 'fulfilled', `${on.name.toUpperCase()} received the invalidation${got.status === 'rejected' ? ` (${String(got.reason)})` : ''}`)
      const r = await call(on, 'GET', '/api/portfolio', { token })
      t.equal(sharesOf(r.body, 'AAPL'), 3, `${on.name.toUpperCase()} reads the new shares`)
      // Had the copy stayed, the version check would have refused it and counted a stale copy.
      t.equal(await metric(on, 'aic_portfolio_stale_copies_total'), was.stale, `${on.name.toUpperCase()}'s cached copy was dropped by the invalidation, not caught by the version check`)
    }
  })

  await t.test('the scheduled job runs once per tick across the three', async (t) => {
    const ran = (i: Instance): LogLineLike[] => i.kept.filter((l) => l.msg === 'job ran' && l.job === 'quotes-prewarm') as LogLineLike[]
    const elsewhere = (i: Instance): LogLineLike[] => i.kept.filter((l) => l.msg === 'job tick taken by another instance' && l.job === 'quotes-prewarm') as LogLineLike[]
    // Ticks every instance has seen (ran it, or found it taken): enough of them to judge.
    const seenByAll = (): string[] => {
      const seen = instances.map((i) => new Set([...ran(i), ...elsewhere(i)].map((l) => String(l.tick))))
      return [...seen[0]!].filter((tick) => seen.every((s) => s.has(tick)))
    }
    await waitFor('five ticks seen by all three instances', 60_000, () => seenByAll().length >= 5 ? true : undefined)
    const runs = instances.flatMap((i) => ran(i).map((l) => ({ tick: String(l.tick), on: i.name })))
    const perTick = new Map<string, string[]>()
    for (const r of runs) perTick.set(r.tick, [...(perTick.get(r.tick) ?? []), r.on])
    const twice = [...perTick].filter(([, on]) => on.length > 1)
    t.same(twice, [], 'no tick ran on two instances')
    const common = seenByAll()
    t.ok(common.every((tick) => perTick.get(tick)?.length === 1), `each of the ${common.length} ticks all three saw ran exactly once`)
    t.ok(instances.every((i) => elsewhere(i).length > 0 || ran(i).length > 0), 'every instance took part')
    t.comment(`runs per instance: ${instances.map((i) => `${i.name}=${ran(i).length}`).join(' ')}`)
  })

  if (topology.keysByMaster !== undefined) {
    const byMaster = await topology.keysByMaster()
    const written = [...byMaster].map(([master, keys]) => [master, keys.filter((k) => !PROBE_KEY.test(k))] as const)
    t.comment(`keys per master (write probe aside): ${written.map(([m, keys]) => `${m}=${keys.length}`).join(' ')}`)
    t.ok(byMaster.size >= 3, `${byMaster.size} masters`)
    t.same(written.filter(([, keys]) => keys.length === 0).map(([m]) => m), [], 'every master holds keys the instances wrote')
  }

  // Every guarantee above holds through Redis: had an instance fallen back to its in-process
  // state, a pass would prove nothing about sharing.
  const fallbacks = instances.flatMap((i) => i.kept.filter((l) => fallbackLines.some((f) => l.msg.startsWith(f))).map((l) => `${i.name}: ${l.msg} ${JSON.stringify(l.reason ?? l.err ?? '')}`))
  t.same(fallbacks, [], 'no instance left Redis during the checks')
  // Nor had a call that Redis refused.
  const refused = refusedCalls()
  const show = (r: { on: string, operation: string, reason: string }): string => `${r.on}: ${r.operation}: ${r.reason}`
  t.same(refused.map(show), [], 'Redis refused no call')
  // And none kept anything on its own disk: no SQLite file (or anything else) in its working directory.
  for (const i of instances) t.same(filesUnder(i.dir), [], `${i.name}'s working directory stayed empty`)
  t.comment(`three-instance checks took ${Date.now() - started} ms`)
}

function escapeRegExp (text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')
}

function filesUnder (dir: string): string[] {
  return fs.readdirSync(dir, { recursive: true, withFileTypes: true }).filter((e) => e.isFile()).map((e) => path.join(e.parentPath, e.name))
}

interface LogLineLike { msg: string, job?: string, tick?: string }
