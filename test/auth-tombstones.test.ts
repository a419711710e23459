/**
 * The outage-logout table on its own: lookups by session and by user, expiry, what is still
 * to be replayed, the bound (expired ones first, then those Redis already has, then the
 * oldest, which is a drop) and the overflow a drop starts, which ends when cleared or when
 * every dropped tombstone would have expired.
 */
import t from 'tap'
import { Tombstones } from '../src/auth/tombstones.js'

/** A table of `max` tombstones living 1000 ms each, on a clock the test moves. */
function table (max: number): { stones: Tombstones, c: { now: () => number, advance: (ms: number) => void } } {
  let at = 1_000_000
  const c = { now: () => at, advance: (ms: number) => { at += ms } }
  return { stones: new Tombstones({ max, ttlMs: 1000, now: c.now }), c }
}

function pendingIds (stones: Tombstones): { sessions: string[], users: string[] } {
  const { sessions, users } = stones.pending()
  return { sessions: sessions.map(([sid]) => sid), users: users.map(([userId]) => userId) }
}

t.test('a revoked session, and a user logged out everywhere before a session was made', async (t) => {
  const { stones, c } = table(10)
  stones.revokeSession('s1', 'u1')
  stones.revokeUser('u2', c.now())
  t.equal(stones.isRevoked('s1', 'u1', 0), true)
  t.equal(stones.isRevoked('s2', 'u1', 0), false, 'another session of the same user')
  t.equal(stones.isRevoked('s3', 'u2', c.now() - 1), true, 'made before logout everywhere')
  t.equal(stones.isRevoked('s3', 'u2', c.now()), true, 'made at the same millisecond')
  t.equal(stones.isRevoked('s4', 'u2', c.now() + 1), false, 'made after it')
  t.equal(stones.isRevoked('s5', 'u2', Number.NaN), true, 'an unknown creation time counts as before')
  const { sessions, users } = stones.pending()
  t.same(sessions.map(([sid, s]) => [sid, s.userId]), [['s1', 'u1']])
  t.same(users.map(([userId, u]) => [userId, u.before]), [['u2', c.now()]])
})

t.test('tombstones expire after ttlMs and are then neither consulted nor replayed', async (t) => {
  const { stones, c } = table(10)
  stones.revokeSession('s1', 'u1')
  stones.revokeUser('u1', c.now())
  c.advance(999)
  t.equal(stones.isRevoked('s1', 'u1', Infinity), true)
  c.advance(1)
  t.equal(stones.isRevoked('s1', 'u1', 0), false)
  t.same(pendingIds(stones), { sessions: [], users: [] })
})

t.test('replayed tombstones still refuse their tokens, are not replayed again, and make room first without a drop', async (t) => {
  const { stones, c } = table(3)
  stones.revokeSession('a', 'u')
  stones.revokeUser('v', c.now())
  const replay = stones.pending()
  stones.revokeSession('b', 'u') // during the replay: not part of it
  stones.revokeUser('v', c.now() + 5) // written again during the replay: a new tombstone
  stones.markReplayed(replay)
  t.same(pendingIds(stones), { sessions: ['b'], users: ['v'] }, 'only what the replay did not carry')
  t.equal(stones.isRevoked('a', 'u', 0), true, 'a replayed logout still refuses its token here')

  stones.revokeSession('c', 'u') // one too many: a, b, v and c
  t.equal(stones.size, 3)
  t.equal(stones.dropped, 0, 'the replayed one made room: nothing lost')
  t.equal(stones.overflowed, false)
  t.equal(stones.isRevoked('a', 'u', 0), false, 'it was the one to go')
  stones.revokeSession('d', 'u')
  t.equal(stones.dropped, 1, 'with no replayed one left, the oldest pending one is dropped')
  t.equal(stones.isRevoked('b', 'u', 0), false)
})

t.test('a replayed tombstone makes room before an older one that Redis lacks', async (t) => {
  const { stones, c } = table(2)
  stones.revokeSession('older', 'u')
  c.advance(1)
  stones.revokeSession('replayed', 'u')
  const { sessions } = stones.pending()
  stones.markReplayed({ sessions: sessions.filter(([sid]) => sid === 'replayed'), users: [] })
  stones.revokeSession('new', 'u')
  t.same(pendingIds(stones).sessions, ['older', 'new'])
  t.equal(stones.dropped, 0)
})

t.test('the bound: expired tombstones go first, then the oldest live one, which is a drop and starts an overflow', async (t) => {
  const { stones, c } = table(3)
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
  t.equal(stones.overflowEpisodes, 1)
  t.equal(stones.isRevoked('a', 'u', 0), false, 'the oldest live one was dropped')
  t.equal(stones.isRevoked('x', 'v', 0), true, 'the user tombstone, made just after it, is kept')
  stones.revokeSession('d', 'u')
  t.equal(stones.isRevoked('x', 'v', 0), false, 'then it is the oldest, and goes')
  t.equal(stones.dropped, 2)
  t.equal(stones.overflowEpisodes, 1, 'one overflow, still on')
  t.same(pendingIds(stones).sessions, ['b', 'c', 'd'])
  stones.clearOverflow()
  t.equal(stones.overflowed, false)
  t.equal(stones.dropped, 2, 'the count of dropped ones stays')
  stones.revokeSession('e', 'u')
  t.equal(stones.overflowEpisodes, 2, 'a drop after clearing starts another overflow')
})

t.test('an overflow ends by itself once every dropped tombstone would have expired', async (t) => {
  const { stones, c } = table(1)
  stones.revokeSession('a', 'u')
  c.advance(100)
  stones.revokeSession('b', 'u') // drops 'a', which would have lived until 1000 after it was made
  t.equal(stones.overflowed, true)
  c.advance(899)
  t.equal(stones.overflowed, true, 'a token the dropped logout stopped may still be alive')
  c.advance(1)
  t.equal(stones.overflowed, false, 'no token it could stop is alive any more')
})

t.test('revoking a session again makes it the youngest', async (t) => {
  const { stones, c } = table(2)
  stones.revokeSession('a', 'u')
  c.advance(1)
  stones.revokeSession('b', 'u')
  c.advance(1)
  stones.revokeSession('a', 'u')
  c.advance(1)
  stones.revokeSession('c', 'u')
  t.same(pendingIds(stones).sessions, ['a', 'c'])
})

t.test('a logout made in Redis is consulted but never replayed, and makes room without a drop', async (t) => {
  const { stones, c } = table(2)
  stones.revokeSession('pending', 'u1')
  stones.revokeSession('in-redis', 'u2', true)
  t.equal(stones.isRevoked('in-redis', 'u2', 0), true)
  stones.revokeSession('in-redis-short', 'u3', true, 100)
  t.equal(stones.size, 2, 'the oldest of those Redis has made room')
  t.equal(stones.isRevoked('in-redis', 'u2', 0), false)
  t.equal(stones.isRevoked('in-redis-short', 'u3', 0), true)
  t.same(pendingIds(stones), { sessions: ['pending'], users: [] }, 'only the outage logout is to be replayed')
  t.equal(stones.dropped, 0)
  t.equal(stones.overflowed, false)
  c.advance(100)
  t.equal(stones.isRevoked('in-redis-short', 'u3', 0), false, 'kept only as long as it was asked to (its tokens\' lifetime)')
  t.equal(stones.isRevoked('pending', 'u1', 0), true)
})
