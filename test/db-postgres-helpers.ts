/**
 * Shared by the PostgreSQL tests: an app instance on a database URL with a working
 * directory of its own (its ./data, as a second machine has), and a private Redis.
 */
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { FastifyInstance } from 'fastify'
import { build, type TapTest } from './helper.js'
import { portfolioEnv } from './portfolio-helpers.js'
import { startRedis, type RedisProcess } from './helpers/redis-server.js'

/** A working directory of its own (its ./data), as a second machine has. */
export function workDir (t: TapTest): string {
  const dir = mkdtempSync(join(tmpdir(), 'aic-instance-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  return dir
}

export async function privateRedis (t: TapTest): Promise<RedisProcess> {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  return redis
}

/** An app on PostgreSQL (and Redis when given), with its own SQLite path that must stay unused. */
export async function instance (t: TapTest, databaseUrl: string, redisUrl: string | undefined, extra: Record<string, string> = {}): Promise<{ app: FastifyInstance, dir: string }> {
  const dir = workDir(t)
  const { app } = await build(t, portfolioEnv(redisUrl, join(dir, 'data', 'ai-capital.db'), { DATABASE_URL: databaseUrl, ...extra }))
  return { app, dir }
}

