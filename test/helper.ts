/**
 * Builds the app for a test exactly as the server does, with the config taken from an env
 * object, logs captured in memory, and the app closed in teardown.
 */
import { Writable } from 'node:stream'
import type { FastifyInstance } from 'fastify'
import { buildApp } from '../src/app.js'
import { ConfigError, loadConfig, type Config } from '../src/config.js'

export interface LogLine {
  level: number
  msg?: string
  [key: string]: unknown
}

/** Collects pino's JSON lines. */
export class LogCapture extends Writable {
  readonly lines: LogLine[] = []
  readonly raw: string[] = []

  override _write (chunk: Buffer, _enc: BufferEncoding, done: () => void): void {
    for (const line of chunk.toString('utf8').split('\n')) {
      if (line.trim() === '') continue
      this.raw.push(line)
      try { this.lines.push(JSON.parse(line) as LogLine) } catch { this.lines.push({ level: 0, msg: line }) }
    }
    done()
  }

  /** Lines whose message is exactly `msg`. */
  withMsg (msg: string): LogLine[] {
    return this.lines.filter((l) => l.msg === msg)
  }

  count (msg: string): number {
    return this.withMsg(msg).length
  }

  get text (): string {
    return this.raw.join('\n')
  }
}

export interface TestApp {
  app: FastifyInstance
  logs: LogCapture
  config: Config
}

interface Teardownable { teardown (fn: () => unknown): void }

/**
 * Test defaults: quiet request logs, a fixed JWT secret, an in-memory database, and no
 * event-loop-delay shedding. Test files run side by side on a busy machine, where a stall of
 * a second is the machine's, not the service's; a test that asserts a 200 must not get the
 * shedder's 503 for it. The tests of load shedding set their own bounds. Tests register many
 * users from one address: the registration limit is the rate-limit tests' subject, not theirs.
 * For the same reason a Redis reply may take seconds before it counts as an outage (the
 * service's default is 500 ms): a test that is about command timeouts sets its own.
 */
export const TEST_ENV: Record<string, string> = {
  LOG_LEVEL: 'info',
  NODE_ENV: 'test',
  DATABASE_PATH: ':memory:',
  JWT_SECRET: 'test-secret-that-is-at-least-32-characters-long',
  MAX_EVENT_LOOP_DELAY_MS: '0',
  REGISTER_RATE_LIMIT_MAX: '1000000',
  REDIS_COMMAND_TIMEOUT_MS: '5000',
}

export async function build (t: Teardownable, env: Record<string, string | undefined> = {}): Promise<TestApp> {
  const config = loadConfig({ ...TEST_ENV, ...env })
  const logs = new LogCapture()
  const app = await buildApp(config, { logStream: logs })
  await app.ready()
  t.teardown(() => app.close())
  return { app, logs, config }
}

/** The problems loadConfig reports for the test environment plus `env` ([] when it loads). */
export function configProblems (env: Record<string, string>): string[] {
  try {
    loadConfig({ ...TEST_ENV, ...env })
    return []
  } catch (err) {
    if (err instanceof ConfigError) return err.problems
    throw err
  }
}

export function sleep (ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms))
}

/** Polls `check` every `everyMs` until it returns true or `timeoutMs` passes; resolves to the elapsed ms or throws. */
export async function waitFor (check: () => boolean | Promise<boolean>, timeoutMs: number, everyMs = 20): Promise<number> {
  const started = Date.now()
  for (;;) {
    if (await check()) return Date.now() - started
    if (Date.now() - started > timeoutMs) throw new Error(`condition not met within ${timeoutMs} ms`)
    await sleep(everyMs)
  }
}

/** The type of `t` inside `t.test(…, async (t) => …)`. */
export type TapTest = import('@tapjs/test').Test<import('@tapjs/test').BuiltPlugins> & import('@tapjs/test').BuiltPlugins
