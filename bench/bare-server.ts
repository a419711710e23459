/**
 * The baseline: a plain Fastify 5 app with one JSON route and nothing else (no logger, no
 * plugins, no schema), on HOST/PORT. The health payload's size and shape, so the ratio
 * measures what the service adds on top of Fastify itself.
 */
import Fastify from 'fastify'

const app = Fastify({ logger: false })

app.get('/', async () => ({
  status: 'OK',
  timestamp: new Date().toISOString(),
  uptime: Math.round(process.uptime() * 1000) / 1000,
  version: '0.1.0',
  redis: { status: 'connected', responseTime: 0.42, mode: 'redis' },
}))

const shutdown = (): void => {
  app.close().then(() => process.exit(0), () => process.exit(1))
}
process.once('SIGTERM', shutdown)
process.once('SIGINT', shutdown)

await app.listen({ host: process.env.HOST ?? '127.0.0.1', port: Number(process.env.PORT ?? 0) })
