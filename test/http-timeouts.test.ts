/**
 * The HTTP server's timeouts: a request whose declared body never arrives, or whose headers
 * never end, is answered 408 (or its connection closed) within the configured bound instead
 * of holding the connection; idle keep-alive connections are kept HTTP_KEEP_ALIVE_TIMEOUT_MS.
 */
import net from 'node:net'
import t from 'tap'
import type { AddressInfo } from 'node:net'
import { build } from './helper.js'

/** Writes `head` on a new connection and resolves with what came back once the server closed it. */
function stall (port: number, head: string, limitMs: number): Promise<{ reply: string, ms: number, closed: boolean }> {
  return new Promise((resolve) => {
    const started = Date.now()
    let reply = ''
    const socket = net.connect(port, '127.0.0.1', () => socket.write(head))
    socket.setEncoding('utf8')
    socket.on('data', (chunk: string) => { reply += chunk })
    const guard = setTimeout(() => { socket.destroy(); resolve({ reply, ms: Date.now() - started, closed: false }) }, limitMs)
    socket.on('close', () => { clearTimeout(guard); resolve({ reply, ms: Date.now() - started, closed: true }) })
    socket.on('error', () => { /* a reset counts as closed */ })
  })
}

t.test('a declared body that never arrives is a 408 within HTTP_REQUEST_TIMEOUT_MS', async (t) => {
  const { app } = await build(t, { HTTP_REQUEST_TIMEOUT_MS: '1000', HTTP_HEADERS_TIMEOUT_MS: '1000', LOG_LEVEL: 'warn' })
  await app.listen({ host: '127.0.0.1', port: 0 })
  const port = (app.server.address() as AddressInfo).port
  const head = 'POST /api/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"email":'
  const result = await stall(port, head, 10_000)
  t.ok(result.closed, `the connection was closed after ${result.ms} ms (bound 1000 ms, checked within 10 s)`)
  t.match(result.reply, /^HTTP\/1\.1 408 /, 'answered 408 Request Timeout')
})

t.test('headers that never end: the connection is closed within HTTP_HEADERS_TIMEOUT_MS', async (t) => {
  const { app } = await build(t, { HTTP_REQUEST_TIMEOUT_MS: '30000', HTTP_HEADERS_TIMEOUT_MS: '1000', LOG_LEVEL: 'warn' })
  await app.listen({ host: '127.0.0.1', port: 0 })
  const port = (app.server.address() as AddressInfo).port
  const result = await stall(port, 'GET /api/health/live HTTP/1.1\r\nHost: x\r\nX-Slow: ', 10_000)
  t.ok(result.closed, `the connection was closed after ${result.ms} ms (bound 1000 ms, checked within 10 s)`)
  t.ok(result.reply === '' || /^HTTP\/1\.1 408 /.test(result.reply), `a 408 or nothing, never a served request: ${JSON.stringify(result.reply.slice(0, 40))}`)
})

t.test('the configured timeouts reach the HTTP server; headers never outlast the whole request', async (t) => {
  const { app } = await build(t, { HTTP_REQUEST_TIMEOUT_MS: '5000', HTTP_HEADERS_TIMEOUT_MS: '8000', HTTP_KEEP_ALIVE_TIMEOUT_MS: '65000', LOG_LEVEL: 'warn' })
  t.equal(app.server.requestTimeout, 5000)
  t.equal(app.server.headersTimeout, 5000, 'clamped to the request timeout')
  t.equal(app.server.keepAliveTimeout, 65000)
  const defaults = await build(t, { LOG_LEVEL: 'warn' })
  t.equal(defaults.app.server.requestTimeout, 30_000)
  t.equal(defaults.app.server.headersTimeout, 10_000)
  t.equal(defaults.app.server.keepAliveTimeout, 72_000, 'above the 60 s idle timeout of common load balancers')
})
