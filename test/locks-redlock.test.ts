/**
 * Redlock against real, independent redis-servers: a release after expiry leaves the next
 * holder's lock alone; three masters keep working with one down and answer a clear 503
 * (fn never called) with two down; a frozen master does not slow acquisitions; a SIGKILLed
 * holder's lock frees at its TTL; auto-extension keeps a lock past its first TTL; the
 * signal aborts when the lock is taken over or cannot be extended; the LOCK_WAIT_MS bound;
 * and the database and key prefix of the URL are honoured.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import path from 'node:path'
import { pathToFileURL } from 'node:url'
import t from 'tap'
import { pino } from 'pino'
import { loadConfig } from '../src/config.js'
import { LockBusyError, LockLostError, LockUnavailableError, isLockError } from '../src/engines/locks/errors.js'
import { fromEngineError } from '../src/errors.js'
import type { Lease } from '../src/engines/locks/locks.js'
import { createLocks } from '../plugins/locks.js'
import { createRedisStateFromConfig } from '../plugins/redis.js'
import { sleep, waitFor, type TapTest } from './helper.js'
import { skipUnlessRedis, startRedis, type RedisProcess } from './helpers/redis-server.js'

const redisOpts = skipUnlessRedis()
const silent = pino({ level: 'silent' })

/** One "instance" of the lock service, wired exactly as the plugin wires it. */
async function lockService (t: TapTest, env: Record<string, string>) {
  const config = loadConfig({
    NODE_ENV: 'test',
    REDIS_COMMAND_TIMEOUT_MS: '300',
    REDIS_CONNECT_TIMEOUT_MS: '1000',
    LOCK_RETRY_DELAY_MS: '20',
    ...env,
  })
  const state = createRedisStateFromConfig(config, silent)
  await state.start()
  const { locks, owned } = createLocks(config, state, silent as unknown as Parameters<typeof createLocks>[2])
  await Promise.all(owned.map(async (s) => s.start()))
  t.teardown(async () => {
    await Promise.all(owned.map(async (s) => s.close()))
    await state.close()
  })
  return { locks, state, owned }
}

async function servers (t: TapTest, n: number): Promise<RedisProcess[]> {
  const list = await Promise.all(Array.from({ length: n }, async () => startRedis()))
  t.teardown(async () => { await Promise.all(list.map(async (r) => r.stop())) })
  return list
}

t.test('releasing after expiry does not delete the lock another holder took since', redisOpts, async (t) => {
  const [redis] = await servers(t, 1)
  const a = await lockService(t, { REDIS_URL: redis!.url })
  const b = await lockService(t, { REDIS_URL: redis!.url })
  const first = await a.locks.claim('lock:portfolio:42', 150)
  t.ok(first, 'A holds the lock')
  t.equal(await b.locks.claim('lock:portfolio:42', 5000), null, 'B cannot take it while A holds it')
  await sleep(250) // A "paused" past its TTL, no extension
  const second = await b.locks.claim('lock:portfolio:42', 5000)
  t.ok(second, 'B takes it after A expired')
  await first!.release() // A wakes up and releases
  t.equal(await redis!.command('GET', 'lock:portfolio:42'), second!.token, "B's lock is intact after A's late release")
  t.match(second!.token, /^[^:]+:\d+:[0-9a-f-]{36}$/, 'the owner token is <hostname>:<pid>:<random uuid>')
  await second!.release()
  t.equal(await redis!.command('EXISTS', 'lock:portfolio:42'), '0', 'the owner releases its own lock')
})

