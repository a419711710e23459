/**
 * PostgreSQL for tests, two ways:
 *
 * - `createTestDatabase(t)`: a private database `aic_test_<random>` on the machine's running
 *   server (127.0.0.1:5432, trust auth, user postgres), dropped in teardown. No other
 *   database is ever touched. For faults (frozen, refused), put `startProxy` in front of it.
 * - `startPostgresServer(t)`: a private server (initdb + postgres from
 *   /usr/lib/postgresql/15/bin, run as the `postgres` user: the binaries refuse root) on a
 *   free port with a temporary data directory, for tests that stop or freeze the server.
 *
 * `skipUnlessPostgres()` gives tap options: `{}` when the server answers, `{ skip }` with the
 * reason otherwise, and under CI=true it throws instead of skipping.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import fs from 'node:fs'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import pg from 'pg'

interface Teardownable { teardown (fn: () => unknown): void }

export const PG_HOST = process.env.AIC_TEST_PG_HOST ?? '127.0.0.1'
export const PG_PORT = Number(process.env.AIC_TEST_PG_PORT ?? 5432)
export const PG_USER = process.env.AIC_TEST_PG_USER ?? 'postgres'
export const PG_BIN = process.env.AIC_TEST_PG_BIN ?? '/usr/lib/postgresql/15/bin'

let reachable: boolean | undefined

/** Whether the machine's PostgreSQL answers (asked once per process, with pg_isready or a TCP connect). */
export function postgresReachable (): boolean {
  if (reachable !== undefined) return reachable
  const probe = spawnSync('pg_isready', ['-h', PG_HOST, '-p', String(PG_PORT), '-t', '5'], { encoding: 'utf8' })
  if (probe.error === undefined) return (reachable = probe.status === 0)
  // No pg_isready: try a TCP connect through a child (keeps this function synchronous).
  const tcp = spawnSync(process.execPath, ['-e', `require('net').connect(${PG_PORT}, '${PG_HOST}').on('connect', () => process.exit(0)).on('error', () => process.exit(1))`], { timeout: 5000 })
  return (reachable = tcp.status === 0)
}

export function decidePostgresSkip (available: boolean, env: NodeJS.ProcessEnv, what: string): { skip?: string } {
  if (available) return {}
  if (env.CI === 'true') throw new Error(`${what} is required when CI=true`)
  return { skip: `${what} not available: these tests need it (set CI=true to make this a failure)` }
}

/** Tap options for tests on a private database of the running server. */
export function skipUnlessPostgres (env: NodeJS.ProcessEnv = process.env): { skip?: string } {
  return decidePostgresSkip(postgresReachable(), env, `PostgreSQL at ${PG_HOST}:${PG_PORT}`)
}

/** Tap options for tests that start their own server. */
export function skipUnlessPostgresBinaries (env: NodeJS.ProcessEnv = process.env): { skip?: string } {
  const ok = fs.existsSync(path.join(PG_BIN, 'initdb')) && fs.existsSync(path.join(PG_BIN, 'postgres')) && userExists('postgres')
  return decidePostgresSkip(ok, env, `PostgreSQL binaries in ${PG_BIN} (and a postgres user)`)
}

function userExists (name: string): boolean {
  return spawnSync('id', ['-u', name]).status === 0
}

function adminUrl (database = 'postgres'): string {
  return `postgres://${PG_USER}@${PG_HOST}:${PG_PORT}/${database}`
}

export interface TestDatabase {
  name: string
  url: string
  host: string
  port: number
}

/** A new empty database on the running server, dropped (with its connections) in teardown. */
export async function createTestDatabase (t: Teardownable): Promise<TestDatabase> {
  const name = `aic_test_${randomBytes(6).toString('hex')}`
  const admin = new pg.Client({ connectionString: adminUrl(), connectionTimeoutMillis: 10_000 })
  await admin.connect()
  try {
    await admin.query(`CREATE DATABASE ${name}`)
  } finally {
    await admin.end()
  }
  t.teardown(async () => {
    const dropper = new pg.Client({ connectionString: adminUrl(), connectionTimeoutMillis: 10_000 })
    await dropper.connect()
    try {
      await dropper.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)
    } finally {
      await dropper.end()
    }
  })
  return { name, url: adminUrl(name), host: PG_HOST, port: PG_PORT }
}

/** A URL for the same database reached through another host:port (a TCP proxy). */
export function urlVia (db: TestDatabase, port: number, host = '127.0.0.1'): string {
  return `postgres://${PG_USER}@${host}:${port}/${db.name}`
}

/** Runs one SQL statement on a test database with a short-lived client. */
export async function queryDatabase<R extends pg.QueryResultRow = pg.QueryResultRow> (url: string, text: string, values: unknown[] = []): Promise<R[]> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 10_000 })
  await client.connect()
  try {
    return (await client.query<R>(text, values)).rows
  } finally {
    await client.end()
  }
}

