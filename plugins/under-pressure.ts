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
 * Memory bounds are checked here, not by the library, because a memory bound can lock
 * itself on: once everything is shed nothing allocates, so V8 never collects the garbage
 * that put the heap over. So each sample over a bound forces a full GC (at most once a
 * second) and measures again; shedding starts and stops on the measure after that GC. A
 * process still over its bound after PRESSURE_MEMORY_STUCK_MS of this holds live memory it
 * cannot give back: `/api/health/live` then answers 503 (`MEMORY_STUCK`) so the orchestrator
 * restarts it; shedding goes on meanwhile.
 *
 * Adds `loadShedding`: the bounds, whether an episode is on and the count of shed requests by
 * reason, for the metrics plugin. One warning per episode; an episode ends when the pressure
 * ends (seen by the sampler), not when requests pause, so sparse traffic gets no repeats.
 */
import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'
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

/** A full GC at most this often while over a memory bound. */
const GC_MIN_INTERVAL_MS = 1000

type WarnLogger = { warn (obj: object, msg: string): void, info (obj: object, msg: string): void, error (obj: object, msg: string): void }

type SheddingConfig = Pick<Config, 'MAX_EVENT_LOOP_DELAY_MS' | 'MAX_HEAP_USED_BYTES' | 'MAX_RSS_BYTES' | 'PRESSURE_RETRY_AFTER_SECONDS' | 'PRESSURE_SAMPLE_INTERVAL_MS'> & Partial<Pick<Config, 'PRESSURE_MEMORY_STUCK_MS'>>

export interface MemoryReading { heapUsed: number, rss: number }

export interface LoadSheddingDeps {
  /** Reads the process's memory (injectable for tests). */
  read?: () => MemoryReading
  /** Forces a full collection; null: none available. */
  gc?: (() => void) | null
  now?: () => number
}

/** V8's full collection, without starting node with --expose-gc. */
function exposeGc (): (() => void) | null {
  const existing = (globalThis as { gc?: () => void }).gc
  if (typeof existing === 'function') return existing
  try {
    setFlagsFromString('--expose-gc')
    const gc = runInNewContext('gc') as unknown
    return typeof gc === 'function' ? gc as () => void : null
  } catch {
    return null
  }
}

