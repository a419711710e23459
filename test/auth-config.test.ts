/**
 * Boot-time rules of the auth plugin: the JWT secret (required in production, kept in a file
 * beside the database in development, random with a warning elsewhere), the token lifetime,
 * and the admin account from ADMIN_EMAIL/PASSWORD.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { build } from './helper.js'
import { skipUnlessRedis, startRedis } from './helpers/redis-server.js'
import { ConfigError, loadConfig } from '../src/config.js'
import { AUTH_ENV, PASSWORD, bearer, login, me, register } from './auth-helpers.js'

const NO_SECRET = { ...AUTH_ENV, JWT_SECRET: undefined }

t.test('production without JWT_SECRET does not boot, and says why', async (t) => {
  await t.rejects(build(t, { ...NO_SECRET, NODE_ENV: 'production' }), /JWT_SECRET is required when NODE_ENV=production/)
})

t.test('a JWT_SECRET shorter than 32 characters is refused in any environment, without echoing it', async (t) => {
  for (const NODE_ENV of ['production', 'development']) {
    const err = t.throws(() => loadConfig({ JWT_SECRET: 'too-short-secret', NODE_ENV })) as unknown as ConfigError
    t.ok(err instanceof ConfigError)
    t.match(err.message, /JWT_SECRET/)
    t.notMatch(err.message, /too-short-secret/, 'the value is redacted')
  }
})

t.test('outside production, no JWT_SECRET: a random secret and one loud warning', async (t) => {
  const { app, logs } = await build(t, { ...NO_SECRET, NODE_ENV: 'development' })
  const warnings = logs.lines.filter((l) => typeof l.msg === 'string' && l.msg.includes('JWT_SECRET is not set'))
  t.equal(warnings.length, 1)
  t.equal(warnings[0]?.level, 40, 'at warn level')
  await register(app, 'dev@example.com')
  const s = await login(app, 'dev@example.com')
  t.equal((await me(app, s.token)).statusCode, 200, 'tokens work within the process')
})

t.test('development without JWT_SECRET: one secret in a 0600 file beside the database, shared by every start', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'aic-devsecret-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const env = { ...NO_SECRET, NODE_ENV: 'development', DATABASE_PATH: join(dir, 'data', 'app.db') }
  const file = join(dir, 'data', 'jwt-secret')

  const { app: first, logs } = await build(t, env)
  t.ok(existsSync(file), 'data/jwt-secret is made on the first start')
  t.equal(statSync(file).mode & 0o777, 0o600, 'readable by its owner only')
  t.ok(readFileSync(file, 'utf8').trim().length >= 32)
  t.match(logs.lines.find((l) => String(l.msg).includes('JWT_SECRET is not set')), { level: 40, created: true, msg: /development secret in .*jwt-secret \(made now, mode 0600\)/ })
  await register(first, 'devfile@example.com')
  const s = await login(first, 'devfile@example.com')

  const { app: second, logs: secondLogs } = await build(t, env)
  t.match(second.identity.verifyToken(s.token), { sub: s.userId }, 'a later start (or the CLI) verifies the first one\'s tokens')
  t.match(secondLogs.lines.find((l) => String(l.msg).includes('JWT_SECRET is not set')), { created: false })

  const { app: test } = await build(t, { ...env, NODE_ENV: 'test' })
  t.throws(() => test.identity.verifyToken(s.token), 'NODE_ENV=test never reads it: a secret of its own')

  writeFileSync(file, 'short\n')
  await t.rejects(build(t, env), /jwt-secret holds fewer than 32 characters: delete it/, 'a damaged file stops the boot with what to do')
})

t.test('instances share tokens only when they share JWT_SECRET (and Redis)', skipUnlessRedis(), async (t) => {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  const dir = mkdtempSync(join(tmpdir(), 'aic-auth-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const env = { ...AUTH_ENV, REDIS_URL: redis.url, DATABASE_PATH: join(dir, 'shared.db') }
  const { app: a } = await build(t, env)
  const { app: b } = await build(t, env)
  await register(a, 'multi@example.com')
  const s = await login(a, 'multi@example.com')
  t.equal((await me(b, s.token)).statusCode, 200, 'a token from instance A works on B')
  t.equal((await b.inject({ method: 'POST', url: '/api/auth/logout', headers: bearer(s.token) })).statusCode, 204)
  t.equal((await me(a, s.token)).statusCode, 401, 'a logout on B is seen by A at once')

  const { app: random1 } = await build(t, { ...env, JWT_SECRET: undefined })
  const { app: random2 } = await build(t, { ...env, JWT_SECRET: undefined })
  const r = await login(random1, 'multi@example.com')
  t.equal((await me(random1, r.token)).statusCode, 200)
  t.equal((await me(random2, r.token)).statusCode, 401, 'generated secrets differ per process')
})

t.test('JWT_EXPIRES_IN sets the lifetime; absurd values fail the boot', async (t) => {
  const { app } = await build(t, { ...AUTH_ENV, JWT_EXPIRES_IN: '2h' })
  await register(app, 'life@example.com')
  const res = await app.inject({ method: 'POST', url: '/api/auth/login', payload: { email: 'life@example.com', password: PASSWORD } })
  t.equal(res.json<{ expiresIn: number }>().expiresIn, 7200)
  await t.rejects(build(t, { ...AUTH_ENV, JWT_EXPIRES_IN: '5s' }), /JWT_EXPIRES_IN must be between 10s and 24h/)
  await t.rejects(build(t, { ...AUTH_ENV, JWT_EXPIRES_IN: '2d' }), /JWT_EXPIRES_IN/)
  t.throws(() => loadConfig({ JWT_EXPIRES_IN: '15 minutes' }), /JWT_EXPIRES_IN/)
})

t.test('ADMIN_EMAIL + ADMIN_PASSWORD create the admin at boot', async (t) => {
  const { app, logs } = await build(t, { ...AUTH_ENV, ADMIN_EMAIL: 'Root@Example.com', ADMIN_PASSWORD: 'admin-password-1' })
  const user = await app.db.users.findByEmail('root@example.com')
  t.equal(user?.role, 'admin')
  t.match(logs.withMsg('admin account from ADMIN_EMAIL')[0], { action: 'created', email: 'root@example.com' })
  t.notOk(logs.text.includes('admin-password-1'), 'the password is never logged')
  const s = await login(app, 'root@example.com', 'admin-password-1')
  t.equal(s.role, 'admin')
})

t.test('ADMIN_EMAIL of an existing user promotes it and replaces a squatter\'s password', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'aic-auth-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const env = { ...AUTH_ENV, DATABASE_PATH: join(dir, 'app.db') }
  const first = await build(t, env)
  await register(first.app, 'boss@example.com', 'squatter-password')
  await first.app.close()

  const { app, logs } = await build(t, { ...env, ADMIN_EMAIL: 'boss@example.com', ADMIN_PASSWORD: 'the-real-admin-pw' })
  t.match(logs.withMsg('admin account from ADMIN_EMAIL')[0], { action: 'promoted' })
  t.equal((await app.db.users.findByEmail('boss@example.com'))?.role, 'admin')
  const squat = await app.inject({ method: 'POST', url: '/api/auth/login', payload: { email: 'boss@example.com', password: 'squatter-password' } })
  t.equal(squat.statusCode, 401, 'whoever registered the address first cannot log in as admin')
  t.equal((await login(app, 'boss@example.com', 'the-real-admin-pw')).role, 'admin')
  await app.close()

  const again = await build(t, { ...env, ADMIN_EMAIL: 'boss@example.com', ADMIN_PASSWORD: 'the-real-admin-pw' })
  t.match(again.logs.withMsg('admin account from ADMIN_EMAIL')[0], { action: 'unchanged' }, 'a restart changes nothing')
})

t.test('ADMIN_EMAIL and ADMIN_PASSWORD go together and are validated', async (t) => {
  await t.rejects(build(t, { ...AUTH_ENV, ADMIN_EMAIL: 'a@example.com' }), /ADMIN_EMAIL and ADMIN_PASSWORD must be set together/)
  await t.rejects(build(t, { ...AUTH_ENV, ADMIN_PASSWORD: 'long-enough-pw' }), /must be set together/)
  await t.rejects(build(t, { ...AUTH_ENV, ADMIN_EMAIL: 'not-an-email', ADMIN_PASSWORD: 'long-enough-pw' }), /ADMIN_EMAIL\/ADMIN_PASSWORD: not a valid email/)
  t.throws(() => loadConfig({ ADMIN_EMAIL: 'a@example.com', ADMIN_PASSWORD: 'short' }), /ADMIN_PASSWORD/)
})
