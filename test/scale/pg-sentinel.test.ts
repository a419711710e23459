/**
 * The three-instance checks (three-instances.ts) on PostgreSQL with Redis Sentinel: a master,
 * one replica and three sentinels, password-protected, found by the instances through
 * REDIS_SENTINELS. Needs PostgreSQL on the machine and redis-server; under CI=true a missing
 * one fails the test instead of skipping it.
 */
import t from 'tap'
import { skipUnlessPostgres } from '../helpers/postgres.js'
import { skipUnlessRedis, startSentinelTopology } from '../helpers/sentinel.js'
import { runThreeInstanceChecks, type Topology } from './three-instances.js'

const pgOpts = skipUnlessPostgres()
const opts = pgOpts.skip !== undefined ? pgOpts : skipUnlessRedis()
t.setTimeout(240_000)

t.test('three instances on PostgreSQL and Redis Sentinel keep every guarantee', opts, async (t) => {
  const sentinel = await startSentinelTopology({ password: 'scale-data-pass', sentinelPassword: 'scale-sentinel-pass' })
  t.teardown(() => sentinel.stop())
  await sentinel.waitSettled(30_000)
  const topology: Topology = {
    env: {
      REDIS_SENTINELS: sentinel.sentinelsEnv,
      REDIS_SENTINEL_NAME: sentinel.name,
      REDIS_PASSWORD: 'scale-data-pass',
      REDIS_SENTINEL_PASSWORD: 'scale-sentinel-pass',
    },
    stop: () => sentinel.stop(),
  }
  await runThreeInstanceChecks(t, topology)
})
