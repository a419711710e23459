/**
 * `npm run chaos` (`npm run chaos:short` for CI): two instances of the service (child
 * processes, from src with tsx) on one private redis-server and one SQLite file, bounded
 * load on a quote route and two authenticated routes, and one Redis fault after another:
 *
 *   kill+restart   SIGKILL, then a restart on the same port (AOF, as deployed: the data stays)
 *   sigstop        SIGSTOP, then SIGCONT (a frozen server: the socket stays open)
 *   client-pause   CLIENT PAUSE <duration> ALL
 *   debug-sleep    DEBUG SLEEP <duration> (server started with --enable-debug-command local)
 *   oom            maxmemory 1 under noeviction: every write refused with OOM/EXECABORT
 *   readonly       REPLICAOF 127.0.0.1 <a dead port>, then REPLICAOF NO ONE
 *   password       CONFIG SET requirepass + CLIENT KILL TYPE normal, then the password removed
 *
 * After each fault it waits for both instances to report Redis connected, then checks the
 * data in the SQLite file: every acknowledged buy is there (one share each), none twice
 * (each buy carries an Idempotency-Key and is retried with the same key on the other
 * instance). It prints one table and exits 1 when a promise breaks: any 5xx, a lost or
 * doubled write, more than one ⚠️/❌ or ✅ line per instance per fault, or an instance that
 * did not come back.
 *
 * Everything listens on 127.0.0.1 on free ports and is killed on exit. Options:
 *   --short           each fault ~3 s instead of ~8 s (CI)
 *   --only a,b        run only these faults
 *   --workers N       concurrent clients per instance (default 2)
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import Database from 'better-sqlite3'
import { getFreePort, startRedis, type RedisProcess } from '../../test/helpers/redis-server.js'
import { markdownTable } from '../lib.js'

const LOG_CONNECTED = '✅ Redis connected successfully'
const LOG_CONNECTION_FAILED = '❌ Redis connection failed'
const LOG_OPERATION_FAILED = '⚠️ Redis operation failed, using fallback'

const { values: flags } = parseArgs({
  options: {
    short: { type: 'boolean', default: false },
    only: { type: 'string' },
    workers: { type: 'string', default: '2' },
  },
})
const FAULT_MS = flags.short ? 3000 : 8000
const WORKERS = Math.max(1, Math.min(8, Number(flags.workers) || 2))
const REQUEST_TIMEOUT_MS = 5000
const SETTLE_TIMEOUT_MS = 30_000
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..')
const TSX = path.join(ROOT, 'node_modules', 'tsx', 'dist', 'loader.mjs')
const JWT_SECRET = 'chaos-secret-chaos-secret-chaos-secret-0123'
const PASSWORD = 'chaos-password-1'

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))

// ---------------------------------------------------------------------------
// Instances
// ---------------------------------------------------------------------------

interface LogEvent { at: number, msg: string }

interface Instance {
  name: string
  baseUrl: string
  child: ChildProcess
  events: LogEvent[]
  tail: string[]
}

const children = new Set<ChildProcess>()
process.on('exit', () => { for (const c of children) c.kill('SIGKILL') })
for (const sig of ['SIGINT', 'SIGTERM'] as const) process.once(sig, () => process.exit(130))

async function startInstance (name: string, env: Record<string, string>, cwd: string): Promise<Instance> {
  const port = await getFreePort()
  const { PATH, HOME, LANG, TZ } = process.env
  const child = spawn(process.execPath, ['--import', TSX, path.join(ROOT, 'src', 'server.ts')], {
    cwd,
    env: { PATH, HOME, LANG, TZ, ...env, HOST: '127.0.0.1', PORT: String(port) },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  children.add(child)
  child.on('exit', () => children.delete(child))
  const inst: Instance = { name, baseUrl: `http://127.0.0.1:${port}`, child, events: [], tail: [] }
  let buf = ''
  const onData = (d: Buffer): void => {
    buf += d.toString('utf8')
    let nl: number
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl)
      buf = buf.slice(nl + 1)
      inst.tail.push(line)
      if (inst.tail.length > 50) inst.tail.shift()
      // Only the Redis lines matter here; the request log is skipped unparsed.
      if (!line.includes('Redis')) continue
      try {
        const msg = (JSON.parse(line) as { msg?: string }).msg
        if (typeof msg === 'string') inst.events.push({ at: Date.now(), msg })
      } catch { /* not JSON */ }
    }
  }
  child.stdout?.on('data', onData)
  child.stderr?.on('data', onData)
  const deadline = Date.now() + 60_000
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`${name} exited during start:\n${inst.tail.join('\n')}`)
    try {
      const res = await fetch(`${inst.baseUrl}/api/health/live`, { signal: AbortSignal.timeout(1000) })
      await res.arrayBuffer()
      if (res.ok) return inst
    } catch { /* not yet */ }
    await sleep(200)
  }
  throw new Error(`${name} not ready after 60 s:\n${inst.tail.join('\n')}`)
}

