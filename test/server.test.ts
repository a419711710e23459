/**
 * The process entry, run as a real process: it starts with no configuration at all, and on
 * SIGTERM readiness turns 503, an in-flight request finishes, Redis connections close and
 * the process exits 0 within the shutdown timeout. Under keep-alive load no request is reset
 * during the drain. The servers run without event-loop-delay shedding: on a busy machine its
 * 503s would be the machine's, not the drain's.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtempSync } from 'node:fs'
import http from 'node:http'
import net from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { waitFor } from './helper.js'
import { getFreePort, skipUnlessRedis, startRedis } from './helpers/redis-server.js'

interface Server { child: ChildProcess, port: number, output: () => string, exited: Promise<number | null> }

async function startServer (env: Record<string, string>): Promise<Server> {
  const port = await getFreePort()
  const dir = mkdtempSync(join(tmpdir(), 'aic-server-'))
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/server.ts'], {
    env: { PATH: process.env.PATH ?? '', HOST: '127.0.0.1', PORT: String(port), DATABASE_PATH: join(dir, 'db.sqlite'), LOG_LEVEL: 'info', MAX_EVENT_LOOP_DELAY_MS: '0', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let output = ''
  child.stdout!.on('data', (d: Buffer) => { output += d.toString() })
  child.stderr!.on('data', (d: Buffer) => { output += d.toString() })
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)))
  await waitFor(async () => {
    if (child.exitCode !== null) throw new Error(`server exited early:\n${output}`)
    try { return (await fetch(`http://127.0.0.1:${port}/api/health/live`)).ok } catch { return false }
  }, 60_000, 100)
  return { child, port, output: () => output, exited }
}

function request (port: number, agent: http.Agent, path: string): Promise<number> {
  return new Promise((resolve, reject) => {
    http.get({ host: '127.0.0.1', port, path, agent }, (res) => { res.resume(); resolve(res.statusCode ?? 0) }).on('error', reject)
  })
}

t.test('starts with no configuration at all: no Redis, generated secret, serving', async (t) => {
  const server = await startServer({})
  t.teardown(() => { server.child.kill('SIGKILL') })
  const res = await fetch(`http://127.0.0.1:${server.port}/api/health`)
  t.equal(res.status, 200)
  const body = await res.json() as { status: string, redis: { status: string } }
  t.equal(body.status, 'OK')
  t.equal(body.redis.status, 'disabled')
  server.child.kill('SIGTERM')
  t.equal(await server.exited, 0, 'SIGTERM exits 0')
})

t.test('a second signal during the shutdown delay does not cut the drain short', async (t) => {
  const server = await startServer({ SHUTDOWN_DELAY_MS: '500' })
  t.teardown(() => { server.child.kill('SIGKILL') })
  server.child.kill('SIGTERM')
  await new Promise((resolve) => setTimeout(resolve, 100))
  server.child.kill('SIGTERM') // as when an orchestrator and a process manager both pass it on
  t.equal(await server.exited, 0, 'exit code 0, not killed by the signal')
  t.match(server.output(), /shutdown complete/)
})

t.test('SIGTERM: readiness 503, the in-flight request finishes, Redis closes, exit 0 within 10 s', skipUnlessRedis(), async (t) => {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  const server = await startServer({ REDIS_URL: redis.url, SHUTDOWN_DELAY_MS: '500' })
  t.teardown(() => { server.child.kill('SIGKILL') })
  const clientsBefore = (await redis.command('CLIENT', 'LIST')).split('\n').filter((l) => !l.includes('cmd=client')).length
  t.ok(clientsBefore >= 1, 'the service holds Redis connections')

  // An in-flight request: headers sent, body not finished yet.
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 })
  t.teardown(() => agent.destroy())
  t.equal(await request(server.port, agent, '/api/health/ready'), 200, 'ready before the signal')
  const body = JSON.stringify({ email: 'inflight@example.com', password: 'long-enough-password' })
  const inflight = new Promise<number>((resolve, reject) => {
    const req = http.request({
      host: '127.0.0.1', port: server.port, method: 'POST', path: '/api/auth/register',
      headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) },
    }, (res) => { res.resume(); res.on('end', () => resolve(res.statusCode ?? 0)) })
    req.on('error', reject)
    req.write(body.slice(0, 10))
    setTimeout(() => req.end(body.slice(10)), 1000)
  })
  await new Promise((resolve) => setTimeout(resolve, 100))

  const signalledAt = Date.now()
  server.child.kill('SIGTERM')
  await new Promise((resolve) => setTimeout(resolve, 150))
  t.equal(await request(server.port, agent, '/api/health/ready'), 503, 'readiness answers 503 during the shutdown delay')
  t.equal(await request(server.port, new http.Agent(), '/api/health/live'), 200, 'new connections are still accepted during the delay')
  // The request body completes ~850 ms after the signal: after the port closed (500 ms).

  const status = await inflight
  t.ok(status >= 200 && status < 500, `the in-flight request was answered (${status}), not cut`)
  const code = await server.exited
  t.equal(code, 0, 'exit code 0')
  t.ok(Date.now() - signalledAt < 10_000, `exited ${Date.now() - signalledAt} ms after SIGTERM`)
  await waitFor(async () => (await redis.command('CLIENT', 'LIST')).split('\n').filter((l) => !l.includes('cmd=client')).length === 0, 2000)
  t.pass('every Redis connection of the service is closed')
  t.match(server.output(), /shutdown complete/)
  if (process.env.DUMP) process.stderr.write(server.output().split('\n').filter((l) => !/incoming request|request completed/.test(l)).map((l) => l.slice(0, 220)).join('\n'))
})

interface Outcome { status?: number, connection?: string, error?: string, afterReadyFailed: boolean }

/** One GET on `agent`; resolves when the response has been read to its end, or with the error. */
function outcome (port: number, agent: http.Agent, path: string, afterReadyFailed: boolean): Promise<Outcome> {
  return new Promise((resolve) => {
    const req = http.get({ host: '127.0.0.1', port, path, agent }, (res) => {
      res.resume()
      res.on('end', () => resolve({ status: res.statusCode, connection: res.headers.connection, afterReadyFailed }))
      res.on('error', (err: NodeJS.ErrnoException) => resolve({ error: err.code ?? err.message, afterReadyFailed }))
    })
    req.on('error', (err: NodeJS.ErrnoException) => resolve({ error: err.code ?? err.message, afterReadyFailed }))
  })
}

