/**
 * A Redis Sentinel topology as processes, for failover tests: a master, one replica
 * (`--replicaof`) and three `redis-server --sentinel` on free loopback ports, each in its own
 * temp dir with a generated sentinel.conf (`sentinel monitor <name> 127.0.0.1 <port> 2`, short
 * down-after and failover timeouts so that a failover takes seconds). Never port 6379; every
 * process is killed and every dir removed in `stop()` and when the test process exits.
 *
 * The data nodes come from startRedis (redis-server.ts), so they can be killed, paused and
 * queried the same way; the sentinels are spawned here because a sentinel needs its config
 * file as the first argument (and rewrites it).
 */
import { execFile, spawn } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { reapChild, reapDir, reapNow } from './reaper.js'
import { getFreePort, startRedis, type RedisProcess } from './redis-server.js'

export { skipUnlessRedis } from './redis-server.js'

export interface SentinelTopologyOptions {
  /** The master group name (default mymaster). */
  name?: string
  /** requirepass and masterauth of the data nodes; the sentinels get it as auth-pass. */
  password?: string
  /** requirepass of the sentinels (and sentinel-pass, so that they can talk to each other). */
  sentinelPassword?: string
  /** Milliseconds without an answer before a sentinel calls the master down (default 1000). */
  downAfterMs?: number
  /** sentinel failover-timeout (default 5000). */
  failoverTimeoutMs?: number
}

export interface SentinelProcess {
  readonly port: number
  command (...args: string[]): Promise<string>
  kill (): Promise<void>
}

export interface SentinelTopology {
  readonly name: string
  /** The two data nodes, in start order: [0] is the first master, [1] its replica. */
  readonly nodes: RedisProcess[]
  readonly sentinels: SentinelProcess[]
  /** REDIS_SENTINELS for the service: 127.0.0.1:p1,127.0.0.1:p2,127.0.0.1:p3. */
  readonly sentinelsEnv: string
  /** The master's port as the first sentinel that answers names it. */
  masterPort (): Promise<number>
  /** The data node listening on `port`. */
  node (port: number): RedisProcess
  /** `SENTINEL FAILOVER <name>` on a sentinel; resolves when it was accepted. */
  failover (): Promise<void>
  /** Waits until every live sentinel names a master other than `oldPort`, whose role is master. */
  waitForNewMaster (oldPort: number, timeoutMs: number): Promise<number>
  /** Waits until the sentinels know the replica and each other, and the replica is in sync. */
  waitSettled (timeoutMs: number): Promise<void>
  stop (): Promise<void>
}


const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))

function cli (port: number, password: string | undefined, args: string[]): Promise<string> {
  const cliArgs = ['-h', '127.0.0.1', '-p', String(port), ...(password !== undefined ? ['-a', password, '--no-auth-warning'] : []), ...args]
  return new Promise((resolve, reject) => {
    execFile('redis-cli', cliArgs, { timeout: 5000 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`redis-cli -p ${port} ${args.join(' ')} failed: ${err.message}\n${stderr}${stdout}`))
      else resolve(stdout.trim())
    })
  })
}

async function startSentinel (masterPort: number, o: Required<Omit<SentinelTopologyOptions, 'password' | 'sentinelPassword'>> & SentinelTopologyOptions): Promise<SentinelProcess> {
  for (let attempt = 0; ; attempt++) {
    const port = await getFreePort()
    if (port === 6379) continue
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'redis-sentinel-'))
    reapDir(dir)
    const conf = path.join(dir, 'sentinel.conf')
    fs.writeFileSync(conf, [
      `port ${port}`,
      'bind 127.0.0.1',
      'daemonize no',
      `dir ${dir}`,
      'loglevel warning',
      'sentinel announce-ip 127.0.0.1',
      'sentinel resolve-hostnames no',
      `sentinel monitor ${o.name} 127.0.0.1 ${masterPort} 2`,
      `sentinel down-after-milliseconds ${o.name} ${o.downAfterMs}`,
      `sentinel failover-timeout ${o.name} ${o.failoverTimeoutMs}`,
      `sentinel parallel-syncs ${o.name} 1`,
      ...(o.password !== undefined ? [`sentinel auth-pass ${o.name} ${o.password}`] : []),
      ...(o.sentinelPassword !== undefined ? [`requirepass ${o.sentinelPassword}`, `sentinel sentinel-pass ${o.sentinelPassword}`] : []),
      '',
    ].join('\n'))
    const child = spawn('redis-server', [conf, '--sentinel'], { stdio: ['ignore', 'pipe', 'pipe'] })
    reapChild(child)
    let output = ''
    child.stdout?.on('data', (d: Buffer) => { output = (output + d.toString()).slice(-4000) })
    child.stderr?.on('data', (d: Buffer) => { output = (output + d.toString()).slice(-4000) })
    const exited = (): boolean => child.exitCode !== null || child.signalCode !== null
    const command = (...args: string[]): Promise<string> => cli(port, o.sentinelPassword, args)
    const deadline = Date.now() + 10_000
    let ready = false
    while (Date.now() < deadline && !exited()) {
      try {
        if ((await command('PING')) === 'PONG') { ready = true; break }
      } catch { /* not listening yet */ }
      await sleep(50)
    }
    if (ready) {
      return {
        port,
        command,
        kill: async () => {
          if (exited()) return
          const gone = new Promise((resolve) => child.once('exit', resolve))
          child.kill('SIGKILL')
          await gone
        },
      }
    }
    child.kill('SIGKILL')
    if (attempt < 3 && /address already in use/i.test(output)) continue
    throw new Error(`redis-server --sentinel on port ${port} did not start:\n${output}`)
  }
}

