/**
 * Sessions in a real redis-server: key, TTL and sliding; and what happens while Redis is
 * killed or frozen (SESSION_FALLBACK allow/deny, sessions created in the outage, logouts
 * during the outage replayed when Redis returns), and with no Redis configured.
 */
import { randomBytes } from 'node:crypto'
import t from 'tap'
import type { FastifyInstance } from 'fastify'
import { build, waitFor, type TapTest } from './helper.js'
import { skipUnlessRedis, startRedis, type RedisProcess } from './helpers/redis-server.js'
import { AUTH_ENV, JWT_AUDIENCE, JWT_ISSUER, JWT_SECRET, bearer, hs256, login, me, register, registerAndLogin } from './auth-helpers.js'

const redisOpts = skipUnlessRedis()

async function setup (t: TapTest, env: Record<string, string> = {}): Promise<{ app: FastifyInstance, redis: RedisProcess } & Omit<Awaited<ReturnType<typeof build>>, 'app'>> {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  const { app, logs, config } = await build(t, { ...AUTH_ENV, REDIS_URL: redis.url, ...env })
  return { app, redis, logs, config }
}

async function timedMe (app: FastifyInstance, token: string): Promise<{ statusCode: number, ms: number }> {
  const started = performance.now()
  const { statusCode } = await me(app, token)
  return { statusCode, ms: performance.now() - started }
}

t.test('login creates session:<sid> with the record and a TTL of SESSION_TTL_SECONDS', redisOpts, async (t) => {
  const { app, redis } = await setup(t)
  await register(app, 'kate@example.com')
  const s = await login(app, 'kate@example.com', undefined, { 'user-agent': 'tap-test/1.0' })
  const raw = await redis.command('GET', `session:${s.sid}`)
  const record = JSON.parse(raw) as Record<string, unknown>
  t.match(record, { userId: s.userId, email: 'kate@example.com', role: 'user', ip: '127.0.0.1', userAgent: 'tap-test/1.0' })
  t.ok(Math.abs(Date.parse(String(record.createdAt)) - Date.now()) < 5000, 'createdAt is now')
  const ttl = Number(await redis.command('PTTL', `session:${s.sid}`))
  t.ok(ttl > 3590_000 && ttl <= 3600_000, `PTTL ${ttl} ≤ 3600 s`)
  const score = Number(await redis.command('ZSCORE', `user_sessions:${s.userId}`, s.sid))
  t.ok(Math.abs(score - (Date.now() + ttl)) < 5000, `the index lists it, scored by its expiry (${score})`)
  t.ok(Number(await redis.command('PTTL', `user_sessions:${s.userId}`)) > 3590_000, 'the index has a TTL too')
})

t.test('SESSION_TTL_SECONDS is honoured', redisOpts, async (t) => {
  const { app, redis } = await setup(t, { SESSION_TTL_SECONDS: '120' })
  const s = await registerAndLogin(app, 'short@example.com')
  const ttl = Number(await redis.command('PTTL', `session:${s.sid}`))
  t.ok(ttl > 110_000 && ttl <= 120_000, `PTTL ${ttl}`)
})

t.test('the TTL slides on use, at most once a minute', redisOpts, async (t) => {
  const { app, redis } = await setup(t)
  const s = await registerAndLogin(app, 'slide@example.com')
  const key = `session:${s.sid}`
  const index = `user_sessions:${s.userId}`

  // As if the session had last been extended ten minutes ago.
  await redis.command('PEXPIRE', key, '3000000')
  await redis.command('PEXPIRE', index, '3000000')
  t.equal((await me(app, s.token)).statusCode, 200)
  const extended = Number(await redis.command('PTTL', key))
  t.ok(extended > 3590_000, `extended back to ~3600 s (PTTL ${extended})`)
  t.ok(Number(await redis.command('PTTL', index)) > 3590_000, 'and the per-user index with it')

  // Thirty seconds after the last extension: no write.
  await redis.command('PEXPIRE', key, '3570000')
  t.equal((await me(app, s.token)).statusCode, 200)
  const kept = Number(await redis.command('PTTL', key))
  t.ok(kept <= 3570_000, `not extended within the minute (PTTL ${kept})`)
  const me2 = await me(app, s.token)
  const expiresAt = Date.parse(String((me2.body.session as { expiresAt: string }).expiresAt))
  t.ok(Math.abs(expiresAt - (Date.now() + kept)) < 5000, '/me reports the real expiry')
})

