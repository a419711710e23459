/**
 * A sweep of hostile input over every operation in the OpenAPI document (/docs/json): for each
 * path, query, header parameter and body field in turn, non-finite and out-of-range numbers,
 * wrong types (booleans, arrays, objects, null), empty, oversized and unicode strings (emoji,
 * right-to-left overrides, NUL, lone surrogates); and for each body, the wrong or no content
 * type, an empty body, and JSON that is not an object. It asserts:
 * - no answer is a 5xx, and every error has the `{ statusCode, error, message }` body with a
 *   message in words (never a regex);
 * - no handler sees a value outside its route's schema: a preHandler hook (which runs after
 *   validation, just before the handler) checks every validated part against the route's own
 *   schema with a strict checker written here (finite numbers, bounds, lengths in code points,
 *   patterns, enums), and a body field must reach the handler exactly as sent (no coercion);
 * - what the writes stored stays within bounds (the portfolio read back at the end).
 * Authenticated routes are swept with a user's token, /api/debug with an admin's; the routes
 * that end sessions or rotate their token (refresh) with a fresh login of another user each time.
 */
import t from 'tap'
import type { FastifyInstance } from 'fastify'
import { buildApp } from '../src/app.js'
import { loadConfig } from '../src/config.js'
import { MAX_POSITION_SHARES, MAX_PRICE, MIN_PRICE } from '../src/portfolio/ledger.js'
import { LogCapture, TEST_ENV } from './helper.js'
import { AUTH_ENV, adminLogin, bearer, login, register, registerAndLogin } from './auth-helpers.js'

interface Schema {
  type?: string | string[]
  properties?: Record<string, Schema>
  required?: string[]
  additionalProperties?: boolean | Schema
  items?: Schema
  minimum?: number
  maximum?: number
  exclusiveMinimum?: number
  exclusiveMaximum?: number
  minLength?: number
  maxLength?: number
  pattern?: string
  enum?: unknown[]
  const?: unknown
  anyOf?: Schema[]
  default?: unknown
}

interface Parameter { in: 'path' | 'query' | 'header', name: string, required?: boolean, schema: Schema }
interface Operation { parameters?: Parameter[], requestBody?: { content?: Record<string, { schema: Schema }> }, security?: unknown[] }

/** What is wrong with `value` against `schema`, strictly (no coercion): [] when nothing. */
function violations (value: unknown, schema: Schema, path: string): string[] {
  if (schema.anyOf !== undefined) {
    return schema.anyOf.some((branch) => violations(value, branch, path).length === 0) ? [] : [`${path}: matches no alternative`]
  }
  if (schema.const !== undefined && value !== schema.const) return [`${path}: not ${JSON.stringify(schema.const)}`]
  if (schema.enum !== undefined && !schema.enum.includes(value)) return [`${path}: not one of ${JSON.stringify(schema.enum)}`]
  const types = schema.type === undefined ? [] : Array.isArray(schema.type) ? schema.type : [schema.type]
  if (types.length > 0 && !types.some((type) => hasType(value, type))) return [`${path}: ${JSON.stringify(value)?.slice(0, 40)} is not ${types.join('|')}`]
  const found: string[] = []
  if (typeof value === 'number') {
    if (!Number.isFinite(value)) found.push(`${path}: not finite`)
    if (schema.minimum !== undefined && !(value >= schema.minimum)) found.push(`${path}: below minimum`)
    if (schema.maximum !== undefined && !(value <= schema.maximum)) found.push(`${path}: above maximum`)
    if (schema.exclusiveMinimum !== undefined && !(value > schema.exclusiveMinimum)) found.push(`${path}: not above exclusiveMinimum`)
    if (schema.exclusiveMaximum !== undefined && !(value < schema.exclusiveMaximum)) found.push(`${path}: not below exclusiveMaximum`)
  }
  if (typeof value === 'string') {
    const length = [...value].length
    if (schema.minLength !== undefined && length < schema.minLength) found.push(`${path}: shorter than ${schema.minLength}`)
    if (schema.maxLength !== undefined && length > schema.maxLength) found.push(`${path}: longer than ${schema.maxLength}`)
    if (schema.pattern !== undefined && !new RegExp(schema.pattern, 'u').test(value)) found.push(`${path}: does not match its pattern`)
  }
  if (value !== null && typeof value === 'object' && !Array.isArray(value)) {
    const record = value as Record<string, unknown>
    for (const name of schema.required ?? []) if (!(name in record)) found.push(`${path}.${name}: missing`)
    for (const [name, child] of Object.entries(record)) {
      const sub = schema.properties?.[name]
      if (sub !== undefined) found.push(...violations(child, sub, `${path}.${name}`))
      else if (schema.additionalProperties === false) found.push(`${path}.${name}: not in the schema`)
    }
  }
  if (Array.isArray(value) && schema.items !== undefined) value.forEach((item, i) => found.push(...violations(item, schema.items as Schema, `${path}[${i}]`)))
  return found
}

