/**
 * The cost of `fastify.locks.using` around an empty function: one master (target ≥ 0.35×
 * bare; the issue measured one SET NX PX plus a Lua release per request at 0.40–0.47×),
 * three independent masters (reported), and the in-process lock (no Redis, reference).
 * Every request locks a resource of its own, so this measures the lock's round trips, not
 * waiting on a busy lock.
 *
 * The harness only sends HTTP to the service (dist/src/server.js), which has no route that does
 * nothing but take a lock; rather than add a production route, this file doubles as a
 * preload for the service process. The harness compiles it with the service (buildForBench
 * in ../lib.ts: dist/bench/scenarios/locks.js), and the scenarios start the service with
 * NODE_OPTIONS="--import <that file>" and AIC_BENCH_LOCK_ROUTE=1, so the service runs
 * compiled here too; loaded that way, the file subscribes to Fastify's `fastify.initialization` diagnostics channel and
 * registers `POST /bench/lock` on the app the server builds (before its other plugins, so
 * no rate-limit or auth hook runs on it; the route reads `locks` at request time). Loaded
 * by the harness it only exports the scenarios (its `../lib.js` import is type-only, so the
 * service process never loads the harness).
 */
import { execFile } from 'node:child_process'
import diagnostics from 'node:diagnostics_channel'
import type { FastifyInstance } from 'fastify'
import type { BenchContext, Measurement, Scenario } from '../lib.js'

const ROUTE = '/bench/lock'
const NO_LOCK_ROUTE = '/bench/no-lock'

if (process.env.AIC_BENCH_LOCK_ROUTE === '1') {
  diagnostics.subscribe('fastify.initialization', (message) => {
    const { fastify } = message as { fastify: FastifyInstance }
    let n = 0
    void fastify.register(async (instance) => {
      instance.post(ROUTE, async () => {
        const resource = `lock:bench:${process.pid}:${n++}`
        return instance.locks.using(resource, 5000, async () => ({ ok: true, backend: instance.locks.backend(), masters: instance.locks.masterCount }))
      })
      // The same route without the lock: what the lock adds is the difference.
      instance.post(NO_LOCK_ROUTE, async () => ({ ok: true, backend: instance.locks.backend(), masters: instance.locks.masterCount }))
    })
  })
}

/** This file as the harness's buildForBench compiled it (dist/bench/scenarios/locks.js). */
const COMPILED_SELF = new URL('../../dist/bench/scenarios/locks.js', import.meta.url).href
const ENV = {
  NODE_OPTIONS: `--import ${COMPILED_SELF}`,
  AIC_BENCH_LOCK_ROUTE: '1',
  // The portfolio jobs would add their own Redis traffic to the measurement.
  SCHEDULER_ENABLED: 'false',
}

function redisCli (url: string, ...args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile('redis-cli', ['-u', url, ...args], { timeout: 10_000 }, (err, stdout) => err ? reject(err) : resolve(stdout.trim()))
  })
}

/** The lock URLs: the REDLOCK_URLS masters when there are any, else the main Redis. */
function lockUrls (ctx: BenchContext): string[] {
  return ctx.redisMasterUrls ?? (ctx.redisUrl !== undefined ? [ctx.redisUrl] : [])
}

/** The route exists, answers from the backend the scenario means, and the counters start at zero. */
function expectBackend (backend: string, masters: number) {
  return async (ctx: BenchContext): Promise<void> => {
    const res = await fetch(ctx.baseUrl + ROUTE, { method: 'POST', signal: AbortSignal.timeout(3000) })
    const body = await res.text()
    if (res.status === 404) throw new Error(`${ROUTE} is missing: the preload did not run (${body})`)
    const answer = JSON.parse(body) as { backend?: string, masters?: number }
    if (answer.backend !== backend || answer.masters !== masters) {
      throw new Error(`expected backend ${backend} with ${masters} master(s), got ${body}`)
    }
    for (const url of lockUrls(ctx)) await redisCli(url, 'CONFIG', 'RESETSTAT')
  }
}

/** Every request took and released its lock on every master: SET NX and a release each, nothing left behind. */
async function checkLocking (ctx: BenchContext, m: Measurement): Promise<string> {
  const notes: string[] = []
  for (const url of lockUrls(ctx)) {
    const info = await redisCli(url, 'INFO', 'commandstats')
    const calls = (cmd: string): number => Number(new RegExp(`cmdstat_${cmd}:calls=(\\d+)`).exec(info)?.[1] ?? 0)
    const sets = calls('set')
    const releases = calls('evalsha') + calls('eval')
    const left = (await redisCli(url, '--scan', '--pattern', 'lock:bench:*')).split('\n').filter((l) => l !== '').length
    if (sets < m.ok) throw new Error(`${url}: ${sets} SETs for ${m.ok} answered requests`)
    if (releases < m.ok) throw new Error(`${url}: ${releases} release scripts for ${m.ok} answered requests`)
    if (left > 0) throw new Error(`${url}: ${left} lock:bench:* keys left after the load`)
    notes.push(`${sets} SET NX PX and ${releases} releases`)
  }
  return `per master (warmup included): ${notes.join('; ')}; no lock left behind`
}

const scenarios: Scenario[] = [
  {
    name: 'POST /bench/lock: locks.using, empty fn (1 master)',
    redis: 'up',
    env: ENV,
    target: { minRatio: 0.35, note: 'issue #5: ≥ 0.35× bare (one SET NX PX plus a Lua release per request ≈ 0.40–0.47× bare)' },
    setup: expectBackend('redlock', 1),
    after: checkLocking,
    requests: () => ({ method: 'POST', path: ROUTE }),
  },
  {
    name: 'POST /bench/lock: locks.using, empty fn (3 masters)',
    redis: 'up',
    redisMasters: 3,
    env: ENV,
    target: { note: 'issue #5: report; Redlock over three independent masters (REDLOCK_URLS)' },
    setup: expectBackend('redlock', 3),
    after: checkLocking,
    requests: () => ({ method: 'POST', path: ROUTE }),
  },
  {
    name: 'POST /bench/no-lock: the same route without the lock (redis up), for reference',
    redis: 'up',
    env: ENV,
    setup: async (ctx) => {
      const res = await fetch(ctx.baseUrl + NO_LOCK_ROUTE, { method: 'POST', signal: AbortSignal.timeout(3000) })
      if (res.status !== 200) throw new Error(`${NO_LOCK_ROUTE} answered ${res.status}: the preload did not run`)
      await res.arrayBuffer()
    },
    requests: () => ({ method: 'POST', path: NO_LOCK_ROUTE }),
  },
  {
    name: 'POST /bench/lock: in-process lock (no redis), for reference',
    redis: 'none',
    env: ENV,
    setup: expectBackend('local', 0),
    requests: () => ({ method: 'POST', path: ROUTE }),
  },
]

export default scenarios
