/**
 * Operator commands, configured from the environment (and `.env`) exactly like the server:
 *
 *   npm run -s cli -- create-admin <email>    password from stdin (prompted without echo on a TTY)
 *   npm run -s cli -- token <email>           prints a bearer token backed by a real session
 *   npm run -s cli -- migrate                 applies the pending migrations (a deploy step; boot does it too)
 *
 * `token` needs the server's secret and its Redis (REDIS_URL): the session must live where
 * the server looks for it. The secret is JWT_SECRET, or in development (NODE_ENV unset or
 * development) the file the server keeps beside its database (`./data/jwt-secret`, see
 * src/auth/secret.ts), so `npm run dev` and the CLI agree with nothing set. Without Redis the
 * server keeps sessions in its own memory: log in over HTTP instead (the error says how).
 * Results go to stdout, everything else to stderr, so
 * `TOKEN=$(npm run -s cli -- token admin@example.com)` works.
 */
import { realpathSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import Fastify from 'fastify'
import { ConfigError, loadConfig, loadDotEnv, type Config } from './config.js'
import { loggerOptions } from './logger.js'
import { Accounts, InvalidAccountInputError } from './auth/accounts.js'
import { openDatabase } from './db/index.js'
import { resolveSecret } from './auth/secret.js'
import configPlugin from '../plugins/config.js'
import metricsPlugin from '../plugins/metrics.js'
import redisPlugin from '../plugins/redis.js'
import dbPlugin from '../plugins/db.js'
import authPlugin from '../plugins/auth.js'
import sessionsPlugin from '../plugins/sessions.js'

const USAGE = `usage:
  npm run -s cli -- create-admin <email>   create the admin, or promote the user and set its password (read from stdin)
  npm run -s cli -- token <email>          print a bearer token with a fresh session (needs the server's REDIS_URL, and its
                                           JWT_SECRET or, in development, its ./data/jwt-secret)
  npm run -s cli -- migrate                apply the pending database migrations (DATABASE_URL / DATABASE_PATH), then exit
in a deployed build (no tsx, no src/): node dist/src/cli.js create-admin <email>, and so on`

class CliError extends Error {}

/** Where the CLI reads and writes; the process's own streams and env by default (tests pass their own). */
export interface CliIo {
  stdin: NodeJS.ReadableStream & { isTTY?: boolean, setRawMode?: (mode: boolean) => unknown }
  stdout: NodeJS.WritableStream
  stderr: NodeJS.WritableStream
  env: Record<string, string | undefined>
  /** Read `.env` into the env first (the real process only). */
  dotEnv: boolean
}

/** First line of stdin; on a terminal, prompted with echo off. */
async function readPassword (io: CliIo): Promise<string> {
  const stdin = io.stdin
  if (stdin.isTTY === true && stdin.setRawMode !== undefined) {
    const setRawMode = stdin.setRawMode.bind(stdin)
    io.stderr.write('Password: ')
    setRawMode(true)
    stdin.resume()
    stdin.setEncoding('utf8')
    return new Promise((resolve, reject) => {
      let value = ''
      const onData = (chunk: string): void => {
        for (const ch of chunk) {
          if (ch === '\r' || ch === '\n') {
            done()
            io.stderr.write('\n')
            resolve(value)
            return
          }
          if (ch === '\u0003') {
            done()
            reject(new CliError('cancelled'))
            return
          }
          if (ch === '\u007f' || ch === '\b') value = value.slice(0, -1)
          else value += ch
        }
      }
      const done = (): void => {
        stdin.off('data', onData)
        setRawMode(false)
        stdin.pause()
      }
      stdin.on('data', onData)
    })
  }
  const chunks: Buffer[] = []
  for await (const chunk of stdin) chunks.push(chunk as Buffer)
  return Buffer.concat(chunks).toString('utf8').split(/\r?\n/)[0] ?? ''
}

async function createAdmin (io: CliIo, config: Config, email: string): Promise<void> {
  const password = await readPassword(io)
  if (password === '') throw new CliError('no password given on stdin')
  const db = await openDatabase({ url: config.DATABASE_URL, path: config.DATABASE_PATH, connectTimeoutMs: config.DATABASE_CONNECT_TIMEOUT_MS, statementTimeoutMs: config.DATABASE_STATEMENT_TIMEOUT_MS })
  try {
    const { user, action } = await new Accounts(db.users).ensureAdmin(email, password)
    io.stdout.write(`admin ${user.email} ${action} (id ${user.id})\n`)
  } finally {
    await db.close()
  }
}

/** Opening the store applies the pending migrations (under the advisory lock on PostgreSQL). */
async function migrate (io: CliIo, config: Config): Promise<void> {
  const db = await openDatabase({ url: config.DATABASE_URL, path: config.DATABASE_PATH, connectTimeoutMs: config.DATABASE_CONNECT_TIMEOUT_MS, statementTimeoutMs: config.DATABASE_STATEMENT_TIMEOUT_MS })
  try {
    const { applied, current, unknown } = db.migrations
    io.stdout.write(`${db.kind} ${db.location}: schema version ${current}, applied ${applied.length === 0 ? 'none' : applied.join(', ')}\n`)
    if (unknown.length > 0) io.stderr.write(`note: the database has migrations this build does not know: ${unknown.join(', ')}\n`)
  } finally {
    await db.close()
  }
}

async function printToken (io: CliIo, config: Config, email: string): Promise<void> {
  if (config.REDIS_URL === undefined && config.REDIS_SENTINELS === undefined) {
    const port = config.PORT
    throw new CliError('REDIS_URL is not set: without Redis the server keeps sessions in its own memory, where this command cannot add one. ' +
      'Log in over HTTP instead, e.g. with ADMIN_EMAIL and ADMIN_PASSWORD in .env (the admin is made at boot):\n' +
      `  curl -s localhost:${port}/api/auth/login -H 'content-type: application/json' -d '{"email":"${email}","password":"…"}'\n` +
      'or run a Redis (e.g. redis-server on 127.0.0.1:6379) and set REDIS_URL=redis://127.0.0.1:6379 in .env, for the server and this command.')
  }
  if (resolveSecret(config).source === 'generated') {
    throw new CliError(`JWT_SECRET is not set (and NODE_ENV=${config.NODE_ENV} keeps no development secret file): the server would refuse a token signed with a throwaway secret. Run with the server's environment.`)
  }
  // Only the parts a token needs: no routes, no scheduler.
  const level = (config.LOG_LEVEL as string) === 'info' ? 'warn' : config.LOG_LEVEL
  const app = Fastify({ logger: loggerOptions({ LOG_LEVEL: level as Config['LOG_LEVEL'] }, io.stderr) })
  try {
    // The plugins register their metrics; a one-shot command keeps none.
    await app.register(configPlugin, { config: { ...config, METRICS_ENABLED: false } })
    await app.register(metricsPlugin)
    await app.register(redisPlugin)
    await app.register(dbPlugin)
    await app.register(authPlugin)
    await app.register(sessionsPlugin)
    await app.ready()
    if (!app.redisState.available) {
      throw new CliError(`Redis at ${app.redisState.url ?? '?'} is unreachable (${app.redisState.lastError ?? 'no answer'}): a session made now would exist only in this process`)
    }
    const user = await app.identity.accounts.findByEmail(email)
    if (user === null) throw new CliError(`no user with the email ${email}`)
    const session = await app.sessions.create({ userId: user.id, email: user.email, role: user.role, ip: 'cli', userAgent: 'ai-capital-cli' })
    if (session.source !== 'redis') throw new CliError('Redis failed while storing the session; try again')
    const { token, expiresIn } = app.identity.issueToken({ sub: user.id, role: user.role, sid: session.id, jti: session.tokenId })
    io.stdout.write(`${token}\n`)
    io.stderr.write(`token for ${user.email} (role ${user.role}), valid ${expiresIn} s, session ${session.id}\n`)
    if (user.role !== 'admin') io.stderr.write('note: this user is not an admin; the debug endpoints will answer 403\n')
  } finally {
    await app.close()
  }
}

export async function main (argv: string[], io: CliIo = processIo()): Promise<number> {
  const say = (line: string): void => { io.stderr.write(`${line}\n`) }
  const [command, email, ...rest] = argv
  if (command === undefined || command === 'help' || command === '--help' || command === '-h') {
    say(USAGE)
    return command === undefined ? 2 : 0
  }
  const needsEmail = command !== 'migrate'
  if ((command !== 'create-admin' && command !== 'token' && command !== 'migrate') || (needsEmail ? email === undefined : email !== undefined) || rest.length > 0) {
    say(USAGE)
    return 2
  }
  let config: Config
  try {
    if (io.dotEnv) loadDotEnv()
    config = loadConfig(io.env)
  } catch (err) {
    say(err instanceof ConfigError ? err.message : String(err))
    return 1
  }
  try {
    if (command === 'migrate') await migrate(io, config)
    else if (command === 'create-admin') await createAdmin(io, config, email as string)
    else await printToken(io, config, email as string)
    return 0
  } catch (err) {
    if (err instanceof CliError || err instanceof InvalidAccountInputError) say(`error: ${err.message}`)
    else say(`error: ${err instanceof Error ? err.message : String(err)}`)
    return 1
  }
}

function processIo (): CliIo {
  return { stdin: process.stdin, stdout: process.stdout, stderr: process.stderr, env: process.env, dotEnv: true }
}

function isEntryPoint (): boolean {
  const entry = process.argv[1]
  if (entry === undefined) return false
  try {
    return realpathSync(entry) === realpathSync(fileURLToPath(import.meta.url))
  } catch {
    return false
  }
}

if (isEntryPoint()) {
  main(process.argv.slice(2)).then((code) => { process.exitCode = code }, (err: unknown) => {
    process.stderr.write(`error: ${String(err)}\n`)
    process.exitCode = 1
  })
}
