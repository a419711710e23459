/**
 * Every way a Redis call can fail, in the few classes the state machine acts on. The table
 * in docs/reliability.md is this file in prose; keep them together.
 *
 * | class       | replies                                                      | the call     | the state                                   |
 * |-------------|--------------------------------------------------------------|--------------|---------------------------------------------|
 * | transport   | timeouts, ECONNRESET, EPIPE, ECONNREFUSED, Connection closed | falls back   | switches to fallback; back after a write probe |
 * | routing     | CLUSTERDOWN                                                  | falls back   | switches; back after a write probe           |
 * | redirect    | MOVED, ASK, TRYAGAIN that reach a caller (the cluster client | falls back   | stays: the slot map is being refreshed; a   |
 * |             | follows them itself; one gets through only mid-resharding)   |              | master really gone fails the write probe     |
 * | write       | OOM, READONLY, MISCONF (and EXECABORT caused by them)        | falls back   | switches; back after a write probe           |
 * | not-ready   | LOADING, MASTERDOWN, BUSY                                    | falls back   | switches; back after a write probe           |
 * | auth        | NOAUTH, WRONGPASS, invalid password                          | falls back   | switches; back after a write probe           |
 * | command     | WRONGTYPE, NOSCRIPT, NOPERM, unknown command, other ERR,     | falls back   | stays; a write probe (at most one a probe    |
 * |             | EXECABORT caused by these; CROSSSLOT (keys of one call on    |              | interval) switches it if writes are refused  |
 * |             | two slots: a bug of ours, logged with the keys' slots)       |              |                                              |
 *
 * "Switches" lines are logged once per transition; "command" lines at most once per
 * REFUSAL_LOG_INTERVAL_MS per reason, with the count suppressed since the last one.
 */

import { keySlot } from './slots.js'

export type ReplyErrorClass = 'transport' | 'routing' | 'redirect' | 'write' | 'not-ready' | 'auth' | 'command'

export interface ClassifiedError {
  class: ReplyErrorClass
  /** A short stable key for rate limiting and "new reason" detection: READONLY, ECONNREFUSED, unknown command 'GETEX'. */
  code: string
  /** True when the whole server is unusable (or refuses writes), not this command alone. */
  serverWide: boolean
}

const BY_PREFIX: ReadonlyMap<string, ReplyErrorClass> = new Map([
  ['MOVED', 'redirect'], ['ASK', 'redirect'], ['TRYAGAIN', 'redirect'], ['CROSSSLOT', 'command'], ['CLUSTERDOWN', 'routing'],
  ['OOM', 'write'], ['READONLY', 'write'], ['MISCONF', 'write'],
  ['LOADING', 'not-ready'], ['MASTERDOWN', 'not-ready'], ['BUSY', 'not-ready'],
  ['NOAUTH', 'auth'], ['WRONGPASS', 'auth'],
  ['WRONGTYPE', 'command'], ['NOSCRIPT', 'command'], ['NOPERM', 'command'], ['EXECABORT', 'command'],
])

/** Classifies any error a Redis call rejected with. */
export function classifyRedisError (err: unknown): ClassifiedError {
  if (!(err instanceof Error)) return { class: 'transport', code: 'unknown', serverWide: true }
  // The cluster client refuses, before sending, a pipeline or transaction whose keys are on
  // two slots: the same mistake as a CROSSSLOT reply.
  if (/should belong to the same slot|Possible CROSSSLOT/.test(err.message)) return { class: 'command', code: 'CROSSSLOT', serverWide: false }
  // Anything but a reply (AbortError, MaxRetriesPerRequestError, a socket error, a timeout) never reached Redis's answer.
  if (err.name !== 'ReplyError') return { class: 'transport', code: transportCode(err), serverWide: true }
  const first = err.message.split(' ')[0] ?? ''
  if (first === 'EXECABORT') {
    // MULTI/EXEC: the transaction was discarded because a queued command was refused. The
    // cause is in previousErrors (ioredis); an OOM there is a full server, not this call.
    const previous = (err as Error & { previousErrors?: unknown[] }).previousErrors ?? []
    for (const inner of previous) {
      const c = classifyRedisError(inner)
      if (c.serverWide) return { ...c, code: `EXECABORT/${c.code}` }
    }
    const innerCode = previous.length > 0 ? classifyRedisError(previous[0]).code : ''
    return { class: 'command', code: innerCode ? `EXECABORT/${innerCode}` : 'EXECABORT', serverWide: false }
  }
  const known = BY_PREFIX.get(first)
  if (known !== undefined) return { class: known, code: first, serverWide: known !== 'command' && known !== 'redirect' }
  if (first === 'ERR' || first === 'WRONGPASS') {
    if (/invalid password|invalid username-password|NOAUTH/i.test(err.message)) return { class: 'auth', code: 'WRONGPASS', serverWide: true }
    const unknown = /unknown command [`'"]?([^`'"\s,]+)/i.exec(err.message)
    if (unknown) return { class: 'command', code: `unknown command '${unknown[1]}'`, serverWide: false }
    // Redis < 7 said "ERR Protocol error", "ERR max number of clients reached": the server, not the call.
    if (/max number of clients/i.test(err.message)) return { class: 'transport', code: 'max clients', serverWide: true }
    return { class: 'command', code: `ERR ${err.message.slice(4, 40).trim()}`, serverWide: false }
  }
  // Any other error reply (a module's, a future code): this command only.
  return { class: 'command', code: first || 'reply', serverWide: false }
}

function transportCode (err: Error): string {
  const code = (err as NodeJS.ErrnoException).code
  if (typeof code === 'string' && code !== '') return code
  if (/timed? ?out/i.test(err.message)) return 'timeout'
  if (/closed|not writeable|writable/i.test(err.message)) return 'connection closed'
  return err.name === 'Error' ? err.message.slice(0, 40) : err.name
}

/** Redis answered with an error reply that concerns this command only (a wrong type, a missing script, a denied command). */
export function isCommandRefusal (err: unknown): boolean {
  return classifyRedisError(err).class === 'command'
}

/** Commands whose every argument is a key. */
const ALL_KEYS = new Set(['mget', 'del', 'unlink', 'exists', 'touch', 'watch', 'sinter', 'sunion', 'sdiff'])

/**
 * The keys (as sent, prefix included) and their slots of the command a CROSSSLOT reply
 * answered (ioredis puts the command on the error), for the one log line that names them.
 * Empty when the command is not known (a pipeline refused before it was sent).
 */
export function commandSlots (err: unknown): Array<{ key: string, slot: number }> {
  const command = (err as { command?: { name?: unknown, args?: unknown } } | null)?.command
  if (command === undefined || typeof command.name !== 'string' || !Array.isArray(command.args)) return []
  const args = command.args.map((a) => String(a))
  const name = command.name.toLowerCase()
  let keys: string[]
  if (name === 'evalsha' || name === 'eval' || name === 'fcall') keys = args.slice(2, 2 + Number(args[1] ?? 0))
  else if (ALL_KEYS.has(name)) keys = args
  else keys = args.slice(0, 1)
  return keys.slice(0, 10).map((key) => ({ key, slot: keySlot(key) }))
}
