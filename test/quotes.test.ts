/**
 * The quote providers: the simulated one (deterministic, labelled), and Finnhub against a
 * local HTTP server playing it (timeouts, bounded retries, circuit breaker, all-zero answers).
 */
import t from 'tap'
import { CircuitBreaker } from '../src/quotes/circuit-breaker.js'
import { FinnhubProvider, toQuote } from '../src/quotes/finnhub.js'
import { createQuoteProvider } from '../src/quotes/index.js'
import { SimulatedProvider, simulatedQuote } from '../src/quotes/simulated.js'
import { ServiceUnavailableError, NotFoundError } from '../src/errors.js'
import { sleep } from './helper.js'
import { startFakeFinnhub, type FakeFinnhub } from './quotes-fake-finnhub.js'
import type { TapTest } from './helper.js'

async function fakeFinnhub (t: TapTest): Promise<FakeFinnhub> {
  const fake = await startFakeFinnhub()
  t.teardown(() => fake.close())
  return fake
}

function finnhub (fake: FakeFinnhub, options: Partial<ConstructorParameters<typeof FinnhubProvider>[0]> = {}): FinnhubProvider {
  return new FinnhubProvider({
    baseUrl: fake.url,
    apiKey: 'k3y',
    // Generous: on a busy machine a local answer can take hundreds of ms. The timeout tests set their own.
    timeoutMs: 5000,
    retries: 0,
    breakerThreshold: 100,
    breakerCooldownMs: 1000,
    backoffMs: 10,
    ...options,
  })
}

t.test('simulated quotes are a pure function of ticker and time, and say so', async (t) => {
  const at = Date.parse('2025-03-04T15:30:12.345Z')
  const a = simulatedQuote('AAPL', at)
  t.same(simulatedQuote('AAPL', at + 400), a, 'two instances in the same second agree')
  t.same(await new SimulatedProvider({ now: () => at }).quote('AAPL'), a)
  t.equal(a.source, 'simulated')
  t.equal(a.timestamp, '2025-03-04T15:30:12.000Z')
  t.not(simulatedQuote('MSFT', at).price, a.price, 'tickers differ')
  t.not(simulatedQuote('AAPL', at + 3_600_000).price, a.price, 'prices move with time')
  for (const ticker of ['AAPL', 'MSFT', 'BRK.B', 'X', 'ZZZZZZZZZZ']) {
    for (let hour = 0; hour < 24; hour += 5) {
      const q = simulatedQuote(ticker, Date.parse('2025-03-04T00:00:00Z') + hour * 3_600_000 + 1234)
      t.ok(q.price > 0 && q.low <= q.price && q.price <= q.high && q.low <= q.open && q.open <= q.high,
        `${ticker} at ${hour}h: low ${q.low} ≤ open ${q.open}, price ${q.price} ≤ high ${q.high}`)
      t.ok(Math.abs(q.price - q.previousClose - q.change) <= 0.011, 'change = price - previousClose')
    }
  }
})

t.test('finnhub: the answer mapped, the key in a header only', async (t) => {
  const fake = await fakeFinnhub(t)
  const q = await finnhub(fake).quote('BRK.B')
  t.same(q, {
    ticker: 'BRK.B', price: 101, change: 2, changePercent: (2 / 99) * 100, open: 99.5, high: 102, low: 98,
    previousClose: 99, timestamp: new Date(1_700_000_001_000).toISOString(), source: 'finnhub',
  })
  t.equal(fake.seen[0]?.url, '/api/v1/quote?symbol=BRK.B')
  t.equal(fake.seen[0]?.token, 'k3y')
})

