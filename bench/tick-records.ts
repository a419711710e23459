/**
 * Part of `npm run bench:instructions` (after bench/instructions.ts): the proof that
 * src/hold-tick-records.ts still earns its place on the running Node. The server entry holds
 * two `process.nextTick` records for the process's life: with them, serving a hot quote
 * makes no calls into V8's runtime to build nextTick records; the same server without them
 * (bench/server-without-tick-records.ts), after three bursts of full collections on the idle
 * server (bench/full-gc-when-idle.ts), makes many per request (about 30 on Node 20, about 17
 * on Node 24). Counted by callgrind, which counts calls and instructions, not time.
 *
 * Exits 1 when the held records no longer keep nextTick off the runtime. When the run without
 * them makes (almost) no such calls either, it says so: on that Node the module can go.
 * Needs valgrind (`apt-get install valgrind`); takes a few minutes (two processes at once).
 * TICK_WARM and TICK_MEASURE set the request counts (default 5000 and 1000).
 */
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { RUNTIME_FN, TSX_LOADER, callgrindAvailable, countInstructions, type CallgrindTarget } from '../test/helpers/callgrind.js'
import { holdTickRecords } from '../src/hold-tick-records.js'

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')

const target = (entry: string): CallgrindTarget => ({
  name: entry,
  nodeArgs: ['--expose-gc', '--import', TSX_LOADER, '--import', path.join(ROOT, 'bench/full-gc-when-idle.ts'), path.join(ROOT, entry)],
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
  warm: Number(process.env.TICK_WARM ?? 5000),
  measure: Number(process.env.TICK_MEASURE ?? 1000),
  readyTimeoutMs: 600_000,
  // Three bursts of full collections on the idle server: the moment the records' hidden
  // classes can be freed unless something holds one.
  onReady: async (child) => {
    for (let i = 0; i < 3; i++) {
      child.kill('SIGUSR2')
      await new Promise((resolve) => setTimeout(resolve, 2000))
    }
  },
})

async function main (): Promise<number> {
  // A Node that emits no TickObject init events would let the module hold nothing, silently.
  if (holdTickRecords() !== 2) {
    process.stdout.write(`FAILED: holdTickRecords() caught ${holdTickRecords()} records on Node ${process.version}, not 2\n`)
    return 1
  }
  if (!callgrindAvailable()) {
    process.stdout.write('FAILED: valgrind (callgrind) is not installed: apt-get install valgrind\n')
    return 1
  }
  const [held, control] = await Promise.all([
    countInstructions(target('src/server.ts')),
    countInstructions(target('bench/server-without-tick-records.ts')),
  ])
  const n = (x: number): string => Math.round(x).toLocaleString('en-US')
  process.stdout.write(`Node ${process.version}, hot quote, ${RUNTIME_FN} calls per request:\n`)
  process.stdout.write(`  with the held records:    ${held.runtimeCalls.toFixed(2)} (${n(held.mainThread)} main-thread instructions a request)\n`)
  process.stdout.write(`  without the held records: ${control.runtimeCalls.toFixed(2)} (${n(control.mainThread)} main-thread instructions a request)\n`)
  if (control.runtimeCalls < 1) {
    process.stdout.write(`On Node ${process.version} nextTick stays off the runtime without the held records: src/hold-tick-records.ts can be deleted for this Node.\n`)
    return 0
  }
  // Code that runs unoptimised for a moment after the forced collections makes a few calls
  // either way. Seen with the held records: 0.00–0.06 a request on Node 20.20, 1.00 on Node
  // 24.22 (where the record has a third symbol key); without them about 30 and 17.
  if (held.runtimeCalls >= Math.max(1.5, control.runtimeCalls / 4)) {
    process.stdout.write(`FAILED: with the held records the server still makes ${held.runtimeCalls.toFixed(2)} calls a request\n`)
    return 1
  }
  process.stdout.write(`ok: the held records save ${n(control.mainThread - held.mainThread)} main-thread instructions a request (${((1 - held.mainThread / control.mainThread) * 100).toFixed(0)} %)\n`)
  return 0
}

main().then((code) => { process.exitCode = code }, (err: unknown) => {
  process.stderr.write(`${err instanceof Error ? err.stack ?? err.message : String(err)}\n`)
  process.exitCode = 1
})