async function redisStatus (inst: Instance): Promise<string> {
  try {
    const res = await fetch(`${inst.baseUrl}/api/health`, { signal: AbortSignal.timeout(2000) })
    return ((await res.json()) as { redis: { status: string } }).redis.status
  } catch {
    return 'unanswered'
  }
}

// ---------------------------------------------------------------------------
// Load
// ---------------------------------------------------------------------------

interface Stats {
  requests: number
  byStatus: Map<string, number>
  worstMs: number
}

function newStats (): Stats {
  return { requests: 0, byStatus: new Map(), worstMs: 0 }
}

let stats = newStats()

interface User {
  email: string
  id: string
  token: string
  tried: Set<string>
  acked: Set<string>
}

async function call (inst: Instance, method: string, url: string, opts: { token?: string, body?: object, headers?: Record<string, string> } = {}): Promise<{ status: number, body: unknown }> {
  const started = performance.now()
  let status: string
  let result: { status: number, body: unknown }
  try {
    const res = await fetch(inst.baseUrl + url, {
      method,
      headers: {
        ...(opts.body !== undefined ? { 'content-type': 'application/json' } : {}),
        ...(opts.token !== undefined ? { authorization: `Bearer ${opts.token}` } : {}),
        ...opts.headers,
      },
      ...(opts.body !== undefined ? { body: JSON.stringify(opts.body) } : {}),
      signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
    })
    const text = await res.text()
    let body: unknown = text
    try { body = JSON.parse(text) } catch { /* not JSON */ }
    status = String(res.status)
    result = { status: res.status, body }
  } catch (err) {
    status = (err as Error).name === 'TimeoutError' ? 'timeout' : 'network'
    result = { status: 0, body: null }
  }
  const ms = performance.now() - started
  stats.requests++
  stats.worstMs = Math.max(stats.worstMs, ms)
  stats.byStatus.set(status, (stats.byStatus.get(status) ?? 0) + 1)
  return result
}

async function login (inst: Instance, user: User): Promise<void> {
  const res = await call(inst, 'POST', '/api/auth/login', { body: { email: user.email, password: PASSWORD } })
  if (res.status === 200) user.token = (res.body as { token: string }).token
}

/** One client: a quote, who am I, a buy (retried with its key on the other instance until answered). */
async function worker (instances: Instance[], home: number, user: User, stop: () => boolean): Promise<void> {
  let n = 0
  while (!stop()) {
    const inst = instances[home]!
    await call(inst, 'GET', '/api/stocks/AAPL')
    const me = await call(inst, 'GET', '/api/auth/me', { token: user.token })
    if (me.status === 401) await login(inst, user)
    const key = `${user.email}-${n++}`
    user.tried.add(key)
    for (let attempt = 0; attempt < 4; attempt++) {
      const target = instances[(home + attempt) % instances.length]!
      const res = await call(target, 'POST', '/api/portfolio/transactions', {
        token: user.token,
        body: { ticker: 'AAPL', side: 'buy', shares: 1, price: 100 },
        headers: { 'idempotency-key': key },
      })
      if (res.status === 201) {
        user.acked.add(key)
        break
      }
      if (res.status === 401) await login(target, user)
      if (res.status >= 400 && res.status < 500 && res.status !== 401 && res.status !== 409 && res.status !== 429) break
      await sleep(100)
    }
    await sleep(20)
  }
}

