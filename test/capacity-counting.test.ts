/**
 * The counting behind `npm run bench -- capacity` (bench/scenarios/capacity.ts):
 * aic_db_queries_total on /metrics counts exactly the statements the store was sent (on
 * SQLite and on PostgreSQL), and the INFO parsing with the empty window subtracted gives
 * exactly the commands and bytes a known client sent and received.
 */
import net from 'node:net'
import { sql } from 'kysely'
import t from 'tap'
import { build, type TapTest } from './helper.js'
import { createTestDatabase, skipUnlessPostgres } from './helpers/postgres.js'
import { skipUnlessRedis, startRedis } from './helpers/redis-server.js'
import { minus, parseDbQueries, parseRedisInfo, type Counts } from '../bench/scenarios/capacity.js'

async function scrapeQueries (t: TapTest, app: Awaited<ReturnType<typeof build>>['app']): Promise<number> {
  const res = await app.inject('/metrics')
  t.equal(res.statusCode, 200)
  return parseDbQueries(res.body)
}

/** 3 plain statements, then a transaction of one (BEGIN, SELECT, COMMIT): 6 round trips. */
async function knownStatements (t: TapTest, env: Record<string, string>, store: string): Promise<void> {
  const { app } = await build(t, { ...env, REDIS_URL: '', SCHEDULER_ENABLED: 'false', LOG_LEVEL: 'warn' })
  t.match((await app.inject('/metrics')).body, new RegExp(`^aic_db_queries_total\\{store="${store}"\\} \\d+$`, 'm'))
  const before = await scrapeQueries(t, app)
  t.equal(await scrapeQueries(t, app), before, 'a scrape sends no statement of its own')
  for (let i = 0; i < 3; i++) await app.db.kysely.selectFrom('users').select('id').execute()
  await app.db.transaction(async (trx) => { await sql`SELECT 1`.execute(trx) })
  t.equal(await scrapeQueries(t, app) - before, 6, '3 statements + BEGIN, SELECT, COMMIT')
}

t.test('aic_db_queries_total counts every statement sent to SQLite', async (t) => {
  await knownStatements(t, {}, 'sqlite')
})

t.test('aic_db_queries_total counts every statement sent to PostgreSQL', skipUnlessPostgres(), async (t) => {
  const db = await createTestDatabase(t)
  await knownStatements(t, { DATABASE_URL: db.url }, 'postgres')
})

/** One RESP command, as a client puts it on the wire. */
function resp (...args: string[]): Buffer {
  return Buffer.from(`*${args.length}\r\n${args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join('')}`)
}

/** Sends each command on one connection, one at a time; the bytes written and read. */
async function sendRaw (port: number, commands: Buffer[]): Promise<{ sent: number, received: number }> {
  const socket = net.connect(port, '127.0.0.1')
  await new Promise<void>((resolve, reject) => { socket.once('connect', resolve).once('error', reject) })
  let received = 0
  let sent = 0
  try {
    for (const command of commands) {
      const reply = new Promise<void>((resolve, reject) => {
        // Each reply here is one line (+OK, $-1, :n, or a one-line bulk), ending in \r\n.
        let text = ''
        const onData = (d: Buffer): void => {
          received += d.length
          text += d.toString('latin1')
          const bulk = /^\$(\d+)\r\n/.exec(text)
          const done = bulk !== null ? text.length >= bulk[0].length + Number(bulk[1]) + 2 : text.endsWith('\r\n')
          if (done) { socket.off('data', onData); resolve() }
        }
        socket.on('data', onData)
        socket.once('error', reject)
      })
      socket.write(command)
      sent += command.length
      await reply
    }
  } finally {
    socket.destroy()
  }
  return { sent, received }
}

t.test('commands and bytes from INFO, minus the empty window, are what a client sent and received', skipUnlessRedis(), async (t) => {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  const windowOf = async (commands: Buffer[]): Promise<{ counts: Counts, wire: { sent: number, received: number } }> => {
    await redis.command('CONFIG', 'RESETSTAT')
    const wire = commands.length > 0 ? await sendRaw(redis.port, commands) : { sent: 0, received: 0 }
    return { counts: { ...parseRedisInfo(await redis.command('INFO', 'commandstats', 'stats')), dbQueries: 0 }, wire }
  }
  const empty = (await windowOf([])).counts
  t.same((await windowOf([])).counts, empty, 'the empty window repeats')
  t.equal(empty.commands, 0, 'INFO and CONFIG are not counted')

  const commands = [
    resp('SET', 'k', 'v'),
    resp('GET', 'k'),
    resp('EVAL', "redis.call('INCR', KEYS[1]); return redis.call('GET', KEYS[1])", '1', 'n'),
  ]
  const { counts, wire } = await windowOf(commands)
  const net = minus(counts, empty)
  t.equal(net.scripts, 1, 'one script call')
  t.equal(net.commands, 5, 'SET, GET, and the script once plus the two commands it ran')
  t.same(net.by, { set: 1, get: 2, eval: 1, incr: 1 })
  t.equal(net.bytesIn, wire.sent, 'bytes in: exactly what the client wrote')
  t.equal(net.bytesOut, wire.received, 'bytes out: exactly what the client read')
})
