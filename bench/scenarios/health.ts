/**
 * GET /api/health: with Redis up it must answer from the cached PING (one PING a second at
 * most), so it should cost little more than a bare Fastify route; the scenario counts the
 * PINGs Redis received to prove it. Without Redis and with Redis unreachable it must not
 * wait on anything either. /api/health/live is measured as a reference: the service's
 * cheapest route, so "health minus live" is what the health handler itself costs.
 */
import type { BenchContext, Measurement, Scenario } from '../lib.js'
import { sleep } from '../lib.js'

interface Health { status: string, redis: { status: string, mode: string } }

/** Fails the scenario unless health reports what the scenario means to measure. */
function expectHealth (status: string, redisStatus: string) {
  return async (ctx: BenchContext): Promise<void> => {
    const deadline = Date.now() + 5000
    let last: Health | undefined
    while (Date.now() < deadline) {
      const res = await fetch(`${ctx.baseUrl}/api/health`, { signal: AbortSignal.timeout(2000) })
      last = await res.json() as Health
      if (last.status === status && last.redis.status === redisStatus) return
      await sleep(100)
    }
    throw new Error(`health never reported ${status}/${redisStatus}; last answer: ${JSON.stringify(last)}`)
  }
}

/** Zero Redis's command counters, so `countPings` sees only what the load caused. */
async function resetRedisStats (ctx: BenchContext): Promise<void> {
  if (!ctx.redis) throw new Error('this scenario needs redis: "up"')
  await ctx.redis.command('CONFIG', 'RESETSTAT')
  ctx.state.statsSince = Date.now()
}

/** Health must reuse its PING for about a second: allow one a second plus slack. */
async function countPings (ctx: BenchContext, m: Measurement): Promise<string> {
  if (!ctx.redis) throw new Error('this scenario needs redis: "up"')
  const info = await ctx.redis.command('INFO', 'commandstats')
  const pings = Number(/cmdstat_ping:calls=(\d+)/.exec(info)?.[1] ?? 0)
  const seconds = (Date.now() - Number(ctx.state.statsSince)) / 1000
  const text = `Redis received ${pings} PINGs in ${seconds.toFixed(1)} s while the service answered ${m.total} measured requests (plus warmup)`
  if (pings > Math.ceil(seconds) + 2) throw new Error(`${text}: more than one a second, the PING is not cached`)
  return text
}

const scenarios: Scenario[] = [
  {
    name: 'GET /api/health (redis up)',
    redis: 'up',
    target: { minRatio: 0.8, note: 'serves the cached PING (reused ~1 s), not a PING per request' },
    setup: async (ctx) => {
      await expectHealth('OK', 'connected')(ctx)
      await resetRedisStats(ctx)
    },
    after: countPings,
    requests: () => ({ method: 'GET', path: '/api/health' }),
  },
  {
    name: 'GET /api/health (no redis)',
    redis: 'none',
    setup: expectHealth('OK', 'disabled'),
    requests: () => ({ method: 'GET', path: '/api/health' }),
  },
  {
    // Reference, not a target: same plugins, hooks and logger, a constant answer.
    name: 'GET /api/health/live (redis up, reference)',
    redis: 'up',
    setup: expectHealth('OK', 'connected'),
    requests: () => ({ method: 'GET', path: '/api/health/live' }),
  },
  {
    name: 'GET /api/health (redis down)',
    redis: 'down',
    setup: expectHealth('DEGRADED', 'disconnected'),
    requests: () => ({ method: 'GET', path: '/api/health' }),
  },
]

export default scenarios