// ---------------------------------------------------------------------------
// Faults
// ---------------------------------------------------------------------------

interface Fault {
  name: string
  inject: (redis: RedisProcess) => Promise<void>
  clear: (redis: RedisProcess) => Promise<void>
}

const SECRET = 'chaos-added-pass'

function faults (deadPort: number): Fault[] {
  const seconds = String(Math.max(1, Math.round(FAULT_MS / 1000)))
  return [
    { name: 'kill+restart', inject: (r) => r.kill('SIGKILL'), clear: (r) => r.restart() },
    { name: 'sigstop', inject: async (r) => { r.pause() }, clear: async (r) => { r.resume() } },
    {
      name: 'client-pause',
      inject: async (r) => { await r.command('CLIENT', 'PAUSE', String(FAULT_MS), 'ALL') },
      clear: async (r) => { await r.command('CLIENT', 'UNPAUSE') },
    },
    {
      name: 'debug-sleep',
      // redis-cli blocks for the whole sleep (and the helper gives up after 5 s): not awaited.
      inject: async (r) => { void r.command('DEBUG', 'SLEEP', seconds).catch(() => {}) },
      clear: async (r) => { await waitUntil(async () => (await r.command('PING').catch(() => '')) === 'PONG', 20_000) },
    },
    {
      name: 'oom',
      inject: async (r) => { await r.command('CONFIG', 'SET', 'maxmemory', '1') },
      clear: async (r) => { await r.command('CONFIG', 'SET', 'maxmemory', '0') },
    },
    {
      name: 'readonly',
      inject: async (r) => { await r.command('REPLICAOF', '127.0.0.1', String(deadPort)) },
      clear: async (r) => { await r.command('REPLICAOF', 'NO', 'ONE') },
    },
    {
      name: 'password',
      inject: async (r) => {
        await r.command('CONFIG', 'SET', 'requirepass', SECRET)
        await r.command('-a', SECRET, '--no-auth-warning', 'CLIENT', 'KILL', 'TYPE', 'normal')
      },
      clear: async (r) => { await r.command('-a', SECRET, '--no-auth-warning', 'CONFIG', 'SET', 'requirepass', '') },
    },
  ]
}

async function waitUntil (check: () => Promise<boolean>, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs
  while (Date.now() < deadline) {
    if (await check()) return true
    await sleep(200)
  }
  return false
}

// ---------------------------------------------------------------------------
// Data check
// ---------------------------------------------------------------------------

interface DataCheck { lost: number, doubled: number }

/** In the SQLite file: each acknowledged key stored, shares = stored keys (one share a buy). */
function checkData (dbPath: string, users: User[]): DataCheck {
  const db = new Database(dbPath, { readonly: true, fileMustExist: true })
  try {
    let lost = 0
    let doubled = 0
    const keysOf = db.prepare('SELECT key FROM idempotency_keys WHERE user_id = ?')
    const sharesOf = db.prepare("SELECT shares FROM portfolio_positions WHERE user_id = ? AND ticker = 'AAPL'")
    const buysOf = db.prepare("SELECT COUNT(*) AS n FROM portfolio_transactions WHERE user_id = ? AND kind = 'buy'")
    // One read transaction: one snapshot of the WAL, while the load goes on.
    db.prepare('BEGIN').run()
    for (const u of users) {
      const stored = new Set((keysOf.all(u.id) as Array<{ key: string }>).map((r) => r.key))
      const shares = (sharesOf.get(u.id) as { shares: number } | undefined)?.shares ?? 0
      const buys = (buysOf.get(u.id) as { n: number }).n
      for (const k of u.acked) if (!stored.has(k)) lost++
      // More shares or buys than keys: a retried buy applied twice.
      doubled += Math.max(0, shares - stored.size, buys - stored.size)
      // Fewer shares than acknowledged buys: an acknowledged write is gone.
      lost += Math.max(0, u.acked.size - shares)
    }
    db.prepare('COMMIT').run()
    return { lost, doubled }
  } finally {
    db.close()
  }
}

