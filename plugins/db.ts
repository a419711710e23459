/**
 * Adds the primary store as `fastify.db`: the SQLite database at DATABASE_PATH with its
 * migrations applied, and the repositories (`db.users`). Boot fails with a clear message
 * when the file cannot be opened or a migration fails; the database closes with the app.
 */
import fp from 'fastify-plugin'
import { openDatabase } from '../src/db/index.js'

declare module 'fastify' {
  interface FastifyInstance {
    db: ReturnType<typeof openDatabase>
  }
}

export default fp(async function dbPlugin (fastify) {
  const { DATABASE_PATH } = fastify.config
  const log = fastify.log.child({ component: 'db' })
  let db: ReturnType<typeof openDatabase>
  try {
    db = openDatabase({ path: DATABASE_PATH })
  } catch (err) {
    throw new Error(`DATABASE_PATH: cannot open the database at ${DATABASE_PATH}: ${err instanceof Error ? err.message : String(err)}`, { cause: err })
  }
  fastify.decorate('db', db)
  fastify.addHook('onClose', async () => { db.close() })

  const { applied, current, unknown } = db.migrations
  log.info({ path: db.path, journalMode: db.journalMode, schemaVersion: current, applied }, 'primary store ready')
  if (unknown.length > 0) {
    log.warn({ unknown }, 'the database has migrations this build does not know (a newer version ran on it)')
  }
}, { name: 'db', fastify: '5.x', dependencies: ['config'] })
