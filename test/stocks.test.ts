/**
 * GET /api/stocks/:ticker and GET /api/stocks?tickers=… end to end: real redis-server
 * processes (killed and restarted here) and a local HTTP server playing Finnhub that counts
 * its calls.
 */
import { spawn } from 'node:child_process'
import t from 'tap'
import type { FastifyInstance } from 'fastify'
import { build, sleep, waitFor, type TapTest } from './helper.js'
import { skipUnlessRedis, startRedis, type RedisProcess } from './helpers/redis-server.js'
import { startFakeFinnhub, type FakeFinnhub } from './quotes-fake-finnhub.js'

const redisOpts = skipUnlessRedis()

interface QuoteBody {
  ticker: string
  price: number
  change: number
  changePercent: number
  open: number
  high: number
  low: number
  previousClose: number
  timestamp: string
  source: string
}

function env (fake: FakeFinnhub, redis: RedisProcess | null, extra: Record<string, string> = {}): Record<string, string> {
  return {
    QUOTE_PROVIDER: 'finnhub',
    FINNHUB_API_KEY: 'test-key',
    FINNHUB_BASE_URL: fake.url,
    FINNHUB_RETRIES: '0',
    DATABASE_PATH: ':memory:',
    RATE_LIMIT_MAX: '1000000',
    LOG_LEVEL: 'warn',
    // The jobs' own lock commands (quotes-prewarm every 15 s) would blur the command counts here.
    SCHEDULER_ENABLED: 'false',
    // Redis is never made slow on purpose here: a 5 s command timeout keeps a loaded machine's
    // slow reply from counting as an outage, which sends each instance to the provider on its own
    // (two calls where single flight allows one; seen at load 20-25 with the 500 ms default).
    REDIS_COMMAND_TIMEOUT_MS: '5000',
    // Likewise the boot's wait for the connection: past the 2 s default an instance starts in
    // fallback and loads on its own.
    REDIS_CONNECT_TIMEOUT_MS: '10000',
    ...(redis ? { REDIS_URL: redis.url } : {}),
    ...extra,
  }
}

async function fakeFinnhub (t: TapTest, delayMs = 0): Promise<FakeFinnhub> {
  const fake = await startFakeFinnhub({ delayMs })
  t.teardown(() => fake.close())
  return fake
}

async function privateRedis (t: TapTest): Promise<RedisProcess> {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  return redis
}

async function quote (app: FastifyInstance, ticker: string) {
  const res = await app.inject({ method: 'GET', url: `/api/stocks/${ticker}` })
  return { status: res.statusCode, cache: res.headers['x-cache'], age: res.headers.age, body: res.json<QuoteBody & { message?: string }>() }
}

/** Every key in the private Redis (SCAN, never KEYS). */
async function allKeys (redis: RedisProcess): Promise<string[]> {
  const out = await redis.command('--scan')
  return out.split('\n').filter((k) => k.trim() !== '')
}

