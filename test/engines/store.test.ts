/**
 * The fallback seam: the same contract run against the in-process store and a real Redis,
 * the memory bound, and the resilient wrapper switching between the two.
 */
import t from 'tap'
import { Redis } from 'ioredis'
import { MemoryStore } from '../../src/engines/store/memory-store.js'
import { RedisStore } from '../../src/engines/store/redis-store.js'
import { ResilientStore } from '../../src/engines/store/resilient-store.js'
import { createRedisState } from '../../src/engines/redis/state.js'
import type { KvStore } from '../../src/engines/store/types.js'
import { sleep, waitFor, type TapTest } from '../helper.js'
import { skipUnlessRedis, startRedis } from '../helpers/redis-server.js'
import { startMonitor } from '../helpers/monitor.js'

const quiet = { info () {}, warn () {}, error () {}, debug () {} }

async function contract (t: TapTest, store: KvStore, p: string): Promise<void> {
  t.equal(await store.get(`${p}missing`), null, 'absent key is null')
  await store.set(`${p}a`, 'A', 60_000)
  t.equal(await store.get(`${p}a`), 'A')
  const ttl = await store.pttl(`${p}a`)
  t.ok(ttl !== null && ttl > 30_000 && ttl <= 60_000, `set carries its TTL (${ttl})`)
  t.same(await store.mget([`${p}a`, `${p}missing`]), ['A', null], 'mget is aligned with the keys')
  t.same(await store.mget([]), [])

  await store.set(`${p}short`, 'x', 50)
  await sleep(80)
  t.equal(await store.get(`${p}short`), null, 'an expired key is never returned')
  t.equal(await store.pttl(`${p}short`), null)

  // A 3 s window: the second hit lands in the first window unless the machine stalls for
  // seconds between two calls.
  t.same(await store.incrWindow(`${p}c`, 3000), { count: 1, ttlMs: 3000 }, 'the first hit opens the window')
  const second = await store.incrWindow(`${p}c`, 3000)
  t.equal(second.count, 2)
  t.ok(second.ttlMs > 0 && second.ttlMs <= 3000, `later hits keep the window end (${second.ttlMs})`)
  await sleep(3050)
  t.equal((await store.incrWindow(`${p}c`, 3000)).count, 1, 'a new window starts at 1')

  t.equal(await store.setIfAbsent(`${p}lock`, 'me', 5000), true, 'first setIfAbsent wins')
  t.equal(await store.setIfAbsent(`${p}lock`, 'you', 5000), false, 'second one loses')
  t.equal(await store.compareAndExpire(`${p}lock`, 'you', 60_000), false, 'a stranger cannot extend')
  t.equal(await store.compareAndExpire(`${p}lock`, 'me', 60_000), true, 'the owner can extend')
  t.ok((await store.pttl(`${p}lock`))! > 50_000)
  t.equal(await store.compareAndDelete(`${p}lock`, 'you'), false, 'a stranger cannot release')
  t.equal(await store.get(`${p}lock`), 'me')
  t.equal(await store.compareAndDelete(`${p}lock`, 'me'), true, 'the owner releases')
  t.equal(await store.get(`${p}lock`), null)

  t.equal(await store.expire(`${p}nothing`, 1000), false)
  t.equal(await store.expire(`${p}a`, 2000), true)
  t.equal(await store.del(`${p}a`, `${p}missing`), 1, 'del counts what existed')
  t.equal(await store.del(), 0)
}

t.test('memory store honours the contract', async (t) => {
  await contract(t, new MemoryStore(), 'm:')
})

t.test('memory store stays within its bounds', async (t) => {
  const byEntries = new MemoryStore({ maxEntries: 100 })
  for (let i = 0; i < 1000; i++) await byEntries.set(`k${i}`, 'v', 60_000)
  t.ok(byEntries.size <= 100, `entries capped (${byEntries.size})`)
  t.equal(await byEntries.get('k999'), 'v', 'the newest entries stay')
  t.equal(await byEntries.get('k0'), null, 'the oldest went first')

  const byBytes = new MemoryStore({ maxEntries: 1_000_000, maxBytes: 1024 * 1024 })
  const big = 'x'.repeat(10_000)
  for (let i = 0; i < 1000; i++) await byBytes.set(`b${i}`, big, 60_000)
  t.ok(byBytes.bytes <= 1024 * 1024, `bytes capped (${byBytes.bytes})`)
  t.ok(byBytes.size < 1000)
})

t.test('redis store honours the same contract, TTLs set by the same command', skipUnlessRedis(), async (t) => {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  const client = new Redis(redis.url, { lazyConnect: true })
  client.on('error', () => {})
  await client.connect()
  t.teardown(() => client.disconnect())
  await contract(t, new RedisStore(client), 'r:')

  // The counter's expiry is set inside the script: no INCR-then-EXPIRE window.
  const monitor = await startMonitor(redis.port)
  t.teardown(() => monitor.stop())
  const seen = monitor.lines.map((l) => l.args.join(' ').toUpperCase())
  await new RedisStore(client).incrWindow('r:count', 60_000)
  await waitFor(() => monitor.lines.some((l) => l.args[0]?.toUpperCase() === 'PEXPIRE'), 10_000)
  seen.push(...monitor.lines.map((l) => l.args.join(' ').toUpperCase()))
  const evalAt = seen.findIndex((s) => s.startsWith('EVALSHA') || s.startsWith('EVAL '))
  t.ok(evalAt >= 0 && evalAt < seen.findIndex((s) => s.startsWith('PEXPIRE')), 'INCR and PEXPIRE ran inside one script')
  t.notOk(seen.some((s) => s.startsWith('EXPIRE ')), 'no separate EXPIRE')
  t.match(await redis.command('PTTL', 'r:count'), /^\d+$/)
})

t.test('resilient store: Redis while up, memory while down, never waiting', skipUnlessRedis(), async (t) => {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  const state = createRedisState({ url: redis.url, log: quiet, commandTimeoutMs: 1000 })
  await state.start()
  t.teardown(() => state.close())
  const store = new ResilientStore(state, new MemoryStore())
  t.equal(store.usingRedis, true)

  await store.set('shared', 'in-redis', 60_000)
  t.equal(await redis.command('GET', 'shared'), 'in-redis', 'written to Redis')

  await redis.kill()
  const started = performance.now()
  await store.set('shared', 'in-memory', 60_000)
  // Redis comes back only after this check: a write waiting for it would never end, and one
  // bounded by the 1 s command timeout ends seconds before the limit here.
  const ms = performance.now() - started
  t.ok(ms < 4000, `the failing write did not wait for Redis to come back (${ms.toFixed(0)} ms; command timeout 1000 ms)`)
  t.equal(state.mode, 'fallback')
  t.equal(await store.get('shared'), 'in-memory', 'answered from memory')
  t.equal(store.usingRedis, false)

  const used = await store.use('custom', async () => 'redis', () => 'memory')
  t.equal(used, 'memory', 'use() takes the memory branch while down')

  await redis.restart()
  await waitFor(() => state.mode === 'redis', 10_000)
  await store.set('shared', 'back', 60_000)
  t.equal(await redis.command('GET', 'shared'), 'back', 'Redis is used again')
  t.equal(await store.use('custom', async (c) => c.ping(), () => 'memory'), 'PONG')
})
