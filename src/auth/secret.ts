/**
 * The JWT signing secret.
 *
 * JWT_SECRET when set (at least 32 characters). Without it:
 *  - production refuses to boot;
 *  - development keeps one in a file beside the database, `jwt-secret` in DATABASE_PATH's
 *    directory (`./data/jwt-secret` by default; git-ignored, mode 0600), made on first use.
 *    The server and the CLI (`npm run -s cli -- token …`) read the same file, so a token the
 *    CLI prints is one the server accepts, and tokens survive a restart of `npm run dev`;
 *  - otherwise (NODE_ENV=test, or an in-memory database) a random secret for this process
 *    only, as before.
 */
import { randomBytes } from 'node:crypto'
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { dirname, join, relative, isAbsolute } from 'node:path'
import type { Config } from '../config.js'

export const MIN_SECRET_LENGTH = 32
export const DEV_SECRET_FILE = 'jwt-secret'

export type SecretSource = 'JWT_SECRET' | 'file' | 'generated'

export interface ResolvedSecret {
  secret: string
  source: SecretSource
  /** The development secret's file (source `file`). */
  path?: string
  /** Source `file`: whether it was made just now. */
  created?: boolean
}

/** Where development keeps its secret for this config, or null when it keeps none. */
export function devSecretPath (config: Pick<Config, 'NODE_ENV' | 'DATABASE_PATH'>): string | null {
  if (config.NODE_ENV !== 'development' || config.DATABASE_PATH === ':memory:') return null
  return join(dirname(config.DATABASE_PATH), DEV_SECRET_FILE)
}

/** A path for messages: relative to the working directory when it is under it. */
export function shownPath (path: string): string {
  const rel = relative(process.cwd(), path)
  return rel !== '' && !rel.startsWith('..') && !isAbsolute(rel) ? `./${rel}` : path
}

/** Throws with a message naming JWT_SECRET (or the file) when no usable secret can be had. */
export function resolveSecret (config: Pick<Config, 'JWT_SECRET' | 'NODE_ENV' | 'DATABASE_PATH'>): ResolvedSecret {
  const secret = config.JWT_SECRET
  if (secret !== undefined && secret.length >= MIN_SECRET_LENGTH) return { secret, source: 'JWT_SECRET' }
  if (secret !== undefined) throw new Error(`JWT_SECRET must be at least ${MIN_SECRET_LENGTH} characters long`)
  if (config.NODE_ENV === 'production') {
    throw new Error(`JWT_SECRET is required when NODE_ENV=production (at least ${MIN_SECRET_LENGTH} random characters, e.g. \`openssl rand -base64 48\`)`)
  }
  const path = devSecretPath(config)
  if (path === null) return { secret: randomBytes(48).toString('base64url'), source: 'generated' }
  const fresh = randomBytes(48).toString('base64url')
  try {
    mkdirSync(dirname(path), { recursive: true, mode: 0o700 })
    // wx: never overwrite; when the server and the CLI race, the second reads the first's.
    writeFileSync(path, `${fresh}\n`, { mode: 0o600, flag: 'wx' })
    return { secret: fresh, source: 'file', path, created: true }
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') {
      throw new Error(`JWT_SECRET is not set and the development secret file ${shownPath(path)} cannot be written (${(err as Error).message}); set JWT_SECRET`, { cause: err })
    }
  }
  const stored = readFileSync(path, 'utf8').trim()
  if (stored.length < MIN_SECRET_LENGTH) {
    throw new Error(`${shownPath(path)} holds fewer than ${MIN_SECRET_LENGTH} characters: delete it (a new one is made at the next start) or set JWT_SECRET`)
  }
  return { secret: stored, source: 'file', path, created: false }
}
