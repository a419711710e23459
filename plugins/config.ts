/** Adds the validated configuration as `fastify.config` and the process lifecycle flags. */
import fp from 'fastify-plugin'
import type { Config } from '../src/config.js'

declare module 'fastify' {
  interface FastifyInstance {
    config: Config
    lifecycle: Lifecycle
  }
}

export interface Lifecycle {
  /** Set when SIGTERM/SIGINT arrives: readiness answers 503 from then on. */
  shuttingDown: boolean
  startedAt: number
}

export default fp<{ config: Config }>(async function configPlugin (fastify, opts) {
  fastify.decorate('config', opts.config)
  fastify.decorate('lifecycle', { shuttingDown: false, startedAt: Date.now() })
}, { name: 'config', fastify: '5.x' })
