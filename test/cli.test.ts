/**
 * The operator CLI, run as a real child process with only the environment it is given:
 * create-admin (password from stdin) and token (a token whose session the server finds).
 */
import { execFile, spawn } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import t from 'tap'
import { build } from './helper.js'
import { skipUnlessRedis, startRedis } from './helpers/redis-server.js'
import { AUTH_ENV, PASSWORD, bearer, login, register } from './auth-helpers.js'
import { runCli, type CliRun } from './helpers/cli.js'

const ROOT = resolve(import.meta.dirname, '..')
const CLI = join(ROOT, 'src', 'cli.ts')
const TSX = import.meta.resolve('tsx')

type Run = CliRun


/** Runs the CLI as a child in an empty directory (no stray .env) with exactly `env` (plus PATH). */
function cli (args: string[], env: Record<string, string | undefined>, stdin = ''): Promise<Run> {
  const cwd = mkdtempSync(join(tmpdir(), 'aic-cli-cwd-'))
  return new Promise((resolvePromise, reject) => {
    const child = spawn(process.execPath, ['--import', TSX, CLI, ...args], {
      cwd,
      env: { PATH: process.env.PATH, ...env },
      stdio: ['pipe', 'pipe', 'pipe'],
    })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (d: Buffer) => { stdout += d.toString() })
    child.stderr.on('data', (d: Buffer) => { stderr += d.toString() })
    const timer = setTimeout(() => { child.kill('SIGKILL'); reject(new Error(`cli ${args.join(' ')} timed out\n${stderr}`)) }, 20_000)
    child.on('error', reject)
    child.on('close', (code) => {
      clearTimeout(timer)
      rmSync(cwd, { recursive: true, force: true })
      resolvePromise({ code, stdout, stderr })
    })
    child.stdin.end(stdin)
  })
}

