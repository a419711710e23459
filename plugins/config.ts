/** Adds the validated configuration as `fastify.config` and the process lifecycle flags. */
import fp from 'fastify-plugin'
import type { Config } from '../src/config.js'

declare module 'fastify' {
  interface FastifyInstance {
    config: Config
    lifecycle: ReturnType<typeof createLifecycle>
  }
}

export function createLifecycle (now: number = Date.now()) {
  return {
    /** Set when SIGTERM/SIGINT arrives: readiness answers 503 from then on. */
    shuttingDown: false,
    startedAt: now,
  }
}

export default fp<{ config: Config }>(async function configPlugin (fastify, opts) {
  fastify.decorate('config', opts.config)
  fastify.decorate('lifecycle', createLifecycle())
}, { name: 'config', fastify: '5.x' })