t.test('a quote: shape, headers, and the guide\'s key stock:<TICKER> with its 20 s TTL', redisOpts, async (t) => {
  const redis = await privateRedis(t)
  const fake = await fakeFinnhub(t)
  const { app } = await build(t, env(fake, redis))
  // Its first subscription makes an instance distrust what L1 held before it: subscribed first,
  // so that the hits below are L1's however slowly the machine connects.
  await waitFor(() => app.cache.stats().invalidation.subscribed, 10_000)

  const first = await quote(app, 'aapl')
  t.equal(first.status, 200)
  t.equal(first.cache, 'MISS')
  t.equal(first.age, '0')
  t.same(first.body, {
    ticker: 'AAPL', price: 101, change: 2, changePercent: (2 / 99) * 100, open: 99.5, high: 102, low: 98,
    previousClose: 99, timestamp: new Date(1_700_000_001_000).toISOString(), source: 'finnhub',
  }, 'the ticker is normalised to upper case and the answer is Finnhub\'s')

  // The value key lives the guide's 20 s; the grace copy (300 s more) sits beside it, in its slot.
  const pttl = Number(await redis.command('PTTL', 'stock:AAPL'))
  t.ok(pttl > 0 && pttl <= 20_000, `PTTL of stock:AAPL is in (0, 20000] (got ${pttl})`)
  const grace = Number(await redis.command('PTTL', 'stale:{stock:AAPL}'))
  t.ok(grace > 300_000 && grace <= 320_000, `PTTL of its grace copy stale:{stock:AAPL} is in (300000, 320000] (got ${grace})`)
  const stored = JSON.parse(await redis.command('GET', 'stock:AAPL')) as { v: QuoteBody, t: number, ttl: number }
  t.same(stored.v, first.body, 'redis-cli GET stock:AAPL shows the quote')
  t.equal(stored.ttl, 20_000)

  const second = await quote(app, 'AAPL')
  t.equal(second.status, 200)
  t.equal(second.cache, 'HIT')
  t.same(second.body, first.body)
  t.equal(fake.calls, 1, 'the HIT did not call the provider')
  // The hot path answers L1 hits synchronously with the quote serialised once: same bytes,
  // same type, each hit counted once.
  const third = await app.inject({ method: 'GET', url: '/api/stocks/AAPL' })
  t.equal(third.headers['x-cache'], 'HIT')
  t.equal(third.headers['content-type'], 'application/json; charset=utf-8')
  t.equal(third.payload, JSON.stringify(first.body), 'the schema\'s serialisation, byte for byte')
  t.equal(app.cache.stats().caches.quotes?.hitsL1, 2, 'two L1 hits, each counted once')
  const entry = app.cache.peek('stock:AAPL')
  t.ok(entry !== undefined, 'a quote fresh in L1 is there for the synchronous hook')
  t.equal(entry?.payload, third.payload, 'with its serialized answer kept on the entry')
  t.equal(app.cache.peek('stock:NVDA'), undefined, 'anything else goes through the handler')
  t.equal((await app.quotes.get('NVDA')).ticker, 'NVDA')
  t.equal(fake.seen[0]?.token, 'test-key', 'the API key goes in the X-Finnhub-Token header')
  t.notMatch(fake.seen[0]?.url ?? '', /test-key/, 'and never in the URL')
})

t.test('after expiry the next request refreshes the quote', redisOpts, async (t) => {
  const redis = await privateRedis(t)
  const fake = await fakeFinnhub(t)
  // A 3 s TTL: the hit right after the miss holds unless the machine stalls for seconds.
  const { app } = await build(t, env(fake, redis, { QUOTE_TTL_SECONDS: '3' }))

  t.equal((await quote(app, 'MSFT')).cache, 'MISS')
  const hit = await quote(app, 'MSFT')
  t.equal(hit.cache, 'HIT')
  t.equal(hit.body.price, 101)
  await waitFor(async () => (await redis.command('EXISTS', 'stock:MSFT')) === '0', 10_000)
  t.pass('L2 expired the value key (its grace copy lives on)')
  const fresh = await quote(app, 'MSFT')
  t.equal(fresh.cache, 'MISS', 'the L1 copy expired with the L2 one')
  t.equal(fresh.body.price, 102, 'a new quote from the provider')
  t.equal(fake.callsFor('MSFT'), 2)
})

t.test('100 concurrent requests for a cold ticker make exactly one upstream call', redisOpts, async (t) => {
  const redis = await privateRedis(t)
  const fake = await fakeFinnhub(t, 200)
  const { app } = await build(t, env(fake, redis))

  const answers = await Promise.all(Array.from({ length: 100 }, () => quote(app, 'NVDA')))
  t.equal(fake.calls, 1, 'one call to the provider')
  t.ok(answers.every((a) => a.status === 200 && a.body.price === 101), 'everyone got the same quote')
  t.ok(answers.every((a) => a.cache === 'MISS'), 'all of them waited for that one load')
})

t.test('two instances on one Redis × 50 concurrent requests each: still one upstream call', redisOpts, async (t) => {
  const redis = await privateRedis(t)
  const fake = await fakeFinnhub(t, 200)
  const a = await build(t, env(fake, redis))
  const b = await build(t, env(fake, redis))
  await waitFor(() => a.app.redisState.available && b.app.redisState.available, 10_000)

  const answers = await Promise.all([
    ...Array.from({ length: 50 }, () => quote(a.app, 'TSLA')),
    ...Array.from({ length: 50 }, () => quote(b.app, 'TSLA')),
  ])
  t.equal(fake.calls, 1, 'one call to the provider across both instances')
  t.ok(answers.every((x) => x.status === 200 && x.body.price === 101), 'all 100 got the quote')
  t.equal(await redis.command('EXISTS', 'lock:fill:stock:TSLA'), '0', 'the fill lock was released')
})

