/**
 * A local HTTP server playing Finnhub's `GET /quote?symbol=X`, counting its calls. Each
 * answer's price is 100 + the number of calls for that symbol so far, so a test can tell a
 * fresh quote from a cached one. Behaviour can be switched while it runs.
 */
import http from 'node:http'
import type { AddressInfo } from 'node:net'

export type FakeMode =
  | 'ok'
  /** HTTP 500. */
  | 'fail'
  /** Never answers (until the client gives up). */
  | 'hang'
  /** Finnhub's answer for an unknown symbol: all zeros. */
  | 'zero'
  /** 200 with a body that is not JSON. */
  | 'garbage'
  /** HTTP 401. */
  | 'unauthorized'
  /** HTTP 429. */
  | 'rate-limited'
  /** HTTP 500 for the first call for a symbol, then answers. */
  | 'fail-first'
  /** The connection is cut, with no answer, on the first call for a symbol (a network error); then answers. */
  | 'drop-first'

export interface FakeFinnhub {
  readonly url: string
  /** Requests received (all symbols). */
  readonly calls: number
  /** Requests being answered now, and the most at once so far. */
  readonly inFlight: number
  readonly maxInFlight: number
  callsFor (symbol: string): number
  /** Request URLs and the token header, in order. */
  readonly seen: Array<{ url: string, token: string | undefined }>
  mode: FakeMode
  /** Per-symbol modes override `mode`. */
  modes: Map<string, FakeMode>
  /** Milliseconds before each answer. */
  delayMs: number
  close (): Promise<void>
}

export async function startFakeFinnhub (options: { delayMs?: number } = {}): Promise<FakeFinnhub> {
  const counts = new Map<string, number>()
  const hanging = new Set<http.ServerResponse>()
  const fake: FakeFinnhub & { calls: number, url: string, inFlight: number, maxInFlight: number } = {
    url: '',
    calls: 0,
    inFlight: 0,
    maxInFlight: 0,
    seen: [],
    mode: 'ok',
    modes: new Map(),
    delayMs: options.delayMs ?? 0,
    callsFor: (symbol: string) => counts.get(symbol) ?? 0,
    async close () {
      for (const res of hanging) res.destroy()
      server.closeAllConnections()
      await new Promise<void>((resolve) => server.close(() => resolve()))
    },
  }

  const server: http.Server = http.createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://fake')
    const symbol = url.searchParams.get('symbol') ?? ''
    fake.calls++
    fake.inFlight++
    fake.maxInFlight = Math.max(fake.maxInFlight, fake.inFlight)
    let finished = false
    const done = (): void => {
      if (finished) return
      finished = true
      fake.inFlight--
    }
    res.once('finish', done)
    res.once('close', done)
    const n = (counts.get(symbol) ?? 0) + 1
    counts.set(symbol, n)
    const tokenHeader = req.headers['x-finnhub-token']
    fake.seen.push({ url: req.url ?? '', token: Array.isArray(tokenHeader) ? tokenHeader[0] : tokenHeader })
    const mode = fake.modes.get(symbol) ?? fake.mode
    const answer = (): void => {
      if (url.pathname !== '/api/v1/quote') return json(res, 404, { error: 'not found' })
      switch (mode) {
        case 'hang':
          hanging.add(res)
          res.on('close', () => hanging.delete(res))
          return
        case 'fail': return json(res, 500, { error: 'internal' })
        case 'fail-first':
          if (n === 1) return json(res, 500, { error: 'internal' })
          break
        case 'drop-first':
          if (n === 1) return void req.socket.destroy()
          break
        case 'unauthorized': return json(res, 401, { error: 'Invalid API key' })
        case 'rate-limited': return json(res, 429, { error: 'API limit reached' })
        case 'garbage':
          res.writeHead(200, { 'content-type': 'application/json' })
          return void res.end('<html>oops</html>')
        case 'zero': return json(res, 200, { c: 0, d: null, dp: null, h: 0, l: 0, o: 0, pc: 0, t: 0 })
        default: break
      }
      const c = 100 + n
      json(res, 200, { c, d: c - 99, dp: ((c - 99) / 99) * 100, h: c + 1, l: 98, o: 99.5, pc: 99, t: 1_700_000_000 + n })
    }
    if (fake.delayMs > 0) setTimeout(answer, fake.delayMs)
    else answer()
  })
  server.keepAliveTimeout = 1000
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  fake.url = `http://127.0.0.1:${port}/api/v1`
  return fake
}

function json (res: http.ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json' })
  res.end(JSON.stringify(body))
}
