/**
 * The session store's outage-logout overflow against a scripted Redis seam: the overflow
 * (unverifiable tokens refused) ends only with a replay that covered every dropped logout,
 * not with one that Redis failing again overtook; and how long a logout made in Redis is kept.
 */
import t from 'tap'
import type { Redis } from 'ioredis'
import { createSessionStore } from '../src/auth/sessions.js'
import { MemoryStore } from '../src/engines/store/memory-store.js'
import type { ResilientStore } from '../src/engines/store/resilient-store.js'

t.test('logouts dropped while a replay runs keep unverifiable tokens refused until the next replay', async (t) => {
  const memory = new MemoryStore()
  let up = false
  let gate: (() => void) | null = null
  const replayed: string[] = []
  // Just what reconcile() sends: one pipeline of DEL + ZREM per revoked session.
  const client = {
    pipeline () {
      const queued: Array<[null, number]> = []
      const pipe = {
        del (key: string) { replayed.push(key); queued.push([null, 1]); return pipe },
        zrem () { queued.push([null, 1]); return pipe },
        exec: () => new Promise<Array<[null, number]>>((resolve) => { gate = () => resolve(queued) }),
      }
      return pipe
    },
  }
  const store = {
    memory,
    use: async <T>(_op: string, withRedis: (c: Redis) => Promise<T>, withMemory: (m: MemoryStore) => T | Promise<T>): Promise<T> =>
      up ? withRedis(client as unknown as Redis) : withMemory(memory),
  } as unknown as ResilientStore
  const state = { status: 'connected' as const, client: null, get available () { return up }, reportFailure () {} }
  const lines: string[] = []
  const log = { error: (_o: object, msg: string) => { lines.push(msg) }, warn () {}, info () {} }
  const sessions = createSessionStore({ store, state, ttlSeconds: 3600, fallback: 'allow', tokenTtlSeconds: 900, maxTombstones: 2, log })
  const now = Math.floor(Date.now() / 1000)
  const token = { sid: 'kept-session-id-000000', sub: 'u-kept', role: 'user' as const, iat: now, exp: now + 900 }

  t.not(await sessions.check(token), null, 'an unverifiable token is accepted under allow')
  for (const sid of ['s1', 's2', 's3']) await sessions.revoke(sid, 'u')
  t.equal(sessions.stats().tombstonesDropped, 1)
  t.equal(await sessions.check(token), null, 'refused once a logout was dropped')

  up = true
  const replay = sessions.reconcile()
  await new Promise((resolve) => setImmediate(resolve))
  t.ok(gate !== null, 'the replay waits on Redis')
  up = false // Redis fails again before the replay is done, and more logouts are dropped
  for (const sid of ['s4', 's5']) await sessions.revoke(sid, 'u')
  t.equal(sessions.stats().tombstonesDropped, 3)
  gate!()
  await replay
  t.same(replayed, ['session:s2', 'session:s3'], 'the replay carried the logouts it started with')
  t.equal(sessions.stats().reconciled, 2, 'two sessions removed (the DELs counted, not the ZREMs)')
  t.equal(await sessions.check(token), null, 'still refused: logouts were dropped after the replay began')

  up = true
  replayed.length = 0
  gate = null
  const second = sessions.reconcile()
  await new Promise((resolve) => setImmediate(resolve))
  gate!()
  await second
  t.same(replayed, ['session:s4', 'session:s5'])
  up = false
  t.not(await sessions.check(token), null, 'a replay that covered every logout held ends the overflow')
  t.equal(lines.length, 1, 'one overflow episode, logged once')
})

t.test('a logout made in Redis is remembered here for the tokens\' lifetime (JWT_EXPIRES_IN), not the outage tombstones\' longer one', async (t) => {
  const memory = new MemoryStore()
  let up = true
  const client = {
    multi () {
      const tx = { del () { return tx }, zrem () { return tx }, exec: async () => [[null, 1], [null, 1]] }
      return tx
    },
  }
  const store = {
    memory,
    use: async <T>(_op: string, withRedis: (c: Redis) => Promise<T>, withMemory: (m: MemoryStore) => T | Promise<T>): Promise<T> =>
      up ? withRedis(client as unknown as Redis) : withMemory(memory),
  } as unknown as ResilientStore
  const state = { status: 'connected' as const, client: null, get available () { return up }, reportFailure () {} }
  const log = { error () {}, warn () {}, info () {} }
  const sessions = createSessionStore({ store, state, ttlSeconds: 3600, fallback: 'allow', tokenTtlSeconds: 1, maxTombstones: 10, log })
  const now = Math.floor(Date.now() / 1000)
  const token = { sid: 'logged-out-in-redis-0000', sub: 'u-1', role: 'user' as const, iat: now, exp: now + 3600 }

  await sessions.revoke(token.sid, token.sub)
  up = false
  t.equal(await sessions.check(token), null, 'refused unchecked in the outage that follows')
  await new Promise((resolve) => setTimeout(resolve, 1100))
  // (A real token would have expired by now; this one's exp is far off to show the tombstone is gone.)
  t.not(await sessions.check(token), null, 'forgotten once no token of it can still be valid')
})
