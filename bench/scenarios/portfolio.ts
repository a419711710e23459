/**
 * POST /api/portfolio/transactions (a buy of 1 share) by 50 users at once, one connection
 * each: per request JWT + session check, the Redlock acquisition of lock:portfolio:<user>
 * (one master: the main Redis), the portfolio read, pricing with the cached quote, the
 * version-checked commit in SQLite (one IMMEDIATE transaction), the invalidation of
 * portfolio:<user> (DEL + PUBLISH) and the release (compare-and-delete).
 *
 * The harness sends the same request list on every connection; the list holds one buy per
 * user, so each connection walks through the 50 users. At the start of each run all 50
 * connections begin with user 0 (a brief pile-up on one lock), then they spread over the
 * users, about one connection per user. The after-load check reads every portfolio back:
 * shares must equal the version (each buy adds one share and one version), i.e. no update
 * was lost under load.
 */
import type { BenchContext, Scenario } from '../lib.js'
import { USER_SCENARIO_ENV, post, registerUsers, sleep } from '../lib.js'

const USERS = 50
const PASSWORD = 'bench-password-1'
const ENV = USER_SCENARIO_ENV

interface Health { redis: { status: string } }


function setupUsers (redisStatus: 'connected' | 'disabled') {
  return async (ctx: BenchContext): Promise<void> => {
    const deadline = Date.now() + 5000
    let health: Health | undefined
    while (Date.now() < deadline) {
      health = await (await fetch(`${ctx.baseUrl}/api/health`, { signal: AbortSignal.timeout(2000) })).json() as Health
      if (health.redis.status === redisStatus) break
      await sleep(100)
    }
    if (health?.redis.status !== redisStatus) throw new Error(`health never reported redis ${redisStatus}: ${JSON.stringify(health)}`)

    const tokens = await registerUsers(ctx, USERS, PASSWORD)
    ctx.state.tokens = tokens
    if (ctx.redis) {
      // One buy by hand: the lock and the cache go through Redis, not a fallback.
      const res = await post(ctx, '/api/portfolio/transactions', { ticker: 'AAPL', side: 'buy', shares: 1, price: 100 }, tokens[USERS - 1])
      if (res.status !== 201) throw new Error(`buy answered ${res.status}: ${await res.text()}`)
      const get = await fetch(`${ctx.baseUrl}/api/portfolio`, { headers: { authorization: `Bearer ${String(tokens[USERS - 1])}` } })
      const { userId } = await get.json() as { userId: string }
      if (await ctx.redis.command('EXISTS', `portfolio:${userId}`) !== '1') throw new Error('portfolio:<id> is not cached in Redis')
    }
  }
}

const buys = (ctx: BenchContext) => (ctx.state.tokens as string[]).map((token) => ({
  method: 'POST' as const,
  path: '/api/portfolio/transactions',
  headers: { authorization: `Bearer ${token}` },
  body: { ticker: 'AAPL', side: 'buy', shares: 1, price: 100 },
}))

/** Every portfolio must hold as many shares as it has versions: no lost update. */
async function checkNoLostUpdate (ctx: BenchContext): Promise<string> {
  let shares = 0
  for (const token of ctx.state.tokens as string[]) {
    const res = await fetch(`${ctx.baseUrl}/api/portfolio`, { headers: { authorization: `Bearer ${token}` }, signal: AbortSignal.timeout(5000) })
    const view = await res.json() as { version: number, positions: Array<{ ticker: string, shares: number }> }
    const held = view.positions.find((p) => p.ticker === 'AAPL')?.shares ?? 0
    if (held !== view.version) throw new Error(`a portfolio holds ${held} shares at version ${view.version}`)
    shares += held
  }
  return `${USERS} portfolios read back: ${shares} shares bought in total, shares = version in every one (no lost update)`
}

const scenarios: Scenario[] = [
  {
    name: 'POST /api/portfolio/transactions buy, 50 users (redis up: Redlock, 1 master)',
    redis: 'up',
    env: ENV,
    connections: USERS,
    target: { note: 'issue #5: report p50/p99 of a buy with 50 concurrent users' },
    setup: setupUsers('connected'),
    requests: buys,
    after: checkNoLostUpdate,
  },
  {
    name: 'POST /api/portfolio/transactions buy, 50 users (no redis: in-process locks, reference)',
    redis: 'none',
    env: ENV,
    connections: USERS,
    setup: setupUsers('disabled'),
    requests: buys,
    after: checkNoLostUpdate,
  },
]

export default scenarios
