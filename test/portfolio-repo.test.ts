/**
 * The portfolio store and ledger without HTTP or Redis, run against both stores (SQLite in
 * a temp file and in memory; PostgreSQL in a private database): the compare-and-swap that
 * refuses a writer holding a stale version (two connections to one database, as two
 * instances have), idempotency records committed atomically with the write, a key raced by
 * two writers applying once, snapshots, and the arithmetic of buys and sells.
 */
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { openDatabase, type PrimaryStore } from '../src/db/index.js'
import { applyTrade, checkTrade, roundShares, type Position } from '../src/portfolio/ledger.js'
import {
  IdempotencyKeyTakenError, PURGE_BATCH, VersionConflictError, type PortfolioCommit,
} from '../src/portfolio/repo.js'
import { valuePortfolio } from '../src/portfolio/valuation.js'
import { createTestDatabase, skipUnlessPostgres } from './helpers/postgres.js'
import type { TapTest } from './helper.js'

interface Backend {
  name: string
  options: { skip?: string }
  /** A fresh empty database; `open` gives connections to it (each one as another instance would hold). */
  create (t: TapTest): Promise<{ open (): Promise<PrimaryStore> }>
}

function tempDbPath (t: TapTest): string {
  const dir = mkdtempSync(join(tmpdir(), 'aic-portfolio-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  return join(dir, 'db.sqlite')
}

function opener (t: TapTest, options: Parameters<typeof openDatabase>[0]): { open (): Promise<PrimaryStore> } {
  return {
    async open () {
      const db = await openDatabase(options)
      t.teardown(() => db.close())
      return db
    },
  }
}

export const BACKENDS: Backend[] = [
  { name: 'sqlite (file)', options: {}, create: async (t) => opener(t, { path: tempDbPath(t) }) },
  { name: 'postgres', options: skipUnlessPostgres(), create: async (t) => opener(t, { url: (await createTestDatabase(t)).url }) },
]

async function user (db: PrimaryStore, email: string): Promise<string> {
  return (await db.users.create({ email, passwordHash: 'x' })).id
}

/** The statusCode of what `fn` throws (null when it does not throw). */
function statusOf (fn: () => unknown): number | null {
  try {
    fn()
    return null
  } catch (err) {
    return (err as { statusCode?: number }).statusCode ?? -1
  }
}

const buy = (userId: string, expectedVersion: number, ticker: string, position: Position | null, shares: number, price: number): PortfolioCommit => ({
  userId, expectedVersion, ticker, position, transaction: { kind: 'buy', shares, price }, at: new Date().toISOString(),
})

for (const backend of BACKENDS) {
  t.test(backend.name, backend.options, async (t) => {
    t.test('a writer with a stale version is refused and changes nothing; the newer write stands', async (t) => {
      const store = await backend.create(t)
      const a = await store.open()
      const b = await store.open() // a second connection: another instance on the same database
      const userId = await user(a, 'cas@example.com')
      const repoA = a.portfolios
      const repoB = b.portfolios

      await repoA.commit(buy(userId, 0, 'AAPL', { ticker: 'AAPL', shares: 10, avgCost: 100 }, 10, 100))
      // Both read version 1 (A's lock expired while it was paused; B took the lock).
      const seenByA = await repoA.read(userId)
      const seenByB = await repoB.read(userId)
      t.equal(seenByA.version, 1)
      t.equal(seenByB.version, 1)

      const nextB = applyTrade(seenByB.positions[0] ?? null, { ticker: 'AAPL', side: 'buy', shares: 5, price: 110 })
      t.same(await repoB.commit(buy(userId, 1, 'AAPL', nextB, 5, 110)), { version: 2, transactionId: 2 })

      // A resumes and writes what it computed from version 1: refused.
      const nextA = applyTrade(seenByA.positions[0] ?? null, { ticker: 'AAPL', side: 'sell', shares: 10, price: 120 })
      t.equal(nextA, null, 'A would have deleted the position')
      const err = await repoA.commit({ ...buy(userId, 1, 'AAPL', nextA, 10, 120), transaction: { kind: 'sell', shares: 10, price: 120 } })
        .then(() => null, (e: unknown) => e)
      t.ok(err instanceof VersionConflictError, 'VersionConflictError')
      t.match(err, { expected: 1, actual: 2 })

      const after = await repoA.read(userId)
      t.equal(after.version, 2)
      t.same(after.positions, [{ ticker: 'AAPL', shares: 15, avgCost: (10 * 100 + 5 * 110) / 15 }], "B's data stands")
      const log = await repoA.transactions(userId)
      t.same(log.map((x) => [x.version, x.kind, x.shares]), [[2, 'buy', 5], [1, 'buy', 10]], 'no trace of the refused write in the log')
    })

    t.test('the first write of a portfolio is a compare-and-swap too (two creators: one wins)', async (t) => {
      const db = await (await backend.create(t)).open()
      const userId = await user(db, 'first@example.com')
      const repo = db.portfolios
      t.same(await repo.read(userId), { userId, version: 0, positions: [], updatedAt: null })
      await repo.commit(buy(userId, 0, 'MSFT', { ticker: 'MSFT', shares: 1, avgCost: 10 }, 1, 10))
      await t.rejects(repo.commit(buy(userId, 0, 'MSFT', { ticker: 'MSFT', shares: 1, avgCost: 20 }, 1, 20)), VersionConflictError)
      t.same((await repo.read(userId)).positions, [{ ticker: 'MSFT', shares: 1, avgCost: 10 }])
      t.equal(await repo.version(userId), 1)
    })

    t.test('positions come back sorted, with exact fractional shares and 8-byte prices', async (t) => {
      const db = await (await backend.create(t)).open()
      const userId = await user(db, 'sorted@example.com')
      const repo = db.portfolios
      const tickers = ['MSFT', 'BRK.B', 'AAPL', 'BRK-A', 'aaa']
      for (const [i, ticker] of tickers.entries()) {
        await repo.commit(buy(userId, i, ticker, { ticker, shares: 0.123457, avgCost: 123.456789012345 }, 0.123457, 123.456789012345))
      }
      const state = await repo.read(userId)
      t.same(state.positions.map((p) => p.ticker), [...tickers].sort(), 'byte order, as SQLite sorts')
      t.ok(state.positions.every((p) => p.shares === 0.123457 && p.avgCost === 123.456789012345), 'doubles round-trip exactly')
    })

    t.test('an idempotency record commits with the write, and a second record for the key rolls the write back', async (t) => {
      const db = await (await backend.create(t)).open()
      const userId = await user(db, 'idem@example.com')
      const other = await user(db, 'other@example.com')
      const repo = db.portfolios
      const now = new Date()
      const idem = { key: 'k-1', requestHash: 'h1', statusCode: 201, response: '{"ok":1}', expiresAt: new Date(now.getTime() + 1000).toISOString() }
      await repo.commit({ ...buy(userId, 0, 'A', { ticker: 'A', shares: 1, avgCost: 1 }, 1, 1), idempotency: idem })
      t.match(await repo.findIdempotency(userId, 'k-1', now.toISOString()), { requestHash: 'h1', statusCode: 201, response: '{"ok":1}' })
      t.equal(await repo.findIdempotency(other, 'k-1', now.toISOString()), null, 'keys are per user')

      await t.rejects(repo.commit({ ...buy(userId, 1, 'A', { ticker: 'A', shares: 2, avgCost: 1 }, 1, 1), idempotency: { ...idem, requestHash: 'h2' } }), IdempotencyKeyTakenError)
      t.equal(await repo.version(userId), 1, 'the write with the taken key was rolled back')
      t.same((await repo.read(userId)).positions, [{ ticker: 'A', shares: 1, avgCost: 1 }])
      t.equal((await repo.transactions(userId)).length, 1, 'and its log entry with it')

      // Expired: not found, may be reused by a new write, and purged.
      const later = new Date(now.getTime() + 2000).toISOString()
      t.equal(await repo.findIdempotency(userId, 'k-1', later), null)
      await repo.commit({ ...buy(userId, 1, 'A', { ticker: 'A', shares: 2, avgCost: 1 }, 1, 1), at: later, idempotency: { ...idem, requestHash: 'h3', expiresAt: new Date(now.getTime() + 5000).toISOString() } })
      t.match(await repo.findIdempotency(userId, 'k-1', later), { requestHash: 'h3' })
      t.same(await repo.liveIdempotency(userId, later), { count: 1, firstExpiry: new Date(now.getTime() + 5000).toISOString() })
      t.equal(await repo.purgeIdempotency(new Date(now.getTime() + 4000).toISOString()), 0)
      t.equal(await repo.purgeIdempotency(new Date(now.getTime() + 6000).toISOString()), 1)
    })

    t.test('one key committed at once by two connections (no lock between them): one applies, the other rolls back', async (t) => {
      const store = await backend.create(t)
      const a = await store.open()
      const b = await store.open()
      const userId = await user(a, 'race@example.com')
      // Both writers carry the same key from the same version, as two instances whose locks failed.
      await a.portfolios.commit(buy(userId, 0, 'X', { ticker: 'X', shares: 1, avgCost: 1 }, 1, 1))
      const expiresAt = new Date(Date.now() + 60_000).toISOString()
      const idem = { key: 'raced', requestHash: 'h', statusCode: 201, response: '{}', expiresAt }
      const results = await Promise.allSettled([
        a.portfolios.commit({ ...buy(userId, 1, 'X', { ticker: 'X', shares: 2, avgCost: 1 }, 1, 1), idempotency: idem }),
        b.portfolios.commit({ ...buy(userId, 1, 'X', { ticker: 'X', shares: 2, avgCost: 1 }, 1, 1), idempotency: idem }),
      ])
      t.equal(results.filter((r) => r.status === 'fulfilled').length, 1, 'exactly one commit')
      const refused = results.find((r) => r.status === 'rejected')
      t.ok(refused?.status === 'rejected' && (refused.reason instanceof VersionConflictError || refused.reason instanceof IdempotencyKeyTakenError), 'the other is refused by the store')
      t.equal(await a.portfolios.version(userId), 2)
      t.equal((await a.portfolios.transactions(userId)).length, 2)

      // Same key from two versions apart (the lock failed and the second writer read after the
      // first commit): only the unique key can refuse it, and it does.
      await t.rejects(b.portfolios.commit({ ...buy(userId, 2, 'X', { ticker: 'X', shares: 3, avgCost: 1 }, 1, 1), idempotency: idem }), IdempotencyKeyTakenError)
      t.equal(await a.portfolios.version(userId), 2, 'nothing of it was written')
    })

    t.test('expired idempotency records are purged in batches, the live ones kept', async (t) => {
      const db = await (await backend.create(t)).open()
      const userId = await user(db, 'many-keys@example.com')
      const expired = PURGE_BATCH * 2 + 500
      const rows = [
        ...Array.from({ length: expired }, (_v, i) => ({ key: `old-${i}`, expires_at: '2026-01-02T00:00:00.000Z' })),
        ...Array.from({ length: 3 }, (_v, i) => ({ key: `live-${i}`, expires_at: '2026-12-31T00:00:00.000Z' })),
      ]
      for (let i = 0; i < rows.length; i += 500) {
        await db.kysely.insertInto('idempotency_keys').values(rows.slice(i, i + 500).map((r) => ({
          user_id: userId, key: r.key, request_hash: 'h', status_code: 201, response: '{}', created_at: '2026-01-01T00:00:00.000Z', expires_at: r.expires_at,
        }))).execute()
      }
      const count = async (): Promise<number> => Number((await db.kysely.selectFrom('idempotency_keys').select((eb) => eb.fn.countAll().as('n')).executeTakeFirstOrThrow()).n)
      const repo = db.portfolios
      let yielded = false
      setImmediate(() => { yielded = true }) // runs only if the purge gives the event loop a turn
      const purged = await repo.purgeIdempotency('2026-06-01T00:00:00.000Z')
      t.equal(purged, expired, 'every expired record, over three batches')
      t.equal(await count(), 3, 'the live ones stay')
      t.ok(yielded, 'the event loop ran between batches')
    })

    t.test('held tickers, paging and snapshots', async (t) => {
      const db = await (await backend.create(t)).open()
      const repo = db.portfolios
      const ids: string[] = []
      for (let i = 0; i < 5; i++) {
        const id = await user(db, `u${i}@example.com`)
        ids.push(id)
        await repo.commit(buy(id, 0, i % 2 === 0 ? 'EVEN' : 'ODD', { ticker: i % 2 === 0 ? 'EVEN' : 'ODD', shares: i + 1, avgCost: 10 }, i + 1, 10))
      }
      await repo.commit(buy(ids[0] as string, 1, 'ODD', { ticker: 'ODD', shares: 1, avgCost: 10 }, 1, 10))
      t.same(await repo.heldTickers(), ['EVEN', 'ODD'])
      const first = await repo.listPortfolios('', 3)
      const rest = await repo.listPortfolios(first.at(-1)?.userId ?? '', 3)
      t.equal(first.length, 3)
      t.equal(rest.length, 2)
      t.same([...first, ...rest].map((p) => p.userId), [...ids].sort(), 'every portfolio once, in id order')
      const withTwo = [...first, ...rest].find((p) => p.userId === ids[0])
      t.same(withTwo?.positions.map((p) => p.ticker), ['EVEN', 'ODD'], 'each page carries its positions')
      t.equal(withTwo?.version, 2)

      const id = ids[0] as string
      const row = { userId: id, day: '2026-01-02', takenAt: '2026-01-02T22:00:00.000Z', version: 1, positions: 1, cost: 10, value: 12 }
      await repo.saveSnapshots([row])
      await repo.saveSnapshots([{ ...row, value: 13 }])
      t.same(await repo.snapshots(id, '2026-01-01'), [{ ...row, value: 13 }], 'one row per day: a second run that day overwrites')
      t.same(await repo.snapshots(id, '2026-01-03'), [])
    })

    t.test('users: create, find, unique email under a concurrent insert, role and password updates', async (t) => {
      const store = await backend.create(t)
      const a = await store.open()
      const b = await store.open()
      const created = await a.users.create({ email: 'ann@example.com', passwordHash: 'h1' })
      t.equal(created.role, 'user')
      t.same(await b.users.findById(created.id), created, 'seen through another connection')
      t.same(await b.users.findByEmail('ann@example.com'), created)
      const both = await Promise.allSettled([a.users.create({ email: 'bob@example.com', passwordHash: 'x' }), b.users.create({ email: 'bob@example.com', passwordHash: 'y' })])
      t.equal(both.filter((r) => r.status === 'fulfilled').length, 1, 'one of two concurrent registrations wins')
      t.match(both.find((r) => r.status === 'rejected'), { reason: { name: 'DuplicateEmailError' } })
      t.equal(await a.users.setRole(created.id, 'admin'), true)
      t.equal(await a.users.setPasswordHash(created.id, 'h3'), true)
      t.match(await b.users.findById(created.id), { role: 'admin', passwordHash: 'h3' })
      t.equal(await a.users.setRole('no-such-id', 'admin'), false)
      t.equal(await a.users.count(), 2)
    })
  })
}

t.test('ledger: buys average the cost, sells keep it, overselling is a 422, shares stay exact', async (t) => {
  let p = applyTrade(null, { ticker: 'X', side: 'buy', shares: 10, price: 100 })
  t.same(p, { ticker: 'X', shares: 10, avgCost: 100 })
  p = applyTrade(p, { ticker: 'X', side: 'buy', shares: 10, price: 200 })
  t.same(p, { ticker: 'X', shares: 20, avgCost: 150 })
  p = applyTrade(p, { ticker: 'X', side: 'sell', shares: 5, price: 1 })
  t.same(p, { ticker: 'X', shares: 15, avgCost: 150 })
  t.equal(statusOf(() => applyTrade(p, { ticker: 'X', side: 'sell', shares: 15.000001, price: 1 })), 422)
  t.equal(statusOf(() => applyTrade(null, { ticker: 'X', side: 'sell', shares: 1, price: 1 })), 422)
  t.equal(applyTrade(p, { ticker: 'X', side: 'sell', shares: 15, price: 1 }), null, 'selling everything closes the position')

  let q = applyTrade(null, { ticker: 'Y', side: 'buy', shares: 0.1, price: 1 })
  q = applyTrade(q, { ticker: 'Y', side: 'buy', shares: 0.2, price: 1 })
  t.equal(q?.shares, 0.3, 'no float dust')
  t.equal(applyTrade(q, { ticker: 'Y', side: 'sell', shares: 0.3, price: 1 }), null)
  t.equal(roundShares(1.23456789), 1.234568)
  t.equal(statusOf(() => checkTrade({ ticker: 'Y', side: 'buy', shares: 1.0000001, price: 1 })), 400)
  t.equal(statusOf(() => checkTrade({ ticker: 'Y', side: 'buy', shares: 0, price: 1 })), 400)
  t.equal(statusOf(() => checkTrade({ ticker: 'Y', side: 'buy', shares: 1, price: 0 })), 400)
  t.equal(statusOf(() => applyTrade({ ticker: 'Y', shares: 9e9, avgCost: 1 }, { ticker: 'Y', side: 'buy', shares: 1, price: 1 })), 422)
  t.equal(statusOf(() => checkTrade({ ticker: 'Y', side: 'buy', shares: 1, price: 5e-324 })), 400, 'a price below a millionth')
  // Unchecked input whose average underflows to 0 (the store refuses avg_cost <= 0): a 422, never a 500.
  t.equal(statusOf(() => applyTrade({ ticker: 'Y', shares: 0.5, avgCost: 5e-324 }, { ticker: 'Y', side: 'buy', shares: 0.5, price: 5e-324 })), 422)
})

t.test('valuation: figures per position and totals; an unpriced position nulls the totals', async (t) => {
  const positions = [{ ticker: 'B', shares: 2, avgCost: 50 }, { ticker: 'A', shares: 3, avgCost: 10 }]
  const at = new Date('2026-01-01T00:00:00Z')
  const view = valuePortfolio('u', 7, positions, new Map([['A', 12], ['B', 40]]), at)
  t.same(view, {
    userId: 'u',
    positions: [
      { ticker: 'A', shares: 3, avgCost: 10, price: 12, value: 36, gain: 6, gainPercent: 20 },
      { ticker: 'B', shares: 2, avgCost: 50, price: 40, value: 80, gain: -20, gainPercent: -20 },
    ],
    totals: { cost: 130, value: 116, gain: -14, gainPercent: -10.77 },
    version: 7,
    asOf: '2026-01-01T00:00:00.000Z',
    unpriced: [],
  })
  const partial = valuePortfolio('u', 7, positions, new Map([['A', 12]]), at)
  t.same(partial.unpriced, ['B'])
  t.same(partial.totals, { cost: 130, value: null, gain: null, gainPercent: null })
  t.match(partial.positions[1], { ticker: 'B', price: null, value: null })
})
