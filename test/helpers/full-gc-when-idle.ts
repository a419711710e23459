/**
 * Preload for test/tick-records.test.ts (node --expose-gc): three full garbage collections,
 * two seconds apart, each from a timer, when no `process.nextTick` record is queued. That
 * is when a collection frees the records' hidden classes unless something holds one, so
 * the slow path shows up at start-up instead of whenever the heap next fills.
 */
const gc = (globalThis as { gc?: () => void }).gc
if (typeof gc !== 'function') throw new Error('full-gc-when-idle needs node --expose-gc')
let runs = 0
const timer = setInterval(() => {
  gc()
  if (++runs === 3) clearInterval(timer)
}, 2000)
timer.unref()