t.test('three masters: one down, locks still work; two down, a clear 503 and fn never runs', redisOpts, async (t) => {
  const masters = await servers(t, 3)
  const env = { REDLOCK_URLS: masters.map((m) => m.url).join(','), LOCK_WAIT_MS: '500' }
  const { locks } = await lockService(t, env)
  const other = await lockService(t, env)
  t.equal(locks.backend(), 'redlock')
  t.equal(locks.masterCount, 3)

  await masters[2]!.kill()
  let token = ''
  const result = await locks.using('lock:portfolio:7', 5000, async () => {
    token = String(await masters[0]!.command('GET', 'lock:portfolio:7'))
    t.equal(await masters[1]!.command('GET', 'lock:portfolio:7'), token, 'held on both live masters')
    // Another instance is refused with a 409 (busy), not a 503: a majority still answers.
    const err = await other.locks.using('lock:portfolio:7', 5000, async () => 'never').catch((e: unknown) => e)
    t.ok(err instanceof LockBusyError)
    return 'done'
  })
  t.equal(result, 'done', 'one master down: the lock works')
  t.not(token, '')
  t.equal(await masters[0]!.command('EXISTS', 'lock:portfolio:7'), '0', 'released on the live masters')

  await masters[1]!.kill()
  let called = false
  const started = Date.now()
  const err = await locks.using('lock:portfolio:7', 5000, async () => { called = true }).catch((e: unknown) => e)
  t.ok(err instanceof LockUnavailableError)
  t.match(err, { retryAfterMs: 2000 })
  t.match(fromEngineError(err), { statusCode: 503, code: 'AIC_UNAVAILABLE', headers: { 'retry-after': '2' }, message: /not performed/ })
  t.notOk(called, 'fn is never called without a majority')
  t.ok(Date.now() - started < 1000, 'the 503 comes at once, not after LOCK_WAIT_MS of retries')
  t.equal(locks.stats().unavailable, 1)
  t.equal(await masters[0]!.command('EXISTS', 'lock:portfolio:7'), '0', 'the minority lock was given back')
  const claimErr = await locks.claim('lock:job:x:1', 1000).catch((e: unknown) => e)
  t.ok(claimErr instanceof LockUnavailableError, 'claims (the scheduler) fail closed the same way')

  await masters[1]!.restart()
  await waitFor(async () => (await locks.using('lock:portfolio:7', 1000, async () => true).catch(() => false)), 5000, 100)
  t.pass('a majority back: locks work again')
})

t.test('a frozen master does not slow acquisition down while a majority answers', redisOpts, async (t) => {
  const masters = await servers(t, 3)
  const { locks } = await lockService(t, { REDLOCK_URLS: masters.map((m) => m.url).join(','), REDIS_COMMAND_TIMEOUT_MS: '10000' })
  masters[0]!.pause()
  t.teardown(() => masters[0]!.resume())
  const started = Date.now()
  let acquiredAfter = -1
  t.equal(await locks.using('lock:frozen', 5000, async () => {
    acquiredAfter = Date.now() - started
    return 'ok'
  }), 'ok')
  const total = Date.now() - started
  // Seconds apart from the command timeout, so that a busy machine cannot blur the two.
  t.ok(acquiredAfter >= 0 && acquiredAfter < 5000, `acquired in ${acquiredAfter} ms with a 10000 ms command timeout`)
  t.ok(total < 5000, `and released in ${total} ms in all`)
  t.equal(await masters[1]!.command('EXISTS', 'lock:frozen'), '0', 'released on the live masters')
})

