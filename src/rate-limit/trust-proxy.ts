/**
 * TRUST_PROXY: which peers may tell us the client's address through X-Forwarded-For.
 *
 * Unset means nobody: the client address is the socket's, so a client cannot pick its own
 * rate-limit bucket by sending the header. Set, it is a comma-separated list of proxy
 * addresses and CIDR ranges (plus proxy-addr's names `loopback`, `linklocal`,
 * `uniquelocal`), handed to Fastify's `trustProxy` as a list. `true`, hop counts and
 * ranges that cover every address are refused: they would trust any client.
 */
import ipaddr from 'ipaddr.js'

const NAMES = new Set(['loopback', 'linklocal', 'uniquelocal'])

/** What is wrong with one list entry, or null when it is a valid address, CIDR or name. */
function entryProblem (entry: string): string | null {
  if (NAMES.has(entry)) return null
  if (/^(true|false|\*|\d+)$/i.test(entry)) {
    return `"${entry}" is not allowed: name the proxies' addresses or CIDR ranges (e.g. 10.0.0.0/8)`
  }
  const [address = '', bits, ...rest] = entry.split('/')
  if (rest.length > 0) return `"${entry}" is not an address or CIDR range`
  const isV4 = ipaddr.IPv4.isValidFourPartDecimal(address)
  const isV6 = !isV4 && address.includes(':') && ipaddr.IPv6.isValid(address)
  if (!isV4 && !isV6) return `"${entry}" is not an IPv4/IPv6 address or CIDR range`
  if (bits !== undefined) {
    if (!/^\d{1,3}$/.test(bits) || Number(bits) > (isV4 ? 32 : 128)) return `"${entry}" has an invalid prefix length`
    if (Number(bits) === 0) return `"${entry}" covers every address, which trusts any client`
  }
  return null
}

function entries (value: string): string[] {
  return value.split(',').map((s) => s.trim()).filter((s) => s !== '')
}

/** The first problem in a TRUST_PROXY value, or null when every entry is valid. */
export function trustProxyProblem (value: string): string | null {
  const list = entries(value)
  if (list.length === 0) return 'is empty; leave it unset to trust no proxy'
  for (const entry of list) {
    const problem = entryProblem(entry)
    if (problem !== null) return problem
  }
  return null
}

/**
 * Fastify's `trustProxy` option for a TRUST_PROXY value: the list of entries, or false
 * when unset. Throws on an invalid value (the config schema rejects those earlier).
 */
export function trustProxyOption (value: string | undefined): string[] | false {
  if (value === undefined || value.trim() === '') return false
  const problem = trustProxyProblem(value)
  if (problem !== null) throw new Error(`TRUST_PROXY: ${problem}`)
  return entries(value)
}