// ---------------------------------------------------------------------------
// Main
// ---------------------------------------------------------------------------

interface Row {
  fault: string
  requests: number
  non2xx: string
  fiveXx: number
  worstMs: number
  detectMs: number | null
  recoverMs: number | null
  transitions: string
  lostOrDoubled: string
  broken: string[]
}

async function main (): Promise<number> {
  const dir = mkdtempSync(path.join(tmpdir(), 'aic-chaos-'))
  const dbPath = path.join(dir, 'chaos.db')
  const redis = await startRedis({
    args: ['--appendonly', 'yes', '--appendfsync', 'everysec', '--maxmemory-policy', 'noeviction', '--enable-debug-command', 'local'],
  })
  const deadPort = await getFreePort()
  const env = {
    NODE_ENV: 'test',
    LOG_LEVEL: 'info',
    DATABASE_PATH: dbPath,
    REDIS_URL: redis.url,
    JWT_SECRET,
    RATE_LIMIT_MAX: '1000000000',
    LOGIN_RATE_LIMIT_MAX: '1000000',
    REGISTER_RATE_LIMIT_MAX: '1000000',
    LOGIN_EMAIL_RATE_LIMIT_MAX: '1000000',
    // Shedding answers 503 by design; it is not what this run measures.
    MAX_EVENT_LOOP_DELAY_MS: '0',
    QUOTE_PROVIDER: 'simulated',
    // Thousands of keyed buys per user in one run (the default cap answers 429 past 1000).
    IDEMPOTENCY_MAX_KEYS_PER_USER: '1000000',
  }
  const instances: Instance[] = []
  try {
    // One after the other: the first applies the SQLite migrations.
    instances.push(await startInstance('a', env, dir))
    instances.push(await startInstance('b', env, dir))
    for (const inst of instances) {
      if (!(await waitUntil(async () => (await redisStatus(inst)) === 'connected', 10_000))) throw new Error(`${inst.name}: Redis never connected`)
    }

    const users: User[] = []
    for (let i = 0; i < WORKERS * instances.length; i++) {
      const email = `chaos-${i}@example.com`
      const inst = instances[i % instances.length]!
      const reg = await call(inst, 'POST', '/api/auth/register', { body: { email, password: PASSWORD } })
      if (reg.status !== 201) throw new Error(`register ${email}: ${reg.status} ${JSON.stringify(reg.body)}`)
      const user: User = { email, id: (reg.body as { id: string }).id, token: '', tried: new Set(), acked: new Set() }
      await login(inst, user)
      if (user.token === '') throw new Error(`login ${email} failed`)
      users.push(user)
    }
    // Sessions written more than a second ago are in the AOF (fsync every second).
    await sleep(1500)

    let stop = false
    const load = users.map((u, i) => worker(instances, i % instances.length, u, () => stop))
    await sleep(1000)

    const selected = flags.only ? new Set(flags.only.split(',')) : null
    const rows: Row[] = []
    let before = checkData(dbPath, users)
    for (const fault of faults(deadPort)) {
      if (selected !== null && !selected.has(fault.name)) continue
      stats = newStats()
      const marks = instances.map((i) => i.events.length)
      const injectedAt = Date.now()
      await fault.inject(redis)
      await sleep(FAULT_MS)
      const clearedAt = Date.now()
      await fault.clear(redis)
      const settled = await waitUntil(async () => (await Promise.all(instances.map(redisStatus))).every((s) => s === 'connected'), SETTLE_TIMEOUT_MS)
      await sleep(1500)
      const events = instances.map((inst, k) => inst.events.slice(marks[k]))
      const downs = events.map((ev) => ev.filter((e) => e.msg === LOG_OPERATION_FAILED || e.msg === LOG_CONNECTION_FAILED))
      const ups = events.map((ev) => ev.filter((e) => e.msg === LOG_CONNECTED))
      const firstDown = Math.min(...downs.flat().map((e) => e.at))
      const lastUp = Math.max(...ups.flat().map((e) => e.at))
      const after = checkData(dbPath, users)
      const lost = after.lost - before.lost
      const doubled = after.doubled - before.doubled
      before = after
      const fiveXx = [...stats.byStatus].filter(([s]) => /^5/.test(s)).reduce((n, [, c]) => n + c, 0)
      const broken: string[] = []
      if (fiveXx > 0) broken.push(`${fiveXx} 5xx`)
      if (lost > 0 || doubled > 0) broken.push(`${lost} lost, ${doubled} doubled`)
      instances.forEach((inst, k) => {
        if (downs[k]!.length > 1 || ups[k]!.length > 1) broken.push(`${inst.name}: ${downs[k]!.length} ⚠️/❌, ${ups[k]!.length} ✅`)
      })
      if (!settled) broken.push('an instance did not come back to Redis')
      rows.push({
        fault: fault.name,
        requests: stats.requests,
        non2xx: [...stats.byStatus].filter(([s]) => !/^2/.test(s)).sort().map(([s, c]) => `${s}×${c}`).join(' ') || '0',
        fiveXx,
        worstMs: Math.round(stats.worstMs),
        detectMs: Number.isFinite(firstDown) ? firstDown - injectedAt : null,
        recoverMs: Number.isFinite(lastUp) ? Math.max(0, lastUp - clearedAt) : null,
        transitions: instances.map((inst, k) => `${inst.name} ${downs[k]!.length}/${ups[k]!.length}`).join(', '),
        lostOrDoubled: `${lost}/${doubled}`,
        broken,
      })
      process.stderr.write(`${fault.name}: ${broken.length === 0 ? 'ok' : broken.join('; ')}\n`)
    }
    stop = true
    await Promise.all(load)

    const acked = users.reduce((n, u) => n + u.acked.size, 0)
    console.log(`\nchaos: ${flags.short ? 'short' : 'full'} run, ${FAULT_MS / 1000} s per fault, 2 instances × ${WORKERS} clients, ${acked} acknowledged buys\n`)
    console.log(markdownTable(
      ['fault', 'requests', 'non-2xx by status', '5xx', 'worst ms', 'detect ms', 'recover ms', 'transitions ⚠️❌/✅ per instance', 'lost/doubled', 'promise'],
      rows.map((r) => [r.fault, r.requests, r.non2xx, r.fiveXx, r.worstMs, r.detectMs, r.recoverMs, r.transitions, r.lostOrDoubled, r.broken.length === 0 ? 'kept' : `BROKEN: ${r.broken.join('; ')}`]),
      [0, 2, 7, 9],
    ))
    const failed = rows.filter((r) => r.broken.length > 0)
    console.log(failed.length === 0 ? '\nall promises kept' : `\n${failed.length} fault(s) broke a promise`)
    return failed.length === 0 ? 0 : 1
  } finally {
    await Promise.all(instances.map(async (inst) => {
      inst.child.kill('SIGTERM')
      if (inst.child.exitCode === null && inst.child.signalCode === null) await Promise.race([new Promise((resolve) => inst.child.once('exit', resolve)), sleep(5000)])
      inst.child.kill('SIGKILL')
    }))
    await redis.stop()
    rmSync(dir, { recursive: true, force: true })
  }
}

main().then((code) => { process.exitCode = code }, (err: unknown) => {
  console.error(err instanceof Error ? err.stack ?? err.message : String(err))
  process.exitCode = 2
})
