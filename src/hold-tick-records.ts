/**
 * Keeps `process.nextTick` on V8's fast path for the life of the process (Node 20 and 24).
 *
 * Node 20 builds the record behind every `nextTick` from an object literal with symbol
 * keys: `{ [async_id_symbol]: …, [trigger_async_id_symbol]: …, callback, args }`. V8 gives
 * the record a hidden class per step of that literal and remembers, at each step, the one
 * class it saw (weakly: the feedback does not keep a class alive). Records live for
 * microseconds, so a full garbage collection that runs while none exists frees those
 * classes; the next record gets new ones, V8 sees "another class" at steps 2 to 4, marks
 * them megamorphic for good, and from then on every `nextTick` (inlined into Node's stream
 * and HTTP code) defines three of its four keys through the runtime
 * (`Runtime_DefineKeyedOwnPropertyInLiteral`). Measured with callgrind on the hot quote:
 * about 30 such calls per request, about 30 % of the request's instructions. Whether and when
 * it happens depends on when the collector runs, so it differs from one process to the
 * next; this service, with a larger heap than a bare Fastify app, hit it in nearly every
 * process.
 *
 * The fix: hold two real records (one without arguments, one with) for the life of the
 * process, so their classes, and through each class's back pointer the earlier steps,
 * cannot be freed. The records are caught with an `init` hook that is enabled only around
 * the two `nextTick` calls: no hook stays enabled. `npm run bench:instructions`
 * (bench/tick-records.ts) counts the runtime calls with and without it.
 *
 * Still needed on Node 24, the line the Dockerfile ships. Measured with callgrind
 * (bench/tick-records.ts, 3000 warm + 500 counted requests, after forced full collections):
 * Node 24.22.3 without the held records 17.3 runtime calls and 150,277 main-thread
 * instructions per hot quote; with them 1.0 and 126,192 (16 % fewer). On Node 20.20: about
 * 30 calls and 30 %. Node 24 still builds the record as an object literal, now with three
 * symbol keys (`async_context_frame` added).
 *
 * Delete this module (and its import in src/server.ts, and bench/tick-records.ts) when
 * `npm run bench:instructions` on the Node the Dockerfile ships says the run without the
 * held records stays under one runtime call per request: for instance once Node builds its
 * tick records with a class or a constructor instead of a literal with computed keys.
 *
 * The server entry imports this module first, before any other module is evaluated.
 */
import { createHook } from 'node:async_hooks'

/** The records, kept alive for the life of the process. */
const held: object[] = []

function noop (): void {}
const noopWithArg = (_value: unknown): void => {}

/** Catch and keep two `nextTick` records; returns how many are held. */
export function holdTickRecords (): number {
  if (held.length > 0) return held.length
  const hook = createHook({
    init (_asyncId, type, _triggerAsyncId, resource) {
      if (type === 'TickObject') held.push(resource)
    },
  })
  hook.enable()
  try {
    process.nextTick(noop)
    process.nextTick(noopWithArg, 0)
  } finally {
    hook.disable()
  }
  return held.length
}

holdTickRecords()
