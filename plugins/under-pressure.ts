/**
 * Load shedding with `@fastify/under-pressure`: while the mean event-loop delay, the V8 heap
 * or the RSS is past its bound (MAX_EVENT_LOOP_DELAY_MS, MAX_HEAP_USED_BYTES, MAX_RSS_BYTES;
 * 0 turns one off), requests are answered at once with 503, `Retry-After` and the usual
 * error body, before any other hook runs (no rate-limit count, no Redis call, no handler).
 *
 * A route opts out with `config: { shed: false }`: the probes (`/api/health/live`, whose
 * failure makes an orchestrator restart a process that is only busy, and
 * `/api/health/ready`, whose meaning is "shutting down or the primary store is unusable",
 * not "busy") and `/metrics` (operators need to see why the service sheds). Such a route
 * gets a route-level `pressureHandler` that lets the request through, set here in an
 * onRoute hook.
 *
 * Adds `loadShedding`: the bounds, whether an episode is on and the count of shed requests by
 * reason, for the metrics plugin. One warning is logged per episode, never per request.
 */
import fp from 'fastify-plugin'
import underPressure from '@fastify/under-pressure'
import type { FastifyReply, FastifyRequest } from 'fastify'
import type { Config } from '../src/config.js'
import { registerSheddingMetrics } from '../src/metrics/shedding-collectors.js'

declare module 'fastify' {
  interface FastifyInstance {
    loadShedding: ReturnType<typeof createLoadShedding>
  }
}

export type PressureReason = 'eventLoopDelay' | 'heapUsedBytes' | 'rssBytes' | 'eventLoopUtilization' | 'healthCheck'

const REASON_TEXT: Record<PressureReason, string> = {
  eventLoopDelay: 'event-loop delay',
  heapUsedBytes: 'heap in use',
  rssBytes: 'resident memory',
  eventLoopUtilization: 'event-loop utilisation',
  healthCheck: 'health check',
}

type WarnLogger = { warn (obj: object, msg: string): void, info (obj: object, msg: string): void }

export function createLoadShedding (config: Pick<Config, 'MAX_EVENT_LOOP_DELAY_MS' | 'MAX_HEAP_USED_BYTES' | 'MAX_RSS_BYTES' | 'PRESSURE_RETRY_AFTER_SECONDS' | 'PRESSURE_SAMPLE_INTERVAL_MS'>, log: WarnLogger) {
  const shed: Record<PressureReason, number> = { eventLoopDelay: 0, heapUsedBytes: 0, rssBytes: 0, eventLoopUtilization: 0, healthCheck: 0 }
  const retryAfter = config.PRESSURE_RETRY_AFTER_SECONDS
  /** Start of the current episode (a run of shed requests with no gap of a sample interval or more). */
  let episode: { reason: PressureReason, since: number, last: number, count: number } | null = null
  const enabled = config.MAX_EVENT_LOOP_DELAY_MS > 0 || config.MAX_HEAP_USED_BYTES > 0 || config.MAX_RSS_BYTES > 0
  const bounds = {
    maxEventLoopDelayMs: config.MAX_EVENT_LOOP_DELAY_MS,
    maxHeapUsedBytes: config.MAX_HEAP_USED_BYTES,
    maxRssBytes: config.MAX_RSS_BYTES,
  }

  function endEpisodeIfOver (now: number): void {
    if (episode !== null && now - episode.last > 2 * config.PRESSURE_SAMPLE_INTERVAL_MS) {
      log.info({ reason: episode.reason, shed: episode.count, durationMs: episode.last - episode.since }, 'load shedding stopped')
      episode = null
    }
  }

  return {
    enabled,
    bounds,
    retryAfter,

    /** The answer for a request that arrives under pressure (the library sends what is returned). */
    refuse (reply: FastifyReply, type: string, value: number | undefined) {
      const reason = (type in shed ? type : 'healthCheck') as PressureReason
      shed[reason]++
      const now = Date.now()
      endEpisodeIfOver(now)
      if (episode === null) {
        episode = { reason, since: now, last: now, count: 0 }
        log.warn({ reason, value, bounds }, 'load shedding: answering 503 until the service recovers')
      }
      episode.last = now
      episode.count++
      void reply.code(503).header('retry-after', String(retryAfter))
      return { statusCode: 503, error: 'Service Unavailable', message: `The service is overloaded (${REASON_TEXT[reason]}), retry in ${retryAfter} s` }
    },

    stats () {
      endEpisodeIfOver(Date.now())
      return { enabled, shed: { ...shed }, active: episode !== null }
    },
  }
}

/** Lets an exempt route through whatever the pressure (nullish = handle normally). */
function letThrough (_request: FastifyRequest, _reply: FastifyReply): undefined {
  return undefined
}

export default fp(async function underPressurePlugin (fastify) {
  const config = fastify.config
  const shedding = createLoadShedding(config, fastify.log.child({ component: 'under-pressure' }))
  fastify.decorate('loadShedding', shedding)
  registerSheddingMetrics(fastify.metrics, shedding)

  fastify.addHook('onRoute', (route) => {
    if (route.config?.shed === false && route.config.pressureHandler === undefined) {
      route.config = { ...route.config, pressureHandler: letThrough }
    }
  })

  await fastify.register(underPressure, {
    maxEventLoopDelay: config.MAX_EVENT_LOOP_DELAY_MS,
    maxHeapUsedBytes: config.MAX_HEAP_USED_BYTES,
    maxRssBytes: config.MAX_RSS_BYTES,
    sampleInterval: config.PRESSURE_SAMPLE_INTERVAL_MS,
    retryAfter: config.PRESSURE_RETRY_AFTER_SECONDS,
    // Documented: a returned value other than a promise or nullish is sent as the answer.
    pressureHandler: (_request, reply, type, value) => shedding.refuse(reply, type, value) as unknown as void,
  })
}, { name: 'under-pressure', fastify: '5.x', dependencies: ['config', 'metrics'] })

declare module 'fastify' {
  interface FastifyContextConfig {
    /** `false`: answered whatever the pressure (health probes, the metrics scrape). */
    shed?: false
    /** Set by the under-pressure plugin on routes with `shed: false`. */
    pressureHandler?: (request: FastifyRequest, reply: FastifyReply, type: string, value: number | undefined) => unknown
  }
}
