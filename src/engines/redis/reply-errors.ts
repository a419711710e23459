/**
 * Every way a Redis call can fail, in the few classes the state machine acts on. The table
 * in docs/reliability.md is this file in prose; keep them together.
 *
 * | class       | replies                                                      | the call     | the state                                   |
 * |-------------|--------------------------------------------------------------|--------------|---------------------------------------------|
 * | transport   | timeouts, ECONNRESET, EPIPE, ECONNREFUSED, Connection closed | falls back   | switches to fallback; back after a write probe |
 * | routing     | MOVED, ASK, TRYAGAIN, CROSSSLOT, CLUSTERDOWN                 | falls back   | switches; back after a write probe           |
 * | write       | OOM, READONLY, MISCONF (and EXECABORT caused by them)        | falls back   | switches; back after a write probe           |
 * | not-ready   | LOADING, MASTERDOWN, BUSY                                    | falls back   | switches; back after a write probe           |
 * | auth        | NOAUTH, WRONGPASS, invalid password                          | falls back   | switches; back after a write probe           |
 * | command     | WRONGTYPE, NOSCRIPT, NOPERM, unknown command, other ERR,     | falls back   | stays; a write probe (at most one a probe    |
 * |             | EXECABORT caused by these                                    |              | interval) switches it if writes are refused  |
 *
 * "Switches" lines are logged once per transition; "command" lines at most once per
 * REFUSAL_LOG_INTERVAL_MS per reason, with the count suppressed since the last one.
 */

export type ReplyErrorClass = 'transport' | 'routing' | 'write' | 'not-ready' | 'auth' | 'command'

export interface ClassifiedError {
  class: ReplyErrorClass
  /** A short stable key for rate limiting and "new reason" detection: READONLY, ECONNREFUSED, unknown command 'GETEX'. */
  code: string
  /** True when the whole server is unusable (or refuses writes), not this command alone. */
  serverWide: boolean
}

const BY_PREFIX: ReadonlyMap<string, ReplyErrorClass> = new Map([
  ['MOVED', 'routing'], ['ASK', 'routing'], ['TRYAGAIN', 'routing'], ['CROSSSLOT', 'routing'], ['CLUSTERDOWN', 'routing'],
  ['OOM', 'write'], ['READONLY', 'write'], ['MISCONF', 'write'],
  ['LOADING', 'not-ready'], ['MASTERDOWN', 'not-ready'], ['BUSY', 'not-ready'],
  ['NOAUTH', 'auth'], ['WRONGPASS', 'auth'],
  ['WRONGTYPE', 'command'], ['NOSCRIPT', 'command'], ['NOPERM', 'command'], ['EXECABORT', 'command'],
])

/** Classifies any error a Redis call rejected with. */
export function classifyRedisError (err: unknown): ClassifiedError {
  if (!(err instanceof Error)) return { class: 'transport', code: 'unknown', serverWide: true }
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
  if (known !== undefined) return { class: known, code: first, serverWide: known !== 'command' }
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
