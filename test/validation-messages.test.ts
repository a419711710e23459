/**
 * Errors a person can act on: a refused request says, in words, which field is wrong and
 * what it should be; a regex is never echoed; a form-encoded body (curl -d without -H) is a
 * 415 saying to send JSON; an empty body says what object to send. The body is always
 * `{ statusCode, error, message }`. Also: what is coerced where (query strings yes, JSON
 * bodies no), and an email sent as an array still counts against the login limit.
 */
import t from 'tap'
import { build } from './helper.js'
import { AUTH_ENV, bearer, registerAndLogin } from './auth-helpers.js'

interface ErrorBody { statusCode: number, error: string, message: string }

t.test('validation messages name the field and say what is wrong', async (t) => {
  const { app } = await build(t, { ...AUTH_ENV, LOG_LEVEL: 'warn' })
  const user = await registerAndLogin(app, 'words@example.com')
  const post = async (url: string, payload: unknown, headers: Record<string, string> = {}): Promise<{ status: number, body: ErrorBody }> => {
    const res = await app.inject({ method: 'POST', url, headers: { ...bearer(user.token), ...headers }, ...(payload !== undefined ? { payload: payload as string } : {}) })
    return { status: res.statusCode, body: res.json<ErrorBody>() }
  }
  const trade = { ticker: 'AAPL', side: 'buy', shares: 1, price: 10 }
  const cases: Array<[string, string, unknown, number, string, Record<string, string>?]> = [
    ['a bad email', '/api/auth/register', { email: 'not-an-email', password: 'long enough password' }, 400, 'email: not a valid address'],
    ['a short password', '/api/auth/register', { email: 'a@example.com', password: 'short' }, 400, 'password: must be 8 to 128 characters'],
    ['a missing field', '/api/auth/login', { email: 'a@example.com' }, 400, 'password: is required'],
    ['a zero price', '/api/portfolio/transactions', { ...trade, price: 0 }, 400, 'price: must be a number from 0.000001 to 1000000000'],
    ['a price as a string', '/api/portfolio/transactions', { ...trade, price: '10' }, 400, 'price: must be a number from 0.000001 to 1000000000'],
    ['negative shares', '/api/portfolio/transactions', { ...trade, shares: -1 }, 400, 'shares: must be a number greater than 0 and at most 1000000000'],
    ['shares past the bound', '/api/portfolio/transactions', '{"ticker":"AAPL","side":"buy","shares":1e309,"price":10}', 400, 'shares: must be a number greater than 0 and at most 1000000000', { 'content-type': 'application/json' }],
    ['an unknown side', '/api/portfolio/transactions', { ...trade, side: 'hold' }, 400, 'side: must be "buy" or "sell"'],
    ['a bad ticker', '/api/portfolio/transactions', { ...trade, ticker: 'NOT A TICKER' }, 400, 'ticker: not a valid ticker symbol'],
    ['a boolean ticker', '/api/portfolio/transactions', { ...trade, ticker: true }, 400, 'ticker: must be a string'],
    ['a bad idempotency key', '/api/portfolio/transactions', trade, 400, 'header idempotency-key: must be printable ASCII without spaces', { 'idempotency-key': 'has space' }],
    ['no body at all', '/api/auth/login', undefined, 400, 'request body is required: send a JSON object with email and password (Content-Type: application/json)'],
    ['an empty JSON body', '/api/portfolio/transactions', '', 400, 'request body is required: send a JSON object with ticker, side, shares and price (Content-Type: application/json)', { 'content-type': 'application/json' }],
    ['a JSON array', '/api/auth/login', '[]', 400, 'request body must be a JSON object with email and password', { 'content-type': 'application/json' }],
    ['broken JSON', '/api/auth/login', '{"email":', 400, 'the request body is not valid JSON', { 'content-type': 'application/json' }],
    ['curl -d (form-encoded)', '/api/auth/login', 'email=a%40example.com&password=x', 415, 'the request body must be JSON: send it with the header Content-Type: application/json', { 'content-type': 'application/x-www-form-urlencoded' }],
    ['text/plain', '/api/auth/login', '{}', 415, 'the request body must be JSON: send it with the header Content-Type: application/json', { 'content-type': 'text/plain' }],
  ]
  for (const [label, url, payload, status, message, headers] of cases) {
    const res = await post(url, payload, headers)
    t.equal(res.status, status, `${label}: ${status}`)
    t.same(res.body, { statusCode: status, error: status === 415 ? 'Unsupported Media Type' : 'Bad Request', message }, `${label}: "${message}"`)
    t.notMatch(res.body.message, /pattern|\^|\$|\\/, `${label}: no regex in the message`)
  }

  const get = async (url: string): Promise<{ status: number, body: ErrorBody }> => {
    const res = await app.inject({ url, headers: bearer(user.token) })
    return { status: res.statusCode, body: res.json<ErrorBody>() }
  }
  t.same((await get('/api/portfolio/history?days=0')).body.message, 'days: must be a whole number from 1 to 3660')
  t.same((await get('/api/portfolio/history?days=Infinity')).body.message, 'days: must be a finite number')
  t.same((await get('/api/stocks/NOT%20A%20TICKER')).body.message, 'ticker: not a valid ticker symbol')
  t.same((await get('/api/stocks?tickers=A,,B')).body.message, 'tickers: not a comma-separated list of valid ticker symbols')
  t.same((await get('/api/stocks')).body.message, 'tickers: is required')
})

