/**
 * Exchange-qualified tickers (`EXCH:SYM`, e.g. `TASE:TEVA`): accepted as strictly as plain
 * ones, upper-cased, stored under `stock:TASE:TEVA`, answered by the simulated provider, sent
 * to Finnhub in its own form (`TEVA.TA`), and held in portfolios.
 */
import t from 'tap'
import { build } from './helper.js'
import { skipUnlessRedis, startRedis } from './helpers/redis-server.js'
import { startFakeFinnhub } from './quotes-fake-finnhub.js'
import { AUTH_ENV, bearer, registerAndLogin } from './auth-helpers.js'
import { TICKER_MAX_LENGTH, TICKER_REGEX } from '../src/quotes/schemas.js'
import { finnhubSymbol } from '../src/quotes/finnhub.js'
import { normalizeTicker } from '../src/quotes/quote-service.js'

t.test('the pattern: an optional exchange of letters, then the symbol as before', async (t) => {
  for (const ok of ['AAPL', 'brk.b', 'BF-B', 'TASE:TEVA', 'tase:teva', 'NYSE:BRK.B', 'ABCDEFGHIJ:0123456789', 'X:Y']) {
    t.ok(TICKER_REGEX.test(ok), `${ok} is accepted`)
  }
  t.equal('ABCDEFGHIJ:0123456789'.length, TICKER_MAX_LENGTH, 'the longest accepted ticker')
  for (const bad of ['', ':AAPL', 'TASE:', 'A:B:C', '1X:AAPL', 'TA_SE:TEVA', 'ABCDEFGHIJK:X', 'TASE:ABCDEFGHIJK', 'TASE :TEVA', 'TASE:TE*A', 'TASE:[A]',
    'TASE:TEVA?', 'TASE:TE VA', 'TASE:TEVA\n', 'stock:*']) {
    t.notOk(TICKER_REGEX.test(bad), `${JSON.stringify(bad)} is refused`)
  }
  t.equal(normalizeTicker('tase:teva'), 'TASE:TEVA')
  t.throws(() => normalizeTicker('TASE:*'), { statusCode: 400, message: /exchange and a colon/ })
})

t.test('Finnhub gets the symbol in its own form', async (t) => {
  t.equal(finnhubSymbol('AAPL'), 'AAPL')
  t.equal(finnhubSymbol('TASE:TEVA'), 'TEVA.TA')
  t.equal(finnhubSymbol('LSE:VOD'), 'VOD.L')
  t.equal(finnhubSymbol('NASDAQ:AAPL'), 'AAPL', 'US exchanges have no suffix')
  t.equal(finnhubSymbol('BINANCE:BTCUSDT'), 'BINANCE:BTCUSDT', 'a venue Finnhub names by prefix is passed as written')

  const fake = await startFakeFinnhub()
  t.teardown(() => fake.close())
  const { app } = await build(t, { QUOTE_PROVIDER: 'finnhub', FINNHUB_API_KEY: 'k', FINNHUB_BASE_URL: fake.url, SCHEDULER_ENABLED: 'false', LOG_LEVEL: 'warn' })
  const res = await app.inject('/api/stocks/tase:teva')
  t.equal(res.statusCode, 200, res.body)
  t.equal(res.json<{ ticker: string }>().ticker, 'TASE:TEVA', 'the answer names the ticker as the client wrote it, upper-cased')
  t.equal(fake.seen.at(-1)?.url, '/api/v1/quote?symbol=TEVA.TA')
})

t.test('the simulated provider answers them; the cache key is stock:TASE:TEVA; batches and encoded colons work', skipUnlessRedis(), async (t) => {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  const { app } = await build(t, { REDIS_URL: redis.url, SCHEDULER_ENABLED: 'false', LOG_LEVEL: 'warn' })

  const one = await app.inject('/api/stocks/tase:teva')
  t.equal(one.statusCode, 200, one.body)
  t.match(one.json(), { ticker: 'TASE:TEVA', source: 'simulated' })
  t.ok(Number(await redis.command('PTTL', 'stock:TASE:TEVA')) > 0, 'stored under stock:TASE:TEVA with a TTL')

  const encoded = await app.inject('/api/stocks/TASE%3ATEVA')
  t.equal(encoded.statusCode, 200, 'a percent-encoded colon is the same ticker')
  t.equal(encoded.headers['x-cache'], 'HIT')

  const batch = await app.inject('/api/stocks?tickers=TASE:TEVA,aapl,lse:vod')
  t.equal(batch.statusCode, 200, batch.body)
  t.same(batch.json<{ quotes: Array<{ ticker: string }> }>().quotes.map((q) => q.ticker), ['TASE:TEVA', 'AAPL', 'LSE:VOD'])

  for (const bad of ['TASE:TE*VA', 'A:B:C', '1X:AAPL']) {
    t.equal((await app.inject(`/api/stocks/${bad}`)).statusCode, 400, `${bad} → 400`)
    t.equal((await app.inject(`/api/stocks?tickers=AAPL,${bad}`)).statusCode, 400, `a batch with ${bad} → 400`)
  }
})

t.test('a portfolio holds an exchange-qualified ticker', async (t) => {
  const { app } = await build(t, { ...AUTH_ENV, SCHEDULER_ENABLED: 'false', LOG_LEVEL: 'warn' })
  const { token } = await registerAndLogin(app, 'tase@example.com')
  const buy = await app.inject({ method: 'POST', url: '/api/portfolio/transactions', headers: bearer(token), payload: { ticker: 'tase:teva', side: 'buy', shares: 3, price: 17.5 } })
  t.equal(buy.statusCode, 201, buy.body)
  const portfolio = await app.inject({ url: '/api/portfolio', headers: bearer(token) })
  t.same(portfolio.json<{ positions: Array<{ ticker: string }> }>().positions.map((p) => p.ticker), ['TASE:TEVA'])
  const removed = await app.inject({ method: 'DELETE', url: '/api/portfolio/positions/Tase:Teva', headers: bearer(token) })
  t.equal(removed.statusCode, 200, removed.body)
  const bad = await app.inject({ method: 'POST', url: '/api/portfolio/transactions', headers: bearer(token), payload: { ticker: 'TASE:TE VA', side: 'buy', shares: 1, price: 1 } })
  t.equal(bad.statusCode, 400)
})