/** Records the session keys of every script call the sessions make. */
function spyTouches (app: FastifyInstance): string[][] {
  const calls: string[][] = []
  const client = app.redis as unknown as { aicSessionTouch (numKeys: number, ...args: unknown[]): Promise<unknown> }
  const original = client.aicSessionTouch.bind(client)
  client.aicSessionTouch = (numKeys, ...args) => {
    calls.push(args.slice(0, numKeys).map(String))
    return original(numKeys, ...args)
  }
  return calls
}

t.test('concurrent checks of one session share one key in the script call, and each gets its answer', redisOpts, async (t) => {
  const { app } = await setup(t)
  await register(app, 'crowd@example.com')
  const a = await login(app, 'crowd@example.com')
  const b = await login(app, 'crowd@example.com')
  const other = await registerAndLogin(app, 'other@example.com')
  const now = Math.floor(Date.now() / 1000)
  const unknown = hs256({ alg: 'HS256', typ: 'JWT' }, { sub: a.userId, role: 'user', sid: randomBytes(16).toString('base64url'), iss: JWT_ISSUER, aud: JWT_AUDIENCE, iat: now, exp: now + 60 }, JWT_SECRET)
  const before = app.sessions.stats()
  const calls = spyTouches(app)

  const tokens = [...Array.from({ length: 8 }, () => a.token), b.token, b.token, other.token, unknown]
  const results = await Promise.all(tokens.map((token) => me(app, token)))
  t.same(results.map((r) => r.statusCode), [...Array.from({ length: 11 }, () => 200), 401])
  t.same(results.slice(0, 8).map((r) => (r.body.session as { id: string }).id), Array.from({ length: 8 }, () => a.sid))
  t.equal((results[9]?.body.session as { id: string }).id, b.sid)
  t.equal(results[10]?.body.email, 'other@example.com')

  t.ok(calls.length >= 1, `${calls.length} script call(s)`)
  for (const keys of calls) t.equal(new Set(keys).size, keys.length, `no key twice in one call: ${keys.join(' ')}`)
  t.ok(calls.flat().length < tokens.length, `${calls.flat().length} keys sent for ${tokens.length} checks`)
  const stats = app.sessions.stats()
  t.equal(stats.checks - before.checks, 12, 'every check is counted')
  t.equal(stats.accepted.redis - before.accepted.redis, 11)
  t.equal(stats.rejected.missing - before.rejected.missing, 1)
})

t.test('concurrent checks that are due to slide extend the session and its index, and all report the new expiry', redisOpts, async (t) => {
  const { app, redis } = await setup(t)
  const s = await registerAndLogin(app, 'herd@example.com')
  await redis.command('PEXPIRE', `session:${s.sid}`, '3000000')
  await redis.command('PEXPIRE', `user_sessions:${s.userId}`, '3000000')
  const results = await Promise.all(Array.from({ length: 10 }, () => me(app, s.token)))
  t.same(results.map((r) => r.statusCode), Array.from({ length: 10 }, () => 200))
  t.ok(Number(await redis.command('PTTL', `session:${s.sid}`)) > 3590_000, 'the session was extended')
  t.ok(Number(await redis.command('PTTL', `user_sessions:${s.userId}`)) > 3590_000, 'and the per-user index with it')
  for (const r of results) {
    const expiresAt = Date.parse(String((r.body.session as { expiresAt: string }).expiresAt))
    t.ok(expiresAt > Date.now() + 3590_000, 'each answer reports the extended expiry')
  }
})