function hasType (value: unknown, type: string): boolean {
  switch (type) {
    case 'integer': return typeof value === 'number' && Number.isInteger(value)
    case 'number': return typeof value === 'number'
    case 'string': return typeof value === 'string'
    case 'boolean': return typeof value === 'boolean'
    case 'null': return value === null
    case 'array': return Array.isArray(value)
    case 'object': return value !== null && typeof value === 'object' && !Array.isArray(value)
    default: return true
  }
}

/** A value the schema accepts (the baseline each mutation departs from). */
function validValue (schema: Schema, name: string): unknown {
  if (schema.default !== undefined) return schema.default
  if (schema.const !== undefined) return schema.const
  if (schema.enum !== undefined) return schema.enum[0]
  if (schema.anyOf !== undefined) return validValue(schema.anyOf[0] as Schema, name)
  const type = Array.isArray(schema.type) ? schema.type[0] : schema.type
  if (type === 'integer' || type === 'number') {
    const low = schema.minimum ?? (schema.exclusiveMinimum !== undefined ? schema.exclusiveMinimum + 1 : 1)
    return Math.min(Math.max(low, 1), schema.maximum ?? Number.MAX_SAFE_INTEGER)
  }
  if (type === 'boolean') return true
  if (type === 'object') {
    return Object.fromEntries(Object.entries(schema.properties ?? {}).map(([key, sub]) => [key, validValue(sub, key)]))
  }
  const candidates = name === 'key' ? ['stock:AAPL'] : name === 'prefix' ? ['stock:'] : ['AAPL', 'sweep@example.com', 'a-valid-password', 'stock:AAPL', 'key-1']
  const found = candidates.find((c) => violations(c, schema, name).length === 0)
  if (found === undefined) throw new Error(`no valid value known for ${name}: ${JSON.stringify(schema)}`)
  return found
}

/** A value stands for raw JSON text where JSON.stringify cannot say it (1e309, -0). */
class Raw { constructor (readonly text: string) {} }

const LONG = 'a'.repeat(100_000)
/** Hostile values for one field; the valid value is mixed in where the hostility is its form. */
function hostileValues (valid: unknown): unknown[] {
  return [
    new Raw('1e309'), new Raw('-1e309'), new Raw('1e-400'), new Raw('-0'), new Raw('NaN'), new Raw('Infinity'),
    'NaN', 'Infinity', '-Infinity', '1e309', '0x10', ' 5 ', '1e3',
    -1, 0, 0.5, 1.5, 1e-7, 1e308, -1e308, Number.MAX_SAFE_INTEGER + 2, 1e21,
    true, false, null, 'true', '',
    [], [valid], [valid, valid], {}, { value: valid },
    ' ', LONG, '😀'.repeat(300), '\u202Eevil', 'a\u0000b', '\uD800', 'é'.normalize('NFD'), 'ÄÖÜ', '../../etc/passwd',
    '*', '?', '[a-z]', '\\', 'stock:*', 'portfolio:*', 'session:', '%00', '<script>', `${String(valid)}\n`,
    typeof valid === 'number' ? String(valid) : 12345,
  ]
}

/** Query and header values are text: a hostile value as the text (or repeated keys) it would be sent as. */
function asText (value: unknown): string | string[] | undefined {
  if (value instanceof Raw) return value.text
  if (Array.isArray(value)) return value.map((v) => String(v))
  if (value === null) return 'null'
  if (typeof value === 'object') return undefined
  return String(value)
}

function jsonWith (body: Record<string, unknown>, field: string, value: unknown): string {
  if (!(value instanceof Raw)) return JSON.stringify({ ...body, [field]: value })
  const marker = '"__raw_marker__"'
  return JSON.stringify({ ...body, [field]: '__raw_marker__' }).replace(marker, value.text)
}

interface Seen { method: string, url: string, parts: Record<string, unknown>, schema: Record<string, unknown> }

