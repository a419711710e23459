/**
 * The primary store on SQLite: file creation, WAL, the migrations runner (ordered,
 * idempotent, atomic), the users repository, DATABASE_URL's forms, the `db` plugin and the
 * readiness check that depends on it. (PostgreSQL: db-postgres.test.ts; the repositories
 * against both stores: portfolio-repo.test.ts.)
 */
import { execFile } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync, existsSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import BetterSqlite3 from 'better-sqlite3'
import { build } from './helper.js'
import { loadConfig } from '../src/config.js'
import { AUTH_ENV } from './auth-helpers.js'
import { openDatabase, databaseTarget, DuplicateEmailError, migrations } from '../src/db/index.js'
import { checkMigrations, type Migration } from '../src/db/migrations.js'
import { decidePostgresSkip } from './helpers/postgres.js'

/** Versions above every real migration, whatever gets appended later. */
const LAST = migrations.at(-1)?.version ?? 0

function tmpDir (t: { teardown (fn: () => void): void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'aic-db-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  return dir
}

t.test('opens a file in a directory it creates, in WAL mode, with the migrations applied', async (t) => {
  const path = join(tmpDir(t), 'nested', 'deeper', 'app.db')
  const db = await openDatabase({ path })
  t.teardown(() => db.close())
  t.ok(existsSync(path), 'the file and its directories exist')
  t.equal(db.kind, 'sqlite')
  t.equal(db.journalMode, 'wal')
  t.equal(db.sqlite?.pragma('journal_mode', { simple: true }), 'wal')
  t.same(db.migrations.applied, migrations.map((m) => m.version), 'every migration applied on first open')
  const rows = db.sqlite?.prepare('SELECT version, name FROM schema_migrations ORDER BY version').all()
  t.same(rows, migrations.map((m) => ({ version: m.version, name: m.name })))
  t.ok(await db.healthy())
})

t.test('reopening applies nothing; appending a migration applies only that one', async (t) => {
  const path = join(tmpDir(t), 'app.db')
  await (await openDatabase({ path })).close()
  const again = await openDatabase({ path })
  t.same(again.migrations.applied, [], 'idempotent')
  await again.close()

  const extended: Migration[] = [...migrations, { version: LAST + 1, name: 'add-notes', up: 'CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT) STRICT' }]
  const third = await openDatabase({ path, migrations: extended })
  t.teardown(() => third.close())
  t.same(third.migrations.applied, [LAST + 1])
  t.equal(third.migrations.current, LAST + 1)
  const raw = third.sqlite as BetterSqlite3.Database
  raw.prepare('INSERT INTO notes (body) VALUES (?)').run('x')
  t.equal((raw.prepare('SELECT count(*) AS n FROM notes').get() as { n: number }).n, 1)
})

t.test('a failing migration rolls back the whole run and fails the open with its name', async (t) => {
  const path = join(tmpDir(t), 'app.db')
  const broken: Migration[] = [
    ...migrations,
    { version: LAST + 1, name: 'good-one', up: 'CREATE TABLE good (id INTEGER PRIMARY KEY)' },
    { version: LAST + 2, name: 'bad-one', up: 'CREATE TABLE half (id INTEGER PRIMARY KEY); THIS IS NOT SQL' },
  ]
  await t.rejects(openDatabase({ path, migrations: broken }), new RegExp(`migration ${LAST + 2} \\(bad-one\\) failed`))
  const raw = new BetterSqlite3(path)
  t.teardown(() => raw.close())
  const tables = (raw.prepare("SELECT name FROM sqlite_master WHERE type = 'table'").all() as Array<{ name: string }>).map((r) => r.name)
  t.notOk(tables.includes('good'), 'the earlier migration of the same run was rolled back')
  t.notOk(tables.includes('half'), 'the failing migration left nothing behind')
  t.notOk(tables.includes('users'), 'nothing of the run was kept')
})

t.test('versions in the database that this build does not know are reported', async (t) => {
  const path = join(tmpDir(t), 'app.db')
  const newer: Migration[] = [...migrations, { version: LAST + 1, name: 'from-the-future', up: 'CREATE TABLE future (id INTEGER)' }]
  await (await openDatabase({ path, migrations: newer })).close()
  const older = await openDatabase({ path })
  t.teardown(() => older.close())
  t.same(older.migrations.unknown, [LAST + 1])
})

t.test('the migration list must be strictly increasing and named', async (t) => {
  t.throws(() => checkMigrations([{ version: 2, name: 'b', up: '' }, { version: 1, name: 'a', up: '' }]), /strictly increasing/)
  t.throws(() => checkMigrations([{ version: 1, name: 'a', up: '' }, { version: 1, name: 'b', up: '' }]), /strictly increasing/)
  t.throws(() => checkMigrations([{ version: 1, name: 'Not Kebab', up: '' }]), /kebab-case/)
  t.doesNotThrow(() => checkMigrations(migrations))
})

t.test('two processes opening a new file at once: both start, the migrations run once', async (t) => {
  const path = join(tmpDir(t), 'app.db')
  const script = `
    import { openDatabase } from './src/db/index.ts'
    const db = await openDatabase({ path: process.argv[1] })
    process.stdout.write(JSON.stringify(db.migrations.applied))
    await db.close()`
  const run = (): Promise<number[]> => new Promise((resolve, reject) => {
    execFile(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script, path], { cwd: process.cwd(), timeout: 20_000 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${err.message}\n${stderr}`))
      else resolve(JSON.parse(stdout) as number[])
    })
  })
  const [a, b] = await Promise.all([run(), run()])
  const all = migrations.map((m) => m.version)
  t.same([...(a ?? []), ...(b ?? [])].sort((x, y) => x - y), all, 'each migration applied by exactly one of them')
  const db = await openDatabase({ path })
  t.teardown(() => db.close())
  t.same(db.migrations.applied, [])
})

t.test('a writer that holds the lock past busy_timeout makes the open fail, not half-migrate', async (t) => {
  const path = join(tmpDir(t), 'app.db')
  const holder = new BetterSqlite3(path)
  t.teardown(() => { if (holder.open) holder.close() })
  holder.pragma('journal_mode = WAL')
  holder.exec('BEGIN IMMEDIATE')
  await t.rejects(openDatabase({ path, busyTimeoutMs: 20 }), /locked/)
  holder.exec('COMMIT')
  const db = await openDatabase({ path, busyTimeoutMs: 20 })
  t.teardown(() => db.close())
  t.same(db.migrations.applied, migrations.map((m) => m.version))
})

t.test('users repository: create, find, unique email, role and password updates', async (t) => {
  const db = await openDatabase({ path: ':memory:' })
  t.teardown(() => db.close())
  const { users } = db
  const created = await users.create({ email: 'ann@example.com', passwordHash: 'h1' })
  t.equal(created.role, 'user')
  t.match(created.id, /^[0-9a-f-]{36}$/)
  t.same(await users.findById(created.id), created)
  t.same(await users.findByEmail('ann@example.com'), created)
  t.equal(await users.findByEmail('nobody@example.com'), null)
  await t.rejects(users.create({ email: 'ann@example.com', passwordHash: 'h2' }), DuplicateEmailError)
  t.equal(await users.setRole(created.id, 'admin'), true)
  t.equal(await users.setPasswordHash(created.id, 'h3'), true)
  const updated = await users.findById(created.id)
  t.equal(updated?.role, 'admin')
  t.equal(updated?.passwordHash, 'h3')
  t.equal(await users.setRole('no-such-id', 'admin'), false)
  t.equal(await users.count(), 1)
  await t.rejects(db.kysely.updateTable('users').set({ role: 'root' as 'user' }).execute(), /CHECK constraint/, 'the schema only allows the two roles')
})

t.test('plugin: fastify.db on DATABASE_PATH, closed with the app; readiness follows it', async (t) => {
  const path = join(tmpDir(t), 'data', 'app.db')
  const { app } = await build(t, { ...AUTH_ENV, DATABASE_PATH: path })
  t.ok(existsSync(path))
  t.equal(app.db.location, path)
  t.equal((await app.inject('/api/health/ready')).statusCode, 200)
  t.match((await app.inject('/api/health')).json(), { status: 'OK', database: { status: 'connected', kind: 'sqlite', responseTime: Number } })

  // The store becomes unusable (closed under our feet): readiness says so.
  app.db.sqlite?.close()
  t.notOk(await app.db.healthy())
  t.match((await app.inject('/api/health')).json(), { status: 'DEGRADED', database: { status: 'unreachable', kind: 'sqlite', responseTime: null } })
  const ready = await app.inject('/api/health/ready')
  t.equal(ready.statusCode, 503)
  t.same(ready.json(), { status: 'DATABASE_UNAVAILABLE' })
  t.equal((await app.inject('/api/health/live')).statusCode, 200, 'liveness is not about the database')
})

t.test('plugin: the database closes when the app closes', async (t) => {
  const { app } = await build(t, { ...AUTH_ENV })
  const { sqlite } = app.db
  t.ok(sqlite?.open)
  await app.close()
  t.notOk(sqlite?.open)
})

t.test('plugin: an unusable DATABASE_PATH fails the boot with a message naming it', async (t) => {
  const dir = tmpDir(t)
  const blocker = join(dir, 'a-file')
  writeFileSync(blocker, 'not a directory')
  await t.rejects(build(t, { ...AUTH_ENV, DATABASE_PATH: join(blocker, 'app.db') }), /DATABASE_PATH: cannot open the database/)
})

t.test('DATABASE_URL: unset and sqlite: mean the SQLite file, postgres:// and postgresql:// PostgreSQL', async (t) => {
  t.same(databaseTarget(undefined, './data/x.db'), { kind: 'sqlite', path: './data/x.db' })
  t.same(databaseTarget('', './data/x.db'), { kind: 'sqlite', path: './data/x.db' })
  t.same(databaseTarget('sqlite:', './data/x.db'), { kind: 'sqlite', path: './data/x.db' }, 'sqlite: alone keeps DATABASE_PATH')
  t.same(databaseTarget('sqlite:./other.db', './data/x.db'), { kind: 'sqlite', path: './other.db' })
  t.same(databaseTarget('sqlite:///var/data/app.db', 'x'), { kind: 'sqlite', path: '/var/data/app.db' })
  t.same(databaseTarget('sqlite::memory:', 'x'), { kind: 'sqlite', path: ':memory:' })
  t.same(databaseTarget('postgres://u:p@h:5432/db', 'x'), { kind: 'postgres', url: 'postgres://u:p@h:5432/db' })
  t.same(databaseTarget('postgresql://h/db', 'x'), { kind: 'postgres', url: 'postgresql://h/db' })
  t.throws(() => databaseTarget('mysql://h/db', 'x'), /DATABASE_URL/)
  t.throws(() => loadConfig({ DATABASE_URL: 'mysql://h/db' }), /DATABASE_URL/, 'the config refuses other schemes at boot')
})

t.test('plugin: DATABASE_URL=sqlite:<path> wins over DATABASE_PATH', async (t) => {
  const dir = tmpDir(t)
  const path = join(dir, 'by-url.db')
  const { app } = await build(t, { ...AUTH_ENV, DATABASE_PATH: join(dir, 'by-path.db'), DATABASE_URL: `sqlite:${path}` })
  t.equal(app.db.location, path)
  t.ok(existsSync(path))
  t.notOk(existsSync(join(dir, 'by-path.db')))
})

t.test('a write that fails for want of the database is a 503 with Retry-After, not a 500', async (t) => {
  const { app } = await build(t, { ...AUTH_ENV })
  const reg = await app.inject({ method: 'POST', url: '/api/auth/register', payload: { email: 'x@example.com', password: 'password-123' } })
  t.equal(reg.statusCode, 201)
  app.db.sqlite?.close()
  const res = await app.inject({ method: 'POST', url: '/api/auth/register', payload: { email: 'y@example.com', password: 'password-123' } })
  t.equal(res.statusCode, 503)
  t.equal(res.headers['retry-after'], '5')
  t.match(res.json(), { statusCode: 503, message: /database is not answering/ })
  t.notMatch(res.body, /not open|sqlite/i, 'no driver text in the response')
})

t.test('PostgreSQL tests skip with a reason when no server answers, and fail instead under CI=true', async (t) => {
  t.same(decidePostgresSkip(true, { CI: 'true' }, 'PostgreSQL'), {})
  t.match(decidePostgresSkip(false, {}, 'PostgreSQL at 127.0.0.1:5432'), { skip: /^PostgreSQL at 127\.0\.0\.1:5432 not available/ })
  t.throws(() => decidePostgresSkip(false, { CI: 'true' }, 'PostgreSQL at 127.0.0.1:5432'), /PostgreSQL at 127\.0\.0\.1:5432 is required when CI=true/)
})
