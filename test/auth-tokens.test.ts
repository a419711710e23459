/** The identity service's token cache: it saves HMACs, never a token's life; and the cache under it. */
import t from 'tap'
import { createIdentity } from '../plugins/auth.js'
import { openDatabase } from '../src/db/index.js'
import { CheckedStrings } from '../src/auth/token-cache.js'
import type { TokenClaims } from '../src/auth/types.js'
import { sleep } from './helper.js'

t.test('a verified token is cached until its own exp, and verified again after', async (t) => {
  const db = await openDatabase({ path: ':memory:' })
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

t.test('checked strings: found by their tail, confirmed whole, never past their expiry, bounded', async (t) => {
  const cache = new CheckedStrings<string>(3)
  const tail = 'x'.repeat(40)
  cache.set(`a.${tail}`, 'A', Date.now() + 60_000)
  t.equal(cache.get(`a.${tail}`), 'A')
  t.equal(cache.get(`b.${tail}`), undefined, 'same tail, another string: a miss')
  t.equal(cache.get(`a.${tail} `), undefined, 'a byte more: a miss')
  t.equal(cache.get(''), undefined)

  cache.set('past', 'P', Date.now() - 1)
  cache.set('now', 'N', Date.now())
  cache.set('no expiry', 'U', Number.NaN)
  t.equal(cache.size, 1, 'nothing is kept without an expiry in the future')

  cache.set('soon', 'S', Date.now() + 30)
  t.equal(cache.get('soon'), 'S')
  await sleep(60)
  t.equal(cache.get('soon'), undefined, 'expired')
  t.equal(cache.size, 1, 'and dropped')

  for (const s of ['one', 'two', 'three', 'four']) cache.set(s, s.toUpperCase(), Date.now() + 60_000)
  t.equal(cache.size, 3, 'bounded')
  t.equal(cache.get(`a.${tail}`), undefined, 'the oldest went first')
  t.equal(cache.get('four'), 'FOUR')
})
