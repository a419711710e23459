/**
 * Redis Cluster key slots (CRC16/XMODEM of the key, or of its hash tag, mod 16384), so that
 * multi-key calls can be split by slot before they are sent. Computed on the key as Redis
 * sees it: with REDIS_KEY_PREFIX in front (ioredis adds it to every key it sends).
 */

const TABLE = new Uint16Array(256)
for (let i = 0; i < 256; i++) {
  let c = i << 8
  for (let j = 0; j < 8; j++) c = c & 0x8000 ? ((c << 1) ^ 0x1021) & 0xffff : (c << 1) & 0xffff
  TABLE[i] = c
}

export const SLOT_COUNT = 16384

/** The slot of `key` (the full key, prefix included). */
export function keySlot (key: string): number {
  const bytes = Buffer.from(key, 'utf8')
  let start = 0
  let end = bytes.length
  const open = bytes.indexOf(0x7b) // {
  if (open !== -1) {
    const close = bytes.indexOf(0x7d, open + 1) // }
    // `{}` (nothing between) is no tag: the whole key counts.
    if (close > open + 1) { start = open + 1; end = close }
  }
  let crc = 0
  for (let i = start; i < end; i++) crc = ((crc << 8) & 0xffff) ^ (TABLE[((crc >> 8) ^ (bytes[i] as number)) & 0xff] as number)
  return crc % SLOT_COUNT
}

/**
 * `items` grouped by the slot of `keyOf(item)` (prefix + key), in first-seen order; each
 * group keeps the items' order. One group when `cluster` is false: one call as before.
 */
export function groupBySlot<T> (items: readonly T[], keyOf: (item: T) => string, options: { cluster: boolean, keyPrefix: string }): T[][] {
  if (!options.cluster || items.length <= 1) return items.length === 0 ? [] : [[...items]]
  const groups = new Map<number, T[]>()
  for (const item of items) {
    const slot = keySlot(options.keyPrefix + keyOf(item))
    let group = groups.get(slot)
    if (group === undefined) groups.set(slot, group = [])
    group.push(item)
  }
  return [...groups.values()]
}

/** What a client says about itself: an ioredis Cluster has `isCluster`, and its key prefix. */
export function clientTopology (client: object): { cluster: boolean, keyPrefix: string } {
  const c = client as { isCluster?: boolean, options?: { keyPrefix?: string } }
  return { cluster: c.isCluster === true, keyPrefix: c.options?.keyPrefix ?? '' }
}