async function setup (): Promise<{ app: FastifyInstance, seen: Seen[] }> {
  const config = loadConfig({
    ...TEST_ENV,
    ...AUTH_ENV,
    LOG_LEVEL: 'fatal',
    RATE_LIMIT_MAX: '100000000',
    ADMIN_RATE_LIMIT_MAX: '100000000',
    LOGIN_RATE_LIMIT_MAX: '1000000',
    LOGIN_EMAIL_RATE_LIMIT_MAX: '1000000',
    SCHEDULER_ENABLED: 'false',
  })
  const app = await buildApp(config, { logStream: new LogCapture() })
  const seen: Seen[] = []
  // Runs after validation, just before the handler: what the handler is given.
  app.addHook('preHandler', async (request) => {
    const schema = (request.routeOptions.schema ?? {}) as Record<string, unknown>
    seen.push({
      method: request.method,
      url: request.url,
      parts: { body: request.body, querystring: request.query, params: request.params, headers: request.headers },
      schema,
    })
  })
  await app.ready()
  return { app, seen }
}

interface PortfolioView { positions: Array<{ ticker: string, shares: number, avgCost: number }> }

/** A stored position out of bounds, in words ([] when none). */
function storedProblems (view: PortfolioView): string[] {
  return view.positions.flatMap((p) => [
    ...(/^[A-Z0-9.\-:]{1,21}$/.test(p.ticker) ? [] : [`ticker ${JSON.stringify(p.ticker)}`]),
    ...(Number.isFinite(p.shares) && p.shares > 0 && p.shares <= MAX_POSITION_SHARES ? [] : [`${p.ticker} shares ${p.shares}`]),
    ...(Number.isFinite(p.avgCost) && p.avgCost >= MIN_PRICE && p.avgCost <= MAX_PRICE ? [] : [`${p.ticker} average cost ${p.avgCost}`]),
  ])
}

const INVALID_HEADER_CHAR = /[^\t\x20-\x7e\x80-\xff]/

/** encodeURIComponent, with a lone surrogate sent as the bytes it would be. */
function encode (text: string): string {
  try {
    return encodeURIComponent(text)
  } catch {
    return text.replace(/[\uD800-\uDFFF]/g, '%ED%A0%80').split('%').map((part, i) => i === 0 ? encodeURIComponent(part) : part.slice(0, 2) + encodeURIComponent(part.slice(2))).join('%')
  }
}

