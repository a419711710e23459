/**
 * The server entry holds two `process.nextTick` records for the process's life
 * (src/hold-tick-records.ts): with them, serving a hot quote makes no calls into V8's
 * runtime to build nextTick records; the same server without them
 * (test/helpers/server-without-tick-records.ts) makes about 30 per request. Counted by
 * callgrind, which counts calls and instructions, not time.
 */
import path from 'node:path'
import t from 'tap'
import { holdTickRecords } from '../src/hold-tick-records.js'
import { RUNTIME_FN, TSX_LOADER, callgrindAvailable, countInstructions, type CallgrindTarget } from './helpers/callgrind.js'

const ROOT = path.resolve(import.meta.dirname, '..')
t.setTimeout(300_000)
const available = callgrindAvailable()
const skip = available ? false : 'valgrind (callgrind) is not installed'
if (!available && process.env.CI === 'true') {
  t.fail('valgrind is required in CI (.ci/run installs it)')
}

const target = (entry: string): CallgrindTarget => ({
  name: entry,
  nodeArgs: ['--expose-gc', '--import', TSX_LOADER, '--import', path.join(ROOT, 'test/helpers/full-gc-when-idle.ts'), path.join(ROOT, entry)],
  path: '/api/stocks/AAPL',
  readyPath: '/api/health/live',
  env: {
    // The server runs in a temp dir: tsx must still compile with the project's settings.
    TSX_TSCONFIG_PATH: path.join(ROOT, 'tsconfig.json'),
    NODE_ENV: 'test', LOG_LEVEL: 'warn', REDIS_URL: '', DATABASE_PATH: ':memory:', QUOTE_PROVIDER: 'simulated',
    RATE_LIMIT_MAX: '1000000000', SCHEDULER_ENABLED: 'false',
    // Under valgrind the event loop is slow by design: no load shedding.
    MAX_EVENT_LOOP_DELAY_MS: '0',
  },
  warm: 5000,
  measure: 1000,
  // Three bursts of full collections on the idle server (test/helpers/full-gc-when-idle.ts).
  onReady: async (child) => {
    for (let i = 0; i < 3; i++) {
      child.kill('SIGUSR2')
      await new Promise((resolve) => setTimeout(resolve, 2000))
    }
  },
})

t.test(`hot quote: the server entry makes no ${RUNTIME_FN} calls; without the held records it makes many`, { skip }, async (t) => {
  const [held, control] = await Promise.all([
    countInstructions(target('src/server.ts')),
    countInstructions(target('test/helpers/server-without-tick-records.ts')),
  ])
  t.comment(`with the held records: ${held.runtimeCalls.toFixed(2)} calls and ${Math.round(held.mainThread)} main-thread instructions per request`)
  t.comment(`without: ${control.runtimeCalls.toFixed(2)} calls and ${Math.round(control.mainThread)} main-thread instructions per request`)
  // The slow path is three runtime calls per nextTick, about 30 a request. Code that runs
  // unoptimised for a moment after the forced collections makes a few calls either way
  // (seen: 0.00–0.06 a request with the held records).
  t.ok(control.runtimeCalls >= 10, `the measurement sees the slow path without the held records (${control.runtimeCalls.toFixed(2)} calls per request)`)
  t.ok(held.runtimeCalls < 0.5, `with the held records, nextTick records stay off the runtime (${held.runtimeCalls.toFixed(2)} calls per request)`)
})

t.test('two records are caught and held (a Node without TickObject init events would hold none)', async (t) => {
  t.equal(holdTickRecords(), 2, 'one record without arguments, one with')
  t.equal(holdTickRecords(), 2, 'a second call holds no more')
})