t.test('a session record changed in Redis is read again, not taken from the parsed copy', redisOpts, async (t) => {
  const { app, redis } = await setup(t)
  const s = await registerAndLogin(app, 'edit@example.com')
  t.equal((await me(app, s.token)).body.email, 'edit@example.com')
  const key = `session:${s.sid}`
  const record = JSON.parse(await redis.command('GET', key)) as Record<string, unknown>
  await redis.command('SET', key, JSON.stringify({ ...record, email: 'changed@example.com' }), 'KEEPTTL')
  t.equal((await me(app, s.token)).body.email, 'changed@example.com')
  await redis.command('SET', key, JSON.stringify({ ...record, role: 'admin' }), 'KEEPTTL')
  t.equal((await me(app, s.token)).statusCode, 401, 'a record that no longer matches the token is refused')
  await redis.command('SET', key, 'not json', 'KEEPTTL')
  t.equal((await me(app, s.token)).statusCode, 401, 'so is one that does not parse')
})

t.test('concurrent checks while Redis is frozen all take the fallback (allow), logged once', redisOpts, async (t) => {
  // A long command timeout, so that waiting for it twice would stand out by seconds, more
  // than a busy machine adds.
  const { app, redis, logs, config } = await setup(t, { SESSION_FALLBACK: 'allow', REDIS_COMMAND_TIMEOUT_MS: '4000' })
  const s = await registerAndLogin(app, 'freeze@example.com')
  redis.pause()
  t.teardown(() => redis.resume())
  const started = performance.now()
  const results = await Promise.all(Array.from({ length: 6 }, () => me(app, s.token)))
  const ms = performance.now() - started
  t.ok(ms < config.REDIS_COMMAND_TIMEOUT_MS * 1.5, `all six answered after one command timeout at most, not two (${ms.toFixed(0)} ms; timeout ${config.REDIS_COMMAND_TIMEOUT_MS} ms)`)
  t.same(results.map((r) => r.statusCode), Array.from({ length: 6 }, () => 200))
  t.same(results.map((r) => r.body.email), Array.from({ length: 6 }, () => 'freeze@example.com'), 'the email comes from the database then')
  t.equal(app.redisState.available, false)
  t.equal(logs.lines.filter((l) => String(l.msg).includes('SESSION_FALLBACK=allow')).length, 1)
  t.equal(app.sessions.stats().accepted.fallback, 6)
})

t.test('an expired session (key gone) is refused although the token is still valid', redisOpts, async (t) => {
  const { app, redis } = await setup(t)
  const s = await registerAndLogin(app, 'exp@example.com')
  await redis.command('DEL', `session:${s.sid}`)
  t.equal((await me(app, s.token)).statusCode, 401)
})

t.test('Redis killed, SESSION_FALLBACK=allow: existing tokens work, new sessions live in memory and survive Redis\'s return', redisOpts, async (t) => {
  const { app, redis, logs } = await setup(t, { SESSION_FALLBACK: 'allow' })
  await register(app, 'ola@example.com')
  const before = await login(app, 'ola@example.com')
  t.equal((await me(app, before.token)).statusCode, 200)

  await redis.kill()
  const during = await timedMe(app, before.token)
  t.equal(during.statusCode, 200, 'a validly signed, unexpired token is accepted')
  t.ok(during.ms < 1000, `answered in ${during.ms.toFixed(0)} ms: a dead Redis is not awaited`)
  t.equal((await timedMe(app, before.token)).statusCode, 200)
  t.equal(logs.lines.filter((l) => String(l.msg).includes('SESSION_FALLBACK=allow')).length, 1, 'the policy is logged once per outage, not per request')

  // allow trusts the signature, so the signature is still checked.
  const now = Math.floor(Date.now() / 1000)
  const forged = hs256({ alg: 'HS256', typ: 'JWT' }, { sub: before.userId, role: 'user', sid: before.sid, iss: JWT_ISSUER, aud: JWT_AUDIENCE, iat: now, exp: now + 60 }, 'wrong-secret-wrong-secret-wrong-secret!!')
  t.equal((await me(app, forged)).statusCode, 401, 'a bad signature is refused during the outage too')

  const outage = await login(app, 'ola@example.com')
  t.equal((await me(app, outage.token)).statusCode, 200, 'login works during the outage')
  t.equal(app.store.memory.getSync(`session:${outage.sid}`) !== null, true, 'the new session lives in memory')

  await redis.restart()
  await waitFor(() => app.redisState.available, 5000)
  t.equal((await me(app, outage.token)).statusCode, 200, 'a session made during the outage is found in memory after Redis returns')
  t.equal((await me(app, before.token)).statusCode, 401, 'Redis came back empty: its sessions are gone, and Redis is authoritative again')
})

