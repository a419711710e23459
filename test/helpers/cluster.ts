/**
 * A private Redis Cluster as processes, for cluster tests: `masters` × (1 + `replicasPerMaster`)
 * `redis-server --cluster-enabled yes` on free loopback ports (each with its own temp dir,
 * cluster config file and an explicit cluster bus port, so that port + 10000 need not be free),
 * joined by `redis-cli --cluster create … --cluster-replicas N --cluster-yes`; resolves once
 * every node says `cluster_state:ok`, knows every node, and every master has its replicas.
 * Never port 6379; every process is killed and every dir removed in `stop()` and when the test
 * process exits or is signalled (the data nodes come from startRedis, which hooks both).
 *
 * Under CI=true a missing redis-server or redis-cli fails the caller instead of skipping.
 */
import { execFile } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { Redis } from 'ioredis'
import { parseClusterNodes, type ClusterNodeView } from '../../src/debug/redis-info.js'
import { getFreePort, startRedis, type RedisProcess } from './redis-server.js'

export interface RedisClusterOptions {
  masters?: number
  replicasPerMaster?: number
  password?: string
}

export interface RedisCluster {
  nodes: Array<{ host: string, port: number }>
  env: { REDIS_CLUSTER_NODES: string, REDIS_PASSWORD?: string }
  stop (): Promise<void>
  killNode (port: number): Promise<void>
}

/** How long the cluster may take to form on a loaded machine. */
const FORM_TIMEOUT_MS = 60_000

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))

function onPath (binary: string, pathEnv: string | undefined): boolean {
  return (pathEnv ?? '').split(path.delimiter).filter((d) => d !== '').some((dir) => {
    try {
      fs.accessSync(path.join(dir, binary), fs.constants.X_OK)
      return true
    } catch { return false }
  })
}

/**
 * Spread into tap test options: `t.test('…', skipUnlessCluster(), async t => …)`. `{}` when
 * redis-server and redis-cli are installed, `{ skip }` otherwise; throws when CI=true.
 */
export function skipUnlessCluster (env: NodeJS.ProcessEnv = process.env): { skip?: string } {
  const missing = ['redis-server', 'redis-cli'].filter((b) => !onPath(b, env.PATH))
  if (missing.length === 0) return {}
  if (env.CI === 'true') throw new Error(`${missing.join(' and ')} required when CI=true`)
  return { skip: `${missing.join(' and ')} not installed` }
}

function redisCli (args: string[], timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile('redis-cli', args, { timeout: timeoutMs }, (err, stdout, stderr) => {
      if (err) reject(new Error(`redis-cli ${args.filter((a) => a !== '-a').join(' ')} failed: ${err.message}\n${stderr}${stdout}`))
      else resolve(stdout.trim())
    })
  })
}

export async function startRedisCluster (opts: RedisClusterOptions = {}): Promise<RedisCluster> {
  const skip = skipUnlessCluster()
  if (skip.skip !== undefined) throw new Error(`cannot start a Redis Cluster: ${skip.skip}`)
  const masters = opts.masters ?? 3
  const replicas = opts.replicasPerMaster ?? 0
  if (masters < 3) throw new Error('a Redis Cluster needs at least 3 masters')
  const password = opts.password
  const auth = password !== undefined ? { password } : {}
  const processes: RedisProcess[] = []
  const stop = async (): Promise<void> => {
    await Promise.all(processes.map(async (p) => p.stop()))
  }
  try {
    for (let i = 0; i < masters * (1 + replicas); i++) {
      let bus = await getFreePort()
      while (bus === 6379) bus = await getFreePort()
      processes.push(await startRedis({
        ...auth,
        args: [
          '--cluster-enabled', 'yes',
          '--cluster-config-file', 'nodes.conf',
          '--cluster-port', String(bus),
          '--cluster-node-timeout', '2000',
          '--cluster-announce-ip', '127.0.0.1',
          ...(password !== undefined ? ['--masterauth', password] : []),
        ],
      }))
    }
    const authArgs = password !== undefined ? ['-a', password, '--no-auth-warning'] : []
    await redisCli([...authArgs, '--cluster', 'create', ...processes.map((p) => `127.0.0.1:${p.port}`),
      '--cluster-replicas', String(replicas), '--cluster-yes'], FORM_TIMEOUT_MS)
    const deadline = Date.now() + FORM_TIMEOUT_MS
    for (;;) {
      if (await formed(processes, masters, replicas)) break
      if (Date.now() > deadline) throw new Error(`the Redis Cluster did not reach cluster_state:ok on every node within ${FORM_TIMEOUT_MS} ms`)
      await sleep(200)
    }
  } catch (err) {
    await stop()
    throw err
  }
  const nodes = processes.map((p) => ({ host: '127.0.0.1', port: p.port }))
  return {
    nodes,
    env: {
      REDIS_CLUSTER_NODES: nodes.map((n) => `${n.host}:${n.port}`).join(','),
      ...(password !== undefined ? { REDIS_PASSWORD: password } : {}),
    },
    stop,
    killNode: async (port: number) => {
      const node = processes.find((p) => p.port === port)
      if (node === undefined) throw new Error(`no cluster node on port ${port}`)
      await node.kill('SIGKILL')
    },
  }
}

/** Every node: cluster_state:ok, knows all the others; every master has its replicas. */
async function formed (processes: RedisProcess[], masters: number, replicas: number): Promise<boolean> {
  let masterCount = 0
  for (const p of processes) {
    const info = await p.command('CLUSTER', 'INFO').catch(() => '')
    if (!/cluster_state:ok/.test(info)) return false
    if (Number(/cluster_known_nodes:(\d+)/.exec(info)?.[1]) !== processes.length) return false
    const replication = await p.command('INFO', 'replication').catch(() => '')
    if (/role:master/.test(replication)) {
      masterCount++
      if (Number(/connected_slaves:(\d+)/.exec(replication)?.[1] ?? 0) < replicas) return false
    } else if (!/master_link_status:up/.test(replication)) {
      return false
    }
  }
  return masterCount === masters
}

/** CLUSTER NODES of the live cluster, through any node that answers (but `skipPort`). */
export async function clusterNodes (cluster: RedisCluster, skipPort?: number): Promise<ClusterNodeView[]> {
  for (const node of cluster.nodes) {
    if (node.port === skipPort) continue
    const client = new Redis({ ...node, password: cluster.env.REDIS_PASSWORD, lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null })
    client.on('error', () => {})
    try {
      await client.connect()
      return parseClusterNodes(String(await client.cluster('NODES')))
    } catch { /* that node is down: the next */ } finally {
      client.disconnect()
    }
  }
  throw new Error('no cluster node answers')
}
