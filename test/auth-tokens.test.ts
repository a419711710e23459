/** The identity service's token cache: it saves HMACs, never a token's life. */
import t from 'tap'
import { createIdentity } from '../plugins/auth.js'
import { openDatabase } from '../src/db/index.js'
import type { TokenClaims } from '../src/auth/types.js'
import { sleep } from './helper.js'

t.test('a verified token is cached until its own exp, and verified again after', async (t) => {
  const db = openDatabase({ path: ':memory:' })
  t.teardown(() => db.close())
  const now = Math.floor(Date.now() / 1000)
  let calls = 0
  let expired = false
  const claims: TokenClaims = { sub: 'u1', role: 'user', sid: 'A'.repeat(22), iss: 'i', aud: 'a', iat: now, exp: now + 2 }
  const identity = createIdentity(db.users, {
    sign: () => 'unused',
    verify: (token) => {
      calls++
      if (token !== 'good') throw new Error('bad signature')
      if (expired) throw new Error('expired')
      return claims
    },
    expiresIn: 900,
  })
  t.same(identity.verifyToken('good'), claims)
  t.same(identity.verifyToken('good'), claims)
  t.equal(calls, 1, 'the second call is a cache hit')
  t.throws(() => identity.verifyToken('bad'))
  t.throws(() => identity.verifyToken('bad'))
  t.equal(calls, 3, 'failures are never cached')

  expired = true
  await sleep(claims.exp * 1000 - Date.now() + 50)
  t.throws(() => identity.verifyToken('good'), /expired/, 'after exp the token goes back to full verification')
  t.equal(calls, 4)
})