t.test('Redis killed, SESSION_FALLBACK=deny: tokens without a checkable session get 401, not 500', redisOpts, async (t) => {
  const { app, redis } = await setup(t, { SESSION_FALLBACK: 'deny' })
  const s = await registerAndLogin(app, 'den@example.com')
  await redis.kill()
  const res = await app.inject({ method: 'GET', url: '/api/auth/me', headers: bearer(s.token) })
  t.equal(res.statusCode, 401)
  t.same(res.json(), { statusCode: 401, error: 'Unauthorized', message: 'Session expired or revoked' })
  const outage = await login(app, 'den@example.com')
  t.equal((await me(app, outage.token)).statusCode, 200, 'a session this instance made in memory can be checked, so it is accepted')
})

t.test('logout during an outage: refused at once, and replayed into Redis when it returns', redisOpts, async (t) => {
  const { app, redis } = await setup(t, { SESSION_FALLBACK: 'allow' })
  const s = await registerAndLogin(app, 'pat@example.com')
  const keep = await login(app, 'pat@example.com')

  redis.pause() // frozen: the socket stays open, commands time out
  t.teardown(() => redis.resume())
  t.equal((await me(app, s.token)).statusCode, 200, 'accepted under allow')
  t.equal(app.redisState.available, false)
  t.equal((await app.inject({ method: 'POST', url: '/api/auth/logout', headers: bearer(s.token) })).statusCode, 204)
  t.equal((await me(app, s.token)).statusCode, 401, 'refused during the outage (tombstone)')
  t.equal((await me(app, keep.token)).statusCode, 200, 'the other session is unaffected')

  redis.resume()
  await waitFor(() => app.redisState.available, 5000)
  await waitFor(async () => (await redis.command('EXISTS', `session:${s.sid}`)) === '0', 3000)
  t.pass('the revoked session was deleted from Redis when it came back')
  t.equal(await redis.command('ZSCORE', `user_sessions:${s.userId}`, s.sid), '', 'and its id from the index')
  t.equal((await me(app, s.token)).statusCode, 401, 'and stays refused')
  t.equal((await me(app, keep.token)).statusCode, 200)
})

t.test('a logout made while Redis is up is still refused by that instance in a later outage', redisOpts, async (t) => {
  const { app, redis } = await setup(t, { SESSION_FALLBACK: 'allow' })
  await register(app, 'uma@example.com')
  const one = await login(app, 'uma@example.com')
  const all = await registerAndLogin(app, 'vic@example.com')
  const other = await registerAndLogin(app, 'wes@example.com')
  t.equal((await app.inject({ method: 'POST', url: '/api/auth/logout', headers: bearer(one.token) })).statusCode, 204)
  t.equal((await app.inject({ method: 'DELETE', url: '/api/auth/sessions', headers: bearer(all.token) })).statusCode, 200)
  t.equal((await me(app, one.token)).statusCode, 401)
  t.equal((await me(app, all.token)).statusCode, 401)
  t.equal(await redis.command('EXISTS', `session:${one.sid}`, `session:${all.sid}`), '0', 'both logouts were made in Redis')
  const again = await login(app, 'vic@example.com') // at once: most likely the same second as the logout

  redis.pause()
  t.teardown(() => redis.resume())
  t.equal((await me(app, other.token)).statusCode, 200, 'accepted under allow')
  t.equal(app.redisState.available, false)
  t.equal((await me(app, one.token)).statusCode, 401, 'the token logged out earlier is not trusted unchecked')
  t.equal((await me(app, all.token)).statusCode, 401, 'nor one whose user logged out everywhere')
  t.equal((await me(app, again.token)).statusCode, 200, 'a login right after logging out everywhere is not caught by it')
  t.equal(app.sessions.stats().tombstonesDropped, 0)

  redis.resume()
  await waitFor(() => app.redisState.available, 5000)
  t.equal((await me(app, one.token)).statusCode, 401)
  t.equal((await me(app, other.token)).statusCode, 200)
})

