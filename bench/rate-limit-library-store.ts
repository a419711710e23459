/**
 * `npx tsx bench/rate-limit-library-store.ts`: what @fastify/rate-limit's own Redis store does
 * (docs/adr/0002-rate-limit-store.md): Redis commands per hit, a counter left without a TTL,
 * and the answers while Redis is hung or dead. Runs on private redis-servers; prints facts,
 * asserts nothing.
 */
import Fastify, { type FastifyInstance } from 'fastify'
import rateLimit from '@fastify/rate-limit'
import { Redis, type RedisOptions } from 'ioredis'
import { startRedis } from '../test/helpers/redis-server.js'

async function appOn (redis: Redis, skipOnError: boolean): Promise<FastifyInstance> {
  const app = Fastify({ logger: false })
  await app.register(rateLimit, { max: 1_000_000, timeWindow: 60_000, redis, skipOnError })
  app.get('/', async () => ({ ok: true }))
  await app.ready()
  return app
}

async function statuses (app: FastifyInstance, n: number, capMs: number): Promise<string> {
  const started = performance.now()
  const answers = await Promise.all(Array.from({ length: n }, () => Promise.race([
    app.inject('/').then((r) => `${r.statusCode}${r.statusCode >= 500 ? ` ${JSON.stringify(r.json<{ message: string }>().message)}` : ` limit ${r.headers['x-ratelimit-limit'] ?? 'none'}`}`),
    new Promise<string>((resolve) => setTimeout(() => { resolve(`no answer within ${capMs} ms`) }, capMs)),
  ])))
  const counts = new Map<string, number>()
  for (const a of answers) counts.set(a, (counts.get(a) ?? 0) + 1)
  return `${[...counts].map(([a, c]) => `${c} × ${a}`).join('; ')} (${(performance.now() - started).toFixed(0)} ms)`
}

async function client (url: string, options: RedisOptions): Promise<Redis> {
  const redis = new Redis(url, options)
  redis.on('error', () => {})
  await new Promise((resolve) => redis.once('ready', resolve))
  return redis
}

const server = await startRedis()
try {
  const service = { commandTimeout: 500, maxRetriesPerRequest: 1, enableOfflineQueue: false }
  const redis = await client(server.url, service)
  const app = await appOn(redis, false)
  await server.command('CONFIG', 'RESETSTAT')
  await Promise.all(Array.from({ length: 1000 }, () => app.inject('/')))
  const stats = (await server.command('INFO', 'commandstats')).split('\n').filter((l) => l.startsWith('cmdstat_') && !l.includes('config')).map((l) => l.trim().replace(/,usec.*/, ''))
  console.log(`1000 requests at once: ${stats.join(', ')}`)

  await server.command('SET', 'fastify-rate-limit-127.0.0.1', '5')
  await app.inject('/')
  console.log(`a counter left without a TTL, after a hit: value ${await server.command('GET', 'fastify-rate-limit-127.0.0.1')}, PTTL ${await server.command('PTTL', 'fastify-rate-limit-127.0.0.1')}`)

  const defaults = await client(server.url, {})
  const hungApp = await appOn(defaults, false)
  server.pause()
  console.log(`Redis hung, ioredis defaults: ${await statuses(hungApp, 5, 3000)}`)
  server.resume()
  await hungApp.close()
  defaults.disconnect()

  await server.kill()
  await new Promise((resolve) => setTimeout(resolve, 300))
  for (const skipOnError of [false, true]) {
    const down = await appOn(redis, skipOnError)
    console.log(`Redis dead, skipOnError ${String(skipOnError)}: ${await statuses(down, 20, 3000)}`)
    await down.close()
  }
  await app.close()
  redis.disconnect()
} finally {
  await server.stop()
}
