/**
 * The outage-logout table on its own: lookups by session and by user, expiry, the bound
 * (oldest dropped first, expired ones before any live one) and the overflow flag.
 */
import t from 'tap'
import { Tombstones } from '../src/auth/tombstones.js'

function clock (start = 1_000_000): { now: () => number, advance: (ms: number) => void } {
  let at = start
  return { now: () => at, advance: (ms) => { at += ms } }
}

t.test('a revoked session, and a user logged out everywhere before a session was made', async (t) => {
  const c = clock()
  const stones = new Tombstones({ max: 10, ttlMs: 1000, now: c.now })
  stones.revokeSession('s1', 'u1')
  stones.revokeUser('u2', c.now())
  t.equal(stones.isRevoked('s1', 'u1', 0), true)
  t.equal(stones.isRevoked('s2', 'u1', 0), false, 'another session of the same user')
  t.equal(stones.isRevoked('s3', 'u2', c.now() - 1), true, 'made before logout everywhere')
  t.equal(stones.isRevoked('s3', 'u2', c.now()), true, 'made at the same millisecond')
  t.equal(stones.isRevoked('s4', 'u2', c.now() + 1), false, 'made after it')
  t.equal(stones.isRevoked('s5', 'u2', Number.NaN), true, 'an unknown creation time counts as before')
  t.same(stones.sessions(), [['s1', 'u1']])
  t.same(stones.users(), [['u2', c.now()]])
})

t.test('tombstones expire after ttlMs and are then neither consulted nor replayed', async (t) => {
  const c = clock()
  const stones = new Tombstones({ max: 10, ttlMs: 1000, now: c.now })
  stones.revokeSession('s1', 'u1')
  stones.revokeUser('u1', c.now())
  c.advance(999)
  t.equal(stones.isRevoked('s1', 'u1', Infinity), true)
  c.advance(1)
  t.equal(stones.isRevoked('s1', 'u1', 0), false)
  t.same(stones.sessions(), [])
  t.same(stones.users(), [])
})

t.test('the bound: expired tombstones go first, then the oldest live one, and overflow is flagged', async (t) => {
  const c = clock()
  const stones = new Tombstones({ max: 3, ttlMs: 1000, now: c.now })
  stones.revokeSession('old', 'u')
  c.advance(1000) // 'old' has expired
  stones.revokeSession('a', 'u')
  stones.revokeUser('v', c.now())
  c.advance(10)
  stones.revokeSession('b', 'u')
  t.equal(stones.size, 3, 'the expired one made room')
  t.equal(stones.overflowed, false)
  t.equal(stones.dropped, 0)

  stones.revokeSession('c', 'u')
  t.equal(stones.overflowed, true)
  t.equal(stones.dropped, 1)
  t.equal(stones.isRevoked('a', 'u', 0), false, 'the oldest live one was dropped')
  t.equal(stones.isRevoked('x', 'v', 0), true, 'the user tombstone, made just after it, is kept')
  stones.revokeSession('d', 'u')
  t.equal(stones.isRevoked('x', 'v', 0), false, 'then it is the oldest, and goes')
  t.equal(stones.dropped, 2)
  t.same(stones.sessions().map(([sid]) => sid), ['b', 'c', 'd'])
  stones.clearOverflow()
  t.equal(stones.overflowed, false)
  t.equal(stones.dropped, 2, 'the count of dropped ones stays')
})

t.test('revoking a session again makes it the youngest', async (t) => {
  const c = clock()
  const stones = new Tombstones({ max: 2, ttlMs: 1000, now: c.now })
  stones.revokeSession('a', 'u')
  c.advance(1)
  stones.revokeSession('b', 'u')
  c.advance(1)
  stones.revokeSession('a', 'u')
  c.advance(1)
  stones.revokeSession('c', 'u')
  t.same(stones.sessions().map(([sid]) => sid), ['a', 'c'])
})