export async function startSentinelTopology (options: SentinelTopologyOptions = {}): Promise<SentinelTopology> {
  const o = { name: 'mymaster', downAfterMs: 1000, failoverTimeoutMs: 5000, ...options }
  const auth = o.password !== undefined ? { password: o.password } : {}
  const masterauth = o.password !== undefined ? ['--masterauth', o.password] : []
  const nodes: RedisProcess[] = []
  const sentinels: SentinelProcess[] = []
  const stop = async (): Promise<void> => {
    await Promise.all(sentinels.map(async (s) => s.kill()))
    await Promise.all(nodes.map(async (n) => n.stop()))
    reapNow()
  }
  try {
    nodes.push(await startRedis({ ...auth, args: masterauth }))
    nodes.push(await startRedis({ ...auth, args: [...masterauth, '--replicaof', '127.0.0.1', String(nodes[0]!.port)] }))
    for (let i = 0; i < 3; i++) sentinels.push(await startSentinel(nodes[0]!.port, o))
  } catch (err) {
    await stop()
    throw err
  }

  const sentinelCommand = async (...args: string[]): Promise<string> => {
    let last: unknown
    for (const s of sentinels) {
      try { return await s.command(...args) } catch (err) { last = err }
    }
    throw last instanceof Error ? last : new Error('no sentinel answers')
  }
  const masterPort = async (): Promise<number> => {
    const reply = await sentinelCommand('SENTINEL', 'GET-MASTER-ADDR-BY-NAME', o.name)
    return Number(reply.split('\n')[1])
  }
  const node = (port: number): RedisProcess => {
    const found = nodes.find((n) => n.port === port)
    if (found === undefined) throw new Error(`no data node on port ${port}`)
    return found
  }
  const waitUntil = async (what: string, timeoutMs: number, check: () => Promise<boolean>): Promise<void> => {
    const deadline = Date.now() + timeoutMs
    for (;;) {
      try { if (await check()) return } catch { /* a node or sentinel is down: keep polling */ }
      if (Date.now() > deadline) throw new Error(`sentinel topology: ${what} not within ${timeoutMs} ms`)
      await sleep(100)
    }
  }
  const field = (reply: string, name: string): string | undefined => {
    const lines = reply.split('\n')
    const at = lines.indexOf(name)
    return at === -1 ? undefined : lines[at + 1]
  }

  return {
    name: o.name,
    nodes,
    sentinels,
    sentinelsEnv: sentinels.map((s) => `127.0.0.1:${s.port}`).join(','),
    masterPort,
    node,
    failover: async () => {
      const reply = await sentinelCommand('SENTINEL', 'FAILOVER', o.name)
      if (reply !== 'OK') throw new Error(`SENTINEL FAILOVER ${o.name}: ${reply}`)
    },
    waitForNewMaster: async (oldPort, timeoutMs) => {
      let found = 0
      await waitUntil(`a master other than ${oldPort}`, timeoutMs, async () => {
        const ports = new Set<number>()
        for (const s of sentinels) {
          try {
            ports.add(Number((await s.command('SENTINEL', 'GET-MASTER-ADDR-BY-NAME', o.name)).split('\n')[1]))
          } catch { /* a killed sentinel */ }
        }
        if (ports.size !== 1) return false
        const [port] = [...ports]
        if (port === undefined || port === oldPort) return false
        if (!/role:master/.test(await node(port).command('INFO', 'replication'))) return false
        found = port
        return true
      })
      return found
    },
    waitSettled: async (timeoutMs) => {
      await waitUntil('sentinels and replica settled', timeoutMs, async () => {
        const master = await masterPort()
        for (const n of nodes) {
          if (n.port === master) continue
          if (!/master_link_status:up/.test(await n.command('INFO', 'replication'))) return false
        }
        for (const s of sentinels) {
          const reply = await s.command('SENTINEL', 'MASTER', o.name)
          if (field(reply, 'num-slaves') !== String(nodes.length - 1)) return false
          if (field(reply, 'num-other-sentinels') !== String(sentinels.length - 1)) return false
          if (!/^master$/.test(field(reply, 'flags') ?? '')) return false
        }
        return true
      })
    },
    stop,
  }
}

