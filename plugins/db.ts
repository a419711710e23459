/**
 * Adds the primary store as `fastify.db`: SQLite at DATABASE_PATH (or a `sqlite:` URL), or
 * PostgreSQL at a `postgres://` DATABASE_URL, with its migrations applied and its
 * repositories (`db.users`, `db.portfolios`). Boot fails with a clear message when the
 * store cannot be opened or a migration fails; the store closes with the app. Its statement
 * count is `aic_db_queries_total` on /metrics.
 */
import fp from 'fastify-plugin'
import { openDatabase, databaseTarget, type PrimaryStore } from '../src/db/index.js'
import { redactUrl } from '../src/config.js'
import { registerDbMetrics } from '../src/metrics/db-collectors.js'

declare module 'fastify' {
  interface FastifyInstance {
    db: PrimaryStore
  }
}

export default fp(async function dbPlugin (fastify) {
  const { DATABASE_URL, DATABASE_PATH } = fastify.config
  const log = fastify.log.child({ component: 'db' })
  const target = databaseTarget(DATABASE_URL, DATABASE_PATH)
  const variable = DATABASE_URL !== undefined ? 'DATABASE_URL' : 'DATABASE_PATH'
  const where = target.kind === 'postgres' ? redactUrl(target.url) : target.path
  let db: PrimaryStore
  try {
    db = await openDatabase({
      url: DATABASE_URL,
      path: DATABASE_PATH,
      poolMax: fastify.config.DATABASE_POOL_MAX,
      connectTimeoutMs: fastify.config.DATABASE_CONNECT_TIMEOUT_MS,
      statementTimeoutMs: fastify.config.DATABASE_STATEMENT_TIMEOUT_MS,
      onPoolError: (err) => { log.warn({ reason: err.message }, 'a pooled database connection failed (it is replaced on next use)') },
    })
  } catch (err) {
    throw new Error(`${variable}: cannot open the database at ${where}: ${err instanceof Error ? err.message : String(err)}`, { cause: err })
  }
  fastify.decorate('db', db)
  registerDbMetrics(fastify.metrics, db)
  fastify.addHook('onClose', async () => { await db.close() })

  const { applied, current, unknown } = db.migrations
  log.info({ kind: db.kind, location: db.location, journalMode: db.journalMode ?? undefined, schemaVersion: current, applied }, 'primary store ready')
  if (unknown.length > 0) {
    log.warn({ unknown }, 'the database has migrations this build does not know (a newer version ran on it)')
  }
}, { name: 'db', fastify: '5.x', dependencies: ['config', 'metrics'] })