t.test('finnhub: unknown symbol (all zeros) → 404; incomplete answers → 502; never a made-up price', async (t) => {
  t.throws(() => toQuote('NOPE', { c: 0, d: null, dp: null, h: 0, l: 0, o: 0, pc: 0, t: 0 }), NotFoundError)
  t.throws(() => toQuote('X', { c: 0, h: 1, l: 1, o: 1, pc: 1, t: 1 }), { statusCode: 502, message: 'The quote provider sent an incomplete quote' })
  t.throws(() => toQuote('X', { c: 'NaN', h: 1, l: 1, o: 1, pc: 1, t: 1 }), { statusCode: 502, message: 'The quote provider sent an incomplete quote' })
  t.throws(() => toQuote('X', null), { statusCode: 502, message: 'The quote provider sent an unexpected answer' })
  t.same(toQuote('X', { c: 10, d: null, dp: null, h: 11, l: 9, o: 9.5, pc: 8, t: 1 }).change, 2, 'a missing change is computed, not guessed')

  // Finnhub's answer for a symbol it lists but does not quote: a price, nothing else.
  t.throws(() => toQuote('DELISTED', { c: 4.2, d: null, dp: null, h: 0, l: 0, o: 0, pc: 0, t: 1_700_000_000 }),
    { statusCode: 404, message: 'No quote for DELISTED' }, 'a price with zero open, high, low and previous close is not a quote')
  t.equal(toQuote('X', { c: 4.2, h: 4.3, l: 4.1, o: 0, pc: 4, t: 1 }).price, 4.2, 'one zero figure alone (no open yet) is still a quote')

  const fake = await fakeFinnhub(t)
  fake.mode = 'zero'
  await t.rejects(finnhub(fake).quote('NOPE'), { statusCode: 404, message: 'Unknown ticker: NOPE' })
  fake.mode = 'garbage'
  await t.rejects(finnhub(fake).quote('X'), { statusCode: 502, message: 'The quote provider sent an answer that is not JSON' })
  fake.mode = 'unauthorized'
  const calls = fake.calls
  await t.rejects(finnhub(fake, { retries: 3 }).quote('X'), { statusCode: 502, message: /check FINNHUB_API_KEY/ })
  t.equal(fake.calls - calls, 1, 'a refused key is not retried')
})

t.test('finnhub: bounded retries with a timeout per attempt', async (t) => {
  const fake = await fakeFinnhub(t)
  fake.mode = 'fail'
  const provider = finnhub(fake, { retries: 2 })
  await t.rejects(provider.quote('A'), { statusCode: 503, message: 'The quote provider failed (HTTP 500)' })
  t.equal(fake.calls, 3, 'one attempt + 2 retries, then it gives up')

  fake.mode = 'rate-limited'
  await t.rejects(provider.quote('A'), { statusCode: 503, message: /rate limiting/ })
  t.equal(fake.calls, 6)

  fake.mode = 'hang'
  const started = performance.now()
  await t.rejects(finnhub(fake, { retries: 1, timeoutMs: 150 }).quote('A'), { statusCode: 504, message: 'The quote provider did not answer within 150 ms' })
  const ms = performance.now() - started
  t.ok(ms >= 300 && ms < 5000, `two attempts of 150 ms each, not the 5 s default (${ms.toFixed(0)} ms)`)

  fake.modes.set('B', 'fail-first')
  const flaky = finnhub(fake, { retries: 2 })
  const q = await flaky.quote('B')
  t.equal(q.price, 102, 'a retry that succeeds returns the quote (the second answer)')
  t.equal(fake.callsFor('B'), 2)
  t.equal(flaky.stats().failures, 0, 'a call that succeeded on retry is not a failure')
})

t.test('finnhub: a network error is retried, and is a 503 "unreachable" once the retries are spent', async (t) => {
  const fake = await fakeFinnhub(t)
  fake.modes.set('NET', 'drop-first')
  const q = await finnhub(fake, { retries: 1 }).quote('NET')
  t.equal(q.price, 102, 'the retry got the second answer')
  t.equal(fake.callsFor('NET'), 2)
  fake.modes.set('NET2', 'drop-first')
  await t.rejects(finnhub(fake, { retries: 0 }).quote('NET2'), { statusCode: 503, message: 'The quote provider is unreachable' })
  t.equal(fake.callsFor('NET2'), 1, 'no retry left')
})

