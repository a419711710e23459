/**
 * Admin views of the locks and the scheduled jobs: held locks (SCAN over `lock:*` on every
 * master, never KEYS) with owner and TTL, and each job's last run, next run, duration,
 * last error and counters on this instance; and a force-release of a stuck lock, logged with
 * the admin who asked.
 */
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from 'typebox'
import { ErrorSchema } from '../../src/schemas.js'
import { BadRequestError, NotFoundError } from '../../src/errors.js'
import { LOCK_NAMESPACE } from '../../src/engines/locks/locks.js'

const Count = Type.Integer({ minimum: 0 })
const NullableString = Type.Union([Type.String(), Type.Null()])
const NullableDate = Type.Union([Type.String({ format: 'date-time' }), Type.Null()])
const Backend = Type.Union([Type.Literal('redlock'), Type.Literal('local'), Type.Literal('fallback')], {
  description: 'redlock: Redis masters; local: no Redis configured (one instance); fallback: the main Redis is down, in-process locks.',
})

export const DebugLocksSchema = Type.Object({
  instance: Type.String({ description: '<hostname>:<pid> of the instance that answered.' }),
  backend: Backend,
  masters: Type.Array(Type.Object({ name: Type.String({ description: 'URL with its password redacted.' }), reachable: Type.Boolean() })),
  complete: Type.Boolean({ description: 'False when the listing stopped at its bound before the end.' }),
  locks: Type.Array(Type.Object({
    resource: Type.String({ description: 'The key without REDIS_KEY_PREFIX, e.g. lock:portfolio:<userId>.' }),
    owner: NullableString,
    instance: NullableString,
    ttlMs: Type.Union([Type.Integer(), Type.Null()], { description: 'null: no expiry.' }),
    source: Type.Union([Type.Literal('redis'), Type.Literal('local')]),
    masters: Type.Integer({ minimum: 0, description: 'Masters holding it with this owner.' }),
  })),
  stats: Type.Object({
    acquisitions: Count,
    contentions: Count,
    timeouts: Count,
    unavailable: Count,
    failures: Count,
    extensions: Count,
    extensionFailures: Count,
    lost: Count,
    fallbackAcquisitions: Count,
    held: Count,
  }),
  timestamp: Type.String({ format: 'date-time' }),
})

export const DebugJobsSchema = Type.Object({
  instance: Type.String(),
  enabled: Type.Boolean(),
  jobs: Type.Array(Type.Object({
    name: Type.String(),
    schedule: Type.String(),
    lockTtlMs: Count,
    running: Type.Boolean(),
    lastRunAt: NullableDate,
    lastDurationMs: Type.Union([Type.Number(), Type.Null()]),
    lastError: NullableString,
    nextRunAt: NullableDate,
    runs: Count,
    skips: Count,
    lastSkipReason: NullableString,
    failures: Count,
    ranElsewhere: Count,
  })),
  stats: Type.Object({ runs: Count, skips: Count, failures: Count, jobs: Count }),
  timestamp: Type.String({ format: 'date-time' }),
})

export const ReleasedSchema = Type.Object({
  resource: Type.String(),
  backend: Backend,
  owner: NullableString,
  masters: Type.Integer({ minimum: 0, description: 'Masters it was deleted on (0: an in-process lock).' }),
  timestamp: Type.String({ format: 'date-time' }),
})

const debugLocks: FastifyPluginAsyncTypebox = async (fastify) => {
  const { locks, scheduler } = fastify

  fastify.get('/locks', {
    schema: {
      tags: ['debug'],
      summary: 'Held locks with owner and TTL (admin)',
      security: [{ bearerAuth: [] }],
      response: { 200: DebugLocksSchema, 401: ErrorSchema, 403: ErrorSchema },
    },
  }, async () => {
    const listing = await locks.list()
    return { instance: locks.instanceId, ...listing, stats: locks.stats(), timestamp: new Date().toISOString() }
  })

  fastify.delete('/locks/:resource', {
    schema: {
      tags: ['debug'],
      summary: 'Force-release a held lock, whoever holds it (admin)',
      description: 'For a lock whose holder is stuck. The holder loses it at its next extension; the action is logged with the admin who asked.',
      security: [{ bearerAuth: [] }],
      params: Type.Object({ resource: Type.String({ minLength: 1, maxLength: 512, description: `The lock's key, e.g. ${LOCK_NAMESPACE}portfolio:<userId> (URL-encoded).` }) }),
      response: { 200: ReleasedSchema, 400: ErrorSchema, 401: ErrorSchema, 403: ErrorSchema, 404: ErrorSchema },
    },
  }, async (request) => {
    const { resource } = request.params
    if (!resource.startsWith(LOCK_NAMESPACE) || !/^[\x21-\x7e]+$/.test(resource)) {
      throw new BadRequestError(`Only locks can be released: the key must start with ${LOCK_NAMESPACE} and be printable ASCII without spaces`)
    }
    const released = await locks.forceRelease(resource)
    if (released === null) throw new NotFoundError(`No lock is held on ${resource}`)
    request.log.warn({ resource, ...released, by: { userId: request.user.sub, email: request.user.session.email ?? null } }, 'lock force-released by an admin')
    return { resource, ...released, timestamp: new Date().toISOString() }
  })

  fastify.get('/jobs', {
    schema: {
      tags: ['debug'],
      summary: 'Scheduled jobs: last and next run, duration, last error, counters (admin)',
      security: [{ bearerAuth: [] }],
      response: { 200: DebugJobsSchema, 401: ErrorSchema, 403: ErrorSchema },
    },
  }, async () => ({
    instance: locks.instanceId,
    enabled: scheduler.enabled,
    jobs: scheduler.jobs(),
    stats: scheduler.stats(),
    timestamp: new Date().toISOString(),
  }))
}

export default debugLocks
