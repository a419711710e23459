/**
 * Preload for test/tick-records.test.ts (node --expose-gc): every second, ten times, four full
 * garbage collections in a row, from a timer, when no `process.nextTick` record is queued.
 * That is when the records' hidden classes can be freed unless something holds one. V8
 * keeps a class that optimised code or feedback refers to alive for a couple of full
 * collections after its last object dies (--retain-maps-for-n-gc), hence several in a row;
 * one collection at a time was not always enough. The slow path then shows up at start-up
 * instead of whenever the heap next fills.
 */
const gc = (globalThis as { gc?: () => void }).gc
if (typeof gc !== 'function') throw new Error('full-gc-when-idle needs node --expose-gc')
const ROUNDS = 10
const IN_A_ROW = 4
let rounds = 0
const timer = setInterval(() => {
  for (let i = 0; i < IN_A_ROW; i++) gc()
  if (++rounds === ROUNDS) clearInterval(timer)
}, 1000)
timer.unref()
