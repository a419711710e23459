/**
 * The migration step a deployment runs once before its instances (`node dist/src/cli.js
 * migrate`; here from the sources), as a process in an empty working directory against a
 * private PostgreSQL database: the first run applies every migration, a second run applies
 * none, and each run exits as soon as it is done. (A store opened only to migrate used to
 * keep its idle pool connection, and with it the process, for the pool's 30 s idle timeout:
 * a Kubernetes Job or a release step that hangs for half a minute.)
 */
import t from 'tap'
import { createTestDatabase, queryDatabase, skipUnlessPostgres } from '../helpers/postgres.js'
import { migrateOnce } from './instances.js'
import { migrations } from '../../src/db/migrations.js'

/** Well under the pool's idle timeout (30 s), well over a start on a loaded machine (about 5 s). */
const EXIT_BOUND_MS = 20_000

t.test('cli migrate applies the schema once and exits when done', skipUnlessPostgres(), async (t) => {
  const db = await createTestDatabase(t)
  const env = { NODE_ENV: 'production', DATABASE_URL: db.url, JWT_SECRET: 'scale-test-secret-0123456789abcdefghijklmnop' }
  const latest = migrations.at(-1)?.version

  const first = await migrateOnce(env)
  t.match(first.output, new RegExp(`schema version ${latest}, applied ${migrations.map((m) => m.version).join(', ')}\\n`), 'the first run applies every migration')
  t.ok(first.ms < EXIT_BOUND_MS, `and exits (${first.ms} ms)`)

  const second = await migrateOnce(env)
  t.match(second.output, new RegExp(`schema version ${latest}, applied none\\n`), 'a second run applies none')
  t.ok(second.ms < EXIT_BOUND_MS, `and exits (${second.ms} ms)`)

  const rows = await queryDatabase<{ n: string }>(db.url, 'SELECT count(*) AS n FROM schema_migrations')
  t.equal(Number(rows[0]?.n), migrations.length, 'one row per migration')
})
