/**
 * The three-instance checks (three-instances.ts) on PostgreSQL with a Redis Cluster: three
 * masters, password-protected, found by the instances through REDIS_CLUSTER_NODES. On top of
 * the shared guarantees, the keys the three instances wrote must sit on all three masters (the
 * service really spreads its state over the cluster). Needs PostgreSQL on the machine,
 * redis-server and redis-cli; under CI=true a missing one fails the test instead of skipping it.
 */
import { Redis } from 'ioredis'
import t from 'tap'
import { skipUnlessPostgres } from '../helpers/postgres.js'
import { skipUnlessCluster, startRedisCluster } from '../helpers/cluster.js'
import { runThreeInstanceChecks, type Topology } from './three-instances.js'

const pgOpts = skipUnlessPostgres()
const opts = pgOpts.skip !== undefined ? pgOpts : skipUnlessCluster()
t.setTimeout(240_000)

const REDIS_PASSWORD = 'scale-cluster-pass'

t.test('three instances on PostgreSQL and a 3-master Redis Cluster keep every guarantee', opts, async (t) => {
  const cluster = await startRedisCluster({ masters: 3, password: REDIS_PASSWORD })
  t.teardown(() => cluster.stop())
  const topology: Topology = {
    env: { ...cluster.env },
    stop: () => cluster.stop(),
    // Every node is a master here (no replicas): each one's keys, read on that node.
    keysByMaster: async () => {
      const byMaster = new Map<string, string[]>()
      for (const node of cluster.nodes) {
        const client = new Redis({ ...node, password: REDIS_PASSWORD, lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null, commandTimeout: 10_000 })
        client.on('error', () => {})
        try {
          await client.connect()
          const role = await client.call('ROLE') as [string, ...unknown[]]
          if (role[0] !== 'master') continue
          const keys: string[] = []
          let cursor = '0'
          do {
            const [next, batch] = await client.scan(cursor, 'COUNT', 500)
            cursor = next
            keys.push(...batch)
          } while (cursor !== '0')
          byMaster.set(`${node.host}:${node.port}`, keys)
        } finally {
          client.disconnect()
        }
      }
      return byMaster
    },
  }
  await runThreeInstanceChecks(t, topology)
})
