/**
 * The guide's client options reach the Redis client and the fallback store: retries per
 * request, ready check, keep-alive and family on the ioredis client; REDIS_LAZY_CONNECT
 * decides whether boot waits for Redis (ioredis's own lazyConnect is always on: the state
 * dials itself); FALLBACK_MAX_ENTRIES and FALLBACK_MAX_BYTES bound the
 * in-process store.
 */
import t from 'tap'
import { build, waitFor } from './helper.js'
import { skipUnlessRedis, startRedis } from './helpers/redis-server.js'

const redisOpts = skipUnlessRedis()

t.test('retries per request, ready check and keep-alive are the ones configured', redisOpts, async (t) => {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  for (const env of [
    { REDIS_MAX_RETRIES_PER_REQUEST: '3', REDIS_READY_CHECK: 'false', REDIS_KEEPALIVE_MS: '1234' },
    { REDIS_MAX_RETRIES_PER_REQUEST: '0', REDIS_READY_CHECK: 'true', REDIS_KEEPALIVE_MS: '0' },
  ]) {
    const { app } = await build(t, { REDIS_URL: redis.url, ...env })
    const options = app.redis!.options
    t.equal(options.maxRetriesPerRequest, Number(env.REDIS_MAX_RETRIES_PER_REQUEST))
    t.equal(options.enableReadyCheck, env.REDIS_READY_CHECK === 'true')
    t.equal(options.keepAlive, Number(env.REDIS_KEEPALIVE_MS))
    t.equal(app.redisState.mode, 'redis', 'and it connects')
  }
})

t.test('REDIS_FAMILY decides which addresses a host name is looked up as', redisOpts, async (t) => {
  const redis = await startRedis() // listens on 127.0.0.1 only
  t.teardown(() => redis.stop())
  const url = `redis://localhost:${redis.port}`
  const v4 = await build(t, { REDIS_URL: url, REDIS_FAMILY: '4' })
  t.equal(v4.app.redis!.options.family, 4)
  t.equal(v4.app.redisState.mode, 'redis', 'family 4: localhost is 127.0.0.1, connected')
  const v6 = await build(t, { REDIS_URL: url, REDIS_FAMILY: '6', REDIS_CONNECT_TIMEOUT_MS: '500' })
  t.equal(v6.app.redis!.options.family, 6)
  t.equal(v6.app.redisState.mode, 'fallback', 'family 6: no IPv6 address reaches this server')
})

t.test('REDIS_LAZY_CONNECT: boot waits for a Redis that does not answer only when false', redisOpts, async (t) => {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  redis.pause() // accepts the connection, never answers the ready check
  t.teardown(() => redis.resume())
  // The ready check's INFO would otherwise give up at the command timeout, before the connect timeout.
  // Seven seconds: the lazy boot and the eager one are then seconds apart, more than a busy
  // machine adds to a boot, and the eager one still fits Fastify's 10 s plugin timeout.
  const env = { REDIS_URL: redis.url, REDIS_CONNECT_TIMEOUT_MS: '7000', REDIS_COMMAND_TIMEOUT_MS: '7000' }

  let started = performance.now()
  const lazy = await build(t, { ...env, REDIS_LAZY_CONNECT: 'true' })
  const lazyMs = performance.now() - started
  t.ok(lazyMs < 4500, `lazy: booted in ${lazyMs.toFixed(0)} ms (connect timeout 7000 ms)`)
  t.equal(lazy.app.redisState.mode, 'fallback', 'and serves from the fallback meanwhile')

  started = performance.now()
  const eager = await build(t, { ...env, REDIS_LAZY_CONNECT: 'false' })
  const eagerMs = performance.now() - started
  t.ok(eagerMs >= 6500, `not lazy: boot waited ${eagerMs.toFixed(0)} ms (connect timeout 7000 ms)`)

  redis.resume()
  await waitFor(() => lazy.app.redisState.mode === 'redis' && eager.app.redisState.mode === 'redis', 15_000)
  t.pass('both switch to Redis once it answers')
})

t.test('FALLBACK_MAX_ENTRIES and FALLBACK_MAX_BYTES bound the in-process store', async (t) => {
  const byEntries = await build(t, { FALLBACK_MAX_ENTRIES: '100' })
  for (let i = 0; i < 300; i++) await byEntries.app.store.set(`k${i}`, 'v', 60_000)
  t.equal(byEntries.app.store.memory.size, 100)
  t.equal(await byEntries.app.store.get('k299'), 'v', 'the newest is kept')
  t.equal(await byEntries.app.store.get('k0'), null, 'the oldest went')

  const byBytes = await build(t, { FALLBACK_MAX_BYTES: '65536' })
  const value = 'x'.repeat(1000)
  for (let i = 0; i < 300; i++) await byBytes.app.store.set(`k${i}`, value, 60_000)
  const { size, bytes } = byBytes.app.store.memory
  t.ok(bytes <= 65_536, `${bytes} bytes held`)
  t.ok(size > 0 && size < 300, `${size} of 300 entries kept`)
  t.equal(await byBytes.app.store.get('k299'), value)
})
