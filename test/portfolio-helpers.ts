/**
 * Shared by the portfolio tests: an env for an app on a private Redis and a temporary
 * SQLite file (several instances can share both), and small request helpers.
 */
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { FastifyInstance, LightMyRequestResponse } from 'fastify'
import { AUTH_ENV, bearer } from './auth-helpers.js'
import type { PortfolioView } from '../src/portfolio/valuation.js'

interface Teardownable { teardown (fn: () => unknown): void }

/** A database file in a fresh temp dir (WAL), removed in teardown. */
export function tempDatabase (t: Teardownable): string {
  const dir = mkdtempSync(join(tmpdir(), 'aic-portfolio-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  return join(dir, 'portfolio.db')
}

/**
 * Env for one instance. Jobs are registered but their timers stay off (the tests run them
 * by hand); limits that are not under test are set out of the way.
 */
export function portfolioEnv (redisUrl: string | undefined, databasePath: string, extra: Record<string, string> = {}): Record<string, string | undefined> {
  return {
    ...AUTH_ENV,
    REDIS_URL: redisUrl,
    DATABASE_PATH: databasePath,
    SCHEDULER_ENABLED: 'false',
    RATE_LIMIT_MAX: '1000000',
    LOG_LEVEL: 'warn',
    ...extra,
  }
}

export interface Trade {
  ticker: string
  side: 'buy' | 'sell'
  shares: number
  price: number
}

export function postTrade (app: FastifyInstance, token: string, trade: Trade, idempotencyKey?: string): Promise<LightMyRequestResponse> {
  return app.inject({
    method: 'POST',
    url: '/api/portfolio/transactions',
    headers: { ...bearer(token), ...(idempotencyKey !== undefined ? { 'idempotency-key': idempotencyKey } : {}) },
    payload: trade,
  })
}

export async function getPortfolio (app: FastifyInstance, token: string): Promise<{ status: number, cache: string | undefined, view: PortfolioView }> {
  const res = await app.inject({ method: 'GET', url: '/api/portfolio', headers: bearer(token) })
  return { status: res.statusCode, cache: res.headers['x-cache'] as string | undefined, view: res.json<PortfolioView>() }
}

/** Shares of `ticker` in the view (0 when absent). */
export function sharesOf (view: PortfolioView, ticker: string): number {
  return view.positions.find((p) => p.ticker === ticker)?.shares ?? 0
}