t.test('a logout during an outage is not pushed out of memory by the sessions created after it', redisOpts, async (t) => {
  const { app, redis } = await setup(t, { SESSION_FALLBACK: 'allow', FALLBACK_MAX_ENTRIES: '100' })
  const s = await registerAndLogin(app, 'sal@example.com')
  redis.pause()
  t.teardown(() => redis.resume())
  t.equal((await me(app, s.token)).statusCode, 200, 'accepted under allow')
  t.equal((await app.inject({ method: 'POST', url: '/api/auth/logout', headers: bearer(s.token) })).statusCode, 204)
  // 100 logins' worth of sessions (session + index: 200 entries) in a fallback store of 100.
  for (let i = 0; i < 100; i++) await app.sessions.create({ userId: `flood-${i}`, role: 'user', ip: '127.0.0.1' })
  t.equal(app.store.memory.size, 100, 'the fallback store is full and has evicted')
  t.equal((await me(app, s.token)).statusCode, 401, 'the revoked token is still refused')

  redis.resume()
  await waitFor(() => app.redisState.available, 5000)
  await waitFor(async () => (await redis.command('EXISTS', `session:${s.sid}`)) === '0', 3000)
  t.pass('and the logout was replayed into Redis')
  t.equal(app.sessions.stats().tombstonesDropped, 0)
})

t.test('more outage logouts than FALLBACK_MAX_ENTRIES: the oldest are dropped, unverifiable tokens refused until Redis is back', redisOpts, async (t) => {
  const { app, redis, logs } = await setup(t, { SESSION_FALLBACK: 'allow', FALLBACK_MAX_ENTRIES: '100' })
  const keep = await registerAndLogin(app, 'kim@example.com')
  const last = await login(app, 'kim@example.com')
  redis.pause()
  t.teardown(() => redis.resume())
  t.equal((await me(app, keep.token)).statusCode, 200, 'accepted under allow')
  for (let i = 0; i < 99; i++) await app.sessions.revoke(randomBytes(16).toString('base64url'), `gone-${i}`)
  t.equal((await app.inject({ method: 'POST', url: '/api/auth/logout', headers: bearer(last.token) })).statusCode, 204)
  t.equal((await me(app, keep.token)).statusCode, 200, '100 logouts fit')
  t.equal(app.sessions.stats().tombstonesDropped, 0)
  await app.sessions.revoke(randomBytes(16).toString('base64url'), 'gone-99')
  await app.sessions.revoke(randomBytes(16).toString('base64url'), 'gone-100')
  t.equal(app.sessions.stats().tombstonesDropped, 2)
  t.match((await app.inject('/metrics')).body, /^aic_session_outage_logouts_dropped_total 2$/m, 'and exported')
  t.equal((await me(app, keep.token)).statusCode, 401, 'a dropped logout could be any token: none is trusted unchecked')
  t.match(app.sessions.stats().rejected, { overflow: 1, denied: 0 }, 'counted as an overflow refusal, not as the policy\'s')
  t.match((await app.inject('/metrics')).body, /^aic_session_rejections_total\{reason="overflow"\} 1$/m)
  const full = logs.lines.filter((l) => String(l.msg).includes('more logouts during this Redis outage than FALLBACK_MAX_ENTRIES'))
  t.equal(full.length, 1, 'logged once')
  t.match(full[0], { level: 50, dropped: 1 })

  redis.resume()
  await waitFor(() => app.redisState.available, 5000)
  await waitFor(async () => (await redis.command('EXISTS', `session:${last.sid}`)) === '0', 3000)
  t.equal((await me(app, keep.token)).statusCode, 200, 'checked in Redis again')
  // The logouts still held are in Redis now: a second outage trusts unchecked tokens again,
  // and its logouts take the room of those Redis has, without dropping any.
  const next = await login(app, 'kim@example.com')
  redis.pause()
  await waitFor(async () => { await me(app, keep.token); return !app.redisState.available }, 5000)
  t.equal((await me(app, keep.token)).statusCode, 200, 'accepted under allow in the next outage')
  t.equal((await app.inject({ method: 'POST', url: '/api/auth/logout', headers: bearer(next.token) })).statusCode, 204)
  t.equal((await me(app, next.token)).statusCode, 401, 'a logout in the next outage is refused at once')
  t.equal(app.sessions.stats().tombstonesDropped, 2, 'and dropped nothing')
  t.equal((await me(app, keep.token)).statusCode, 200, 'so unchecked tokens are still trusted')
  t.equal(logs.lines.filter((l) => String(l.msg).includes('more logouts during this Redis outage')).length, 1)
})