export function createLoadShedding (config: SheddingConfig, log: WarnLogger, deps: LoadSheddingDeps = {}) {
  const shed: Record<PressureReason, number> = { eventLoopDelay: 0, heapUsedBytes: 0, rssBytes: 0, eventLoopUtilization: 0, healthCheck: 0 }
  const retryAfter = config.PRESSURE_RETRY_AFTER_SECONDS
  const stuckAfterMs = config.PRESSURE_MEMORY_STUCK_MS ?? 60_000
  const now = deps.now ?? Date.now
  const read = deps.read ?? ((): MemoryReading => {
    const m = process.memoryUsage()
    return { heapUsed: m.heapUsed, rss: m.rss }
  })
  const memoryBound = config.MAX_HEAP_USED_BYTES > 0 || config.MAX_RSS_BYTES > 0
  const gc = deps.gc !== undefined ? deps.gc : (memoryBound ? exposeGc() : null)
  /** The current episode: from the first shed request until the sampler sees no pressure. */
  let episode: { reason: PressureReason, since: number, count: number } | null = null
  const enabled = config.MAX_EVENT_LOOP_DELAY_MS > 0 || memoryBound
  const bounds = {
    maxEventLoopDelayMs: config.MAX_EVENT_LOOP_DELAY_MS,
    maxHeapUsedBytes: config.MAX_HEAP_USED_BYTES,
    maxRssBytes: config.MAX_RSS_BYTES,
  }
  /** Memory over a bound, as measured after a full GC. */
  let memory: { reason: 'heapUsedBytes' | 'rssBytes', value: number, since: number } | null = null
  let lastGc = Number.NEGATIVE_INFINITY
  let stuckLogged = false
  let collections = 0

  function over (m: MemoryReading): { reason: 'heapUsedBytes' | 'rssBytes', value: number } | null {
    if (config.MAX_HEAP_USED_BYTES > 0 && m.heapUsed > config.MAX_HEAP_USED_BYTES) return { reason: 'heapUsedBytes', value: m.heapUsed }
    if (config.MAX_RSS_BYTES > 0 && m.rss > config.MAX_RSS_BYTES) return { reason: 'rssBytes', value: m.rss }
    return null
  }

  function isStuck (t: number): boolean {
    if (memory === null || stuckAfterMs === 0 || t - memory.since < stuckAfterMs) return false
    if (!stuckLogged) {
      stuckLogged = true
      log.error({ reason: memory.reason, value: memory.value, bounds, forMs: t - memory.since },
        'memory over its bound even after a full garbage collection: /api/health/live answers 503 so that the orchestrator restarts this instance')
    }
    return true
  }

  return {
    enabled,
    bounds,
    retryAfter,

    /**
     * One memory sample (called every PRESSURE_SAMPLE_INTERVAL_MS): over a bound, collect
     * and measure again. Returns true when the service is within its memory bounds.
     */
    sampleMemory (): boolean {
      if (!memoryBound) return true
      const t = now()
      let found = over(read())
      if (found !== null && gc !== null && t - lastGc >= GC_MIN_INTERVAL_MS) {
        lastGc = t
        collections++
        gc()
        found = over(read())
      }
      if (found === null) {
        if (memory !== null) stuckLogged = false
        memory = null
        return true
      }
      memory = { ...found, since: memory?.since ?? t }
      isStuck(t)
      return false
    },

    /** Over a memory bound for PRESSURE_MEMORY_STUCK_MS, after GCs: liveness fails. */
    stuck (): boolean {
      return isStuck(now())
    },

    /** The sampler saw no pressure: the episode, if any, is over. */
    pressureEnded (): void {
      if (episode === null) return
      log.info({ reason: episode.reason, shed: episode.count, durationMs: now() - episode.since }, 'load shedding stopped')
      episode = null
    },

    /** The answer for a request that arrives under pressure (the library sends what is returned). */
    refuse (reply: FastifyReply, type: string, value: number | undefined) {
      let reason = (type in shed ? type : 'healthCheck') as PressureReason
      if (reason === 'healthCheck' && memory !== null) {
        // Memory bounds are checked through the library's health check (see above).
        reason = memory.reason
        value = memory.value
      }
      shed[reason]++
      if (episode === null) {
        episode = { reason, since: now(), count: 0 }
        log.warn({ reason, value, bounds }, 'load shedding: answering 503 until the service recovers')
      }
      episode.count++
      void reply.code(503).header('retry-after', String(retryAfter))
      return { statusCode: 503, error: 'Service Unavailable', message: `The service is overloaded (${REASON_TEXT[reason]}), retry in ${retryAfter} s` }
    },

    stats () {
      return { enabled, shed: { ...shed }, active: episode !== null, memoryOver: memory !== null, collections }
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

  const maxDelay = config.MAX_EVENT_LOOP_DELAY_MS
  await fastify.register(underPressure, {
    maxEventLoopDelay: maxDelay,
    // The memory bounds go through the health check below (GC first), not the library's own test.
    maxHeapUsedBytes: 0,
    maxRssBytes: 0,
    sampleInterval: config.PRESSURE_SAMPLE_INTERVAL_MS,
    retryAfter: config.PRESSURE_RETRY_AFTER_SECONDS,
    ...(shedding.enabled
      ? {
          healthCheckInterval: config.PRESSURE_SAMPLE_INTERVAL_MS,
          healthCheck: async (instance) => {
            const withinMemory = shedding.sampleMemory()
            const delayed = maxDelay > 0 && instance.memoryUsage().eventLoopDelay > maxDelay
            if (withinMemory && !delayed) shedding.pressureEnded()
            return withinMemory
          },
        }
      : {}),
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
