/**
 * The rate limiter on a cheap limited route of the real service: GET /api/stocks/AAPL
 * answered from the quote cache (simulated provider), with a limit high enough that every
 * request is admitted: each is counted, none refused. @fastify/rate-limit in both rows of a
 * pair; only the store differs: the library's own in-process store (RATE_LIMIT_STORE=memory)
 * against ours (the window counter: Redis up, every hit counted in Redis, one script call per
 * batch; Redis down, in process, never waiting on Redis). Target: ours ≥ 0.9× the library's
 * store, Redis up and Redis down.
 *
 * Each "ours" row is measured right after its library row and reports the ratio to it, and
 * (Redis up) the Redis commands the load caused per counted hit, from INFO commandstats and
 * the service's own hit counter: counts that machine noise cannot move.
 */
import type { BenchContext, Measurement, Scenario } from '../lib.js'
import { sleep } from '../lib.js'

const PATH = '/api/stocks/AAPL'
const ENV = { RATE_LIMIT_MAX: '1000000000', RATE_LIMIT_WINDOW_MS: '60000' }

interface Health { status: string, redis: { status: string, mode: string } }

async function health (ctx: BenchContext): Promise<Health> {
  const res = await fetch(`${ctx.baseUrl}/api/health`, { signal: AbortSignal.timeout(2000) })
  return await res.json() as Health
}

/** Fails unless the service is in `mode`, the route is limited, and (`inRedis`) counted in Redis. */
function expect (status: string, redisStatus: string, inRedis: boolean) {
  return async (ctx: BenchContext): Promise<void> => {
    const deadline = Date.now() + 5000
    let last: Health | undefined
    while (Date.now() < deadline) {
      last = await health(ctx)
      if (last.status === status && last.redis.status === redisStatus) break
      await sleep(100)
    }
    if (last?.status !== status || last.redis.status !== redisStatus) {
      throw new Error(`health never reported ${status}/${redisStatus}; last answer: ${JSON.stringify(last)}`)
    }
    // Warm the quote cache, and check the route is limited.
    for (let i = 0; i < 2; i++) {
      const res = await fetch(ctx.baseUrl + PATH, { signal: AbortSignal.timeout(2000) })
      await res.arrayBuffer()
      if (res.status !== 200) throw new Error(`${PATH} answered ${res.status}`)
      if (res.headers.get('x-ratelimit-limit') !== ENV.RATE_LIMIT_MAX) throw new Error(`${PATH} is not rate limited (no x-ratelimit-limit header)`)
    }
    if (inRedis && ctx.redis) {
      // Hits answered at once reach Redis with the next script call (held up to 20 ms).
      const until = Date.now() + 2000
      let count = ''
      while (Date.now() < until) {
        count = await ctx.redis.command('GET', 'rate_limit:ip:127.0.0.1')
        if (Number(count) >= 2) break
        await sleep(50)
      }
      if (Number(count) < 2) throw new Error(`hits are not counted in Redis (rate_limit:ip:127.0.0.1 = ${JSON.stringify(count)})`)
    }
    if (ctx.redis) {
      await ctx.redis.command('CONFIG', 'RESETSTAT')
      ctx.state.hitsBefore = await redisHits(ctx)
    }
  }
}

/** Hits the service counted in Redis so far (its own metric). */
async function redisHits (ctx: BenchContext): Promise<number> {
  const res = await fetch(`${ctx.baseUrl}/metrics`, { signal: AbortSignal.timeout(2000) })
  const text = await res.text()
  return Number(/^aic_rate_limit_hits_total\{store="redis"\} (\d+)/m.exec(text)?.[1] ?? 0)
}

/** req/s of the library-store row measured just before, by Redis mode. */
const libraryReqPerSec: Record<string, number> = {}

function rememberLibrary (mode: string) {
  return async (_ctx: BenchContext, m: Measurement): Promise<string> => {
    libraryReqPerSec[mode] = m.reqPerSec
    return `${m.reqPerSec.toFixed(0)} req/s with @fastify/rate-limit's in-memory store`
  }
}

/** The ratio to the library-store row; with Redis up, the commands per counted hit. */
function compareToLibrary (mode: string) {
  return async (ctx: BenchContext, m: Measurement): Promise<string> => {
    const library = libraryReqPerSec[mode]
    const notes = [library === undefined ? 'no library row measured before it' : `${(m.reqPerSec / library).toFixed(3)}× the library's in-memory store (target ≥ 0.9)`]
    if (ctx.redis) {
      // The service flushes held hits within 20 ms; wait for them before reading the counts.
      await sleep(200)
      const info = await ctx.redis.command('INFO', 'commandstats')
      const calls = (cmd: string): number => Number(new RegExp(`cmdstat_${cmd}:calls=(\\d+)`).exec(info)?.[1] ?? 0)
      const scripts = calls('evalsha') + calls('eval')
      const all = [...info.matchAll(/cmdstat_([a-z|]+):calls=(\d+)/g)].map(([, name, n]) => [name ?? '', Number(n)] as const)
      const hits = await redisHits(ctx) - Number(ctx.state.hitsBefore ?? 0)
      // commandstats also counts the commands a script runs (INCRBY, PTTL, PEXPIRE).
      const inScripts = new Set(['incrby', 'pttl', 'pexpire', 'set'])
      const skip = new Set(['evalsha', 'eval', 'config|resetstat', 'info'])
      const named = (keep: (name: string) => boolean): string => all.filter(([name]) => keep(name)).map(([n, c]) => `${n} ${c}`).join(', ') || 'none'
      notes.push(`${hits} hits counted in Redis with ${scripts} script calls (${hits > 0 ? (scripts / hits).toFixed(4) : '-'} per hit; one call per batch)`)
      notes.push(`run by the scripts or the quote cache: ${named((n) => inScripts.has(n))}; other commands: ${named((n) => !inScripts.has(n) && !skip.has(n))}`)
    }
    return notes.join('; ')
  }
}

const LIBRARY = { ...ENV, RATE_LIMIT_STORE: 'memory' }

const scenarios: Scenario[] = [
  {
    name: 'GET /api/stocks/AAPL limited, library in-memory store (redis up)',
    redis: 'up',
    env: LIBRARY,
    setup: expect('OK', 'connected', false),
    after: rememberLibrary('up'),
    requests: () => ({ method: 'GET', path: PATH }),
  },
  {
    name: 'GET /api/stocks/AAPL limited, our store (redis up)',
    redis: 'up',
    env: ENV,
    setup: expect('OK', 'connected', true),
    after: compareToLibrary('up'),
    requests: () => ({ method: 'GET', path: PATH }),
  },
  {
    name: 'GET /api/stocks/AAPL limited, library in-memory store (redis down)',
    redis: 'down',
    env: LIBRARY,
    setup: expect('DEGRADED', 'disconnected', false),
    after: rememberLibrary('down'),
    requests: () => ({ method: 'GET', path: PATH }),
  },
  {
    name: 'GET /api/stocks/AAPL limited, our store (redis down)',
    redis: 'down',
    env: ENV,
    setup: expect('DEGRADED', 'disconnected', false),
    after: compareToLibrary('down'),
    requests: () => ({ method: 'GET', path: PATH }),
  },
]

export default scenarios
