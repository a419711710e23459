/**
 * The cold-key comparison alone (ours against bentocache, two instances each, on one private
 * redis-server): `npx tsx bench/cold-keys.ts`. The same function runs inside `npm run bench`,
 * on the bentocache row.
 */
import { startRedis } from '../test/helpers/redis-server.js'
import { coldKeyComparison } from './scenarios/quotes.js'

const redis = await startRedis()
try {
  const line = await coldKeyComparison({ baseUrl: '', state: {}, redisUrl: redis.url, redis: { command: async (...args: string[]) => redis.command(...args) } })
  console.log(line.split('; ').join('\n'))
} finally {
  await redis.kill('SIGTERM')
}