t.test('coercion: query strings and path parameters are text made typed; JSON bodies are taken as sent', async (t) => {
  const { app } = await build(t, { ...AUTH_ENV, LOG_LEVEL: 'warn' })
  const user = await registerAndLogin(app, 'types@example.com')
  const history = await app.inject({ url: '/api/portfolio/history?days=7', headers: bearer(user.token) })
  t.equal(history.statusCode, 200, '?days=7 is the number 7')
  for (const [label, body] of [
    ['shares as a string', { ticker: 'AAPL', side: 'buy', shares: '1', price: 10 }],
    ['shares as a one-element array', { ticker: 'AAPL', side: 'buy', shares: [1], price: 10 }],
    ['price as a boolean', { ticker: 'AAPL', side: 'buy', shares: 1, price: true }],
    ['a ticker as a number', { ticker: 1234, side: 'buy', shares: 1, price: 10 }],
    ['side as a one-element array', { ticker: 'AAPL', side: ['buy'], shares: 1, price: 10 }],
  ] as const) {
    const res = await app.inject({ method: 'POST', url: '/api/portfolio/transactions', headers: bearer(user.token), payload: body })
    t.equal(res.statusCode, 400, `${label} is a 400, not a trade`)
  }
  const login = await app.inject({ method: 'POST', url: '/api/auth/login', payload: { email: ['types@example.com'], password: 'correct horse battery' } })
  t.equal(login.statusCode, 400, 'an email as an array is a 400, not a login')
})

t.test('an email sent as an array is refused and still counted by the login limit', async (t) => {
  const { app } = await build(t, { ...AUTH_ENV, LOG_LEVEL: 'warn', LOGIN_RATE_LIMIT_MAX: '3', LOGIN_EMAIL_RATE_LIMIT_MAX: '100' })
  const email = 'counted@example.com'
  await registerAndLogin(app, email)
  // A successful login resets the count (registerAndLogin's): three attempts left.
  for (let i = 0; i < 3; i++) {
    const res = await app.inject({ method: 'POST', url: '/api/auth/login', payload: { email: [email], password: 'wrong' } })
    t.equal(res.statusCode, 400, 'the array form is a 400')
  }
  const res = await app.inject({ method: 'POST', url: '/api/auth/login', payload: { email, password: 'correct horse battery' } })
  t.equal(res.statusCode, 429, 'the array attempts counted: the string form is refused now')
})