t.test('upstream failing after expiry: the stale quote, marked STALE', redisOpts, async (t) => {
  const redis = await privateRedis(t)
  const fake = await fakeFinnhub(t)
  // Failures not remembered here, so that the recovery shows on the next request (see below for CACHE_FAILURE_TTL_MS).
  const { app } = await build(t, env(fake, redis, { QUOTE_TTL_SECONDS: '1', QUOTE_GRACE_SECONDS: '60', CACHE_FAILURE_TTL_MS: '0' }))

  const fresh = await quote(app, 'AMD')
  t.equal(fresh.cache, 'MISS')
  // Past its 1 s TTL the value key is gone: nobody reading stock:AMD sees an old quote there.
  await waitFor(async () => (await redis.command('EXISTS', 'stock:AMD')) === '0', 10_000)
  fake.mode = 'fail'
  const stale = await quote(app, 'AMD')
  t.equal(stale.status, 200)
  t.equal(stale.cache, 'STALE')
  t.same(stale.body, fresh.body, 'the last good quote, not an invented one')
  t.ok(Number(stale.age) >= 1, `Age says how old it is (${String(stale.age)} s)`)
  t.equal(await redis.command('GET', 'stock:AMD'), '', 'while STALE is answered, GET stock:AMD still finds nothing')

  // A second instance has nothing in L1: it finds the grace copy in L2.
  const other = await build(t, env(fake, redis, { QUOTE_TTL_SECONDS: '1', QUOTE_GRACE_SECONDS: '60' }))
  const fromL2 = await quote(other.app, 'AMD')
  t.equal(fromL2.cache, 'STALE')
  t.same(fromL2.body, fresh.body)
  const graceTtl = Number(await redis.command('PTTL', 'stale:{stock:AMD}'))
  t.ok(graceTtl > 0 && graceTtl <= 61_000, `the grace copy lives ttl + grace (PTTL ${graceTtl})`)
  t.notMatch(String(await redis.command('GET', 'stock:AMD')), /^\{/, 'and no value is back at stock:AMD')

  fake.mode = 'ok'
  const recovered = await quote(app, 'AMD')
  t.equal(recovered.cache, 'MISS')
  t.ok(recovered.body.price > fresh.body.price, 'once the provider answers, fresh quotes again')
})

t.test('a slow provider after expiry: the stale quote after the soft timeout', redisOpts, async (t) => {
  const redis = await privateRedis(t)
  const fake = await fakeFinnhub(t)
  // A 3 s TTL, so that the refreshed quote is still fresh when it is read back below.
  const { app } = await build(t, env(fake, redis, { QUOTE_TTL_SECONDS: '3', QUOTE_SOFT_TIMEOUT_MS: '150', FINNHUB_TIMEOUT_MS: '10000' }))

  const fresh = await quote(app, 'INTC')
  await sleep(3100)
  // The provider takes 3 s: the stale answer must come while its call is still open (an
  // order, not a time), seconds before it could have come from the provider.
  fake.delayMs = 3000
  const started = performance.now()
  const stale = await quote(app, 'INTC')
  const ms = performance.now() - started
  const providerStillAnswering = fake.inFlight
  fake.delayMs = 0
  t.equal(stale.cache, 'STALE')
  t.same(stale.body, fresh.body)
  t.equal(providerStillAnswering, 1, `answered before the provider did (${ms.toFixed(0)} ms; the provider takes 3000 ms)`)
  // The load went on and refreshed the cache.
  await waitFor(async () => (await quote(app, 'INTC')).cache === 'HIT', 15_000)
  t.equal((await quote(app, 'INTC')).body.price, 102)
})

t.test('upstream failing with nothing cached: 503 (or 504 on a timeout), never 500, never a price', redisOpts, async (t) => {
  const redis = await privateRedis(t)
  const fake = await fakeFinnhub(t)
  const { app } = await build(t, env(fake, redis, { FINNHUB_TIMEOUT_MS: '200', FINNHUB_BREAKER_THRESHOLD: '100', CACHE_FAILURE_TTL_MS: '0' }))

  fake.mode = 'fail'
  const failed = await app.inject('/api/stocks/ORCL')
  t.equal(failed.statusCode, 503)
  t.same(failed.json(), { statusCode: 503, error: 'Service Unavailable', message: 'The quote provider failed (HTTP 500)' })
  t.notOk('price' in failed.json(), 'no price in the answer')

  fake.mode = 'hang'
  const timedOut = await app.inject('/api/stocks/IBM')
  t.equal(timedOut.statusCode, 504)
  t.match(timedOut.json<{ message: string }>().message, /did not answer within 200 ms/)

  fake.mode = 'garbage'
  const garbage = await app.inject('/api/stocks/SAP')
  t.equal(garbage.statusCode, 502, garbage.payload)

  t.same(await allKeys(redis).then((keys) => keys.filter((k) => /stock:/.test(k))), [], 'errors are never cached')

  fake.mode = 'ok'
  const ok = await quote(app, 'ORCL')
  t.equal(ok.status, 200, 'the next request asks the provider again')
  t.equal(ok.cache, 'MISS')
})

t.test('a failing provider is asked once per CACHE_FAILURE_TTL_MS across instances, not once per request', redisOpts, async (t) => {
  const redis = await privateRedis(t)
  const fake = await fakeFinnhub(t)
  const extra = { FINNHUB_BREAKER_THRESHOLD: '100', CACHE_FAILURE_TTL_MS: '30000' }
  const a = await build(t, env(fake, redis, extra))
  const b = await build(t, env(fake, redis, extra))
  fake.mode = 'fail'
  const answers = [await a.app.inject('/api/stocks/CSCO'), await a.app.inject('/api/stocks/CSCO'), await b.app.inject('/api/stocks/CSCO'), await b.app.inject('/api/stocks/CSCO')]
  t.same(answers.map((r) => r.statusCode), [503, 503, 503, 503], 'the same answer on both instances')
  t.same(answers[2]?.json(), { statusCode: 503, error: 'Service Unavailable', message: 'The quote provider failed (HTTP 500)' }, 'rebuilt from what A recorded')
  t.equal(fake.calls, 1, 'one provider call for four requests on two instances')
  t.match(await redis.command('GET', 'stock:CSCO'), /^~fail:/, 'no value was cached: the key holds the recorded failure')
})

t.test('an unknown symbol (Finnhub\'s all zeros) is a 404, and is not cached', redisOpts, async (t) => {
  const redis = await privateRedis(t)
  const fake = await fakeFinnhub(t)
  const { app } = await build(t, env(fake, redis))
  fake.mode = 'zero'
  const res = await app.inject('/api/stocks/NOPE')
  t.equal(res.statusCode, 404)
  t.same(res.json(), { statusCode: 404, error: 'Not Found', message: 'Unknown ticker: NOPE' })
  t.equal((await app.inject('/api/stocks/NOPE')).statusCode, 404)
  t.equal(fake.calls, 2, 'each request asked again: a 404 is not cached')
  t.equal(await redis.command('EXISTS', 'stock:NOPE'), '0')
})

t.test('Redis killed: quotes come from L1 and the provider without waiting; after the restart L2 is used again', redisOpts, async (t) => {
  const redis = await privateRedis(t)
  const fake = await fakeFinnhub(t)
  // Long command and connect timeouts, so that a request waiting on Redis would stand out
  // by seconds.
  const { app } = await build(t, env(fake, redis, { REDIS_COMMAND_TIMEOUT_MS: '10000', REDIS_CONNECT_TIMEOUT_MS: '10000' }))

  t.equal((await quote(app, 'AAPL')).cache, 'MISS')
  t.equal(await redis.command('EXISTS', 'stock:AAPL'), '1')
  await redis.kill('SIGKILL')

  const timings: number[] = []
  const statuses: string[] = []
  for (const ticker of ['AAPL', 'MSFT', 'AAPL', 'GOOG', 'MSFT', 'AAPL']) {
    const started = performance.now()
    const r = await quote(app, ticker)
    timings.push(performance.now() - started)
    statuses.push(`${ticker}:${r.status}:${String(r.cache)}`)
  }
  t.same(statuses, ['AAPL:200:HIT', 'MSFT:200:MISS', 'AAPL:200:HIT', 'GOOG:200:MISS', 'MSFT:200:HIT', 'AAPL:200:HIT'],
    'hits from L1, misses from the provider')
  t.ok(Math.max(...timings) < 5000, `no request waited on Redis (slowest ${Math.max(...timings).toFixed(1)} ms; command timeout 10000 ms, connect timeout 10000 ms)`)
  const health = await app.inject('/api/health')
  t.equal(health.json<{ redis: { mode: string } }>().redis.mode, 'fallback')

  await redis.restart()
  await waitFor(async () => app.redisState.available && app.cache.stats().invalidation.subscribed, 15_000)
  const afterNew = await quote(app, 'AMZN')
  t.equal(afterNew.cache, 'MISS')
  t.equal(await redis.command('EXISTS', 'stock:AMZN'), '1', 'new quotes are written to L2 again')
  const afterOld = await quote(app, 'AAPL')
  t.equal(afterOld.status, 200)
  t.equal(await redis.command('EXISTS', 'stock:AAPL'), '1', 'an L1 copy from before the outage was checked against L2 and rewritten')
  t.equal((await quote(app, 'AAPL')).cache, 'HIT')
})

t.test('an invalidation on instance A removes the L1 copy on instance B', redisOpts, async (t) => {
  const redis = await privateRedis(t)
  const fake = await fakeFinnhub(t)
  const a = await build(t, env(fake, redis))
  const b = await build(t, env(fake, redis))
  await waitFor(() => a.app.cache.stats().invalidation.subscribed && b.app.cache.stats().invalidation.subscribed, 10_000)

  await quote(a.app, 'META')
  t.equal((await quote(b.app, 'META')).cache, 'HIT', 'B copied the quote from L2 into its L1')
  t.equal((await quote(b.app, 'META')).cache, 'HIT')
  t.equal(b.app.cache.stats().l1.entries, 1)

  await a.app.cache.invalidate('stock:META')
  // The copy would otherwise live for its whole TTL (a minute): a deadline of seconds still
  // tells the message from the expiry. The time it took is in the message.
  const elapsed = await waitFor(() => b.app.cache.stats().l1.entries === 0, 5000, 2)
  t.ok(elapsed <= 5000, `B dropped its copy on the message (${elapsed} ms)`)
  t.equal(await redis.command('EXISTS', 'stock:META'), '0', 'and L2 has no copy either')
  const next = await quote(b.app, 'META')
  t.equal(next.cache, 'MISS')
  t.equal(next.body.price, 102, 'B asked the provider again')
})

const MALFORMED = ['AAPL*', 'A:B:C', '1X:AAPL', ':AAPL', 'TASE:', 'ABCDEFGHIJK:X', '%7Ba%7D', 'AAPL%0D%0ASET', 'ABCDEFGHIJK', '%C3%84PPL', 'AAPL%20', '..%2F..%2Fetc', '%00', '']

t.test('malformed tickers are a 400 before any Redis or provider call', redisOpts, async (t) => {
  const redis = await privateRedis(t)
  const fake = await fakeFinnhub(t)
  const { app } = await build(t, env(fake, redis))
  await redis.command('CONFIG', 'RESETSTAT')
  const before = await allKeys(redis)

  for (const ticker of MALFORMED) {
    const res = await app.inject({ method: 'GET', url: `/api/stocks/${ticker}` })
    t.equal(res.statusCode, 400, `/api/stocks/${ticker} → 400`)
    t.equal(res.json<{ error: string }>().error, 'Bad Request')
  }
  for (const list of ['AAPL,AAPL*', 'A:B:C', 'AAPL,,MSFT', 'AAPL%0D%0A', `${Array.from({ length: 51 }, (_v, i) => `T${i}`).join(',')}`, '']) {
    const res = await app.inject({ method: 'GET', url: `/api/stocks?tickers=${list}` })
    t.equal(res.statusCode, 400, `/api/stocks?tickers=${list.slice(0, 40)} → 400`)
  }
  t.equal((await app.inject('/api/stocks')).statusCode, 400, 'tickers is required')

  t.equal(fake.calls, 0, 'the provider was never called')
  const after = await allKeys(redis)
  t.same(after.filter((k) => !k.startsWith('rate_limit:')), before.filter((k) => !k.startsWith('rate_limit:')),
    'no key was created (SCAN; the rate limiter\'s counters aside)')
  const stats = await redis.command('INFO', 'commandstats')
  t.notMatch(stats, /cmdstat_(get|mget|set|publish):/, 'not one GET, MGET, SET or PUBLISH reached Redis')
})

/** The commands Redis receives while `during` runs, from MONITOR. */
async function monitor (redis: RedisProcess, during: () => Promise<void>): Promise<string[]> {
  const child = spawn('redis-cli', ['-p', String(redis.port), 'MONITOR'], { stdio: ['ignore', 'pipe', 'ignore'] })
  let out = ''
  child.stdout.on('data', (d: Buffer) => { out += d.toString('utf8') })
  await waitFor(() => out.includes('OK'), 10_000)
  // A marker sent after `during`: once MONITOR has printed it, it has printed everything before.
  const marker = `monitor-end-${process.pid}-${Date.now()}`
  try {
    await during()
    await redis.command('ECHO', marker)
    await waitFor(() => out.includes(marker), 10_000)
  } finally {
    child.kill('SIGKILL')
  }
  return out.split('\n').filter((l) => /^\d+\.\d+ \[/.test(l) && !l.includes(marker))
}

t.test('a batch of cached and uncached tickers: one Redis round trip for the cached part', redisOpts, async (t) => {
  const redis = await privateRedis(t)
  const fake = await fakeFinnhub(t)
  const a = await build(t, env(fake, redis))
  const b = await build(t, env(fake, redis))
  await quote(a.app, 'AAPL')
  await quote(a.app, 'MSFT')
  t.equal(fake.calls, 2)

  let res: Awaited<ReturnType<FastifyInstance['inject']>> | undefined
  const commands = await monitor(redis, async () => {
    res = await b.app.inject('/api/stocks?tickers=AAPL,msft,GOOG,NVDA,AAPL')
  })
  t.equal(res?.statusCode, 200)
  const body = res?.json<{ quotes: Array<QuoteBody & { cache: string }>, errors: unknown[] }>()
  t.same(body?.quotes.map((q) => `${q.ticker}:${q.cache}`), ['AAPL:HIT', 'MSFT:HIT', 'GOOG:MISS', 'NVDA:MISS'], 'in order, duplicates answered once')
  t.same(body?.errors, [])
  t.equal(res?.headers['x-cache'], 'MISS')
  t.equal(fake.calls, 4, 'the provider only for the two misses')

  // The cache reads with a one-key script (each value with its PTTL), one per ticker in one
  // pipeline: count the commands the client sent, not those the scripts ran ("[0 lua]").
  const sent = commands.filter((l) => !/ lua\]/.test(l))
  const reads = sent.filter((l) => /"eval(sha)?"/i.test(l) && /"1" "stock:(AAPL|MSFT|GOOG|NVDA)"$/i.test(l))
  t.equal(reads.length, 4, 'one read per ticker, all four pipelined')
  const cachedTouched = sent.filter((l) => !reads.includes(l) && /stock:(AAPL|MSFT)"/.test(l))
  t.same(cachedTouched, [], 'no other command touched the cached tickers')

  // All cached: one read and nothing else for the quotes.
  const c = await build(t, env(fake, redis))
  const only = await monitor(redis, async () => {
    const all = await c.app.inject('/api/stocks?tickers=AAPL,MSFT,GOOG,NVDA')
    t.equal(all.headers['x-cache'], 'HIT')
  })
  const quoteCommands = only.filter((l) => !/ lua\]/.test(l) && /stock:/.test(l))
  t.equal(quoteCommands.length, 4, 'a fully cached batch is one read per ticker, in one round trip')
  t.match(quoteCommands[0] ?? '', /"eval(sha)?"/i)
  t.equal(fake.calls, 4)
})

t.test('a batch answers what it can: per-ticker errors beside the quotes', redisOpts, async (t) => {
  const redis = await privateRedis(t)
  const fake = await fakeFinnhub(t)
  const { app } = await build(t, env(fake, redis))
  fake.modes.set('ZZZZ', 'zero')
  fake.modes.set('BAD', 'fail')
  const res = await app.inject('/api/stocks?tickers=AAPL,ZZZZ,BAD')
  t.equal(res.statusCode, 200)
  const body = res.json<{ quotes: QuoteBody[], errors: Array<{ ticker: string, statusCode: number, message: string }> }>()
  t.same(body.quotes.map((q) => q.ticker), ['AAPL'])
  t.same(body.errors, [
    { ticker: 'ZZZZ', statusCode: 404, message: 'Unknown ticker: ZZZZ' },
    { ticker: 'BAD', statusCode: 503, message: 'The quote provider failed (HTTP 500)' },
  ])
})

t.test('without Redis configured the quotes work from L1 and the provider', async (t) => {
  const fake = await fakeFinnhub(t)
  const { app } = await build(t, env(fake, null))
  t.equal((await quote(app, 'AAPL')).cache, 'MISS')
  t.equal((await quote(app, 'AAPL')).cache, 'HIT')
  const batch = await app.inject('/api/stocks?tickers=AAPL,MSFT')
  t.same(batch.json<{ quotes: Array<{ cache: string }> }>().quotes.map((q) => q.cache), ['HIT', 'MISS'])
  t.equal(fake.calls, 2)
})

t.test('the cache settings reach the service: QUOTE_BATCH_CONCURRENCY bounds upstream calls in flight, CACHE_L1_MAX_ENTRIES bounds L1', async (t) => {
  const fake = await fakeFinnhub(t, 50)
  const { app } = await build(t, env(fake, null, { QUOTE_BATCH_CONCURRENCY: '2', CACHE_L1_MAX_ENTRIES: '5' }))
  const tickers = Array.from({ length: 12 }, (_v, i) => `T${i}`)
  const res = await app.inject(`/api/stocks?tickers=${tickers.join(',')}`)
  t.equal(res.statusCode, 200)
  t.equal(res.json<{ quotes: QuoteBody[] }>().quotes.length, 12)
  t.equal(fake.calls, 12)
  t.equal(fake.maxInFlight, 2, 'two upstream calls at a time')
  t.equal(app.cache.stats().l1.entries, 5, 'L1 kept five quotes')
})

t.test('CACHE_L1_ENABLED=false: no L1 (without Redis, then, every request asks the provider)', async (t) => {
  const fake = await fakeFinnhub(t)
  const { app } = await build(t, env(fake, null, { CACHE_L1_ENABLED: 'false' }))
  t.equal((await quote(app, 'AAPL')).cache, 'MISS')
  t.equal((await quote(app, 'AAPL')).cache, 'MISS')
  t.equal(fake.calls, 2)
  t.equal(app.cache.stats().l1.enabled, false)
})

t.test('a batch of 50 distinct tickers is answered, with X-Cache and Age (the oldest quote\'s) for the whole', async (t) => {
  const { app } = await build(t, { DATABASE_PATH: ':memory:', LOG_LEVEL: 'warn' })
  const url = `/api/stocks?tickers=${Array.from({ length: 50 }, (_v, i) => `B${i}`).join(',')}`
  const started = Date.now()
  const first = await app.inject(url)
  t.equal(first.statusCode, 200)
  t.equal(first.json<{ quotes: QuoteBody[] }>().quotes.length, 50)
  t.equal(first.headers['x-cache'], 'MISS')
  t.equal(first.headers.age, '0')
  await sleep(1100)
  const second = await app.inject(url)
  const age = Number(second.headers.age)
  t.equal(second.headers['x-cache'], 'HIT')
  t.ok(age >= 1 && age <= Math.ceil((Date.now() - started) / 1000), `Age ${age} s: the quotes' age, in whole seconds`)
})

t.test('the default simulated provider labels its quotes', async (t) => {
  const { app } = await build(t, { DATABASE_PATH: ':memory:', LOG_LEVEL: 'warn' })
  const res = await quote(app, 'brk.b')
  t.equal(res.status, 200)
  t.equal(res.body.ticker, 'BRK.B')
  t.equal(res.body.source, 'simulated')
})

t.test('QUOTE_PROVIDER=finnhub without an API key fails the boot with a clear message', async (t) => {
  await t.rejects(build(t, { QUOTE_PROVIDER: 'finnhub', DATABASE_PATH: ':memory:', LOG_LEVEL: 'silent' }), /QUOTE_PROVIDER=finnhub needs FINNHUB_API_KEY/)
})
