/**
 * The buy route on each primary store, in the same run: SQLite (the embedded file) and
 * PostgreSQL (a private database `aic_bench_<random>` on the machine's server at
 * 127.0.0.1:5432, dropped at exit; `BENCH_PG_URL` names another server's admin URL).
 * Both with a private Redis (Redlock, cache), 50 users, one connection each, as in
 * portfolio.ts, so the two rows differ only in the store.
 *
 * Req/s moves with the machine; the figure noise cannot move is the number of statements
 * each request sends to the database. The `after` check of each scenario counts them from
 * the store's own counter (every statement a pooled connection sends, BEGIN and COMMIT
 * included), with an app built in the harness process on the same kind of store: a buy
 * without and with an Idempotency-Key, a cached and an uncached portfolio read.
 *
 *   npm run bench -- database
 *   BENCH_RUNS=1 BENCH_DURATION=5 npm run bench -- database   # quicker
 */
import { randomBytes } from 'node:crypto'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { BenchContext, Scenario } from '../lib.js'
import { USER_SCENARIO_ENV, privateDatabase, registerUsers, sleep } from '../lib.js'
import { buildApp } from '../../src/app.js'
import { loadConfig } from '../../src/config.js'

const USERS = 50
const PASSWORD = 'bench-password-1'
const ENV = {
  ...USER_SCENARIO_ENV,
  SCHEDULER_ENABLED: 'false',
  // The 50 connections start on one user's lock: wait for it rather than answer 409.
  LOCK_WAIT_MS: '10000',
  // What is measured is the store, not the load shedder (which a busy machine trips).
  MAX_EVENT_LOOP_DELAY_MS: '0',
}




function setupUsers (kind: 'sqlite' | 'postgres') {
  return async (ctx: BenchContext): Promise<void> => {
    const deadline = Date.now() + 5000
    let health: { redis: { status: string }, database: { kind: string, status: string } } | undefined
    while (Date.now() < deadline) {
      health = await (await fetch(`${ctx.baseUrl}/api/health`, { signal: AbortSignal.timeout(2000) })).json() as typeof health
      if (health?.redis?.status === 'connected') break
      await sleep(100)
    }
    if (health?.redis?.status !== 'connected') throw new Error(`health never reported redis connected: ${JSON.stringify(health)}`)
    if (health.database.kind !== kind || health.database.status !== 'connected') throw new Error(`the service is not on ${kind}: ${JSON.stringify(health.database)}`)
    const tokens = await registerUsers(ctx, USERS, PASSWORD)
    ctx.state.tokens = tokens
  }
}

const buys = (ctx: BenchContext) => (ctx.state.tokens as string[]).map((token) => ({
  method: 'POST' as const,
  path: '/api/portfolio/transactions',
  headers: { authorization: `Bearer ${token}` },
  body: { ticker: 'AAPL', side: 'buy', shares: 1, price: 100 },
}))

/**
 * Statements per request on this kind of store, from the store's own counter, with an app
 * in this process (no Redis: the database's share of the work does not depend on it).
 */
