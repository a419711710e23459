/**
 * The two-tier cache engine (src/engines/cache) against real redis-server processes:
 * single-flight in one process and across instances (a cold key claimed by a placeholder in
 * its own key, waiters woken by the landing's message), grace, early refresh, L1 bounds and
 * coherence, invalidation and put races, one key per command, and Redis going away and
 * coming back. Waits are for conditions, with deadlines of seconds.
 */
import t from 'tap'
import { createRedisState, type RedisState } from '../../src/engines/redis/state.js'
import { MemoryStore } from '../../src/engines/store/memory-store.js'
import { ResilientStore } from '../../src/engines/store/resilient-store.js'
import { createTwoTierCache, type TwoTierCache, type TwoTierCacheOptions } from '../../src/engines/cache/two-tier-cache.js'
import { shouldRefreshEarly } from '../../src/engines/cache/xfetch.js'
import { CacheLoadTimeoutError } from '../../src/engines/cache/errors.js'
import { noCache } from '../../src/engines/cache/types.js'
import { sleep, waitFor, type TapTest } from '../helper.js'
import { skipUnlessRedis, startRedis, type RedisProcess } from '../helpers/redis-server.js'
import { startMonitor } from '../helpers/monitor.js'
import { createRequire } from 'node:module'

/** Redis Cluster's hash slot of a key (the CRC16 ioredis itself uses, from its dependency). */
const slotOf = createRequire(import.meta.url)('cluster-key-slot') as (key: string) => number

const redisOpts = skipUnlessRedis()

const quiet = { info () {}, warn () {}, error () {}, debug () {} }

interface Engine { cache: TwoTierCache, state: RedisState, warnings: string[] }

async function engine (t: TapTest, redis: RedisProcess | null, options: Partial<TwoTierCacheOptions> = {}, commandTimeoutMs?: number): Promise<Engine> {
  const warnings: string[] = []
  const log = { ...quiet, warn: (_o: object, msg: string) => { warnings.push(msg) } }
  const state = createRedisState({ url: redis?.url, log, ...(options.keyPrefix ? { keyPrefix: options.keyPrefix } : {}), ...(commandTimeoutMs !== undefined ? { commandTimeoutMs } : {}) })
  await state.start()
  const store = new ResilientStore(state, new MemoryStore())
  const cache = createTwoTierCache({
    store,
    state,
    log,
    createSubscriber: () => state.client?.duplicate({ autoResubscribe: false }) ?? null,
    names: [['stock:', 'quotes'], ['portfolio:', 'portfolios']],
    ...options,
  })
  t.teardown(async () => {
    await cache.close()
    await state.close()
  })
  if (redis !== null && options.createSubscriber === undefined) await waitFor(() => cache.stats().invalidation.subscribed, 3000)
  return { cache, state, warnings }
}

async function privateRedis (t: TapTest): Promise<RedisProcess> {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  return redis
}

/** A loader that answers once `open()` is called; `started` resolves when it is first called. */
function gated<T> (value: () => T) {
  let open!: () => void
  let started!: () => void
  const gate = new Promise<void>((resolve) => { open = resolve })
  const begun = new Promise<void>((resolve) => { started = resolve })
  const loader = Object.assign(async (): Promise<T> => {
    loader.calls++
    started()
    await gate
    return value()
  }, { calls: 0, open: () => open(), started: begun })
  return loader
}

/** Calls per command since the last CONFIG RESETSTAT (INFO commandstats). */
async function commandStats (redis: RedisProcess): Promise<Record<string, number>> {
  const info = await redis.command('INFO', 'commandstats')
  const counts: Record<string, number> = {}
  for (const m of info.matchAll(/cmdstat_([a-z|]+):calls=(\d+)/g)) counts[m[1] as string] = Number(m[2])
  return counts
}

/** A loader that counts its calls, answers `value()` after `delayMs`. */
function counting<T> (value: () => T, delayMs = 0) {
  const loader = Object.assign(async (): Promise<T> => {
    loader.calls++
    if (delayMs > 0) await sleep(delayMs)
    return value()
  }, { calls: 0 })
  return loader
}

t.test('concurrent misses in one process share one loader call', redisOpts, async (t) => {
  const redis = await privateRedis(t)
  const { cache } = await engine(t, redis)
  const loader = counting(() => ({ price: 1 }), 100)
  const results = await Promise.all(Array.from({ length: 100 }, () => cache.get({ key: 'stock:A', ttl: 20, load: loader })))
  t.equal(loader.calls, 1)
  t.ok(results.every((r) => r.cache === 'MISS' && (r.value as { price: number }).price === 1))
  t.match(cache.stats().caches.quotes, { misses: 100, loads: 1, hitsL1: 0 })
  t.equal((await cache.get({ key: 'stock:A', ttl: 20, load: loader })).layer, 'l1')
  t.equal(cache.stats().caches.quotes?.hitsL1, 1)
})

