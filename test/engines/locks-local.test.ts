/**
 * The in-process locks (no Redis): owner-token release and extension, TTL expiry, the FIFO
 * hand-over that keeps newcomers from barging in, the bounded wait; and the lock service
 * on top of them: mutual exclusion, a 409 after LOCK_WAIT_MS, argument checks, counters.
 */
import t from 'tap'
import { LocalLocks } from '../../src/engines/locks/local-locks.js'
import { Locks } from '../../src/engines/locks/locks.js'
import { isLockError } from '../../src/engines/locks/errors.js'
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
  const locks = new LocalLocks()
  // Margins of seconds: a busy machine can stall this process for hundreds of milliseconds.
  const acquiredAt = Date.now()
  t.ok(locks.tryAcquire('r', 'old', 1000))
  t.notOk(locks.tryAcquire('r', 'new', 1000), 'still held before the TTL')
  await waitFor(() => locks.tryAcquire('r', 'new', 1000), 10_000)
  t.ok(Date.now() - acquiredAt >= 990, 'free only after the TTL')
  t.notOk(locks.release('r', 'old'), 'the expired holder releases nothing')
  t.ok(locks.holds('r', 'new'))
  const [listed] = locks.list()
  t.equal(listed?.owner, 'new')
  t.ok((listed?.ttlMs ?? 0) > 900)
  locks.release('r', 'new')
})

t.test('extension keeps an entry past its first TTL', async (t) => {
  const locks = new LocalLocks()
  locks.tryAcquire('r', 'a', 2000)
  for (let i = 0; i < 4; i++) {
    await sleep(700)
    t.ok(locks.extend('r', 'a', 2000))
  }
  t.ok(locks.holds('r', 'a'), 'held after 2.8 s with a 2 s TTL')
  locks.release('r', 'a')
})

t.test('waiters get the lock in arrival order, newcomers do not barge in, the wait is bounded', async (t) => {
  const locks = new LocalLocks()
  locks.tryAcquire('r', 'first', 5000)
  const order: string[] = []
  const second = locks.acquire('r', 'second', 5000, 1000).then((ok) => { order.push(`second:${ok}`) })
  const third = locks.acquire('r', 'third', 5000, 1000).then((ok) => { order.push(`third:${ok}`) })
  const started = Date.now()
  const timedOut = await locks.acquire('r', 'impatient', 5000, 80)
  t.notOk(timedOut, 'gives up after its wait')
  t.ok(Date.now() - started >= 75, 'after its 80 ms, not before')
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
  t.ok(await locks.acquire('r', 'next', 1000, 1000))
  t.ok(Date.now() - started >= 90, 'only after the TTL')
  locks.release('r', 'next')
})

t.test('the service serialises holders of one resource and runs other resources in parallel', async (t) => {
  const locks = localService(2000)
  t.equal(locks.backend(), 'local')
  let inside = 0
  let maxInside = 0
  const work = async (): Promise<void> => {
    inside++
    maxInside = Math.max(maxInside, inside)
    await sleep(10)
    inside--
  }
  await Promise.all(Array.from({ length: 20 }, async () => locks.using('lock:portfolio:u1', 1000, work)))
  t.equal(maxInside, 1, 'never two holders at once')
  let parallel = 0
  let maxParallel = 0
  await Promise.all(['a', 'b', 'c'].map(async (id) => locks.using(`lock:portfolio:${id}`, 1000, async () => {
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

t.test('the service answers a retryable 409 after LOCK_WAIT_MS and never calls fn', async (t) => {
  const locks = localService(150)
  let release!: () => void
  const holding = locks.using('lock:x', 5000, async () => new Promise<void>((resolve) => { release = resolve }))
  await sleep(10)
  let called = false
  const started = Date.now()
  const err = await locks.using('lock:x', 5000, async () => { called = true }).catch((e: unknown) => e)
  const waited = Date.now() - started
  t.ok(isLockError(err))
  t.match(err, { statusCode: 409, code: 'AIC_CONFLICT', headers: { 'retry-after': '1' } })
  t.match((err as Error).message, /safe to retry/)
  t.notOk(called, 'fn never ran')
  t.ok(waited >= 140 && waited < 10_000, `waited ${waited} ms for a 150 ms bound (not before it; the upper bound only catches a hang)`)
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