export async function roundTrips (databaseUrl: string | undefined): Promise<Record<string, number>> {
  const dir = mkdtempSync(join(tmpdir(), 'aic-bench-rt-'))
  const app = await buildApp(loadConfig({
    ...ENV, NODE_ENV: 'test', LOG_LEVEL: 'silent', DATABASE_PATH: join(dir, 'rt.db'), DATABASE_URL: databaseUrl ?? '', REDIS_URL: '',
    // The harness's event loop is busy right after a load run: no shedding of these requests.
    MAX_EVENT_LOOP_DELAY_MS: '0',
  }))
  try {
    await app.ready()
    const email = `rt-${randomBytes(4).toString('hex')}@example.com`
    await app.inject({ method: 'POST', url: '/api/auth/register', payload: { email, password: PASSWORD } })
    const login = await app.inject({ method: 'POST', url: '/api/auth/login', payload: { email, password: PASSWORD } })
    const auth = { authorization: `Bearer ${login.json<{ token: string }>().token}` }
    const count = async (n: number, fn: (i: number) => Promise<unknown>): Promise<number> => {
      const before = app.db.roundTrips()
      for (let i = 0; i < n; i++) await fn(i)
      return (app.db.roundTrips() - before) / n
    }
    const buy = async (key?: string): Promise<void> => {
      const res = await app.inject({
        method: 'POST', url: '/api/portfolio/transactions', headers: { ...auth, ...(key !== undefined ? { 'idempotency-key': key } : {}) }, payload: { ticker: 'AAPL', side: 'buy', shares: 1, price: 100 },
      })
      if (res.statusCode !== 201) throw new Error(`round-trip count: a buy answered ${res.statusCode} ${res.body}`)
    }
    await buy() // the first write creates the portfolio (an INSERT instead of an UPDATE)
    const read = async (): Promise<void> => {
      const res = await app.inject({ method: 'GET', url: '/api/portfolio', headers: auth })
      if (res.statusCode !== 200) throw new Error(`round-trip count: a read answered ${res.statusCode} ${res.body}`)
    }
    /** A read right after a write (which invalidated the cached view): only the read's statements count. */
    const uncachedReads = async (n: number): Promise<number> => {
      let total = 0
      for (let i = 0; i < n; i++) {
        await buy()
        const before = app.db.roundTrips()
        await read()
        total += app.db.roundTrips() - before
      }
      return total / n
    }
    return {
      buy: await count(20, () => buy()),
      'buy with Idempotency-Key': await count(20, (i) => buy(`k-${i}`)),
      'replayed buy': await count(20, () => buy('k-0')),
      'portfolio read, uncached': await uncachedReads(20),
      'portfolio read, cached': await count(20, () => read()),
    }
  } finally {
    await app.close()
    rmSync(dir, { recursive: true, force: true })
  }
}

/** Every portfolio must hold as many shares as it has versions (no lost update); then the round trips. */
function after (kind: 'sqlite' | 'postgres', databaseUrl?: string) {
  return async (ctx: BenchContext): Promise<string> => {
    let shares = 0
    for (const token of ctx.state.tokens as string[]) {
      const res = await fetch(`${ctx.baseUrl}/api/portfolio`, { headers: { authorization: `Bearer ${token}` }, signal: AbortSignal.timeout(5000) })
      const view = await res.json() as { version: number, positions: Array<{ ticker: string, shares: number }> }
      const held = view.positions.find((p) => p.ticker === 'AAPL')?.shares ?? 0
      if (held !== view.version) throw new Error(`a portfolio holds ${held} shares at version ${view.version}`)
      shares += held
    }
    const trips = await roundTrips(databaseUrl)
    const text = Object.entries(trips).map(([k, v]) => `${k} ${Math.round(v * 100) / 100}`).join(', ')
    return `${USERS} portfolios read back, ${shares} shares, shares = version in each; ${kind} statements per request: ${text}`
  }
}

const target = await privateDatabase('aic_bench')

const scenarios: Scenario[] = [
  {
    name: 'POST /api/portfolio/transactions buy, 50 users, SQLite (redis up)',
    redis: 'up',
    env: ENV,
    connections: USERS,
    setup: setupUsers('sqlite'),
    requests: buys,
    after: after('sqlite'),
  },
]

if ('url' in target) {
  const url = target.url
  scenarios.push({
    name: 'POST /api/portfolio/transactions buy, 50 users, PostgreSQL (redis up)',
    redis: 'up',
    env: { ...ENV, DATABASE_URL: url },
    connections: USERS,
    setup: setupUsers('postgres'),
    requests: buys,
    after: after('postgres', url),
  })
} else {
  process.stderr.write(`bench/scenarios/database.ts: no PostgreSQL row: ${target.skip}\n`)
}

export default scenarios