t.test('SIGTERM under keep-alive load: no request is reset, each connection ends after its next response', async (t) => {
  // A long delay: the clients below stop as a load balancer would, long before the port closes.
  const server = await startServer({ SHUTDOWN_DELAY_MS: '5000', SHUTDOWN_TIMEOUT_MS: '30000', LOG_LEVEL: 'warn' })
  t.teardown(() => { server.child.kill('SIGKILL') })
  const CLIENTS = 4
  const AFTER = 25
  const outcomes: Outcome[] = []
  let readyFailed = false
  let stop = false
  const doneAfter = new Array<number>(CLIENTS).fill(0)
  const doneBefore = new Array<number>(CLIENTS).fill(0)
  const clients = Array.from({ length: CLIENTS }, async (_, i) => {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 })
    try {
      while (!stop) {
        const after = readyFailed
        const o = await outcome(server.port, agent, '/api/health/live', after)
        outcomes.push(o)
        if (after) doneAfter[i]!++
        else doneBefore[i]!++
      }
    } finally {
      agent.destroy()
    }
  })
  // Keep-alive traffic first, then the signal.
  await waitFor(() => doneBefore.every((n) => n >= 20), 20_000)
  server.child.kill('SIGTERM')
  // The load balancer: polls readiness on fresh connections until it fails…
  await waitFor(async () => {
    const o = await outcome(server.port, new http.Agent(), '/api/health/ready', false)
    return o.status === 503
  }, 10_000, 50)
  readyFailed = true
  // …while traffic keeps coming for a while, then stops sending.
  await waitFor(() => doneAfter.every((n) => n >= AFTER), 20_000)
  stop = true
  await Promise.all(clients)
  const code = await server.exited

  const errors = outcomes.filter((o) => o.error !== undefined)
  t.same(errors.map((o) => o.error), [], 'no request was reset or refused')
  t.ok(outcomes.every((o) => o.status === 200), 'every request got a complete 200')
  const after = outcomes.filter((o) => o.afterReadyFailed)
  t.ok(after.length >= CLIENTS * AFTER, `${after.length} requests served while readiness failed`)
  t.ok(after.every((o) => o.connection === 'close'), 'each of them said Connection: close')
  t.ok(outcomes.filter((o) => !o.afterReadyFailed).some((o) => o.connection === 'keep-alive'), 'before the signal the connections were kept alive')
  t.equal(code, 0, 'exit code 0')
})

t.test('after the port closes, a request on a connection opened before it is still served', async (t) => {
  const server = await startServer({ SHUTDOWN_DELAY_MS: '500', SHUTDOWN_TIMEOUT_MS: '30000', LOG_LEVEL: 'warn' })
  t.teardown(() => { server.child.kill('SIGKILL') })
  // Connected, nothing sent yet (as a client whose request is still on its way).
  const socket = net.connect(server.port, '127.0.0.1')
  await new Promise((resolve) => socket.once('connect', resolve))
  let reply = ''
  socket.setEncoding('utf8')
  socket.on('data', (chunk: string) => { reply += chunk })
  const closed = new Promise((resolve) => socket.once('close', resolve))
  socket.on('error', () => {})
  server.child.kill('SIGTERM')
  // Wait until the port refuses new connections.
  await waitFor(() => new Promise<boolean>((resolve) => {
    const probe = net.connect(server.port, '127.0.0.1')
    probe.once('connect', () => { probe.destroy(); resolve(false) })
    probe.once('error', () => resolve(true))
  }), 10_000, 50)
  socket.write('GET /api/health/live HTTP/1.1\r\nHost: x\r\n\r\n')
  await closed
  t.match(reply, /^HTTP\/1\.1 200 /, 'answered 200, not 503')
  t.match(reply, /\r\nconnection: close\r\n/i, 'with Connection: close, then closed')
  t.equal(await server.exited, 0)
})
