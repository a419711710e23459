/**
 * The development admin path a newcomer follows (docs/browser-and-tokens.md), with real
 * processes in a fresh directory holding only a `.env`, nothing else set (NODE_ENV unset,
 * no JWT_SECRET):
 *  - ADMIN_EMAIL/ADMIN_PASSWORD in .env → the server makes the admin at boot → log in over
 *    HTTP → an admin call answers 200. Without Redis, `cli token` says to do exactly that.
 *  - with REDIS_URL in .env: `cli token admin@…` prints a token the running server accepts
 *    (both read ./data/jwt-secret), and it still works after the server restarts.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import t from 'tap'
import { waitFor, type TapTest } from './helper.js'
import { getFreePort, skipUnlessRedis, startRedis } from './helpers/redis-server.js'

// Four server starts and two CLI runs, each a process with its own TypeScript compilation: on
// a machine as loaded as a shared CI runner (load 40 on 2 cores) that took 115 s.
t.setTimeout(300_000)

const ROOT = resolve(import.meta.dirname, '..')
const TSX = import.meta.resolve('tsx')
const ADMIN = 'admin@example.com'
const ADMIN_PASSWORD = 'dev-admin-password'

interface Run { code: number | null, stdout: string, stderr: string }

/**
 * A fresh project directory with this .env and nothing else. No event-loop shedding: on a
 * machine as busy as a shared CI runner the service would rightly answer 503 (see helper.ts).
 */
function projectDir (t: TapTest, env: Record<string, string>): string {
  const dir = mkdtempSync(join(tmpdir(), 'aic-newcomer-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const lines = Object.entries({ ...env, MAX_EVENT_LOOP_DELAY_MS: '0' }).map(([k, v]) => `${k}=${v}`)
  writeFileSync(join(dir, '.env'), lines.join('\n') + '\n')
  return dir
}

/** Only PATH and HOME from this process: everything else comes from the directory's .env. */
const bareEnv = (): Record<string, string> => ({ PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '' })

async function startServer (t: TapTest, cwd: string, port: number): Promise<ChildProcess> {
  const child = spawn(process.execPath, ['--import', TSX, join(ROOT, 'src', 'server.ts')], { cwd, env: bareEnv(), stdio: ['ignore', 'pipe', 'pipe'] })
  let output = ''
  child.stdout!.on('data', (d: Buffer) => { output += d.toString() })
  child.stderr!.on('data', (d: Buffer) => { output += d.toString() })
  t.teardown(() => { child.kill('SIGKILL') })
  await waitFor(async () => {
    if (child.exitCode !== null) throw new Error(`server exited early:\n${output}`)
    try { return (await fetch(`http://127.0.0.1:${port}/api/health/live`)).ok } catch { return false }
  }, 60_000, 100)
  return child
}

async function stopServer (child: ChildProcess): Promise<void> {
  const exited = new Promise((resolve) => child.once('exit', resolve))
  child.kill('SIGTERM')
  await exited
}

function cli (cwd: string, args: string[]): Promise<Run> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(process.execPath, ['--import', TSX, join(ROOT, 'src', 'cli.ts'), ...args], { cwd, env: bareEnv(), stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (d: Buffer) => { stdout += d.toString() })
    child.stderr.on('data', (d: Buffer) => { stderr += d.toString() })
    const timer = setTimeout(() => { child.kill('SIGKILL'); reject(new Error(`cli timed out\n${stderr}`)) }, 60_000)
    child.on('error', reject)
    child.on('close', (code) => { clearTimeout(timer); resolvePromise({ code, stdout, stderr }) })
  })
}

async function adminCall (port: number, token: string): Promise<number> {
  return (await fetch(`http://127.0.0.1:${port}/api/debug/redis`, { headers: { authorization: `Bearer ${token}` } })).status
}

t.test('no Redis: ADMIN_EMAIL/ADMIN_PASSWORD in .env, log in over HTTP, an admin call works; cli token says so', async (t) => {
  const port = await getFreePort()
  const dir = projectDir(t, { HOST: '127.0.0.1', PORT: String(port), ADMIN_EMAIL: ADMIN, ADMIN_PASSWORD, LOG_LEVEL: 'warn' })
  await startServer(t, dir, port)

  const res = await fetch(`http://127.0.0.1:${port}/api/auth/login`, {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ email: ADMIN, password: ADMIN_PASSWORD }),
  })
  const body = await res.json() as { token: string, user: { role: string } }
  t.equal(res.status, 200, JSON.stringify(body))
  const { token, user } = body
  t.equal(user.role, 'admin', 'the admin from .env')
  t.equal(await adminCall(port, token), 200, 'an admin call with the token')
  t.equal(statSync(join(dir, 'data', 'jwt-secret')).mode & 0o777, 0o600, 'the development secret is in ./data/jwt-secret, 0600')

  const run = await cli(dir, ['token', ADMIN])
  t.equal(run.code, 1)
  t.equal(run.stdout, '', 'no token printed')
  t.match(run.stderr, /REDIS_URL is not set[\s\S]*ADMIN_EMAIL and ADMIN_PASSWORD[\s\S]*curl -s localhost:\d+\/api\/auth\/login/, 'it says what to do instead')
})

t.test('with REDIS_URL in .env: cli token prints a token the running server accepts, also after a restart', skipUnlessRedis(), async (t) => {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  const port = await getFreePort()
  const dir = projectDir(t, { HOST: '127.0.0.1', PORT: String(port), REDIS_URL: redis.url, ADMIN_EMAIL: ADMIN, ADMIN_PASSWORD, LOG_LEVEL: 'warn' })
  const server = await startServer(t, dir, port)

  const run = await cli(dir, ['token', ADMIN])
  t.equal(run.code, 0, run.stderr)
  const token = run.stdout.trim()
  t.match(token, /^[\w-]+\.[\w-]+\.[\w-]+$/, 'stdout is the token alone')
  t.equal(await adminCall(port, token), 200, 'the server accepts the CLI\'s token: one secret, one Redis')

  await stopServer(server)
  await startServer(t, dir, port)
  t.equal(await adminCall(port, token), 200, 'and after `npm run dev` restarts (the secret is kept in ./data/jwt-secret)')
})
