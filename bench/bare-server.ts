/**
 * The baseline: a plain Fastify 5 app with one JSON route and nothing else (no logger, no
 * plugins, no schema), on HOST/PORT. The health payload's size and shape, so the ratio
 * measures what the service adds on top of Fastify itself.
 *
 * `GET /with-headers`, a reference and not the baseline: the same answer plus the five
 * headers a rate-limited quote must carry (`x-ratelimit-limit`, `-remaining`, `-reset`, then
 * `x-cache` and `age`), set with `reply.header` as any Fastify app would. Its ratio to `/`
 * is what those headers alone cost in Fastify and Node's HTTP code.
 */
import Fastify from 'fastify'

const app = Fastify({ logger: false })

const payload = (): object => ({
  status: 'OK',
  timestamp: new Date().toISOString(),
  uptime: Math.round(process.uptime() * 1000) / 1000,
  version: '0.1.0',
  redis: { status: 'connected', responseTime: 0.42, mode: 'redis' },
})

app.get('/', async () => payload())

const LIMIT = 1_000_000_000
let used = 0
app.get('/with-headers', async (_request, reply) => {
  used++
  void reply.header('x-ratelimit-limit', String(LIMIT)).header('x-ratelimit-remaining', String(LIMIT - used)).header('x-ratelimit-reset', '60')
    .header('x-cache', 'HIT').header('age', String(Math.floor(Date.now() / 1000) % 20))
  return payload()
})

const shutdown = (): void => {
  app.close().then(() => process.exit(0), () => process.exit(1))
}
process.once('SIGTERM', shutdown)
process.once('SIGINT', shutdown)

await app.listen({ host: process.env.HOST ?? '127.0.0.1', port: Number(process.env.PORT ?? 0) })
