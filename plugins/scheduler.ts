/**
 * Adds `scheduler`: jobs declared with a name, an interval (`every`, ms) or a cron
 * expression (read in SCHEDULER_TZ, UTC by default), optional market hours (read in the same
 * zone), and a lock TTL, each tick run by exactly one instance under
 * `lock:job:<name>:<tick>`. Jobs skip their ticks while a configured Redis is unavailable
 * (fail closed); without Redis configured they run under in-process locks. Timers start
 * when the app is ready; on close they stop and running jobs are aborted and awaited.
 * Registers the jobs metrics.
 */
import fp from 'fastify-plugin'
import type { Config } from '../src/config.js'
import type { Locks } from '../src/engines/locks/locks.js'
import { registerJobsMetrics } from '../src/metrics/jobs-collectors.js'
import { Scheduler, type SchedulerLogger } from '../src/scheduler/scheduler.js'

declare module 'fastify' {
  interface FastifyInstance {
    scheduler: ReturnType<typeof createScheduler>
  }
}

export function createScheduler (config: Config, locks: Locks, log: SchedulerLogger) {
  return new Scheduler({
    locks,
    enabled: config.SCHEDULER_ENABLED,
    log,
    stopTimeoutMs: config.SHUTDOWN_TIMEOUT_MS,
    timeZone: config.SCHEDULER_TZ,
  })
}

export default fp(async function schedulerPlugin (fastify) {
  const scheduler = createScheduler(fastify.config, fastify.locks, fastify.log.child({ component: 'scheduler' }))
  registerJobsMetrics(fastify.metrics, scheduler)
  fastify.decorate('scheduler', scheduler)
  fastify.addHook('onReady', async () => { scheduler.start() })
  // preClose: before the server and the Redis clients close, so a running job can finish.
  fastify.addHook('preClose', async () => { await scheduler.stop() })
}, { name: 'scheduler', fastify: '5.x', dependencies: ['config', 'metrics', 'redis', 'locks'] })
