/**
 * Timings taken from the diagnostics channels libraries publish on, so no call site is
 * wrapped and nothing is timed while nobody listens:
 *
 * - ioredis 6 publishes every command it writes on the tracing channel `ioredis:command`
 *   (start, then asyncEnd when the reply or the error arrives). The channel is per process:
 *   every ioredis client in it is seen (the main one, Redlock masters, the subscriber).
 * - Node's fetch (undici) publishes `undici:request:create`, `…:headers` (the response head
 *   arrived) and `…:error` for each HTTP request; only those to the given origin are timed
 *   (the quote provider's). A request whose connection fails publishes nothing: those
 *   failures show in the provider's error count, not in its latency.
 */
import dc from 'node:diagnostics_channel'
import { performance } from 'node:perf_hooks'

export type CommandObserver = (command: string, seconds: number, ok: boolean) => void

const STARTED = Symbol('aic.metrics.started')

interface CommandContext {
  command?: string
  error?: unknown
  [STARTED]?: number
}

/** Times every ioredis command; returns the function that stops it. */
export function traceRedisCommands (observe: CommandObserver): () => void {
  const channel = dc.tracingChannel<unknown, CommandContext>('ioredis:command')
  const handlers = {
    start (ctx: CommandContext) { ctx[STARTED] = performance.now() },
    end () {},
    asyncStart () {},
    asyncEnd (ctx: CommandContext) {
      const started = ctx[STARTED]
      if (started === undefined) return
      observe(ctx.command ?? 'unknown', (performance.now() - started) / 1000, ctx.error === undefined)
    },
    error () {},
  }
  channel.subscribe(handlers)
  return () => { channel.unsubscribe(handlers) }
}

export type HttpOutcome = '2xx' | '3xx' | '4xx' | '5xx' | 'error'
export type HttpObserver = (outcome: HttpOutcome, seconds: number) => void

interface UndiciRequest { origin?: unknown }

/** Times fetch requests to `origin` (e.g. https://finnhub.io) until the response head; returns the stop function. */
export function traceHttpRequests (origin: string, observe: HttpObserver): () => void {
  const started = new WeakMap<object, number>()
  const onCreate = (message: unknown): void => {
    const request = (message as { request?: UndiciRequest }).request
    if (request !== undefined && String(request.origin) === origin) started.set(request, performance.now())
  }
  const finish = (request: UndiciRequest | undefined, outcome: HttpOutcome): void => {
    if (request === undefined) return
    const t0 = started.get(request)
    if (t0 === undefined) return
    started.delete(request)
    observe(outcome, (performance.now() - t0) / 1000)
  }
  const onHeaders = (message: unknown): void => {
    const { request, response } = message as { request?: UndiciRequest, response?: { statusCode?: number } }
    const status = response?.statusCode ?? 0
    finish(request, status >= 500 ? '5xx' : status >= 400 ? '4xx' : status >= 300 ? '3xx' : '2xx')
  }
  const onError = (message: unknown): void => {
    finish((message as { request?: UndiciRequest }).request, 'error')
  }
  dc.subscribe('undici:request:create', onCreate)
  dc.subscribe('undici:request:headers', onHeaders)
  dc.subscribe('undici:request:error', onError)
  return () => {
    dc.unsubscribe('undici:request:create', onCreate)
    dc.unsubscribe('undici:request:headers', onHeaders)
    dc.unsubscribe('undici:request:error', onError)
  }
}
