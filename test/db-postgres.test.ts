/**
 * PostgreSQL as the primary store, each test on a private database of the machine's server
 * (dropped afterwards): migrations that several instances (or `cli migrate` steps) start at
 * once apply once, a failing one rolls the run back, and the health report. Faults:
 * db-postgres-faults.test.ts; several instances on one database: db-postgres-instances.test.ts.
 */
import t from 'tap'
import { build } from './helper.js'
import { portfolioEnv } from './portfolio-helpers.js'
import { startProxy } from './helpers/tcp-proxy.js'
import { createTestDatabase, queryDatabase, skipUnlessPostgres } from './helpers/postgres.js'
import { instance } from './db-postgres-helpers.js'
import { openDatabase, migrations, type Migration } from '../src/db/index.js'
import { runCli } from './helpers/cli.js'

const pgOpts = skipUnlessPostgres()

t.test('migrations started by several instances at once apply once, under the advisory lock', pgOpts, async (t) => {
  const db = await createTestDatabase(t)
  const stores = await Promise.all(Array.from({ length: 4 }, () => openDatabase({ url: db.url })))
  t.teardown(() => Promise.all(stores.map((s) => s.close())))
  const all = migrations.map((m) => m.version)
  const applied = stores.map((s) => s.migrations.applied)
  t.equal(applied.filter((a) => a.length > 0).length, 1, `one migrator applied them (${JSON.stringify(applied)})`)
  t.same(applied.flat().sort((a, b) => a - b), all, 'each migration exactly once')
  t.ok(stores.every((s) => s.migrations.current === all.at(-1)), 'every instance sees the schema current')
  const rows = await queryDatabase<{ version: number }>(db.url, 'SELECT version FROM schema_migrations ORDER BY version')
  t.same(rows.map((r) => r.version), all)
})

t.test('a failing migration rolls back the whole run on PostgreSQL and fails the open with its name', pgOpts, async (t) => {
  const db = await createTestDatabase(t)
  const last = migrations.at(-1)?.version ?? 0
  const broken: Migration[] = [
    ...migrations,
    { version: last + 1, name: 'good-one', up: 'CREATE TABLE good (id INTEGER PRIMARY KEY)' },
    { version: last + 2, name: 'bad-one', up: 'CREATE TABLE half (id INTEGER PRIMARY KEY); THIS IS NOT SQL' },
  ]
  await t.rejects(openDatabase({ url: db.url, migrations: broken }), new RegExp(`migration ${last + 2} \\(bad-one\\) failed`))
  const tables = await queryDatabase<{ tablename: string }>(db.url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
  t.same(tables, [], 'nothing of the run was kept (not even schema_migrations)')
  const store = await openDatabase({ url: db.url })
  t.teardown(() => store.close())
  t.same(store.migrations.applied, migrations.map((m) => m.version), 'a fixed build migrates from scratch')
})

t.test('health reports PostgreSQL; an unreachable DATABASE_URL fails the boot naming it, without the password', pgOpts, async (t) => {
  const db = await createTestDatabase(t)
  const { app } = await instance(t, db.url, undefined)
  t.equal(app.db.kind, 'postgres')
  const health = (await app.inject('/api/health')).json()
  t.match(health, { status: 'OK', database: { status: 'connected', kind: 'postgres', responseTime: Number } })
  t.equal((await app.inject('/api/health/ready')).statusCode, 200)

  const closed = await startProxy({ port: db.port })
  closed.refuse(true)
  t.teardown(() => closed.close())
  const failed = await build(t, portfolioEnv(undefined, ':memory:', { DATABASE_URL: `postgres://postgres:hunter2-secret@127.0.0.1:${closed.port}/${db.name}`, DATABASE_CONNECT_TIMEOUT_MS: '500' }))
    .then(() => null, (err: unknown) => err as Error)
  t.match(failed?.message, /^DATABASE_URL: cannot open the database at postgres:\/\/postgres:\*\*\*@127\.0\.0\.1:/, 'the boot fails naming the variable')
  t.notMatch(failed?.message, /hunter2/, 'the password is not in the message')
})

t.test('cli migrate: a deploy step that applies the migrations once, several at a time', pgOpts, async (t) => {
  const db = await createTestDatabase(t)
  const run = () => runCli(['migrate'], { DATABASE_URL: db.url })
  const runs = await Promise.all([run(), run(), run()])
  t.same(runs.map((r) => r.code), [0, 0, 0], runs.map((r) => r.stderr).join(''))
  const last = migrations.at(-1)?.version ?? 0
  const all = migrations.map((m) => m.version).join(', ')
  t.equal(runs.filter((r) => r.stdout.includes(`applied ${all}`)).length, 1, 'one of them applied every migration')
  t.equal(runs.filter((r) => r.stdout.includes('applied none')).length, 2, 'the others found nothing to do')
  t.ok(runs.every((r) => r.stdout.startsWith(`postgres postgres://postgres@127.0.0.1:${db.port}/${db.name}: schema version ${last}`)), runs[0]?.stdout)
  const { app } = await instance(t, db.url, undefined)
  t.same(app.db.migrations.applied, [], 'the instances booting afterwards apply nothing')
})