function tmpDb (t: { teardown (fn: () => void): void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'aic-cli-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  return join(dir, 'app.db')
}

t.test('create-admin (a child process) creates the admin with the password from stdin', async (t) => {
  const DATABASE_PATH = tmpDb(t)
  const run = await cli(['create-admin', 'Ops@Example.com'], { DATABASE_PATH }, 'first-admin-pw\n')
  t.equal(run.code, 0, run.stderr)
  t.match(run.stdout, /^admin ops@example\.com created \(id [0-9a-f-]{36}\)\n$/)
  t.notOk(run.stdout.includes('first-admin-pw') || run.stderr.includes('first-admin-pw'), 'the password is not echoed')

  const { app } = await build(t, { ...AUTH_ENV, DATABASE_PATH })
  t.equal((await login(app, 'ops@example.com', 'first-admin-pw')).role, 'admin')
  await app.close()

  const again = await runCli(['create-admin', 'ops@example.com'], { DATABASE_PATH }, 'second-admin-pw\r\nignored line\n')
  t.equal(again.code, 0, again.stderr)
  t.match(again.stdout, /admin ops@example\.com updated/)
  const { app: app2 } = await build(t, { ...AUTH_ENV, DATABASE_PATH })
  t.equal((await app2.inject({ method: 'POST', url: '/api/auth/login', payload: { email: 'ops@example.com', password: 'first-admin-pw' } })).statusCode, 401, 'the old password no longer works')
  t.equal((await login(app2, 'ops@example.com', 'second-admin-pw')).role, 'admin', 'only the first line of stdin is the password')
})

t.test('create-admin promotes an existing user', async (t) => {
  const DATABASE_PATH = tmpDb(t)
  const { app } = await build(t, { ...AUTH_ENV, DATABASE_PATH })
  await register(app, 'user@example.com')
  await app.close()
  const run = await runCli(['create-admin', 'user@example.com'], { DATABASE_PATH }, `${PASSWORD}\n`)
  t.equal(run.code, 0, run.stderr)
  t.match(run.stdout, /admin user@example\.com promoted/)
})

t.test('create-admin refuses bad input with a message and a non-zero exit', async (t) => {
  const DATABASE_PATH = tmpDb(t)
  const cases: Array<[string, string[], string, number, RegExp]> = [
    ['invalid email', ['create-admin', 'not-an-email'], 'long-enough-pw\n', 1, /not a valid email/],
    ['short password', ['create-admin', 'a@example.com'], 'short\n', 1, /8 to 128 characters/],
    ['no password', ['create-admin', 'a@example.com'], '', 1, /no password/],
    ['no email', ['create-admin'], '', 2, /usage:/],
    ['unknown command', ['drop-tables', 'x'], '', 2, /usage:/],
    ['no command', [], '', 2, /usage:/],
  ]
  for (const [name, args, stdin, code, message] of cases) {
    const run = await runCli(args, { DATABASE_PATH }, stdin)
    t.equal(run.code, code, name)
    t.match(run.stderr, message, name)
    t.equal(run.stdout, '', `${name}: nothing on stdout`)
  }
  const config = await runCli(['create-admin', 'a@example.com'], { DATABASE_PATH, JWT_SECRET: 'short' }, 'long-enough-pw\n')
  t.equal(config.code, 1)
  t.match(config.stderr, /Invalid configuration:[\s\S]*JWT_SECRET/, 'an invalid environment is reported like the server does')
})

t.test('token prints a token whose session the server finds (via npm run -s cli)', skipUnlessRedis(), async (t) => {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  const DATABASE_PATH = tmpDb(t)
  const env = { ...AUTH_ENV, DATABASE_PATH, REDIS_URL: redis.url }
  const { app } = await build(t, env)
  await app.identity.accounts.ensureAdmin('root@example.com', PASSWORD)

  const run = await new Promise<Run>((resolvePromise, reject) => {
    execFile('npm', ['run', '-s', 'cli', '--', 'token', 'root@example.com'], {
      cwd: ROOT, env: { PATH: process.env.PATH, HOME: process.env.HOME, ...env }, timeout: 30_000,
    }, (err, stdout, stderr) => (err && err.code === undefined ? reject(err) : resolvePromise({ code: err ? Number(err.code) : 0, stdout, stderr })))
  })
  t.equal(run.code, 0, run.stderr)
  const lines = run.stdout.split('\n').filter(Boolean)
  t.equal(lines.length, 1, 'stdout is the token alone')
  const token = lines[0] ?? ''
  t.match(token, /^[\w-]+\.[\w-]+\.[\w-]+$/)
  t.match(run.stderr, /token for root@example\.com \(role admin\)/)

  const res = await app.inject({ url: '/api/debug/redis', headers: bearer(token) })
  t.equal(res.statusCode, 200, 'the server accepts it for an admin debug call')
  const sid = String((JSON.parse(Buffer.from(token.split('.')[1] ?? '', 'base64url').toString()) as { sid: string }).sid)
  t.equal(await redis.command('EXISTS', `session:${sid}`), '1', 'backed by a real session in Redis')
  t.equal((await app.inject({ method: 'POST', url: '/api/auth/logout', headers: bearer(token) })).statusCode, 204)
  t.equal((await app.inject({ url: '/api/debug/redis', headers: bearer(token) })).statusCode, 401, 'and revocable like any other')
})

t.test('token refuses what would produce a token the server rejects', skipUnlessRedis(), async (t) => {
  const DATABASE_PATH = tmpDb(t)
  const { app } = await build(t, { ...AUTH_ENV, DATABASE_PATH })
  await register(app, 'plain@example.com')
  await app.close()
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  // Port 1: privileged, so no redis-server another test file starts meanwhile can take it (a
  // free port picked now could be handed to one of them, and "unreachable" would answer).
  const deadPort = 1

  const cases: Array<[string, Record<string, string | undefined>, RegExp]> = [
    ['no JWT_SECRET outside development', { ...AUTH_ENV, JWT_SECRET: undefined, NODE_ENV: 'test', DATABASE_PATH, REDIS_URL: redis.url }, /JWT_SECRET is not set/],
    ['no REDIS_URL', { ...AUTH_ENV, DATABASE_PATH }, /REDIS_URL is not set[\s\S]*ADMIN_EMAIL and ADMIN_PASSWORD[\s\S]*curl -s localhost:3000\/api\/auth\/login/],
    ['Redis unreachable', { ...AUTH_ENV, DATABASE_PATH, REDIS_URL: `redis://127.0.0.1:${deadPort}`, REDIS_CONNECT_TIMEOUT_MS: '300' }, /unreachable/],
    ['unknown user', { ...AUTH_ENV, DATABASE_PATH, REDIS_URL: redis.url }, /no user with the email nobody@example\.com/],
  ]
  for (const [name, env, message] of cases) {
    const run = await runCli(['token', name === 'unknown user' ? 'nobody@example.com' : 'plain@example.com'], env)
    t.equal(run.code, 1, name)
    t.match(run.stderr, message, name)
    t.equal(run.stdout, '', `${name}: no token printed`)
  }
  const ok = await runCli(['token', 'plain@example.com'], { ...AUTH_ENV, DATABASE_PATH, REDIS_URL: redis.url })
  t.equal(ok.code, 0, ok.stderr)
  t.match(ok.stderr, /not an admin/, 'a non-admin token comes with a note')
})
