/**
 * Child process for test/portfolio-lock-expiry.test.ts: an instance that takes the
 * portfolio lock, reads the portfolio, and then stops dead (the whole process, as in a long
 * GC pause or SIGSTOP: no timers run, so nothing extends its lock) for PAUSE_MS right
 * before its commit. It reports over IPC when it is holding the lock and how its write ended.
 *
 * Run with `node --import tsx`, the env of an instance plus USER_ID, TICKER and PAUSE_MS.
 */
import { Writable } from 'node:stream'
import { buildApp } from '../src/app.js'
import { loadConfig } from '../src/config.js'
import { createPortfolioService } from '../src/portfolio/service.js'
import type { QuoteSource } from '../src/portfolio/valuation.js'

const send = (message: object): Promise<void> => new Promise((resolve) => { process.send?.(message, () => resolve()) })

const config = loadConfig(process.env)
const app = await buildApp(config, { logStream: new Writable({ write (_chunk, _enc, done) { done() } }) })
await app.ready()
const userId = process.env.USER_ID ?? ''
const ticker = process.env.TICKER ?? 'PAUSE'
const pauseMs = Number(process.env.PAUSE_MS ?? '500')

// Pricing under the lock is the last step before the commit: tell the parent, then freeze
// the process. (The service also warms the quotes before it takes the lock: not then.)
const freezingQuotes: QuoteSource = {
  async getMany (tickers) {
    const answer = { quotes: tickers.map((t) => ({ ticker: t, quote: { price: 100 } })), errors: [] }
    if (app.locks.stats().acquisitions === 0) return answer
    await send({ type: 'holding', at: Date.now() })
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, pauseMs)
    return answer
  },
}

const quiet = { info () {}, warn () {}, debug () {} }
const service = createPortfolioService({
  repo: app.db.portfolios,
  locks: app.locks,
  cache: app.cache,
  quotes: freezingQuotes,
  log: quiet,
  portfolioTtlSeconds: config.PORTFOLIO_TTL_SECONDS,
  lockTtlMs: config.PORTFOLIO_LOCK_TTL_MS,
  idempotencyTtlSeconds: config.IDEMPOTENCY_TTL_SECONDS,
})

let outcome: { ok: boolean, statusCode?: number, message?: string, version?: number }
try {
  const result = await service.trade(userId, { ticker, side: 'buy', shares: 7, price: 100 })
  outcome = { ok: true, version: result.view.version }
} catch (err) {
  const e = err as { statusCode?: number, message: string }
  outcome = { ok: false, ...(e.statusCode !== undefined ? { statusCode: e.statusCode } : {}), message: e.message }
}
await send({ type: 'done', at: Date.now(), outcome, stats: service.stats(), locks: app.locks.stats() })
await app.close()
process.disconnect()