t.test('finnhub: the circuit breaker makes a dead provider fail fast, then tries again', async (t) => {
  const fake = await fakeFinnhub(t)
  fake.mode = 'fail'
  const changes: string[] = []
  // A 2 s cooldown: the checks made while the circuit is open hold unless the machine stalls
  // for seconds, and the sleeps past it are lower bounds.
  const provider = finnhub(fake, { breakerThreshold: 3, breakerCooldownMs: 2000, onBreakerChange: (state) => changes.push(state) })
  for (let i = 0; i < 3; i++) await t.rejects(provider.quote('A'), { statusCode: 503, message: 'The quote provider failed (HTTP 500)' })
  t.equal(fake.calls, 3)
  const started = performance.now()
  await t.rejects(provider.quote('A'), { statusCode: 503, message: /circuit open.*retry in [12] s/ })
  const ms = performance.now() - started
  t.ok(ms < 3000, `rejected at once (no 5 s attempt; ${ms.toFixed(0)} ms)`)
  t.equal(fake.calls, 3, 'without calling the provider')
  t.match(provider.stats(), { requests: 3, failures: 3, breaker: { state: 'open', opens: 1, rejected: 1 } })

  await sleep(2100)
  await t.rejects(provider.quote('A'), { statusCode: 503, message: 'The quote provider failed (HTTP 500)' }, 'half-open: one trial, it fails')
  t.equal(fake.calls, 4)
  await t.rejects(provider.quote('A'), /circuit open/, 'open again')
  t.equal(fake.calls, 4)

  await sleep(2100)
  fake.mode = 'ok'
  t.equal((await provider.quote('A')).source, 'finnhub', 'the trial succeeds')
  t.equal((await provider.quote('A')).source, 'finnhub', 'closed again')
  t.same(changes, ['open', 'half-open', 'open', 'half-open', 'closed'])

  fake.mode = 'zero'
  for (let i = 0; i < 5; i++) await t.rejects(provider.quote('NOPE'), { statusCode: 404, message: 'Unknown ticker: NOPE' })
  t.equal(provider.stats().breaker.state, 'closed', 'unknown symbols are a healthy upstream: they never open the circuit')
})

t.test('circuit breaker: only one trial call while half-open', async (t) => {
  let now = 0
  const breaker = new CircuitBreaker({ threshold: 1, cooldownMs: 100, isFailure: () => true, now: () => now })
  await t.rejects(breaker.run(async () => { throw new Error('x') }))
  now = 200
  let release: () => void = () => {}
  const trial = breaker.run(() => new Promise<string>((resolve) => { release = () => resolve('ok') }))
  await t.rejects(breaker.run(async () => 'second'), ServiceUnavailableError)
  release()
  t.equal(await trial, 'ok')
  t.equal(await breaker.run(async () => 'after'), 'after')
})

t.test('createQuoteProvider', async (t) => {
  const base = {
    FINNHUB_BASE_URL: 'https://finnhub.io/api/v1', FINNHUB_TIMEOUT_MS: 3000, FINNHUB_RETRIES: 1,
    FINNHUB_BREAKER_THRESHOLD: 5, FINNHUB_BREAKER_COOLDOWN_MS: 10_000,
  }
  t.equal(createQuoteProvider({ ...base, QUOTE_PROVIDER: 'simulated' }).name, 'simulated')
  t.equal(createQuoteProvider({ ...base, QUOTE_PROVIDER: 'finnhub', FINNHUB_API_KEY: 'x' }).name, 'finnhub')
  t.throws(() => createQuoteProvider({ ...base, QUOTE_PROVIDER: 'finnhub' }), /needs FINNHUB_API_KEY/)
})