t.test('a SIGKILLed holder process: its lock frees at its TTL', redisOpts, async (t) => {
  const [redis] = await servers(t, 1)
  const locksUrl = pathToFileURL(path.resolve('src/engines/locks/locks.ts')).href
  const code = `
    import { Redis } from 'ioredis'
    import { Locks } from ${JSON.stringify(locksUrl)}
    const client = new Redis(process.env.LOCK_URL, { enableOfflineQueue: false })
    client.on('error', () => {})
    await new Promise((resolve) => client.once('ready', resolve))
    const quiet = { info () {}, warn () {}, debug () {} }
    const locks = new Locks({ masters: [{ client, name: 'm', onError () {} }], followsMainRedis: false, mainAvailable: () => true, waitMs: 0, retryDelayMs: 50, keyPrefix: '', log: quiet })
    setInterval(() => {}, 1000)
    await locks.using('lock:portfolio:victim', 1500, async () => {
      process.stdout.write('LOCKED\\n')
      await new Promise(() => {})
    })`
  const child: ChildProcess = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', code], {
    cwd: process.cwd(),
    env: { ...process.env, LOCK_URL: redis!.url },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  t.teardown(() => { if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL') })
  let out = ''
  child.stdout?.on('data', (d: Buffer) => { out += d.toString() })
  child.stderr?.on('data', (d: Buffer) => { out += d.toString() })
  await waitFor(() => out.includes('LOCKED'), 15_000, 25).catch(() => { throw new Error(`the holder never locked: ${out}`) })

  const { locks } = await lockService(t, { REDIS_URL: redis!.url })
  await sleep(700) // at least one automatic extension in the child
  const owner = await redis!.command('GET', 'lock:portfolio:victim')
  t.match(owner, new RegExp(`:${child.pid}:`), 'the owner token names the holder process')
  t.equal(await locks.claim('lock:portfolio:victim', 1000), null, 'held while the holder lives')

  child.kill('SIGKILL')
  const killedAt = Date.now()
  await new Promise((resolve) => child.once('exit', resolve))
  const remaining = Number(await redis!.command('PTTL', 'lock:portfolio:victim'))
  t.ok(remaining > 0 && remaining <= 1500, `the dead holder's lock still has its TTL (${remaining} ms)`)
  let lease: Lease | null = null
  await waitFor(async () => (lease = await locks.claim('lock:portfolio:victim', 1000)) !== null, 4000, 25)
  const freedAfter = Date.now() - killedAt
  t.ok(freedAfter >= remaining - 100, `not freed before its TTL (after ${freedAfter} ms, TTL left ${remaining} ms)`)
  t.ok(freedAfter <= 1500 + 400, `freed at its TTL (after ${freedAfter} ms)`)
  await (lease as Lease | null)?.release()
})

t.test('auto-extension keeps the lock alive past its first TTL while fn runs', redisOpts, async (t) => {
  const [redis] = await servers(t, 1)
  const a = await lockService(t, { REDIS_URL: redis!.url })
  const b = await lockService(t, { REDIS_URL: redis!.url, LOCK_WAIT_MS: '200' })
  let aborted = false
  await a.locks.using('lock:long', 400, async (signal) => {
    signal.addEventListener('abort', () => { aborted = true })
    await sleep(900)
    const token = await redis!.command('GET', 'lock:long')
    t.match(token, /^[^:]+:\d+:/, 'still held at 900 ms with a 400 ms TTL')
    const pttl = Number(await redis!.command('PTTL', 'lock:long'))
    t.ok(pttl > 0 && pttl <= 400, `with a fresh TTL (${pttl} ms)`)
    const err = await b.locks.using('lock:long', 400, async () => 'never').catch((e: unknown) => e)
    t.ok(err instanceof LockBusyError, 'another instance still cannot take it')
    await sleep(300)
  })
  t.notOk(aborted, 'the signal never fired')
  t.ok(a.locks.stats().extensions >= 3, `extended ${a.locks.stats().extensions} times`)
  t.equal(await redis!.command('EXISTS', 'lock:long'), '0', 'released after fn')
})

t.test('the signal aborts when the lock is taken over, and the release leaves the new owner alone', redisOpts, async (t) => {
  const [redis] = await servers(t, 1)
  const { locks } = await lockService(t, { REDIS_URL: redis!.url })
  let reason: unknown = null
  let abortedAfter = -1
  await locks.using('lock:stolen', 600, async (signal) => {
    const started = Date.now()
    await redis!.command('SET', 'lock:stolen', 'thief', 'PX', '10000')
    await new Promise<void>((resolve) => {
      signal.addEventListener('abort', () => { abortedAfter = Date.now() - started; reason = signal.reason; resolve() })
      setTimeout(resolve, 2000)
    })
  })
  t.ok(abortedAfter >= 0 && abortedAfter <= 600, `aborted ${abortedAfter} ms after the take-over, within the TTL`)
  t.ok(isLockError(reason))
  t.ok(reason instanceof LockLostError)
  t.match(reason, { why: 'taken over', message: /lost/ })
  t.equal(await redis!.command('GET', 'lock:stolen'), 'thief', "the thief's key survives our release")
  t.equal(locks.stats().lost, 1)
})

t.test('the signal aborts at the end of the validity when the masters cannot extend it', redisOpts, async (t) => {
  const masters = await servers(t, 1)
  const { locks } = await lockService(t, { REDLOCK_URLS: masters[0]!.url })
  let abortedAfter = -1
  await locks.using('lock:orphan', 400, async (signal) => {
    const started = Date.now()
    await masters[0]!.kill()
    await new Promise<void>((resolve) => {
      signal.addEventListener('abort', () => { abortedAfter = Date.now() - started; resolve() })
      setTimeout(resolve, 2000)
    })
  })
  t.ok(abortedAfter >= 350 && abortedAfter <= 700, `aborted after ${abortedAfter} ms (TTL 400 ms)`)
})

t.test('LOCK_WAIT_MS bounds the wait: then a 409, fn never called', redisOpts, async (t) => {
  const [redis] = await servers(t, 1)
  const holder = await lockService(t, { REDIS_URL: redis!.url })
  const waiter = await lockService(t, { REDIS_URL: redis!.url, LOCK_WAIT_MS: '300' })
  let release!: () => void
  const holding = holder.locks.using('lock:portfolio:9', 10_000, async () => new Promise<void>((resolve) => { release = resolve }))
  await waitFor(async () => (await redis!.command('EXISTS', 'lock:portfolio:9')) === '1', 2000)
  let called = false
  const started = Date.now()
  const err = await waiter.locks.using('lock:portfolio:9', 10_000, async () => { called = true }).catch((e: unknown) => e)
  const waited = Date.now() - started
  t.ok(err instanceof LockBusyError)
  t.match(fromEngineError(err), { statusCode: 409, code: 'AIC_CONFLICT', headers: { 'retry-after': '1' } })
  t.notOk(called)
  t.ok(waited >= 290 && waited < 800, `gave up after ${waited} ms (bound 300 ms)`)
  t.match(waiter.locks.stats(), { timeouts: 1, contentions: 1, failures: 1, acquisitions: 0 })
  release()
  await holding
  // A waiter that is let in before its bound gets the lock.
  const slow = holder.locks.using('lock:portfolio:9', 10_000, async () => sleep(100))
  await sleep(20)
  t.equal(await waiter.locks.using('lock:portfolio:9', 10_000, async () => 'in'), 'in', 'served once the holder releases')
  await slow
  t.equal(waiter.locks.stats().contentions, 2)
})

t.test('the database and key prefix of the configuration are used (the library put locks in db 0)', redisOpts, async (t) => {
  const [redis] = await servers(t, 1)
  const { locks } = await lockService(t, { REDIS_URL: `${redis!.url}/3`, REDIS_KEY_PREFIX: 'aic:' })
  await locks.using('lock:portfolio:db', 5000, async () => {
    t.match(await redis!.command('-n', '3', 'GET', 'aic:lock:portfolio:db'), /^[^:]+:\d+:/, 'in db 3 under the prefix')
    t.equal(await redis!.command('-n', '0', 'DBSIZE'), '0', 'nothing in db 0')
    const listing = await locks.list()
    t.same(listing.locks.map((l) => [l.resource, l.source, l.masters]), [['lock:portfolio:db', 'redis', 1]], 'listed without the prefix')
  })
  t.equal(await redis!.command('-n', '3', 'EXISTS', 'aic:lock:portfolio:db'), '0')
})

t.test('many concurrent holders on three masters: writes are batched, exclusion holds, nothing is left behind', redisOpts, async (t) => {
  const masters = await servers(t, 3)
  const env = { REDLOCK_URLS: masters.map((m) => m.url).join(','), LOCK_WAIT_MS: '10000', LOCK_RETRY_DELAY_MS: '5' }
  const a = await lockService(t, env)
  const b = await lockService(t, env)
  let pipelines = 0
  for (const state of [...a.owned, ...b.owned]) {
    const client = state.client!
    const original = client.pipeline.bind(client)
    client.pipeline = ((...args: Parameters<typeof original>) => { pipelines++; return original(...args) }) as typeof client.pipeline
  }
  const inside = new Map<string, number>()
  let overlaps = 0
  const work = (resource: string) => async (): Promise<void> => {
    const n = (inside.get(resource) ?? 0) + 1
    inside.set(resource, n)
    if (n > 1) overlaps++
    await sleep(2)
    inside.set(resource, (inside.get(resource) ?? 1) - 1)
  }
  await Promise.all(Array.from({ length: 60 }, async (_, i) => {
    const resource = `lock:portfolio:${i % 5}`
    await (i % 2 === 0 ? a : b).locks.using(resource, 5000, work(resource))
  }))
  t.equal(overlaps, 0, 'never two holders of one resource, across two instances')
  t.ok(pipelines > 0, `commands of one event-loop turn went out together (${pipelines} pipelines)`)
  for (const master of masters) t.equal(await master.command('DBSIZE'), '0', 'every lock released on every master')
  t.equal(a.locks.stats().acquisitions + b.locks.stats().acquisitions, 60)
})

t.test('a holder whose event loop stalled past the validity finds its signal aborted, even if nobody took the lock', redisOpts, async (t) => {
  const [redis] = await servers(t, 1)
  const { locks } = await lockService(t, { REDIS_URL: redis!.url })
  let abortedAfterStall = false
  let reason: unknown = null
  await locks.using('lock:stalled', 300, async (signal) => {
    const until = Date.now() + 500
    while (Date.now() < until) { /* a GC pause, a CPU-bound loop */ }
    await sleep(5) // the first turn after the stall: the timers run
    abortedAfterStall = signal.aborted
    reason = signal.reason
  })
  t.ok(abortedAfterStall, 'aborted right after the stall')
  t.ok(reason instanceof LockLostError)
  t.match(reason, { why: 'expired', message: /lost/ })
  t.equal(locks.stats().lost, 1)
})