t.test('N instances × M concurrent misses = 1 loader call (the key is claimed, the others hear the landing)', redisOpts, async (t) => {
  const redis = await privateRedis(t)
  const engines = await Promise.all([engine(t, redis), engine(t, redis), engine(t, redis)])
  const loader = counting(() => ({ price: 7 }), 150)
  const results = await Promise.all(engines.flatMap(({ cache }) =>
    Array.from({ length: 30 }, () => cache.get({ key: 'stock:B', ttl: 20, load: loader }))))
  t.equal(loader.calls, 1, 'one call for 3 × 30 concurrent misses')
  t.ok(results.every((r) => (r.value as { price: number }).price === 7))
  t.same([...new Set(results.map((r) => r.layer))].sort(), ['l2-wait', 'loader'], 'the others waited for the landing')
  t.equal(await redis.command('EXISTS', 'lock:fill:stock:B'), '0', 'no lock key: the value key itself was claimed')
  t.match(await redis.command('GET', 'stock:B'), /^\{"v":\{"price":7\}/, 'and now holds the entry')
})

t.test('a cold key is claimed by a placeholder in its own key: one loader call across two engines', redisOpts, async (t) => {
  const redis = await privateRedis(t)
  const a = await engine(t, redis)
  const b = await engine(t, redis)
  const loader = gated(() => ({ price: 11 }))
  const first = a.cache.get({ key: 'stock:CLAIM', ttl: 20, grace: 30, load: loader })
  await loader.started
  t.match(await redis.command('GET', 'stock:CLAIM'), /^~fill:/, 'the value key holds the fill placeholder while A loads')
  const pttl = Number(await redis.command('PTTL', 'stock:CLAIM'))
  t.ok(pttl > 0 && pttl <= 3000, `the placeholder lives the lock TTL (PTTL ${pttl})`)
  const sets = (await commandStats(redis)).set ?? 0
  const second = b.cache.get({ key: 'stock:CLAIM', ttl: 20, grace: 30, load: loader })
  await waitFor(async () => (await commandStats(redis)).set === sets + 1, 5000)
  loader.open()
  const [ra, rb] = await Promise.all([first, second])
  t.equal(loader.calls, 1)
  t.same([ra.layer, rb.layer], ['loader', 'l2-wait'])
  t.same(rb.value, { price: 11 })
  const life = Number(await redis.command('PTTL', 'stock:CLAIM'))
  t.ok(life > 0 && life <= 20_000, `the value key lives its ttl, no longer (PTTL ${life})`)
  const grace = Number(await redis.command('PTTL', 'stale:{stock:CLAIM}'))
  t.ok(grace > life && grace <= 50_000, `the grace copy lives ttl + grace (PTTL ${grace})`)
  t.equal(slotOf('stale:{stock:CLAIM}'), slotOf('stock:CLAIM'), 'in the value key\'s hash slot')
  t.equal(await redis.command('DBSIZE'), '2', 'the value key and its grace copy: no generation or lock key beside them')
})

t.test('a waiter is woken by the landing\'s message, which carries the value: no polling, no further read', redisOpts, async (t) => {
  const redis = await privateRedis(t)
  const a = await engine(t, redis)
  const b = await engine(t, redis)
  const loader = gated(() => 'landed')
  const first = a.cache.get({ key: 'stock:WAKE', ttl: 20, grace: 30, load: loader })
  await loader.started
  const sets = (await commandStats(redis)).set ?? 0
  const second = b.cache.get({ key: 'stock:WAKE', ttl: 20, grace: 30, load: loader })
  // Both claims are in (A's took the key, B's found the placeholder).
  await waitFor(async () => (await commandStats(redis)).set === sets + 1, 5000)
  await redis.command('CONFIG', 'RESETSTAT')
  await sleep(500)
  const idle = await commandStats(redis)
  t.same(Object.keys(idle).filter((c) => !['info', 'config|resetstat', 'ping'].includes(c)), [], `nothing polls Redis while B waits (${JSON.stringify(idle)})`)
  loader.open()
  t.same([(await first).layer, (await second).layer, (await second).value], ['loader', 'l2-wait', 'landed'])
  const used = await commandStats(redis)
  delete used.info
  delete used['config|resetstat']
  delete used.ping
  const scripts = (used.evalsha ?? 0) + (used.eval ?? 0)
  t.equal(used.set, 2, 'two SETs: the value over the placeholder (XX GET), then its grace copy')
  t.equal(used.publish, 1, 'one PUBLISH, in the same script')
  t.equal(used.get, undefined, 'no GET: B read nothing, and the landing checks its placeholder with SET GET')
  t.ok(scripts >= 1 && scripts <= 2, 'the landing script (EVAL once if Redis did not know it yet)')
  t.same(Object.keys(used).filter((c) => !['set', 'publish', 'evalsha', 'eval'].includes(c)), [], `nothing else (${JSON.stringify(used)})`)
})

t.test('a lost message: the waiter claims again after the placeholder\'s TTL and finds the value', redisOpts, async (t) => {
  const redis = await privateRedis(t)
  const { cache } = await engine(t, redis, { lockTtlMs: 1000 })
  await redis.command('SET', 'stock:LOST', '~fill:elsewhere', 'PX', '1000')
  const loader = counting(() => 'here')
  const sets = (await commandStats(redis)).set ?? 0
  const waiting = cache.get({ key: 'stock:LOST', ttl: 20, load: loader })
  await waitFor(async () => (await commandStats(redis)).set === sets + 1, 5000)
  // The other instance lands without the message reaching anyone.
  await redis.command('SET', 'stock:LOST', JSON.stringify({ v: 'there', t: Date.now(), ttl: 20_000, g: 0, d: 0 }), 'PX', '20000')
  const result = await waiting
  t.same([result.layer, result.value], ['l2', 'there'], 'found by its next claim')
  t.equal(loader.calls, 0, 'and not loaded here')
})

t.test('concurrent misses share one loader call without Redis: the in-process flight is then the only guard', async (t) => {
  const { cache } = await engine(t, null)
  const loader = counting(() => ({ price: 2 }), 100)
  const results = await Promise.all(Array.from({ length: 100 }, () => cache.get({ key: 'stock:S1', ttl: 20, load: loader })))
  t.equal(loader.calls, 1, 'one call for 100 concurrent misses')
  t.ok(results.every((r) => r.cache === 'MISS' && (r.value as { price: number }).price === 2))
})

t.test('concurrent misses share one loader call while Redis is down', redisOpts, async (t) => {
  const redis = await privateRedis(t)
  const { cache, state } = await engine(t, redis)
  await redis.kill()
  await waitFor(() => !state.available, 5000)
  const loader = counting(() => ({ price: 3 }), 100)
  const results = await Promise.all(Array.from({ length: 100 }, () => cache.get({ key: 'stock:S2', ttl: 20, load: loader })))
  t.equal(loader.calls, 1, 'one call for 100 concurrent misses, no fill lock to lean on')
  t.ok(results.every((r) => (r.value as { price: number }).price === 3))
})

t.test('the refresh lock of an early refresh is released by its owner only: a lock someone else holds when the load ends stays', redisOpts, async (t) => {
  const redis = await privateRedis(t)
  // random() = 1: never early; then 0: always early (XFetch).
  let r = 1
  const { cache } = await engine(t, redis, { random: () => r })
  await cache.wrap({ key: 'stock:OWN', ttl: 60, grace: 60, load: async () => 0 })
  r = 0
  const loader = gated(() => 1)
  t.equal(await cache.wrap({ key: 'stock:OWN', ttl: 60, grace: 60, load: loader }), 0, 'the fresh copy answers')
  r = 1
  await loader.started
  t.equal(await redis.command('EXISTS', 'lock:fill:stock:OWN'), '1', 'an early refresh runs under the locks engine')
  // As if this instance's lock had expired and another instance had taken it.
  await redis.command('SET', 'lock:fill:stock:OWN', 'another-owner', 'PX', '10000')
  loader.open()
  await waitFor(async () => /^\{"v":1,/.test(String(await redis.command('GET', 'stock:OWN'))), 5000)
  t.pass('the refresh landed over the entry it refreshed')
  t.equal(await redis.command('GET', 'lock:fill:stock:OWN'), 'another-owner', 'not deleted by the instance whose lock it no longer was')
  const pttl = Number(await redis.command('PTTL', 'lock:fill:stock:OWN'))
  t.ok(pttl > 5000, `nor shortened by its renewal (PTTL ${pttl} ms of 10000)`)
})

t.test('the fill placeholder is renewed while a load outlasts its TTL: another instance waits instead of loading', redisOpts, async (t) => {
  const redis = await privateRedis(t)
  const a = await engine(t, redis, { lockTtlMs: 2000 })
  const b = await engine(t, redis, { lockTtlMs: 2000 })
  const loader = gated(() => ({ price: 5 }))
  const first = a.cache.get({ key: 'stock:LONG', ttl: 20, load: loader })
  await loader.started
  await sleep(5000)
  t.match(await redis.command('GET', 'stock:LONG'), /^~fill:/, 'still claimed 5 s into the load, 2.5 times its 2 s TTL')
  const second = b.cache.get({ key: 'stock:LONG', ttl: 20, load: loader })
  await sleep(1000)
  loader.open()
  t.equal((await second).layer, 'l2-wait')
  t.equal(loader.calls, 1, 'the second instance did not load')
  t.equal((await first).layer, 'loader')
  t.match(await redis.command('GET', 'stock:LONG'), /^\{"v":/, 'the entry replaced the placeholder')
})

t.test('a batch loads at most `concurrency` misses at a time', async (t) => {
  const { cache } = await engine(t, null)
  let inFlight = 0
  let most = 0
  const loader = async (key: string): Promise<string> => {
    inFlight++
    most = Math.max(most, inFlight)
    await sleep(30)
    inFlight--
    return key
  }
  const keys = Array.from({ length: 10 }, (_v, i) => `stock:BATCH${i}`)
  const settled = await cache.getMany({ keys: keys, ttl: 20, load: loader, concurrency: 3 })
  t.equal(most, 3, 'three at a time: never more, and not one by one')
  t.same(settled.map((s) => (s.status === 'fulfilled' ? s.value.value : null)), keys)
})

t.test('a placeholder left by a crashed instance: when it expires, the waiting instances still load once between them', redisOpts, async (t) => {
  const redis = await privateRedis(t)
  const engines = [await engine(t, redis, { lockTtlMs: 1000 }), await engine(t, redis, { lockTtlMs: 1000 }), await engine(t, redis, { lockTtlMs: 1000 })]
  await redis.command('SET', 'stock:D', '~fill:someone-dead', 'PX', '300')
  const loader = counting(() => 'loaded', 100)
  const results = await Promise.all(engines.flatMap((e) => [1, 2, 3].map(() => e.cache.wrap({ key: 'stock:D', ttl: 20, load: loader }))))
  t.same(new Set(results), new Set(['loaded']))
  t.equal(loader.calls, 1, '9 callers on 3 instances, 1 upstream call')
})

t.test('a placeholder left by a crashed instance delays a load by about one placeholder TTL, not the loader timeout', redisOpts, async (t) => {
  const redis = await privateRedis(t)
  const { cache } = await engine(t, redis, { lockTtlMs: 1000, loaderTimeoutMs: 30_000 })
  await redis.command('SET', 'stock:C', '~fill:someone-dead', 'PX', '300')
  const loader = counting(() => 1)
  const started = performance.now()
  const result = await cache.get({ key: 'stock:C', ttl: 20, load: loader })
  const ms = performance.now() - started
  t.equal(result.value, 1)
  t.equal(loader.calls, 1)
  t.ok(ms >= 250 && ms < 15_000, `waited for the dead placeholder to expire, far less than the 30 s loader timeout (${ms.toFixed(0)} ms)`)
})

t.test('errors are never cached', redisOpts, async (t) => {
  const redis = await privateRedis(t)
  const { cache } = await engine(t, redis)
  let fail = true
  const loader = counting(() => {
    if (fail) throw new Error('upstream down')
    return 'ok'
  })
  await t.rejects(cache.wrap({ key: 'stock:D', ttl: 20, grace: 60, load: loader }), /upstream down/)
  t.equal(await redis.command('EXISTS', 'stock:D'), '0', 'the placeholder was handed back, nothing recorded')
  t.equal(await redis.command('DBSIZE'), '0')
  await t.rejects(cache.wrap({ key: 'stock:D', ttl: 20, load: loader }), /upstream down/)
  t.equal(loader.calls, 2, 'the second call asked the loader again')
  fail = false
  t.equal(await cache.wrap({ key: 'stock:D', ttl: 20, load: loader }), 'ok')
  t.match(cache.stats().caches.quotes, { loads: 3, loadErrors: 2 })

  await t.rejects(cache.wrap({ key: 'stock:E', ttl: 20, load: async () => undefined }), /returned undefined/)
  t.equal(await redis.command('EXISTS', 'stock:E'), '0')
})

t.test('grace: a failed load after expiry serves the stale value, marked STALE, until the grace ends', redisOpts, async (t) => {
  const redis = await privateRedis(t)
  const { cache } = await engine(t, redis)
  let version = 1
  let fail = false
  const loader = async (): Promise<number> => {
    if (fail) throw new Error('down')
    return version++
  }
  const options = { ttl: 1, grace: 2 }
  t.equal((await cache.get({ key: 'stock:F', ...options, load: loader })).value, 1)
  await waitFor(() => cache.peek('stock:F') === undefined, 10_000)
  // L1's expiry was measured from before its read was sent: wait for the value key too.
  await waitFor(async () => (await redis.command('EXISTS', 'stock:F')) === '0', 10_000)
  fail = true
  const stale = await cache.get({ key: 'stock:F', ...options, load: loader })
  t.equal(stale.cache, 'STALE')
  t.equal(stale.value, 1)
  t.equal(cache.stats().caches.quotes?.staleServes, 1)
  t.equal(await redis.command('EXISTS', 'stock:F'), '0', 'the value key is past its ttl: the stale value came from L1 or the grace copy')
  // The grace copy lives ttl + grace in Redis; L1's copy ends no later.
  await waitFor(async () => (await redis.command('EXISTS', 'stale:{stock:F}')) === '0', 10_000)
  await t.rejects(cache.wrap({ key: 'stock:F', ...options, load: loader }), /down/, 'after the grace the error shows')
  fail = false
  t.equal(await cache.wrap({ key: 'stock:F', ...options, load: loader }), 2)
})

t.test('grace: a load abandoned at the loader timeout serves the stale value, marked STALE', redisOpts, async (t) => {
  const redis = await privateRedis(t)
  const { cache } = await engine(t, redis, { loaderTimeoutMs: 1000 })
  let hang = false
  const loader = async (): Promise<number> => (hang ? new Promise<never>(() => {}) : 1)
  const options = { ttl: 0.3, grace: 30 }
  t.equal((await cache.get({ key: 'stock:TO', ...options, load: loader })).value, 1)
  await waitFor(() => cache.peek('stock:TO') === undefined, 10_000)
  hang = true
  const started = performance.now()
  const stale = await cache.get({ key: 'stock:TO', ...options, load: loader })
  const ms = performance.now() - started
  t.equal(stale.cache, 'STALE')
  t.equal(stale.value, 1)
  t.ok(ms >= 900 && ms < 6000, `served once the 1 s loader timeout passed (${ms.toFixed(0)} ms)`)
  t.equal(await redis.command('EXISTS', 'lock:fill:stock:TO'), '0', 'the abandoned load left no lock behind')
})

t.test('XFetch: a hot key is refreshed before it expires, so no reader sees it expire', redisOpts, async (t) => {
  t.ok(shouldRefreshEarly({ now: 1000, expiresAt: 1010, loadMs: 50, ttlMs: 20_000 }, () => 0.5), '-50·ln(0.5) ≈ 35 ms ≥ the 10 ms left')
  t.notOk(shouldRefreshEarly({ now: 1000, expiresAt: 2000, loadMs: 50, ttlMs: 20_000 }, () => 0.5), 'not 1 s before expiry')
  t.notOk(shouldRefreshEarly({ now: 1000, expiresAt: 1001, loadMs: 0, ttlMs: 20_000 }, () => 1), 'random() = 1 never refreshes early')
  t.ok(shouldRefreshEarly({ now: 1000, expiresAt: 1100, loadMs: 0, ttlMs: 20_000 }, () => 0.5), 'a fast loader still gets 1 % of the TTL (200 ms) as delta: -200·ln(0.5) ≈ 139 ms ≥ 100 ms')

  const redis = await privateRedis(t)
  // random() = 0.001 → refresh when less than 6.9 × the load time (40 ms) is left: ~275 ms.
  const { cache } = await engine(t, redis, { random: () => 0.001 })
  let version = 0
  const loader = counting(() => ++version, 40)
  const statuses = new Set<string>()
  t.equal((await cache.get({ key: 'stock:HOT', ttl: 0.6, load: loader })).cache, 'MISS')
  const until = Date.now() + 2000
  while (Date.now() < until) {
    statuses.add((await cache.get({ key: 'stock:HOT', ttl: 0.6, load: loader })).cache)
    await sleep(10)
  }
  t.same([...statuses], ['HIT'], 'every read for 2 s (3+ TTLs) was a HIT')
  t.ok(loader.calls >= 4, `the key was refreshed in the background (${loader.calls} loads)`)
  t.ok((cache.stats().caches.quotes?.earlyRefreshes ?? 0) >= 3)

  // The same traffic without early refresh sees the key expire.
  const { cache: plain } = await engine(t, redis, { random: () => 1 })
  const slow = counting(() => 1, 40)
  const seen = new Set<string>()
  await plain.get({ key: 'stock:COLD', ttl: 0.3, load: slow })
  const end = Date.now() + 700
  while (Date.now() < end) {
    seen.add((await plain.get({ key: 'stock:COLD', ttl: 0.3, load: slow })).cache)
    await sleep(10)
  }
  t.ok(seen.has('MISS'), 'without it a reader waits for the reload')
})

t.test('XFetch also refreshes early for batch reads, and with L1 off for reads from L2', redisOpts, async (t) => {
  const redis = await privateRedis(t)
  const paths = [
    { name: 'batch (wrapMany, L1 on)', key: 'stock:HOTBATCH', options: {}, batch: true },
    { name: 'L1 off (wrapEntry from L2)', key: 'stock:HOTL2', options: { l1: { enabled: false } }, batch: false },
  ]
  for (const path of paths) {
    const { cache } = await engine(t, redis, { random: () => 0.001, ...path.options })
    let version = 0
    const loader = counting(() => ++version, 40)
    const read = async (): Promise<string> => {
      if (!path.batch) return (await cache.get({ key: path.key, ttl: 0.6, load: loader })).cache
      const [settled] = await cache.getMany({ keys: [path.key], ttl: 0.6, load: loader })
      if (settled?.status !== 'fulfilled') throw new Error('the batch read failed')
      return settled.value.cache
    }
    t.equal(await read(), 'MISS', `${path.name}: the first read loads`)
    const statuses = new Set<string>()
    const until = Date.now() + 2000
    while (Date.now() < until) {
      statuses.add(await read())
      await sleep(10)
    }
    t.same([...statuses], ['HIT'], `${path.name}: every read for 2 s (3+ TTLs) was a HIT`)
    t.ok(loader.calls >= 4, `${path.name}: refreshed in the background (${loader.calls} loads)`)
  }
})

t.test('L1 is bounded by entries and by bytes', async (t) => {
  const { cache } = await engine(t, null, { l1: { maxEntries: 10 } })
  for (let i = 0; i < 50; i++) await cache.wrap({ key: `stock:K${i}`, ttl: 60, load: async () => i })
  t.equal(cache.stats().l1.entries, 10)

  const { cache: small } = await engine(t, null, { l1: { maxBytes: 8192 } })
  const big = 'x'.repeat(1000)
  for (let i = 0; i < 50; i++) await small.wrap({ key: `stock:B${i}`, ttl: 60, load: async () => big })
  const { l1 } = small.stats()
  t.ok(l1.bytes <= 8192, `bytes ${l1.bytes} ≤ 8192`)
  t.ok(l1.entries >= 1 && l1.entries < 50, `only the most recent fit (${l1.entries})`)
  t.equal(await small.wrap({ key: 'stock:B49', ttl: 60, load: async () => 'reloaded' }), big, 'the most recent one is still there')

  const { cache: none } = await engine(t, null, { l1: { enabled: false } })
  await none.wrap({ key: 'stock:X', ttl: 60, load: async () => 1 })
  t.same(none.stats().l1, { enabled: false, entries: 0, bytes: 0, maxEntries: 10_000, maxBytes: 32 * 1024 * 1024 })
})

t.test('an L1 copy never outlives its L2 TTL', redisOpts, async (t) => {
  const redis = await privateRedis(t)
  // No early refresh: the copy's own expiry is what is shown.
  const a = await engine(t, redis, { random: () => 1 })
  const b = await engine(t, redis, { random: () => 1 })
  const loader = counting(() => 'v', 0)
  await a.cache.wrap({ key: 'stock:L', ttl: 3, load: loader })
  const loadedBy = Date.now()
  await sleep(1500)
  t.equal((await b.cache.get({ key: 'stock:L', ttl: 3, load: loader })).layer, 'l2', 'B copies it 1.5 s into its life')
  t.equal((await b.cache.get({ key: 'stock:L', ttl: 3, load: loader })).layer, 'l1')
  const copy = b.cache.peek('stock:L')
  t.ok(copy !== undefined && copy.freshUntil <= loadedBy + 3000, 'B\'s copy is fresh until the L2 key expires (3 s after the load), not 3 s after B read it')
  await waitFor(() => b.cache.peek('stock:L') === undefined, 10_000)
  // B's copy may end a few ms before the key: its expiry was measured from before the read was sent.
  await waitFor(async () => (await redis.command('EXISTS', 'stock:L')) === '0', 10_000)
  t.equal((await b.cache.get({ key: 'stock:L', ttl: 3, load: loader })).layer, 'loader')
  t.equal(loader.calls, 2)
})

t.test('invalidate and invalidatePrefix reach L2 and every instance\'s L1', redisOpts, async (t) => {
  const redis = await privateRedis(t)
  const a = await engine(t, redis)
  const b = await engine(t, redis)
  for (const key of ['portfolio:1', 'portfolio:2', 'stock:KEEP']) {
    await a.cache.wrap({ key: key, ttl: 60, grace: 60, load: async () => key })
    await b.cache.wrap({ key: key, ttl: 60, grace: 60, load: async () => 'unused' })
  }
  t.equal(b.cache.stats().l1.entries, 3)

  await a.cache.invalidate('portfolio:1')
  await waitFor(() => b.cache.stats().l1.entries === 2, 5000)
  t.pass('B dropped portfolio:1')
  t.equal(await redis.command('EXISTS', 'portfolio:1', 'stale:{portfolio:1}'), '0', 'the value key and its grace copy are gone')

  await a.cache.invalidatePrefix('portfolio:')
  await waitFor(() => b.cache.stats().l1.entries === 1, 5000)
  t.equal(await redis.command('EXISTS', 'portfolio:2', 'stale:{portfolio:2}'), '0', 'found by SCAN and deleted, with its grace copy')
  t.equal(await redis.command('EXISTS', 'stock:KEEP'), '1', 'other prefixes untouched')
  t.equal(await b.cache.wrap({ key: 'stock:KEEP', ttl: 60, load: async () => 'reloaded' }), 'stock:KEEP')
  t.equal(await b.cache.wrap({ key: 'portfolio:2', ttl: 60, load: async () => 'reloaded' }), 'reloaded')
  t.ok(b.cache.stats().invalidation.received >= 2)
})

t.test('a load that began before an invalidation cannot store its older result after it', redisOpts, async (t) => {
  const redis = await privateRedis(t)
  const a = await engine(t, redis)
  const b = await engine(t, redis)
  let truth = 'old'
  const slowRead = async (): Promise<string> => truth
  const oldRead = gated(() => 'old')
  const inFlight = a.cache.wrap({ key: 'portfolio:7', ttl: 300, load: oldRead })
  await oldRead.started
  truth = 'new'
  await b.cache.invalidate('portfolio:7')
  oldRead.open()
  t.equal(await inFlight, 'old', 'the caller that started before still gets its answer')
  t.equal(await redis.command('EXISTS', 'portfolio:7'), '0', 'but it was not written to L2')
  t.equal(await a.cache.wrap({ key: 'portfolio:7', ttl: 300, load: slowRead }), 'new', 'nor kept in A\'s L1')

  // The same race when the message has not reached A (here: A does not subscribe at all):
  // the invalidation deleted A's placeholder, and the landing only replaces its own placeholder.
  const deafRedis = await engine(t, redis, { createSubscriber: () => null })
  truth = 'old'
  const lateRead = gated(() => 'old')
  const late = deafRedis.cache.wrap({ key: 'portfolio:17', ttl: 300, load: lateRead })
  await lateRead.started
  truth = 'new'
  await b.cache.invalidate('portfolio:17')
  lateRead.open()
  t.equal(await late, 'old')
  t.equal(await redis.command('EXISTS', 'portfolio:17'), '0', 'the older result was refused by Redis')
  t.equal(await b.cache.wrap({ key: 'portfolio:17', ttl: 300, load: slowRead }), 'new')
  t.equal(await deafRedis.cache.wrap({ key: 'portfolio:17', ttl: 300, load: slowRead }), 'new', 'nor kept in the deaf instance\'s own L1: Redis refusing the write told it')

  // In one process: a caller arriving after the invalidation does not join the older load.
  truth = 'v2'
  await a.cache.invalidate('portfolio:8')
  const v1 = gated(() => 'v1')
  const first = a.cache.wrap({ key: 'portfolio:8', ttl: 300, load: v1 })
  await v1.started
  await a.cache.invalidate('portfolio:8')
  const second = a.cache.wrap({ key: 'portfolio:8', ttl: 300, load: slowRead })
  t.equal(await second, 'v2')
  v1.open()
  t.same(await Promise.all([first, second]), ['v1', 'v2'])
  t.equal(await a.cache.wrap({ key: 'portfolio:8', ttl: 300, load: slowRead }), 'v2')
})

t.test('set stores the new truth and drops the other instances\' copies', redisOpts, async (t) => {
  const redis = await privateRedis(t)
  const a = await engine(t, redis)
  const b = await engine(t, redis)
  await b.cache.wrap({ key: 'portfolio:3', ttl: 300, load: async () => 'old' })
  await a.cache.set('portfolio:3', 'new', { ttl: 300 })
  await waitFor(() => b.cache.stats().l1.entries === 0, 5000)
  t.equal(await b.cache.find('portfolio:3'), 'new')
  t.equal(await a.cache.find('portfolio:3'), 'new')
  t.equal(await a.cache.find('portfolio:none'), undefined)
  const pttl = Number(await redis.command('PTTL', 'portfolio:3'))
  t.ok(pttl > 299_000 && pttl <= 300_000, 'with its TTL')
  t.equal(await redis.command('EXISTS', 'stale:{portfolio:3}'), '0', 'no grace copy without a grace')
})

t.test('a put during a fill wins: the fill does not land over it', redisOpts, async (t) => {
  const redis = await privateRedis(t)
  const a = await engine(t, redis)
  const b = await engine(t, redis)
  const loader = gated(() => 'loaded')
  const filling = a.cache.get({ key: 'portfolio:PUT', ttl: 300, load: loader })
  await loader.started
  await b.cache.set('portfolio:PUT', 'put', { ttl: 300, grace: 10 })
  loader.open()
  t.same((await filling).value, 'loaded', 'the caller that started before gets its answer')
  t.match(await redis.command('GET', 'portfolio:PUT'), /^\{"v":"put"/, 'L2 keeps the put')
  const pttl = Number(await redis.command('PTTL', 'portfolio:PUT'))
  t.ok(pttl > 290_000 && pttl <= 300_000, `with the put's own remaining life, its ttl (PTTL ${pttl})`)
  const grace = Number(await redis.command('PTTL', 'stale:{portfolio:PUT}'))
  t.ok(grace > 300_000 && grace <= 310_000, `and the put's grace copy, ttl + grace (PTTL ${grace})`)
  t.match(await redis.command('GET', 'stale:{portfolio:PUT}'), /^\{"v":"put"/, 'the grace copy is the put\'s too')
  t.equal(await a.cache.find('portfolio:PUT'), 'put', 'and A kept nothing of its load')
  t.equal(await b.cache.find('portfolio:PUT'), 'put')
})

t.test('every cache command touches one key and every script one slot, and KEYS is never sent', redisOpts, async (t) => {
  const redis = await privateRedis(t)
  const monitor = await startMonitor(redis.port)
  t.teardown(() => { monitor.stop() })
  const codec = { encode: (err: unknown) => (err instanceof Error ? err.message : undefined), decode: (encoded: string) => new Error(encoded) }
  const a = await engine(t, redis, { failureTtlMs: 5000, failureCodec: codec })
  const b = await engine(t, redis, { failureTtlMs: 5000, failureCodec: codec })
  const loader = counting(() => 'v', 50)
  await Promise.all([a, b].flatMap((e) => [1, 2, 3].map(() => e.cache.get({ key: 'stock:ONE', ttl: 0.3, grace: 60, load: loader }))))
  await b.cache.getMany({ keys: ['stock:ONE', 'stock:TWO', 'stock:THREE'], ttl: 20, load: async (key) => key })
  await waitFor(async () => (await redis.command('EXISTS', 'stock:ONE')) === '0', 5000)
  await a.cache.get({ key: 'stock:ONE', ttl: 0.3, grace: 60, load: async () => { throw new Error('down') } })
  await b.cache.get({ key: 'stock:ONE', ttl: 0.3, grace: 60, load: async () => 'unused' })
  await t.rejects(a.cache.wrap({ key: 'stock:BAD', ttl: 20, load: async () => { throw new Error('down') } }))
  await t.rejects(b.cache.wrap({ key: 'stock:BAD', ttl: 20, load: async () => 'unused' }))
  await a.cache.set('portfolio:1', 'x', { ttl: 60, grace: 5 })
  await b.cache.find('portfolio:1')
  await a.cache.invalidate('portfolio:1')
  await a.cache.invalidatePrefix('stock:')
  await redis.command('PING')
  await waitFor(() => monitor.lines.some((line) => line.args[0]?.toUpperCase() === 'PING' && line.source !== 'lua'), 5000)
  const lines = monitor.lines.filter((line) => !['PING', 'INFO', 'CLIENT', 'HELLO', 'SELECT', 'SUBSCRIBE', 'SCRIPT'].includes((line.args[0] ?? '').toUpperCase()))
  const seen = new Set(lines.map((line) => (line.args[0] ?? '').toUpperCase()))
  t.ok(seen.has('SET') && seen.has('EVALSHA') && seen.has('UNLINK') && seen.has('SCAN'), `the workload reached Redis (${[...seen].join(' ')})`)
  t.ok(lines.some((line) => /^EVALSHA$/i.test(line.args[0] ?? '') && line.args[2] === '2'), 'the two-key scripts ran (landing, put)')
  const multi = lines.filter((line) => {
    const [name = '', ...args] = line.args
    switch (name.toUpperCase()) {
      case 'KEYS': case 'MGET': case 'MSET': return true
      case 'EVAL': case 'EVALSHA': {
        const keys = args.slice(2, 2 + Number(args[1]))
        return keys.length < 1 || keys.length > 2 || new Set(keys.map(slotOf)).size !== 1
      }
      case 'DEL': case 'UNLINK': case 'EXISTS': case 'TOUCH': return args.length !== 1
      default: return false
    }
  })
  t.same(multi.map((line) => line.raw), [], 'no command with more than one key, no script with keys in more than one slot')
})

t.test('values are shared and frozen: a caller cannot change the cached copy', async (t) => {
  const { cache } = await engine(t, null)
  const value = await cache.wrap({ key: 'portfolio:9', ttl: 60, load: async () => ({ positions: [{ ticker: 'AAPL', shares: 1 }] }) })
  t.throws(() => { (value.positions[0] as { shares: number }).shares = 99 }, TypeError)
  t.same(await cache.wrap({ key: 'portfolio:9', ttl: 60, load: async () => null }), { positions: [{ ticker: 'AAPL', shares: 1 }] })
})

t.test('a loader that never answers is abandoned at the loader timeout (CacheLoadTimeoutError), lock released', redisOpts, async (t) => {
  const redis = await privateRedis(t)
  const { cache } = await engine(t, redis, { loaderTimeoutMs: 1000 })
  const started = performance.now()
  const err = await cache.wrap({ key: 'stock:HANG', ttl: 20, load: () => new Promise<never>(() => {}) }).catch((e: unknown) => e)
  t.ok(err instanceof CacheLoadTimeoutError, 'the cache\'s own error, no HTTP status')
  t.match(err, { key: 'stock:HANG', timeoutMs: 1000 })
  t.notOk('statusCode' in (err as object), 'the app maps it (plugins/cache.ts)')
  t.ok(performance.now() - started < 6000, 'abandoned at the timeout, not left hanging')
  t.equal(await redis.command('EXISTS', 'stock:HANG'), '0', 'its placeholder handed back')
})

t.test('Redis frozen: at most one command timeout, then L1 + loader only; invalidations are replayed when it returns', redisOpts, async (t) => {
  const redis = await privateRedis(t)
  const a = await engine(t, redis, {}, 2000)
  await a.cache.wrap({ key: 'portfolio:20', ttl: 300, load: async () => 'cached' })
  t.equal(await redis.command('EXISTS', 'portfolio:20'), '1')

  redis.pause()
  t.teardown(() => redis.resume())
  const loader = counting(() => 'from loader')
  let started = performance.now()
  t.equal(await a.cache.wrap({ key: 'stock:P1', ttl: 60, load: loader }), 'from loader')
  const first = performance.now() - started
  t.ok(first < 3900, `the first miss waited for one command timeout (2 s) at most, not two (${first.toFixed(0)} ms)`)
  t.equal(a.state.mode, 'fallback')
  started = performance.now()
  t.equal(await a.cache.wrap({ key: 'stock:P2', ttl: 60, load: loader }), 'from loader')
  t.equal(await a.cache.wrap({ key: 'portfolio:20', ttl: 300, load: loader }), 'cached', 'L1 still serves')
  t.ok(performance.now() - started < 1900, 'later calls never touch Redis (no command timeout)')

  await a.cache.invalidate('portfolio:20')
  t.equal(a.cache.stats().invalidation.pending, 1, 'remembered while Redis is away')

  redis.resume()
  await waitFor(() => a.state.available, 5000)
  await waitFor(async () => (await redis.command('EXISTS', 'portfolio:20')) === '0', 3000)
  t.pass('replayed on L2 when Redis returned')
  t.equal(a.cache.stats().invalidation.pending, 0)
})

t.test('an instance that started while Redis was away re-checks its L1 copies once it first subscribes', redisOpts, async (t) => {
  const redis = await privateRedis(t)
  const b = await engine(t, redis)
  await redis.kill()
  // A starts during the outage: no subscription yet, L1 only.
  const state = createRedisState({ url: redis.url, log: quiet, connectTimeoutMs: 300 })
  await state.start()
  const a = createTwoTierCache({
    store: new ResilientStore(state, new MemoryStore()),
    state,
    log: quiet,
    createSubscriber: () => state.client?.duplicate({ autoResubscribe: false }) ?? null,
  })
  t.teardown(async () => {
    await a.close()
    await state.close()
  })
  t.equal(a.stats().invalidation.subscribed, false)
  t.equal(await a.wrap({ key: 'stock:K', ttl: 60, load: async () => 'old' }), 'old')
  await b.cache.invalidate('stock:K') // queued: replayed by B when Redis returns, maybe before A listens
  await redis.restart()
  await waitFor(() => state.available && a.stats().invalidation.subscribed, 5000)
  t.equal(await a.wrap({ key: 'stock:K', ttl: 60, load: async () => 'new' }), 'new', 'the copy from before the first subscription is not trusted')
})

t.test('after a lost subscription L1 copies are re-checked, and kept only as stale fallbacks', redisOpts, async (t) => {
  const redis = await privateRedis(t)
  const { cache, state } = await engine(t, redis)
  await cache.wrap({ key: 'stock:R', ttl: 60, grace: 60, load: async () => 'before' })
  await cache.wrap({ key: 'portfolio:R', ttl: 60, load: async () => 'before' })
  await redis.restart()
  await waitFor(() => state.available && cache.stats().invalidation.subscribed, 5000)

  const stale = await cache.get({ key: 'stock:R', ttl: 60, grace: 60, load: async () => { throw new Error('down') } })
  t.equal(stale.cache, 'STALE', 'not trusted as fresh, but still a fallback')
  t.equal(stale.value, 'before')
  const reloaded = await cache.get({ key: 'portfolio:R', ttl: 60, load: async () => 'after' })
  t.same([reloaded.cache, reloaded.value], ['MISS', 'after'], 'a copy without grace was dropped')
  t.equal(await redis.command('EXISTS', 'portfolio:R'), '1')
  await cache.invalidate('portfolio:R')
  t.equal(await redis.command('EXISTS', 'portfolio:R'), '0', 'the scripts work on the restarted server (not loaded there yet)')
})

t.test('with REDIS_KEY_PREFIX: keys, SCAN and the channel are prefixed', redisOpts, async (t) => {
  const redis = await privateRedis(t)
  const a = await engine(t, redis, { keyPrefix: 'app1:' })
  const b = await engine(t, redis, { keyPrefix: 'app1:' })
  const other = await engine(t, redis, { keyPrefix: 'app2:' })
  for (const e of [a, b, other]) await e.cache.wrap({ key: 'portfolio:1', ttl: 60, grace: 10, load: async () => 'x' })
  t.equal(await redis.command('EXISTS', 'app1:portfolio:1', 'app2:portfolio:1'), '2')
  t.equal(await redis.command('EXISTS', 'app1:stale:{app1:portfolio:1}', 'app2:stale:{app2:portfolio:1}'), '2', 'the grace copies hash as the prefixed value keys')
  t.equal(slotOf('app1:stale:{app1:portfolio:1}'), slotOf('app1:portfolio:1'))
  t.equal(await redis.command('DBSIZE'), '4', 'a value key and a grace copy per value')
  await a.cache.invalidatePrefix('portfolio:')
  await waitFor(() => b.cache.stats().l1.entries === 0, 5000)
  t.equal(await redis.command('EXISTS', 'app1:portfolio:1'), '0')
  t.equal(await redis.command('EXISTS', 'app2:portfolio:1'), '1', 'another deployment\'s keys are untouched')
  await sleep(500)
  t.equal(other.cache.stats().l1.entries, 1, 'and so is its L1')
})

t.test('counters per named cache', redisOpts, async (t) => {
  const redis = await privateRedis(t)
  const a = await engine(t, redis)
  const b = await engine(t, redis)
  await a.cache.wrap({ key: 'stock:S', ttl: 60, load: async () => 1 })
  await a.cache.wrap({ key: 'stock:S', ttl: 60, load: async () => 1 })
  await b.cache.wrap({ key: 'stock:S', ttl: 60, load: async () => 1 })
  await a.cache.wrap({ key: 'portfolio:S', ttl: 60, load: async () => 1 })
  await a.cache.wrap({ key: 'custom:S', ttl: 60, name: 'mine', load: async () => 1 })
  t.match(a.cache.stats().caches, {
    quotes: { hitsL1: 1, hitsL2: 0, misses: 1, loads: 1, loadErrors: 0, staleServes: 0 },
    portfolios: { misses: 1, loads: 1 },
    mine: { misses: 1, loads: 1 },
  })
  t.match(b.cache.stats().caches.quotes, { hitsL2: 1, loads: 0 })
  t.same(Object.keys(b.cache.stats().caches).sort(), ['portfolios', 'quotes'], 'both names are listed from the start')
})

t.test('bad options are refused', async (t) => {
  const { cache } = await engine(t, null)
  await t.rejects(cache.wrap({ key: 'stock:Z', ttl: 0, load: async () => 1 }), TypeError)
  await t.rejects(cache.wrap({ key: 'stock:Z', ttl: 1, grace: -1, load: async () => 1 }), TypeError)
  await t.rejects(cache.invalidatePrefix(''), TypeError)
})

t.test('a loader says "do not cache this" by returning noCache(value): answered to its callers, kept nowhere', redisOpts, async (t) => {
  const redis = await privateRedis(t)
  const { cache } = await engine(t, redis)
  const loader = counting(() => noCache({ partial: true }), 100)
  const results = await Promise.all([1, 2, 3].map(() => cache.get({ key: 'portfolio:NC', ttl: 60, load: loader })))
  t.same(results.map((r) => [r.cache, r.value]), [['MISS', { partial: true }], ['MISS', { partial: true }], ['MISS', { partial: true }]], 'every waiter got the value, nobody an error')
  t.equal(loader.calls, 1)
  t.equal(await redis.command('EXISTS', 'portfolio:NC'), '0', 'not in L2')
  t.equal(cache.peek('portfolio:NC'), undefined, 'nor in L1')
  t.equal(await cache.wrap({ key: 'portfolio:NC', ttl: 60, load: async () => 'whole' }), 'whole', 'the next read loads again')
})

t.test('peek: the fresh L1 entry, synchronously, or undefined', async (t) => {
  const { cache } = await engine(t, null, { random: () => 1 })
  t.equal(cache.peek('stock:PK'), undefined)
  await cache.wrap({ key: 'stock:PK', ttl: 60, load: async () => ({ price: 1 }) })
  const entry = cache.peek('stock:PK')
  t.match(entry, { value: { price: 1 }, ttl: 60_000, grace: 0 })
  t.ok(entry !== undefined && entry.freshUntil > Date.now() && entry.staleUntil === entry.freshUntil, 'named fields: fresh until, stale until')
  t.equal(cache.stats().caches.quotes?.hitsL1, 1, 'counted as an L1 hit')
})

t.test('a stale copy only in Redis is served after the soft timeout, not after another instance\'s whole load', redisOpts, async (t) => {
  const redis = await privateRedis(t)
  const a = await engine(t, redis, { loaderTimeoutMs: 8000 })
  const b = await engine(t, redis, { loaderTimeoutMs: 8000 })
  const policy = { ttl: 1, grace: 60, softTimeoutMs: 200 }
  await a.cache.wrap({ key: 'stock:SOFT', ...policy, load: async () => 'old' })
  // Its fresh life is over once its value key has expired (the grace copy stays).
  await waitFor(async () => (await redis.command('EXISTS', 'stock:SOFT')) === '0', 5000)
  // A reloads, slowly: it holds the value key's placeholder for seconds.
  let release!: () => void
  const gate = new Promise<void>((resolve) => { release = resolve })
  const slow = a.cache.get({ key: 'stock:SOFT', ...policy, softTimeoutMs: undefined, load: async () => { await gate; return 'new' } })
  await waitFor(async () => /^~fill:/.test(String(await redis.command('GET', 'stock:SOFT'))), 5000)
  // B has nothing in L1: its stale copy is the grace copy in Redis, read when its soft timeout fires.
  const loaderB = counting(() => 'from B')
  const started = performance.now()
  const answer = await b.cache.get({ key: 'stock:SOFT', ...policy, load: loaderB })
  const ms = performance.now() - started
  t.same([answer.cache, answer.value], ['STALE', 'old'], 'B answered with the grace copy')
  t.ok(ms < 4000, `long before the 8 s loader timeout (${ms.toFixed(0)} ms)`)
  t.equal(loaderB.calls, 0, 'and did not load itself')
  release()
  t.equal((await slow).value, 'new')
  await waitFor(async () => (await b.cache.get({ key: 'stock:SOFT', ...policy, load: loaderB })).value === 'new', 5000)
  t.equal(loaderB.calls, 0, 'B then read A\'s load')
})

t.test('a failing upstream is called once per failure TTL across instances, not once per request and instance', redisOpts, async (t) => {
  const redis = await privateRedis(t)
  const codec = {
    encode: (err: unknown) => (err instanceof Error && err.message.startsWith('upstream') ? err.message : undefined),
    decode: (encoded: string) => new Error(`recorded: ${encoded}`),
  }
  const a = await engine(t, redis, { failureTtlMs: 30_000, failureCodec: codec })
  const b = await engine(t, redis, { failureTtlMs: 30_000, failureCodec: codec })
  const failing = counting((): string => { throw new Error('upstream down') })
  await t.rejects(a.cache.wrap({ key: 'stock:FAIL', ttl: 20, load: failing }), /upstream down/)
  await t.rejects(a.cache.wrap({ key: 'stock:FAIL', ttl: 20, load: failing }), /upstream down/, 'A answers the same failure from memory')
  await t.rejects(b.cache.wrap({ key: 'stock:FAIL', ttl: 20, load: failing }), /recorded: upstream down/, 'B finds it in Redis')
  await t.rejects(b.cache.wrap({ key: 'stock:FAIL', ttl: 20, load: failing }), /recorded: upstream down/)
  t.equal(failing.calls, 1, 'one upstream call for four requests on two instances')
  t.equal(await redis.command('GET', 'stock:FAIL'), '~fail:upstream down', 'recorded in the value key, in place of the placeholder')
  const pttl = Number(await redis.command('PTTL', 'stock:FAIL'))
  t.ok(pttl > 0 && pttl <= 30_000, `the failure is kept briefly (PTTL ${pttl})`)

  // Errors the codec does not take (a "not found") are not recorded.
  const notFound = counting((): string => { throw new Error('no such ticker') })
  await t.rejects(a.cache.wrap({ key: 'stock:NF', ttl: 20, load: notFound }), /no such ticker/)
  await t.rejects(b.cache.wrap({ key: 'stock:NF', ttl: 20, load: notFound }), /no such ticker/)
  t.equal(notFound.calls, 2)

  // With a stale copy the recorded failure answers STALE, still without calling the upstream.
  let up = true
  const flaky = counting(() => {
    if (up) return 'good'
    throw new Error('upstream down')
  })
  await a.cache.wrap({ key: 'stock:FLAKY', ttl: 1, grace: 60, load: flaky })
  await waitFor(async () => (await redis.command('EXISTS', 'stock:FLAKY')) === '0', 5000)
  up = false
  t.same((await a.cache.get({ key: 'stock:FLAKY', ttl: 1, grace: 60, load: flaky })).cache, 'STALE')
  t.equal(await redis.command('GET', 'stock:FLAKY'), '~fail:upstream down', 'the failed reload is recorded in the expired value key')
  const recorded = Number(await redis.command('PTTL', 'stock:FLAKY'))
  t.ok(recorded > 0 && recorded <= 30_000, `for the failure TTL (PTTL ${recorded})`)
  const fromB = await b.cache.get({ key: 'stock:FLAKY', ttl: 1, grace: 60, load: flaky })
  t.same([fromB.cache, fromB.value], ['STALE', 'good'])
  t.equal(flaky.calls, 2, 'one good load, one failed load: B did not call it')

  // An invalidation forgets the failure.
  await a.cache.invalidate('stock:FAIL')
  await a.cache.invalidate('stock:FLAKY')
  t.equal(await redis.command('EXISTS', 'stock:FAIL'), '0')
  t.equal(await redis.command('EXISTS', 'stock:FLAKY', 'stale:{stock:FLAKY}', 'cache:fail:stock:FLAKY'), '0')
  await waitFor(async () => (await b.cache.wrap({ key: 'stock:FAIL', ttl: 20, load: async () => 'back' }).catch(() => 'failed')) === 'back', 3000)
  t.pass('B loads again once the failure is invalidated')
})

t.test('an L1 copy lives as long as the PTTL read with it, whatever the loading instance\'s clock said', redisOpts, async (t) => {
  const redis = await privateRedis(t)
  const { cache } = await engine(t, redis)
  // Written by an instance whose clock runs a minute ahead, one second before its key expires.
  const envelope = JSON.stringify({ v: 'skewed', t: Date.now() + 60_000, ttl: 20_000, g: 0, d: 0 })
  await redis.command('SET', 'stock:SKEW', envelope, 'PX', '1000')
  const loader = counting(() => 'reloaded')
  const first = await cache.get({ key: 'stock:SKEW', ttl: 20, load: loader })
  t.same([first.layer, first.value], ['l2', 'skewed'])
  t.ok(first.age >= 18 && first.age <= 20, `Age from the remaining TTL, not from a clock elsewhere (${first.age} s)`)
  const entry = cache.peek('stock:SKEW')
  t.ok(entry !== undefined && entry.freshUntil <= Date.now() + 1000, 'the L1 copy expires with the Redis key')
  await waitFor(async () => (await redis.command('EXISTS', 'stock:SKEW')) === '0', 5000)
  await waitFor(() => cache.peek('stock:SKEW') === undefined, 2000)
  t.equal(await cache.wrap({ key: 'stock:SKEW', ttl: 20, load: loader }), 'reloaded', 'once Redis dropped it, L1 did too')
  t.equal(loader.calls, 1)
})

t.test('a value older than its ttl is never readable at its value key; its grace copy still answers STALE', redisOpts, async (t) => {
  const redis = await privateRedis(t)
  const a = await engine(t, redis)
  const b = await engine(t, redis)
  const policy = { ttl: 1, grace: 60 }
  t.equal(await a.cache.wrap({ key: 'stock:OLD', ...policy, load: async () => 'good' }), 'good')
  t.ok(Number(await redis.command('PTTL', 'stock:OLD')) <= 1000, 'the value key lives its 1 s ttl')
  await waitFor(async () => (await redis.command('EXISTS', 'stock:OLD')) === '0', 5000)
  t.equal(await redis.command('GET', 'stock:OLD'), '', 'past its ttl, GET at the value key finds nothing (nil)')
  const grace = Number(await redis.command('PTTL', 'stale:{stock:OLD}'))
  t.ok(grace > 50_000 && grace <= 61_000, `while the grace copy lives on (PTTL ${grace})`)
  const answer = await b.cache.get({ key: 'stock:OLD', ...policy, load: async () => { throw new Error('upstream down') } })
  t.same([answer.cache, answer.value], ['STALE', 'good'], 'a failing upstream is answered from the grace copy')
  t.notMatch(String(await redis.command('GET', 'stock:OLD')), /good/, 'and the old value is not put back at the value key')
})

t.test('grace copy names share the value key\'s hash slot, with or without a hash tag', async (t) => {
  const { graceKeyOf, valueKeyOfGrace } = await import('../../src/engines/cache/keys.js')
  const cases: Array<[key: string, prefix: string, grace: string]> = [
    ['stock:AAPL', '', 'stale:{stock:AAPL}'],
    ['portfolio:42', 'app1:', 'stale:{app1:portfolio:42}'],
    ['{user:7}:portfolio', '', 'stale:{user:7}:portfolio'],
    ['portfolio:{user:7}', 'app1:', 'stale:portfolio:{user:7}'],
    ['a{b', '', 'stale:{a{b}'],
    ['x', '{app}:', 'stale:x'],
  ]
  for (const [key, prefix, grace] of cases) {
    t.equal(graceKeyOf(key, prefix), grace, `${prefix}${key}`)
    t.equal(slotOf(`${prefix}${grace}`), slotOf(`${prefix}${key}`), `${prefix}${grace} is in the slot of ${prefix}${key}`)
    t.equal(valueKeyOfGrace(grace, prefix), key, 'and leads back to its value key')
  }
  t.equal(graceKeyOf('a}b'), 'a}b', 'a name no copy can share a slot with keeps no grace copy')
  t.equal(graceKeyOf('{}x'), '{}x')
})

t.test('a prefix invalidation deletes grace copies whose value key has already expired, and only under the prefix', redisOpts, async (t) => {
  const redis = await privateRedis(t)
  const { cache } = await engine(t, redis)
  for (const key of ['stock:EXP', '{user:7}:stock', 'portfolio:EXP']) await cache.wrap({ key, ttl: 1, grace: 60, load: async () => key })
  await waitFor(async () => (await redis.command('EXISTS', 'stock:EXP', '{user:7}:stock', 'portfolio:EXP')) === '0', 10_000)
  t.equal(await redis.command('EXISTS', 'stale:{stock:EXP}', 'stale:{user:7}:stock', 'stale:{portfolio:EXP}'), '3', 'the grace copies outlive their value keys')
  await cache.invalidatePrefix('stock:')
  t.equal(await redis.command('EXISTS', 'stale:{stock:EXP}'), '0', 'found by its own SCAN pattern and deleted')
  await cache.invalidatePrefix('{user:7}')
  t.equal(await redis.command('EXISTS', 'stale:{user:7}:stock'), '0', 'a tagged key\'s grace copy too')
  t.equal(await redis.command('EXISTS', 'stale:{portfolio:EXP}'), '1', 'another prefix\'s grace copy stays')
})