t.test('logout everywhere during an outage covers the sessions Redis holds', redisOpts, async (t) => {
  const { app, redis } = await setup(t, { SESSION_FALLBACK: 'allow' })
  await register(app, 'quin@example.com')
  const a = await login(app, 'quin@example.com')
  const b = await login(app, 'quin@example.com')
  const other = await registerAndLogin(app, 'rae@example.com')

  redis.pause()
  t.teardown(() => redis.resume())
  t.equal((await me(app, a.token)).statusCode, 200)
  const res = await app.inject({ method: 'DELETE', url: '/api/auth/sessions', headers: bearer(a.token) })
  t.equal(res.statusCode, 200)
  t.equal((await me(app, a.token)).statusCode, 401)
  t.equal((await me(app, b.token)).statusCode, 401, 'a session only Redis knows is refused too')
  t.equal((await me(app, other.token)).statusCode, 200, 'another user is unaffected')
  const fresh = await login(app, 'quin@example.com')
  t.equal((await me(app, fresh.token)).statusCode, 200, 'a login after logging out everywhere works')

  redis.resume()
  await waitFor(() => app.redisState.available, 5000)
  await waitFor(async () => (await redis.command('EXISTS', `session:${a.sid}`, `session:${b.sid}`)) === '0', 3000)
  t.pass('both Redis sessions deleted on return')
  t.equal(await redis.command('EXISTS', `session:${other.sid}`), '1')
  t.equal((await me(app, fresh.token)).statusCode, 200, 'the session made after the logout survives')
})

t.test('an index of the wrong type holds back only its own logout when the outage logouts are replayed', redisOpts, async (t) => {
  const { app, redis, logs } = await setup(t, { SESSION_FALLBACK: 'allow' })
  const broken = await registerAndLogin(app, 'wrongtype-one@example.com')
  const brokenAll = await registerAndLogin(app, 'wrongtype-all@example.com')
  const everywhere = await registerAndLogin(app, 'fine-all@example.com')
  const plain = await registerAndLogin(app, 'fine-one@example.com')
  const keep = await login(app, 'fine-one@example.com')
  // Another writer left strings where two users' session indexes should be.
  for (const s of [broken, brokenAll]) {
    await redis.command('DEL', `user_sessions:${s.userId}`)
    await redis.command('SET', `user_sessions:${s.userId}`, 'not a set')
  }

  redis.pause()
  t.teardown(() => redis.resume())
  t.equal((await me(app, plain.token)).statusCode, 200, 'accepted under allow')
  t.equal(app.redisState.available, false)
  for (const s of [broken, plain]) {
    t.equal((await app.inject({ method: 'POST', url: '/api/auth/logout', headers: bearer(s.token) })).statusCode, 204)
  }
  // The user whose index is broken logs out everywhere first, so the other's replay comes after it.
  for (const s of [brokenAll, everywhere]) {
    t.equal((await app.inject({ method: 'DELETE', url: '/api/auth/sessions', headers: bearer(s.token) })).statusCode, 200)
  }

  redis.resume()
  await waitFor(() => app.redisState.available, 5000)
  await waitFor(async () => (await redis.command('EXISTS', `session:${everywhere.sid}`)) === '0', 3000)
  t.pass('the logout everywhere after the broken one reached Redis')
  t.equal(await redis.command('EXISTS', `session:${broken.sid}`, `session:${plain.sid}`), '0', 'both single logouts reached Redis')
  t.equal(await redis.command('EXISTS', `session:${brokenAll.sid}`), '1', 'the one whose index cannot be read could not')
  t.equal(app.sessions.stats().reconciled, 3)
  t.equal(logs.lines.filter((l) => l.level === 50 && /could not be replayed/.test(String(l.msg)) && l.userId === brokenAll.userId).length, 1, 'logged once, with the user')
  t.equal((await me(app, brokenAll.token)).statusCode, 401, 'its tombstone still refuses the token here')
  t.equal(app.redisState.available, true, 'a refusal does not take the service off Redis')

  // Once the index is readable again, the next return of Redis replays the logout.
  await redis.command('DEL', `user_sessions:${brokenAll.userId}`)
  await redis.command('SADD', `user_sessions:${brokenAll.userId}`, brokenAll.sid)
  redis.pause()
  t.equal((await me(app, keep.token)).statusCode, 200, 'accepted under allow')
  await waitFor(() => !app.redisState.available, 5000)
  redis.resume()
  await waitFor(() => app.redisState.available, 5000)
  await waitFor(async () => (await redis.command('EXISTS', `session:${brokenAll.sid}`)) === '0', 3000)
  t.pass('replayed on the next return')
})

