/**
 * The in-process locks (no Redis): owner-token release and extension, TTL expiry, the FIFO
 * hand-over that keeps newcomers from barging in, the bounded wait; and the lock service
 * on top of them: mutual exclusion, a 409 after LOCK_WAIT_MS, argument checks, counters.
 */
import t from 'tap'
import { LocalLocks } from '../../src/engines/locks/local-locks.js'
import { Locks } from '../../src/engines/locks/locks.js'
import { LockBusyError, isLockError } from '../../src/engines/locks/errors.js'
import { fromEngineError } from '../../src/errors.js'
import { sleep, waitFor } from '../helper.js'

const quiet = { info () {}, warn () {}, debug () {} }

function localService (waitMs = 300): Locks {
  return new Locks({ masters: [], followsMainRedis: false, mainAvailable: () => false, waitMs, retryDelayMs: 20, keyPrefix: '', log: quiet })
}

t.test('release and extend work only with the owner token', async (t) => {
  const locks = new LocalLocks()
  t.ok(locks.tryAcquire('r', 'a', 1000))
  t.notOk(locks.tryAcquire('r', 'b', 1000), 'held')
  t.notOk(locks.release('r', 'b'), 'another token cannot release')
  t.notOk(locks.extend('r', 'b', 1000), 'another token cannot extend')
  t.ok(locks.holds('r', 'a'))
  t.ok(locks.release('r', 'a'))
  t.notOk(locks.release('r', 'a'), 'a second release is a no-op')
  t.ok(locks.tryAcquire('r', 'b', 1000))
  t.equal(locks.size, 1)
  locks.release('r', 'b')
})

t.test('an entry expires at its TTL; a late release then frees nothing of the next holder', async (t) => {
  // Margins of seconds, not milliseconds: a busy machine may stall this loop for a while.
  const locks = new LocalLocks()
  const started = Date.now()
  t.ok(locks.tryAcquire('r', 'old', 1500))
  t.notOk(locks.tryAcquire('r', 'new', 10_000), 'still held before the TTL')
  await waitFor(() => locks.tryAcquire('r', 'new', 10_000), 10_000)
  t.ok(Date.now() - started >= 1500, 'free only once the TTL has passed')
  t.notOk(locks.release('r', 'old'), 'the expired holder releases nothing')
  t.ok(locks.holds('r', 'new'))
  const [listed] = locks.list()
  t.equal(listed?.owner, 'new')
  t.ok((listed?.ttlMs ?? 0) > 5000 && (listed?.ttlMs ?? 0) <= 10_000, 'listed with its remaining TTL')
  locks.release('r', 'new')
})

t.test('extension keeps an entry past its first TTL', async (t) => {
  // Extended every second with a 3 s TTL: a stall of up to 2 s between two extensions
  // still finds the entry held.
  const locks = new LocalLocks()
  const started = Date.now()
  locks.tryAcquire('r', 'a', 3000)
  while (Date.now() - started <= 3500) {
    await sleep(1000)
    t.ok(locks.extend('r', 'a', 3000))
  }
  t.ok(Date.now() - started > 3000, 'past the first TTL')
  t.ok(locks.holds('r', 'a'), 'held past its first 3 s TTL, extended every second')
  locks.release('r', 'a')
})

t.test('waiters get the lock in arrival order, newcomers do not barge in, the wait is bounded', async (t) => {
  const locks = new LocalLocks()
  // 'first' holds for 60 s: a waiter that did not give up at its own bound would wait
  // that long, so the upper bound below is tens of seconds away from the alternative.
  locks.tryAcquire('r', 'first', 60_000)
  const order: string[] = []
  const second = locks.acquire('r', 'second', 5000, 30_000).then((ok) => { order.push(`second:${ok}`) })
  const third = locks.acquire('r', 'third', 5000, 30_000).then((ok) => { order.push(`third:${ok}`) })
  const started = Date.now()
  const timedOut = await locks.acquire('r', 'impatient', 5000, 80)
  const waited = Date.now() - started
  t.notOk(timedOut, 'gives up after its wait')
  t.ok(waited >= 75 && waited < 10_000, `after its 80 ms bound, not when the holder lets go (${waited} ms)`)
  locks.release('r', 'first')
  t.notOk(locks.tryAcquire('r', 'barger', 5000), 'the lock went straight to the first waiter')
  await second
  t.ok(locks.holds('r', 'second'))
  locks.release('r', 'second')
  await third
  t.same(order, ['second:true', 'third:true'])
  locks.release('r', 'third')
  t.equal(locks.size, 0)
})

