/**
 * Adds `portfolio`: portfolios in the primary store, read through the cache
 * (`portfolio:<userId>`), written under `lock:portfolio:<userId>` with a version-checked
 * commit and idempotent retries. Registers the jobs `quotes-prewarm` (every
 * QUOTES_PREWARM_INTERVAL_MS, within QUOTES_PREWARM_HOURS when set) and `portfolio-snapshot`
 * (PORTFOLIO_SNAPSHOT_CRON, in SCHEDULER_TZ) with the scheduler, which runs each tick on
 * one instance. Registers the portfolio metrics.
 */
import fp from 'fastify-plugin'
import type { FastifyBaseLogger } from 'fastify'
import { Cron } from 'croner'
import type { Config } from '../src/config.js'
import type { PortfolioRepo } from '../src/portfolio/repo.js'
import { createPortfolioService, type LockService, type PortfolioServiceOptions } from '../src/portfolio/service.js'
import { registerPortfolioMetrics } from '../src/metrics/portfolio-collectors.js'

declare module 'fastify' {
  interface FastifyInstance {
    portfolio: ReturnType<typeof createPortfolioFromConfig>
  }
}

export const PREWARM_JOB = 'quotes-prewarm'
export const SNAPSHOT_JOB = 'portfolio-snapshot'

export function createPortfolioFromConfig (
  config: Pick<Config, 'PORTFOLIO_TTL_SECONDS' | 'PORTFOLIO_LOCK_TTL_MS' | 'IDEMPOTENCY_TTL_SECONDS' | 'PORTFOLIO_MAX_POSITIONS' | 'IDEMPOTENCY_MAX_KEYS_PER_USER'>,
  deps: { repo: PortfolioRepo, locks: LockService, cache: PortfolioServiceOptions['cache'], quotes: PortfolioServiceOptions['quotes'], log: FastifyBaseLogger },
) {
  return createPortfolioService({
    repo: deps.repo,
    locks: deps.locks,
    cache: deps.cache,
    quotes: deps.quotes,
    log: deps.log,
    portfolioTtlSeconds: config.PORTFOLIO_TTL_SECONDS,
    lockTtlMs: config.PORTFOLIO_LOCK_TTL_MS,
    idempotencyTtlSeconds: config.IDEMPOTENCY_TTL_SECONDS,
    maxPositions: config.PORTFOLIO_MAX_POSITIONS,
    maxKeysPerUser: config.IDEMPOTENCY_MAX_KEYS_PER_USER,
  })
}

/** Null when the expression is valid, otherwise why not. */
export function cronProblem (expression: string): string | null {
  try {
    const cron = new Cron(expression, { paused: true, timezone: 'UTC' })
    const never = cron.nextRun() === null
    cron.stop()
    return never ? 'it never fires' : null
  } catch (err) {
    return err instanceof Error ? err.message : String(err)
  }
}

export default fp(async function portfolioPlugin (fastify) {
  const { config } = fastify
  const problem = cronProblem(config.PORTFOLIO_SNAPSHOT_CRON)
  if (problem !== null) {
    throw new Error(`PORTFOLIO_SNAPSHOT_CRON: not a valid cron expression (${JSON.stringify(config.PORTFOLIO_SNAPSHOT_CRON)}): ${problem}`)
  }
  const log = fastify.log.child({ component: 'portfolio' })
  const portfolio = createPortfolioFromConfig(config, {
    repo: fastify.db.portfolios,
    locks: fastify.locks,
    cache: fastify.cache,
    quotes: fastify.quotes,
    log,
  })
  registerPortfolioMetrics(fastify.metrics, portfolio)
  fastify.decorate('portfolio', portfolio)

  // Expired idempotency records go on a plain timer on every instance: deleting them twice is
  // harmless, so no lock is needed, and they are purged whether Redis is up or not (the
  // snapshot job, which also purges, is skipped while Redis is away).
  const purge = (): void => {
    portfolio.purgeExpiredKeys()
      .then((purged) => { if (purged > 0) log.info({ purged }, 'expired idempotency records deleted') })
      .catch((err: unknown) => { log.warn({ reason: err instanceof Error ? err.message : String(err) }, 'deleting expired idempotency records failed') })
  }
  const purgeTimer = setInterval(purge, config.IDEMPOTENCY_PURGE_INTERVAL_MS).unref()
  fastify.addHook('onReady', async () => { purge() })
  fastify.addHook('onClose', async () => { clearInterval(purgeTimer) })

  fastify.scheduler.add({
    name: PREWARM_JOB,
    every: config.QUOTES_PREWARM_INTERVAL_MS,
    lockTtlMs: Math.max(5000, config.QUOTES_PREWARM_INTERVAL_MS),
    ...(config.QUOTES_PREWARM_HOURS !== undefined ? { hours: config.QUOTES_PREWARM_HOURS } : {}),
    run: async (signal) => { await portfolio.jobs.prewarm(signal) },
  })
  fastify.scheduler.add({
    name: SNAPSHOT_JOB,
    cron: config.PORTFOLIO_SNAPSHOT_CRON,
    lockTtlMs: 60_000,
    run: async (signal) => { await portfolio.jobs.snapshot(signal) },
  })
}, { name: 'portfolio', fastify: '5.x', dependencies: ['config', 'metrics', 'db', 'cache', 'locks', 'scheduler'] })