async function freePort (): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer()
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const address = server.address()
      server.close(() => { resolve(typeof address === 'object' && address !== null ? address.port : 0) })
    })
  })
}

export interface PostgresServer {
  readonly port: number
  /** `postgres://postgres@127.0.0.1:<port>/postgres` */
  readonly url: string
  /** The postmaster and every backend: SIGSTOP freezes the whole server, SIGCONT thaws it. */
  signalAll (signal: NodeJS.Signals): void
  stop (): Promise<void>
}

function asPostgres (command: string, args: string[]): string[] {
  return process.getuid?.() === 0 ? ['runuser', '-u', 'postgres', '--', command, ...args] : [command, ...args]
}

/** The postmaster's pid and its children's, read from /proc. */
function clusterPids (postmaster: number): number[] {
  const pids = [postmaster]
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue
    try {
      const stat = fs.readFileSync(`/proc/${entry}/stat`, 'utf8')
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1])
      if (ppid === postmaster) pids.push(Number(entry))
    } catch {}
  }
  return pids
}

/** A private server on a free port; stopped (and its data removed) in teardown. */
export async function startPostgresServer (t: Teardownable): Promise<PostgresServer> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'aic-pg-'))
  const data = path.join(dir, 'data')
  if (process.getuid?.() === 0) {
    const uid = Number(spawnSync('id', ['-u', 'postgres'], { encoding: 'utf8' }).stdout.trim())
    const gid = Number(spawnSync('id', ['-g', 'postgres'], { encoding: 'utf8' }).stdout.trim())
    fs.chownSync(dir, uid, gid)
  }
  const [initCmd, ...initArgs] = asPostgres(path.join(PG_BIN, 'initdb'), ['-D', data, '-U', 'postgres', '--auth=trust', '-E', 'UTF8', '--no-sync', '--locale=C'])
  const init = spawnSync(initCmd as string, initArgs, { encoding: 'utf8' })
  if (init.status !== 0) throw new Error(`initdb failed: ${init.stderr || init.stdout || String(init.error)}`)
  const port = await freePort()
  const [cmd, ...args] = asPostgres(path.join(PG_BIN, 'postgres'), [
    '-D', data, '-p', String(port), '-k', dir, '-c', 'listen_addresses=127.0.0.1', '-c', 'fsync=off', '-c', 'max_connections=50',
  ])
  const child: ChildProcess = spawn(cmd as string, args, { stdio: ['ignore', 'ignore', 'pipe'] })
  let stderr = ''
  child.stderr?.on('data', (chunk: Buffer) => { stderr += chunk.toString('utf8') })
  const url = `postgres://postgres@127.0.0.1:${port}/postgres`
  const deadline = Date.now() + 30_000
  for (;;) {
    try {
      await queryDatabase(url, 'SELECT 1')
      break
    } catch (err) {
      if (Date.now() > deadline || child.exitCode !== null) {
        child.kill('SIGKILL')
        throw new Error(`private PostgreSQL did not start: ${String(err)}\n${stderr}`)
      }
      await new Promise((resolve) => setTimeout(resolve, 100))
    }
  }
  const postmasterPid = Number(fs.readFileSync(path.join(data, 'postmaster.pid'), 'utf8').split('\n')[0])
  const postmaster = (): number => postmasterPid
  // A test process that ends without its teardown (a runner timeout, an uncaught error)
  // must not leave the server running: shut it down on the way out (SIGQUIT: immediate).
  const onExit = (): void => {
    try { process.kill(postmasterPid, 'SIGCONT') } catch {}
    try { process.kill(postmasterPid, 'SIGQUIT') } catch {}
    fs.rmSync(dir, { recursive: true, force: true })
  }
  process.once('exit', onExit)
  let stopped = false
  const server: PostgresServer = {
    port,
    url,
    signalAll (signal) {
      for (const pid of clusterPids(postmaster())) {
        try { process.kill(pid, signal) } catch {}
      }
    },
    async stop () {
      if (stopped) return
      stopped = true
      server.signalAll('SIGCONT')
      const exited = new Promise((resolve) => { if (child.exitCode !== null) resolve(null); else child.once('exit', resolve) })
      try { process.kill(postmaster(), 'SIGQUIT') } catch {}
      const timer = setTimeout(() => { try { process.kill(postmaster(), 'SIGKILL') } catch {} ; child.kill('SIGKILL') }, 10_000)
      await exited
      clearTimeout(timer)
      process.off('exit', onExit)
      fs.rmSync(dir, { recursive: true, force: true })
    },
  }
  t.teardown(() => server.stop())
  return server
}
