/**
 * The server's life: read the config, build the app, listen, and shut down gracefully on
 * SIGTERM/SIGINT: readiness turns 503 and every response says Connection: close for
 * SHUTDOWN_DELAY_MS while serving goes on; then the port closes, in-flight requests finish,
 * Redis connections close, exit 0 — or exit 1 if that takes longer than SHUTDOWN_TIMEOUT_MS
 * (docs/http.md). The process entry is server.ts, which first holds two nextTick records
 * (hold-tick-records.ts).
 */
import type { IncomingMessage, ServerResponse } from 'node:http'
import { buildApp } from './app.js'
import { ConfigError, loadConfig, loadDotEnv } from './config.js'

function closeAfterResponse (_request: IncomingMessage, response: ServerResponse): void {
  response.setHeader('connection', 'close')
}

export async function main (): Promise<void> {
  let config
  try {
    loadDotEnv()
    config = loadConfig()
  } catch (err) {
    process.stderr.write(`${err instanceof ConfigError ? err.message : String(err)}\n`)
    process.exit(1)
  }

  let app
  try {
    app = await buildApp(config)
  } catch (err) {
    // A plugin refused its options (a missing production secret, an unreadable database…):
    // its message says what to fix; the stack would only bury it.
    process.stderr.write(`Startup failed: ${err instanceof Error ? err.message : String(err)}\n`)
    process.exit(1)
  }
  let closing = false
  const shutdown = (signal: string): void => {
    if (closing) return
    closing = true
    app.lifecycle.shuttingDown = true
    app.log.info({ signal, delayMs: config.SHUTDOWN_DELAY_MS }, 'shutting down: readiness is 503, connections close after their next response')
    const timer = setTimeout(() => {
      app.log.error({ timeoutMs: config.SHUTDOWN_TIMEOUT_MS }, 'shutdown took too long; exiting')
      process.exit(1)
    }, config.SHUTDOWN_TIMEOUT_MS)
    timer.unref()
    // Until the port closes, keep serving as usual (load balancers still send traffic until
    // they see readiness fail), but end every connection after its next response: each
    // response from now on says Connection: close and Node closes the socket once it is sent.
    // Idle keep-alive connections are not cut meanwhile: a client may be sending on one at
    // that very moment, and cutting it would reset that request.
    app.server.prependListener('request', closeAfterResponse)
    const delay = new Promise((resolve) => setTimeout(resolve, config.SHUTDOWN_DELAY_MS))
    // Then close: no new connections; connections idle since before the signal end;
    // requests in flight (and any still arriving on open connections) are answered.
    delay.then(() => app.close()).then(() => {
      app.log.info('shutdown complete')
      process.exit(0)
    }, (err: unknown) => {
      app.log.error({ err }, 'shutdown failed')
      process.exit(1)
    })
  }
  // `on`, not `once`: a second signal of the same kind (sent twice, or relayed by a wrapper too)
  // must meet the guard in shutdown(), not the default action that kills without draining.
  process.on('SIGTERM', () => shutdown('SIGTERM'))
  process.on('SIGINT', () => shutdown('SIGINT'))

  try {
    await app.listen({ host: config.HOST, port: config.PORT })
  } catch (err) {
    app.log.error({ err }, `could not listen on ${config.HOST}:${config.PORT}`)
    await app.close()
    process.exit(1)
  }
}
