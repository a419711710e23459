/**
 * Password hashing with scrypt (node:crypto), a random salt per hash, and a constant-time
 * comparison. The parameters travel inside the stored string, so they can be raised later
 * without breaking existing hashes:  scrypt$<N>$<r>$<p>$<salt b64url>$<hash b64url>
 */
import { randomBytes, scrypt, timingSafeEqual, type ScryptOptions } from 'node:crypto'

export interface ScryptParams {
  N: number
  r: number
  p: number
  keyLength: number
  saltLength: number
}

/** OWASP's scrypt floor (N=2^17 with r=8 is its first choice; 2^14 keeps login under ~50 ms on small hosts). */
export const DEFAULT_PARAMS: ScryptParams = { N: 16_384, r: 8, p: 1, keyLength: 64, saltLength: 16 }

/** Refuse absurd parameters from a stored hash instead of allocating gigabytes. */
const MAX_N = 1 << 20

function derive (password: string, salt: Buffer, { N, r, p, keyLength }: Omit<ScryptParams, 'saltLength'>): Promise<Buffer> {
  const options: ScryptOptions = { N, r, p, maxmem: 256 * N * r }
  return new Promise((resolve, reject) => {
    scrypt(password.normalize('NFC'), salt, keyLength, options, (err, key) => (err ? reject(err) : resolve(key)))
  })
}

export async function hashPassword (password: string, params: ScryptParams = DEFAULT_PARAMS): Promise<string> {
  const salt = randomBytes(params.saltLength)
  const key = await derive(password, salt, params)
  return ['scrypt', params.N, params.r, params.p, salt.toString('base64url'), key.toString('base64url')].join('$')
}

interface ParsedHash { N: number, r: number, p: number, salt: Buffer, key: Buffer }

function parseHash (stored: string): ParsedHash | null {
  const parts = stored.split('$')
  if (parts.length !== 6 || parts[0] !== 'scrypt') return null
  const [N, r, p] = [Number(parts[1]), Number(parts[2]), Number(parts[3])]
  if (![N, r, p].every(Number.isSafeInteger) || N < 2 || N > MAX_N || (N & (N - 1)) !== 0 || r < 1 || r > 32 || p < 1 || p > 16) return null
  const salt = Buffer.from(parts[4] ?? '', 'base64url')
  const key = Buffer.from(parts[5] ?? '', 'base64url')
  if (salt.length < 8 || key.length < 16) return null
  return { N, r, p, salt, key }
}

/** True when `password` matches `stored`. A malformed stored hash never matches. */
export async function verifyPassword (password: string, stored: string): Promise<boolean> {
  const parsed = parseHash(stored)
  if (parsed === null) return false
  const key = await derive(password, parsed.salt, { N: parsed.N, r: parsed.r, p: parsed.p, keyLength: parsed.key.length })
  return timingSafeEqual(key, parsed.key)
}

/** True when the hash was made with weaker parameters than `params` (worth re-hashing at login). */
export function needsRehash (stored: string, params: ScryptParams = DEFAULT_PARAMS): boolean {
  const parsed = parseHash(stored)
  return parsed === null || parsed.N < params.N || parsed.r < params.r || parsed.key.length < params.keyLength
}

let dummy: Promise<string> | null = null

/**
 * A hash of a random password, made once per process with the default parameters. Checking
 * a login for an unknown email against it costs the same scrypt as a real check, so the
 * answer's timing does not tell which emails have accounts.
 */
export function dummyHash (): Promise<string> {
  dummy ??= hashPassword(randomBytes(32).toString('base64url'))
  return dummy
}
