/**
 * The cost of authentication: GET /api/auth/me with a bearer token, i.e. JWT verification,
 * the session check (one Redis script call: GET + sliding PEXPIRE), and the user lookup in
 * SQLite, against the bare route. Rate limiting is set high enough to admit every request
 * (it is measured by its own scenarios), so the figures are about auth.
 */
import type { BenchContext, Scenario } from '../lib.js'
import { sleep } from '../lib.js'

const ENV = {
  JWT_SECRET: 'bench-secret-bench-secret-bench-secret-0123',
  RATE_LIMIT_MAX: '1000000000',
  LOGIN_RATE_LIMIT_MAX: '1000000',
  LOGIN_EMAIL_RATE_LIMIT_MAX: '1000000',
}
const EMAIL = 'bench@example.com'
const PASSWORD = 'bench-password-1'

interface Health { status: string, redis: { status: string, mode: string } }

async function json<T> (res: Response): Promise<T> {
  return await res.json() as T
}

/** Waits for the Redis state the scenario means to measure, then registers, logs in and checks /me. */
function loginAs (redisStatus: 'connected' | 'disconnected' | 'disabled') {
  return async (ctx: BenchContext): Promise<void> => {
    const deadline = Date.now() + 5000
    let health: Health | undefined
    while (Date.now() < deadline) {
      health = await json<Health>(await fetch(`${ctx.baseUrl}/api/health`, { signal: AbortSignal.timeout(2000) }))
      if (health.redis.status === redisStatus) break
      await sleep(100)
    }
    if (health?.redis.status !== redisStatus) throw new Error(`health never reported redis ${redisStatus}: ${JSON.stringify(health)}`)

    const post = (path: string) => fetch(ctx.baseUrl + path, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ email: EMAIL, password: PASSWORD }),
      signal: AbortSignal.timeout(5000),
    })
    const reg = await post('/api/auth/register')
    if (reg.status !== 201) throw new Error(`register answered ${reg.status}: ${await reg.text()}`)
    const login = await post('/api/auth/login')
    if (login.status !== 200) throw new Error(`login answered ${login.status}: ${await login.text()}`)
    const { token } = await json<{ token: string }>(login)
    ctx.state.token = token

    const me = await fetch(`${ctx.baseUrl}/api/auth/me`, { headers: { authorization: `Bearer ${token}` }, signal: AbortSignal.timeout(2000) })
    if (me.status !== 200) throw new Error(`/api/auth/me answered ${me.status}: ${await me.text()}`)
    const { session } = await json<{ session: { id: string } }>(me)
    if (ctx.redis) {
      const exists = await ctx.redis.command('EXISTS', `session:${session.id}`)
      if (exists !== '1') throw new Error(`the session is not in Redis (EXISTS session:${session.id} = ${exists})`)
    }
  }
}

const requests = (ctx: BenchContext) => ({ method: 'GET' as const, path: '/api/auth/me', headers: { authorization: `Bearer ${String(ctx.state.token)}` } })

const scenarios: Scenario[] = [
  {
    name: 'GET /api/auth/me authenticated (redis up)',
    redis: 'up',
    env: ENV,
    target: { minRatio: 0.5, note: 'issue #4: JWT verify + session check in Redis per request ≥ 0.5× bare' },
    setup: loginAs('connected'),
    requests,
  },
  {
    name: 'GET /api/auth/me authenticated (redis down: session made in the outage, in process)',
    redis: 'down',
    env: { ...ENV, SESSION_FALLBACK: 'allow' },
    setup: loginAs('disconnected'),
    requests,
  },
  {
    name: 'GET /api/auth/me authenticated (no redis, sessions in process)',
    redis: 'none',
    env: ENV,
    setup: loginAs('disabled'),
    requests,
  },
]

export default scenarios
