/** scrypt hashing: per-hash salt, parameters in the stored string, constant-time check. */
import t from 'tap'
import { dummyHash, hashPassword, needsRehash, verifyPassword, DEFAULT_PARAMS } from '../src/auth/password.js'
import { durationToSeconds } from '../src/auth/duration.js'
import { isEmail, normaliseEmail } from '../src/auth/email.js'

t.test('hash format, per-hash salt, verify', async (t) => {
  const a = await hashPassword('correct horse')
  const b = await hashPassword('correct horse')
  t.match(a, /^scrypt\$16384\$8\$1\$[A-Za-z0-9_-]{22}\$[A-Za-z0-9_-]{86}$/)
  t.not(a, b, 'the same password hashes differently (random salt)')
  t.not(a.split('$')[4], b.split('$')[4], 'different salts')
  t.equal(await verifyPassword('correct horse', a), true)
  t.equal(await verifyPassword('correct horse', b), true)
  t.equal(await verifyPassword('correct hors', a), false)
  t.equal(await verifyPassword('Correct horse', a), false)
  t.notOk(a.includes('correct'), 'the password is not in the hash')
})

t.test('unicode passwords are compared in NFC', async (t) => {
  const composed = 'caf\u00e9-password'
  const decomposed = 'cafe\u0301-password'
  t.equal(await verifyPassword(decomposed, await hashPassword(composed)), true)
})

t.test('malformed or hostile stored hashes never match and never throw', async (t) => {
  for (const stored of ['', 'plain', 'bcrypt$x', 'scrypt$16384$8$1$c2FsdA$', 'scrypt$3$8$1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA',
    'scrypt$1073741824$8$1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA', 'scrypt$16384$999$1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA']) {
    t.equal(await verifyPassword('whatever1', stored), false, JSON.stringify(stored))
  }
})

t.test('parameters travel with the hash: an old, weaker hash still verifies and asks for a rehash', async (t) => {
  const weak = await hashPassword('correct horse', { ...DEFAULT_PARAMS, N: 1024 })
  t.equal(await verifyPassword('correct horse', weak), true)
  t.equal(needsRehash(weak), true)
  t.equal(needsRehash(await hashPassword('x'.repeat(8))), false)
})

t.test('the dummy hash is made once and never matches a guess', async (t) => {
  t.equal(await dummyHash(), await dummyHash())
  t.equal(await verifyPassword('password', await dummyHash()), false)
})

t.test('durations and emails', async (t) => {
  t.equal(durationToSeconds('15m'), 900)
  t.equal(durationToSeconds('900'), 900, 'a bare number is seconds, not milliseconds')
  t.equal(durationToSeconds('2h'), 7200)
  t.equal(durationToSeconds('1d'), 86_400)
  t.throws(() => durationToSeconds('15 minutes'))
  t.equal(normaliseEmail('  Alice@Example.COM '), 'alice@example.com')
  t.equal(isEmail('a@b.co'), true)
  for (const bad of ['a', 'a@', '@b.c', 'a b@c.d', 'a@b..c', `${'x'.repeat(250)}@b.co`]) t.equal(isEmail(bad), false, bad)
})