const REGEX_ECHO = /must match pattern|\^\[|\]\{|\\[dwsx]|\(\?:|\$"?$/

t.test('hostile values over every route in /docs/json: no 5xx, no handler outside its schema', async (t) => {
  const { app, seen } = await setup()
  t.teardown(() => app.close())
  const doc = (await app.inject('/docs/json')).json<{ paths: Record<string, Record<string, Operation>> }>()
  const user = await registerAndLogin(app, 'sweeper@example.com')
  const admin = await adminLogin(app)
  await register(app, 'leaver@example.com')

  let sent = 0
  let writes = 0
  let reached = 0
  const failures: string[] = []
  const byStatus = new Map<number, number>()

  /** The routes that end sessions or rotate the token get a session of their own each time. */
  const tokenFor = async (path: string, method: string): Promise<string> => {
    if (path === '/api/auth/logout' || path === '/api/auth/refresh' || (path === '/api/auth/sessions' && method === 'delete')) return (await login(app, 'leaver@example.com')).token
    return path.startsWith('/api/debug') ? admin.token : user.token
  }

  const operations = Object.entries(doc.paths).flatMap(([path, ops]) => Object.entries(ops).map(([method, op]) => ({ path, method, op })))
  t.ok(operations.length >= 15, `${operations.length} operations in the document`)

  for (const { path, method, op } of operations) {
    const parameters = op.parameters ?? []
    const bodySchema = op.requestBody?.content?.['application/json']?.schema
    // An optional header is left out of the baseline (one Idempotency-Key for every trade would replay the first).
    const baseParams = Object.fromEntries(parameters.map((p) => [`${p.in}:${p.name}`, p.in === 'header' && p.required !== true ? undefined : validValue(p.schema, p.name)]))
    const baseBody = bodySchema !== undefined ? validValue(bodySchema, 'body') as Record<string, unknown> : undefined

    const send = async (label: string, values: Record<string, unknown>, payload: string | undefined, contentType: string | undefined): Promise<void> => {
      let url = path
      const query: string[] = []
      const headers: Record<string, string | string[]> = {}
      for (const p of parameters) {
        const value = values[`${p.in}:${p.name}`]
        if (p.in === 'path') url = url.replace(`{${p.name}}`, encode(String(asText(value) ?? JSON.stringify(value))))
        else {
          const text = asText(value)
          if (text === undefined) continue
          if (p.in === 'query') for (const one of Array.isArray(text) ? text : [text]) query.push(`${encode(p.name)}=${encode(one)}`)
          // Header values that Node refuses to send (control characters, beyond Latin-1) never reach a service.
          else if ((Array.isArray(text) ? text : [text]).every((v) => !INVALID_HEADER_CHAR.test(v))) headers[p.name] = text
        }
      }
      if (query.length > 0) url += `?${query.join('&')}`
      if (op.security !== undefined) headers.authorization = bearer(await tokenFor(path, method)).authorization
      if (contentType !== undefined) headers['content-type'] = contentType
      const before = seen.length
      const res = await app.inject({ method: method.toUpperCase() as 'GET', url, headers, ...(payload !== undefined ? { payload } : {}) })
      sent++
      byStatus.set(res.statusCode, (byStatus.get(res.statusCode) ?? 0) + 1)
      const where = `${method.toUpperCase()} ${path} ${label}`
      if (res.statusCode < 300 && path.startsWith('/api/portfolio') && method !== 'get') {
        writes++
        failures.push(...storedProblems(res.json<PortfolioView>()).map((p) => `${where}: stored ${p}`))
      }
      if (res.statusCode >= 500) failures.push(`${where}: ${res.statusCode} ${res.body.slice(0, 200)}`)
      if (res.statusCode >= 400) {
        let body: { statusCode?: unknown, error?: unknown, message?: unknown } = {}
        try { body = res.json() } catch { failures.push(`${where}: error body is not JSON`) }
        if (body.statusCode !== res.statusCode || typeof body.error !== 'string' || typeof body.message !== 'string') failures.push(`${where}: error body ${res.body.slice(0, 200)}`)
        else if (REGEX_ECHO.test(body.message)) failures.push(`${where}: the message echoes a regex: ${body.message}`)
      }
      for (const entry of seen.slice(before)) {
        reached++
        for (const part of ['body', 'querystring', 'params', 'headers'] as const) {
          const schema = entry.schema[part] as Schema | undefined
          if (schema === undefined) continue
          const problems = violations(entry.parts[part], schema, part)
          if (problems.length > 0) failures.push(`${where}: the handler saw ${problems.join('; ')}`)
        }
        // A body field reaches the handler as sent: no coercion of JSON.
        if (payload !== undefined && contentType === 'application/json' && bodySchema !== undefined) {
          const sentBody = JSON.parse(payload) as Record<string, unknown>
          const given = entry.parts.body as Record<string, unknown>
          for (const key of Object.keys(bodySchema.properties ?? {})) {
            if (key in sentBody && !Object.is(JSON.stringify(given?.[key]), JSON.stringify(sentBody[key]))) {
              failures.push(`${where}: ${key} was sent as ${JSON.stringify(sentBody[key])?.slice(0, 40)}, the handler got ${JSON.stringify(given?.[key])?.slice(0, 40)}`)
            }
          }
        }
      }
    }

    const basePayload = baseBody !== undefined ? JSON.stringify(baseBody) : undefined
    const baseType = baseBody !== undefined ? 'application/json' : undefined

    // Each parameter in turn.
    for (const p of parameters) {
      for (const value of [...hostileValues(baseParams[`${p.in}:${p.name}`]), undefined]) {
        await send(`${p.in} ${p.name}=${String(value instanceof Raw ? value.text : JSON.stringify(value))?.slice(0, 30)}`, { ...baseParams, [`${p.in}:${p.name}`]: value }, basePayload, baseType)
      }
    }
    // Each body field in turn, then the body as a whole.
    if (baseBody !== undefined) {
      for (const field of Object.keys(bodySchema?.properties ?? {})) {
        for (const value of hostileValues(baseBody[field])) {
          // Raw NaN / Infinity are not JSON: the parser's refusal is the point.
          await send(`body ${field}=${String(value instanceof Raw ? value.text : JSON.stringify(value))?.slice(0, 30)}`, baseParams, jsonWith(baseBody, field, value), 'application/json')
        }
        const { [field]: _omitted, ...without } = baseBody
        await send(`body without ${field}`, baseParams, JSON.stringify(without), 'application/json')
      }
      await send('body with an unknown field', baseParams, JSON.stringify({ ...baseBody, isAdmin: true, __proto__x: 1 }), 'application/json')
      await send('body with __proto__', baseParams, `{"__proto__":{"role":"admin"},${(basePayload as string).slice(1)}`, 'application/json')
      await send('nested body', baseParams, `${'['.repeat(5000)}${']'.repeat(5000)}`, 'application/json')
    }
    if (method !== 'get') {
      for (const [label, payload, type] of [
        ['no body, no content type', undefined, undefined],
        ['empty JSON body', '', 'application/json'],
        ['JSON null', 'null', 'application/json'],
        ['JSON array', '[]', 'application/json'],
        ['JSON string', '"x"', 'application/json'],
        ['JSON number', '1e309', 'application/json'],
        ['invalid JSON', '{"a":', 'application/json'],
        ['form-encoded', 'email=a%40b.c&password=x', 'application/x-www-form-urlencoded'],
        ['text/plain JSON', basePayload ?? '{}', 'text/plain'],
        ['JSON with a charset', basePayload ?? '{}', 'application/json; charset=utf-8'],
        ['unknown type', basePayload ?? '{}', 'application/x-unknown'],
      ] as Array<[string, string | undefined, string | undefined]>) {
        await send(label, baseParams, payload, type)
      }
    }
  }

  t.same(failures.slice(0, 50), [], `no failures among ${sent} requests (${reached} reached a handler)`)
  t.ok(sent > 800, `${sent} hostile requests sent`)
  t.ok(reached > 100, `${reached} reached a handler (the baselines are valid, so the sweep is not all 400s)`)
  t.comment(`statuses: ${JSON.stringify(Object.fromEntries([...byStatus].sort((a, b) => a[0] - b[0])))}`)

  t.ok(writes > 10, `${writes} writes answered with the stored portfolio, each checked`)
  const portfolio = (await app.inject({ url: '/api/portfolio', headers: bearer(user.token) })).json<PortfolioView>()
  t.same(storedProblems(portfolio), [], 'what is stored in the end is within bounds')
})

t.test('the known holes stay closed', async (t) => {
  const { app } = await setup()
  t.teardown(() => app.close())
  const user = await registerAndLogin(app, 'holes@example.com')
  const admin = await adminLogin(app)
  const trade = (body: unknown) => app.inject({ method: 'POST', url: '/api/portfolio/transactions', headers: bearer(user.token), payload: body as object })

  // Coerced Infinity skipped the bounds: a 500 here, a limit past its maximum there.
  t.equal((await app.inject({ url: '/api/portfolio/history?days=Infinity', headers: bearer(user.token) })).statusCode, 400, 'days=Infinity is a 400, not a 500')
  t.equal((await app.inject({ url: '/api/portfolio/history?days=1e309', headers: bearer(user.token) })).statusCode, 400)
  t.equal((await app.inject({ url: '/api/debug/keys?limit=Infinity', headers: bearer(admin.token) })).statusCode, 400, 'limit=Infinity is a 400, not every key')
  t.equal((await app.inject({ url: '/api/portfolio/history?days=7', headers: bearer(user.token) })).statusCode, 200, 'query strings are still coerced from text')

  // Wrong JSON types no longer become trades.
  for (const body of [
    { ticker: true, side: 'buy', shares: 1, price: 1 },
    { ticker: ['AAPL'], side: 'buy', shares: 1, price: 1 },
    { ticker: 'AAPL', side: ['buy'], shares: 1, price: 1 },
    { ticker: 'AAPL', side: 'buy', shares: true, price: 1 },
    { ticker: 'AAPL', side: 'buy', shares: [1], price: 1 },
    { ticker: 'AAPL', side: 'buy', shares: '1', price: 1 },
    { ticker: 'AAPL', side: 'buy', shares: 1, price: null },
    { ticker: 12345, side: 'buy', shares: 1, price: 1 },
  ]) {
    const res = await trade(body)
    t.equal(res.statusCode, 400, `${JSON.stringify(body)} is a 400`)
  }
  t.equal((await trade({ ticker: 'AAPL', side: 'buy', shares: 1, price: 1 })).statusCode, 201, 'the same trade, well typed, is made')
  const positions = (await app.inject({ url: '/api/portfolio', headers: bearer(user.token) })).json<{ positions: Array<{ ticker: string }> }>().positions
  t.same(positions.map((p) => p.ticker), ['AAPL'], 'only the well-typed trade was stored')

  // Credentials: arrays and numbers are not strings.
  const res = await app.inject({ method: 'POST', url: '/api/auth/login', payload: { email: ['holes@example.com'], password: 'correct horse battery' } })
  t.equal(res.statusCode, 400, 'an email sent as an array is a 400')
  t.equal(res.json<{ message: string }>().message, 'email: must be a string of at most 254 characters')
})