t.test('an expiry hands the lock to the next waiter', async (t) => {
  const locks = new LocalLocks()
  locks.tryAcquire('r', 'crashed', 100)
  const started = Date.now()
  t.ok(await locks.acquire('r', 'next', 1000, 30_000))
  t.ok(Date.now() - started >= 90, 'only after the TTL')
  locks.release('r', 'next')
})

t.test('the service serialises holders of one resource and runs other resources in parallel', async (t) => {
  const locks = localService(30_000)
  t.equal(locks.backend(), 'local')
  let inside = 0
  let maxInside = 0
  const work = async (): Promise<void> => {
    inside++
    maxInside = Math.max(maxInside, inside)
    await sleep(10)
    inside--
  }
  await Promise.all(Array.from({ length: 20 }, async () => locks.using('lock:portfolio:u1', 30_000, work)))
  t.equal(maxInside, 1, 'never two holders at once')
  let parallel = 0
  let maxParallel = 0
  await Promise.all(['a', 'b', 'c'].map(async (id) => locks.using(`lock:portfolio:${id}`, 30_000, async () => {
    parallel++
    maxParallel = Math.max(maxParallel, parallel)
    await sleep(30)
    parallel--
  })))
  t.equal(maxParallel, 3, 'different resources do not wait for each other')
  const stats = locks.stats()
  t.equal(stats.acquisitions, 23)
  t.ok(stats.contentions >= 1, 'waiting holders are counted as contentions')
  t.equal(stats.failures, 0)
  t.equal(stats.held, 0, 'all released')
})

t.test('the service throws a LockBusyError (retryable; a 409 in the app) after LOCK_WAIT_MS and never calls fn', async (t) => {
  const locks = localService(150)
  let release!: () => void
  const holding = locks.using('lock:x', 5000, async () => new Promise<void>((resolve) => { release = resolve }))
  await sleep(10)
  let called = false
  const started = Date.now()
  const err = await locks.using('lock:x', 5000, async () => { called = true }).catch((e: unknown) => e)
  const waited = Date.now() - started
  t.ok(isLockError(err))
  t.ok(err instanceof LockBusyError, 'a typed error of the engine')
  t.match(err, { resource: 'lock:x', retryAfterMs: 1000, waitedMs: 150 })
  t.notOk('statusCode' in (err as object), 'the engine knows no status code')
  t.match(fromEngineError(err), { statusCode: 409, code: 'AIC_CONFLICT', headers: { 'retry-after': '1' }, message: /safe to retry/ }, 'the app answers it with a 409')
  t.notOk(called, 'fn never ran')
  // The holder never lets go on its own: without the bound the wait would not end.
  t.ok(waited >= 140 && waited < 10_000, `waited ${waited} ms for a 150 ms bound`)
  release()
  await holding
  t.equal(locks.stats().timeouts, 1)
})

t.test('the service checks its arguments, and passes fn errors and values through', async (t) => {
  const locks = localService()
  await t.rejects(locks.using('', 1000, async () => {}), TypeError)
  await t.rejects(locks.using('has space', 1000, async () => {}), TypeError)
  await t.rejects(locks.using('lock:a', 50, async () => {}), TypeError)
  await t.rejects(locks.using('lock:a', 1.5 as number, async () => {}), TypeError)
  t.equal(await locks.using('lock:a', 1000, async () => 42), 42)
  await t.rejects(locks.using('lock:a', 1000, async () => { throw new Error('boom') }), { message: 'boom' })
  t.equal(await locks.using('lock:a', 1000, async () => 'free again'), 'free again', 'released after a throw')
})

t.test('expired entries nobody asks about again (tick locks) are swept, not kept forever', async (t) => {
  const locks = new LocalLocks()
  for (let i = 0; i < 300; i++) locks.tryAcquire(`lock:job:x:${i}`, 't', 100)
  await sleep(150)
  for (let i = 0; i < 300; i++) locks.tryAcquire(`lock:other:${i}`, 't', 10_000)
  t.equal(locks.size, 300, 'only the live entries are kept (swept every 256 takes)')
  t.ok(locks.list().every((l) => l.resource.startsWith('lock:other:')))
})
