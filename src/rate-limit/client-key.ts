/**
 * Who a request counts against. Authenticated requests count against their user, whose
 * id comes from a bearer token whose signature was checked; everything else counts
 * against the client address, with IPv6 grouped by /64 because one subscriber (or one
 * attacker) usually holds a whole /64 and could otherwise rotate through 2^64 buckets.
 */
import { createHash } from 'node:crypto'
import ipaddr from 'ipaddr.js'

/** The part of `@fastify/jwt`'s decorator this module uses (synchronous verify). */
export interface TokenVerifier {
  verify (token: string): unknown
}

/** A user id safe to put in a key (signed by us, but still never trusted blindly). */
const SAFE_ID = /^[A-Za-z0-9_-]{1,64}$/
const BEARER = /^Bearer +(\S{1,4096})$/i
const DOTTED_V4 = /^\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}$/

/**
 * `ip:<address>` for IPv4 (and IPv4-mapped IPv6), `ip:<first 64 bits>::/64` for IPv6.
 * Unparseable input (which Node never gives for a socket) still yields a stable, bounded key.
 */
export function ipClient (address: string): string {
  // Every request of a connection asks again with the same address: the answer is kept
  // (bounded; the map is simply emptied when full), and the same key string comes back,
  // so the limiter's window lookup hashes nothing new.
  let key = KNOWN_ADDRESSES.get(address)
  if (key === undefined) {
    if (KNOWN_ADDRESSES.size >= MAX_KNOWN_ADDRESSES) KNOWN_ADDRESSES.clear()
    key = addressKey(address)
    KNOWN_ADDRESSES.set(address, key)
  }
  return key
}

const MAX_KNOWN_ADDRESSES = 10_000
const KNOWN_ADDRESSES = new Map<string, string>()

function addressKey (address: string): string {
  // Fast paths: dotted IPv4 (the common case) and IPv4-mapped IPv6 need no parsing.
  if (DOTTED_V4.test(address)) return `ip:${address}`
  if (address.startsWith('::ffff:') && DOTTED_V4.test(address.slice(7))) return `ip:${address.slice(7)}`
  let parsed: ipaddr.IPv4 | ipaddr.IPv6
  try {
    parsed = ipaddr.parse(address)
  } catch {
    return `ip:invalid-${hash(address)}`
  }
  if (parsed.kind() === 'ipv4') return `ip:${parsed.toString()}`
  const v6 = parsed as ipaddr.IPv6
  if (v6.isIPv4MappedAddress()) return `ip:${v6.toIPv4Address().toString()}`
  const prefix = new ipaddr.IPv6([...v6.parts.slice(0, 4), 0, 0, 0, 0])
  return `ip:${prefix.toRFC5952String()}/64`
}

/**
 * The user id carried by a valid bearer token, or null: no header, not a bearer token,
 * a bad signature, an expired token, or a `sub` that is not a plain id.
 */
export function userFromAuthorization (header: string | undefined, verifier: TokenVerifier | undefined): string | null {
  if (header === undefined || verifier === undefined) return null
  const match = BEARER.exec(header)
  if (match === null) return null
  let claims: unknown
  try {
    claims = verifier.verify(match[1] as string)
  } catch {
    return null
  }
  const sub = (claims as { sub?: unknown } | null)?.sub
  const id = typeof sub === 'number' && Number.isSafeInteger(sub) ? String(sub) : sub
  return typeof id === 'string' && SAFE_ID.test(id) ? id : null
}

/** `user:<id>` for a verified bearer token, else `ip:<address>`. */
export function clientKey (request: { ip: string, headers: { authorization?: string | undefined } }, verifier: TokenVerifier | undefined): string {
  const user = userFromAuthorization(request.headers.authorization, verifier)
  return user === null ? ipClient(request.ip) : `user:${user}`
}

/**
 * An email as a key part: trimmed, lower-cased and hashed, so keys are bounded, carry no
 * personal data in Redis, and cannot be steered by odd characters in the input.
 */
export function emailKey (email: unknown): string | null {
  // The body is not validated yet. Validation unwraps a one-element array into its element
  // (coerceTypes: 'array'), so `["a@b.c"]` logs in as "a@b.c" and must be counted as it.
  const value: unknown = Array.isArray(email) && email.length === 1 ? email[0] : email
  if (typeof value !== 'string') return null
  const normalized = value.trim().toLowerCase()
  if (normalized === '') return null
  return hash(normalized)
}

function hash (value: string): string {
  return createHash('sha256').update(value).digest('base64url').slice(0, 22)
}

const BODY_EMAILS = new WeakMap<object, string | null>()

/**
 * `emailKey` of the request body's `email` (not validated yet), worked out once per request:
 * the login route's two limits both key on it.
 */
export function bodyEmailKey (request: { body?: unknown }): string | null {
  let key = BODY_EMAILS.get(request)
  if (key === undefined) {
    const body = request.body
    key = typeof body === 'object' && body !== null && 'email' in body ? emailKey(body.email) : null
    BODY_EMAILS.set(request, key)
  }
  return key
}