t.test('without REDIS_URL, memory is the session store: a miss is a miss, logout works', async (t) => {
  const { app } = await build(t, { ...AUTH_ENV, SESSION_FALLBACK: 'allow' })
  await register(app, 'solo@example.com')
  const a = await login(app, 'solo@example.com')
  const b = await login(app, 'solo@example.com')
  t.equal((await me(app, a.token)).statusCode, 200)
  const now = Math.floor(Date.now() / 1000)
  const unknownSession = hs256({ alg: 'HS256', typ: 'JWT' }, { sub: a.userId, role: 'user', sid: randomBytes(16).toString('base64url'), iss: JWT_ISSUER, aud: JWT_AUDIENCE, iat: now, exp: now + 60 }, JWT_SECRET)
  t.equal((await me(app, unknownSession)).statusCode, 401, 'allow does not apply when Redis is simply not configured')
  t.equal((await app.inject({ method: 'POST', url: '/api/auth/logout', headers: bearer(a.token) })).statusCode, 204)
  t.equal((await me(app, a.token)).statusCode, 401)
  t.equal((await me(app, b.token)).statusCode, 200)
  t.same((await app.inject({ method: 'DELETE', url: '/api/auth/sessions', headers: bearer(b.token) })).json(), { revoked: 1 })
  t.equal((await me(app, b.token)).statusCode, 401)
})

t.test('a login trims the expired ids from the per-user index by score', redisOpts, async (t) => {
  const { app, redis } = await setup(t)
  await register(app, 'many@example.com')
  const first = await login(app, 'many@example.com')
  const index = `user_sessions:${first.userId}`
  const stale: string[] = []
  for (let i = 0; i < 9; i++) stale.push((await login(app, 'many@example.com')).sid)
  // As if they had expired a second ago: the session keys gone, their scores in the past.
  const past = String(Date.now() - 1000)
  for (const sid of stale) {
    await redis.command('DEL', `session:${sid}`)
    await redis.command('ZADD', index, 'XX', past, sid)
  }
  t.equal(await redis.command('ZCARD', index), '10')
  const last = await login(app, 'many@example.com')
  const members = (await redis.command('ZRANGE', index, '0', '-1')).split('\n').filter(Boolean)
  t.same(members.sort(), [first.sid, last.sid].sort(), 'only the live sessions remain indexed')
})

t.test('session counters', redisOpts, async (t) => {
  const { app } = await setup(t)
  const s = await registerAndLogin(app, 'count@example.com')
  await me(app, s.token)
  await app.inject({ method: 'POST', url: '/api/auth/logout', headers: bearer(s.token) })
  await me(app, s.token)
  const stats = app.sessions.stats()
  t.equal(stats.created, 1)
  t.equal(stats.accepted.redis, 2)
  t.equal(stats.rejected.missing, 1)
  t.equal(stats.revoked, 1)
})
