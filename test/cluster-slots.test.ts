/**
 * Slots: the key slot function against Redis's own CLUSTER KEYSLOT, grouping by slot, and the
 * state machine on a real cluster: a CROSSSLOT is that call's refusal (logged once, with the
 * keys' slots), not an outage.
 */
import { Redis } from 'ioredis'
import t from 'tap'
import { createRedisState, LOG_COMMAND_REFUSED, LOG_CONNECTED, LOG_OPERATION_FAILED, type StateLogger } from '../src/engines/redis/state.js'
import { groupBySlot, keySlot } from '../src/engines/redis/slots.js'
import { waitFor } from './helper.js'
import { skipUnlessCluster, startRedisCluster } from './helpers/cluster.js'

t.setTimeout(180_000)

t.test('keySlot: CRC16 mod 16384, hash tags as Redis reads them', async (t) => {
  t.equal(keySlot('123456789'), 12739, 'the CRC16/XMODEM check value 0x31C3')
  t.equal(keySlot('foo'), 12182)
  t.equal(keySlot('{user1000}.following'), keySlot('user1000'), 'the tag alone counts')
  t.equal(keySlot('foo{}{bar}'), keySlot('foo{}{bar}'), 'an empty first tag is no tag')
  t.not(keySlot('foo{}{bar}'), keySlot('bar'))
  t.equal(keySlot('foo{{bar}}zap'), keySlot('{bar'), 'the tag is up to the first } after the first {')
})

t.test('groupBySlot: one group on one server; per slot, in order, on a cluster', async (t) => {
  const keys = ['session:a', 'session:b', '{x}1', '{x}2', 'session:c']
  t.same(groupBySlot(keys, (k) => k, { cluster: false, keyPrefix: '' }), [keys])
  const groups = groupBySlot(keys, (k) => k, { cluster: true, keyPrefix: '' })
  t.ok(groups.every((g) => new Set(g.map(keySlot)).size === 1), 'each group is one slot')
  t.same(groups.flat().sort(), [...keys].sort(), 'every key once')
  t.ok(groups.some((g) => g.join() === '{x}1,{x}2'), 'keys of one slot stay together, in order')
  const prefixed = groupBySlot(['a', 'b'], (k) => k, { cluster: true, keyPrefix: '{p}' })
  t.equal(prefixed.length, 1, 'the prefix counts: a tag in it puts every key on one slot')
})

t.test('on a real cluster', skipUnlessCluster(), async (t) => {
  const cluster = await startRedisCluster({ masters: 3 })
  t.teardown(() => cluster.stop())
  const lines: Array<{ msg: string, obj: Record<string, unknown> }> = []
  const log: StateLogger = {
    info: (obj, msg) => { lines.push({ msg, obj: obj as Record<string, unknown> }) },
    warn: (obj, msg) => { lines.push({ msg, obj: obj as Record<string, unknown> }) },
    error: (obj, msg) => { lines.push({ msg, obj: obj as Record<string, unknown> }) },
    debug: () => {},
  }
  const state = createRedisState({ cluster: { nodes: cluster.nodes }, commandTimeoutMs: 2000, log })
  t.teardown(() => state.close())
  await state.start()
  await waitFor(() => state.available, 30_000)

  t.test('Redis agrees with keySlot', async (t) => {
    const node = new Redis({ ...cluster.nodes[0]!, lazyConnect: true })
    await node.connect()
    t.teardown(() => node.disconnect())
    for (const key of ['session:abc', 'user_sessions:42', 'rate_limit:ip:198.51.100.7', '{tag}x', 'health:probe:h:1:{7}']) {
      t.equal(keySlot(key), Number(await node.cluster('KEYSLOT', key)), key)
    }
  })

  t.test('connected once, naming the three masters', async (t) => {
    t.equal(state.clusterMasters().length, 3)
    t.equal(lines.filter((l) => l.msg === LOG_CONNECTED).length, 1)
    t.same(lines.find((l) => l.msg === LOG_CONNECTED)?.obj.masters, state.clusterMasters())
  })

  t.test('CROSSSLOT: that call only; logged once with the keys\' slots; the state stays in Redis', async (t) => {
    const client = state.client!
    const a = 'session:one'
    let b = 'session:two'
    for (let i = 0; keySlot(b) === keySlot(a); i++) b = `session:two${i}`
    for (let i = 0; i < 2; i++) {
      const err = await client.mget(a, b).then(() => null, (e: unknown) => e)
      t.match(String(err), /CROSSSLOT/)
      state.reportFailure(err, 'test.mget')
    }
    t.equal(state.mode, 'redis', 'still in Redis')
    t.equal(state.activations, 0)
    t.equal(lines.filter((l) => l.msg === LOG_OPERATION_FAILED).length, 0, 'no ⚠️')
    const refused = lines.filter((l) => l.msg === LOG_COMMAND_REFUSED)
    t.equal(refused.length, 1, 'logged once for the two')
    t.same(refused[0]?.obj.keys, [{ key: a, slot: keySlot(a) }, { key: b, slot: keySlot(b) }], 'with the keys and their slots')
    await state.client!.set(a, '1', 'PX', 5000)
    t.equal(await state.client!.get(a), '1', 'and Redis serves the next call')
  })
})