/**
 * A stand-in sentinel that names whatever master the test sets (`point(port)`): a stale or
 * wrong answer on demand, which a real sentinel only gives during a partition. It answers
 * `SENTINEL get-master-addr-by-name`, `SENTINEL sentinels` (none), SUBSCRIBE (publishes only
 * on `switchMaster()`) and +OK to anything else. `lookups` counts the master questions;
 * `hold()` leaves them unanswered until `release()`, to put a `+switch-master` exactly where
 * a test needs it.
 */
export interface FakeSentinel {
  readonly port: number
  lookups: number
  point (port: number): void
  /** Lookups (get-master-addr-by-name) asked while held, not answered yet. */
  pending: number
  /** Open connections subscribed to +switch-master (a client's failover detector). */
  subscribers: number
  /** Hold every lookup unanswered until release(). */
  hold (): void
  /** Answer the held lookups with the master pointed at now, and answer at once again. */
  release (): void
  /** Sends `+switch-master` to every subscribed connection, as sentinels do after a failover. */
  switchMaster (): void
  close (): Promise<void>
}

export async function startFakeSentinel (masterPort: number): Promise<FakeSentinel> {
  const net = await import('node:net')
  let target = masterPort
  let holding = false
  const held: Array<import('node:net').Socket> = []
  const sockets = new Set<import('node:net').Socket>()
  const subscribed = new Set<import('node:net').Socket>()
  /** Connections that said HELLO 3: their pub/sub messages are RESP3 pushes. */
  const resp3 = new WeakSet<import('node:net').Socket>()
  const bulk = (s: string): string => `$${Buffer.byteLength(s)}\r\n${s}\r\n`
  const answer = (socket: import('node:net').Socket): void => { socket.write(`*2\r\n${bulk('127.0.0.1')}${bulk(String(target))}`) }
  const server = net.createServer((socket) => {
    sockets.add(socket)
    socket.on('close', () => { sockets.delete(socket); subscribed.delete(socket) })
    socket.on('error', () => {})
    let buf = ''
    socket.on('data', (d) => {
      buf += d.toString('utf8')
      for (;;) {
        const parsed = parseCommand(buf)
        if (parsed === null) return
        buf = buf.slice(parsed.used)
        const [cmd = '', sub = ''] = parsed.args.map((a) => a.toLowerCase())
        if (cmd === 'sentinel' && sub === 'get-master-addr-by-name') {
          fake.lookups++
          if (holding) held.push(socket)
          else answer(socket)
        } else if (cmd === 'sentinel') {
          socket.write('*0\r\n')
        } else if (cmd === 'hello' && sub === '3') {
          resp3.add(socket)
          socket.write('+OK\r\n')
        } else if (cmd === 'subscribe') {
          subscribed.add(socket)
          socket.write(`*3\r\n${bulk('subscribe')}${bulk(parsed.args[1] ?? '')}:1\r\n`)
        } else {
          socket.write('+OK\r\n')
        }
      }
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const address = server.address()
  if (address === null || typeof address === 'string') throw new Error('fake sentinel: no port')
  const fake: FakeSentinel = {
    port: address.port,
    lookups: 0,
    point: (port) => { target = port },
    get pending () { return held.filter((s) => !s.destroyed).length },
    get subscribers () { return subscribed.size },
    hold: () => { holding = true },
    release: () => {
      holding = false
      for (const s of held.splice(0)) if (!s.destroyed) answer(s)
    },
    switchMaster: () => {
      const message = `mymaster 127.0.0.1 0 127.0.0.1 ${target}`
      for (const s of subscribed) s.write(`${resp3.has(s) ? '>' : '*'}3\r\n${bulk('message')}${bulk('+switch-master')}${bulk(message)}`)
    },
    close: async () => {
      for (const s of sockets) s.destroy()
      await new Promise<void>((resolve) => server.close(() => resolve()))
    },
  }
  return fake
}

/** One RESP array of bulk strings from the front of `buf`, or null when incomplete. */
function parseCommand (buf: string): { args: string[], used: number } | null {
  if (!buf.startsWith('*')) {
    // Inline command (a line of words).
    const end = buf.indexOf('\r\n')
    return end === -1 ? null : { args: buf.slice(0, end).split(' '), used: end + 2 }
  }
  let pos = buf.indexOf('\r\n')
  if (pos === -1) return null
  const count = Number(buf.slice(1, pos))
  pos += 2
  const args: string[] = []
  for (let i = 0; i < count; i++) {
    const end = buf.indexOf('\r\n', pos)
    if (end === -1) return null
    const len = Number(buf.slice(pos + 1, end))
    const start = end + 2
    if (Buffer.byteLength(buf.slice(start)) < len + 2) return null
    args.push(buf.slice(start, start + len))
    pos = start + len + 2
  }
  return { args, used: pos }
}
