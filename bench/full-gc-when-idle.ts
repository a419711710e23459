/**
 * Preload for bench/tick-records.ts (node --expose-gc): on each SIGUSR2, four full
 * garbage collections in a row. The bench sends it while the server is up and idle, so no
 * `process.nextTick` record exists: the moment the records' hidden classes can be freed
 * unless something holds one. V8 keeps a class that optimised code or feedback refers to
 * alive for a couple of full collections after its last object dies
 * (--retain-maps-for-n-gc), hence several in a row. The slow path then shows up at once
 * instead of whenever the heap next fills.
 */
const gc = (globalThis as { gc?: () => void }).gc
if (typeof gc !== 'function') throw new Error('full-gc-when-idle needs node --expose-gc')
const IN_A_ROW = 4
process.on('SIGUSR2', () => {
  for (let i = 0; i < IN_A_ROW; i++) gc()
})
