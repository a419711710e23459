/**
 * The per-turn batcher: items added in one turn leave together; a batch nobody waits for is
 * held for company; urgency, the size bound and flush() send it sooner. No timing margins:
 * every check waits for a turn or uses a hold long enough never to end during the test.
 */
import t from 'tap'
import { Batcher } from '../../src/engines/batcher.js'

const nextTurn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve))

function recorder<T> (): { batches: T[][], send: (items: T[]) => void } {
  const batches: T[][] = []
  return { batches, send: (items) => { batches.push(items) } }
}

t.test('items of one turn leave together at its end, in order (no hold)', async (t) => {
  const r = recorder<number>()
  const b = new Batcher<number>({ send: r.send })
  b.add(1)
  b.add(2)
  b.add(3)
  t.same(r.batches, [], 'nothing sent within the turn')
  t.equal(b.size, 3)
  await nextTurn()
  t.same(r.batches, [[1, 2, 3]])
  t.equal(b.size, 0)
  await nextTurn()
  t.same(r.batches, [[1, 2, 3]], 'an empty batch is never sent')
})

t.test('a held batch gathers items across turns; flush() sends it at once', async (t) => {
  const r = recorder<string>()
  const b = new Batcher<string>({ send: r.send, holdMs: 60_000 })
  b.add('a')
  await nextTurn()
  b.add('b')
  await nextTurn()
  t.same(r.batches, [], 'held (the hold is a minute)')
  b.flush()
  t.same(r.batches, [['a', 'b']], 'flush sends synchronously')
  b.flush()
  t.same(r.batches, [['a', 'b']])
})

t.test('an urgent item, or hurry(), makes a held batch leave at the end of the turn', async (t) => {
  const r = recorder<string>()
  const b = new Batcher<string>({ send: r.send, holdMs: 60_000 })
  b.add('held')
  b.add('waited-for', true)
  await nextTurn()
  t.same(r.batches, [['held', 'waited-for']])
  b.add('later')
  b.hurry()
  await nextTurn()
  t.same(r.batches, [['held', 'waited-for'], ['later']])
})

t.test('maxBatch queued items leave at the end of the turn; the held timer fires otherwise', async (t) => {
  const r = recorder<number>()
  const b = new Batcher<number>({ send: r.send, holdMs: 60_000, maxBatch: 3 })
  b.add(1)
  b.add(2)
  await nextTurn()
  t.same(r.batches, [], 'below the bound: held')
  b.add(3)
  await nextTurn()
  t.same(r.batches, [[1, 2, 3]], 'at the bound: sent')

  const timed = recorder<number>()
  const short = new Batcher<number>({ send: timed.send, holdMs: 5 })
  short.add(7)
  const deadline = Date.now() + 10_000
  while (timed.batches.length === 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 10))
  t.same(timed.batches, [[7]], 'the hold ends by itself')
})

t.test('items added while a batch is being sent go with the next one', async (t) => {
  const batches: number[][] = []
  const b: Batcher<number> = new Batcher<number>({
    send: (items) => {
      batches.push(items)
      if (items[0] === 1) b.add(99)
    },
  })
  b.add(1)
  await nextTurn()
  await nextTurn()
  t.same(batches, [[1], [99]])
})
