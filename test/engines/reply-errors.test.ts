/**
 * Every reply Redis can give, in the class the state machine acts on (the table in
 * docs/reliability.md).
 */
import t from 'tap'
import { classifyRedisError, isCommandRefusal } from '../../src/engines/redis/reply-errors.js'

function reply (message: string, previousErrors?: Error[]): Error {
  const err = new Error(message)
  Object.defineProperty(err, 'name', { value: 'ReplyError' })
  if (previousErrors) Object.assign(err, { previousErrors })
  return err
}

function errno (code: string, message: string): Error {
  return Object.assign(new Error(message), { code })
}

t.test('each reply in its class, with its scope', async (t) => {
  const cases: Array<[Error | string, string, string, boolean]> = [
    // A cluster client follows redirections itself: one reaching a caller is not an outage.
    [reply('MOVED 3999 127.0.0.1:6381'), 'redirect', 'MOVED', false],
    [reply('ASK 3999 127.0.0.1:6381'), 'redirect', 'ASK', false],
    [reply('TRYAGAIN Multiple keys request during rehashing of slot'), 'redirect', 'TRYAGAIN', false],
    [reply('CLUSTERDOWN The cluster is down'), 'routing', 'CLUSTERDOWN', true],
    // Keys of one call on two slots: our bug, that call only.
    [reply('CROSSSLOT Keys in request don\'t hash to the same slot'), 'command', 'CROSSSLOT', false],
    [new Error('All keys in the pipeline should belong to the same slots allocation group'), 'command', 'CROSSSLOT', false],
    [reply('OOM command not allowed when used memory > \'maxmemory\'.'), 'write', 'OOM', true],
    [reply('READONLY You can\'t write against a read only replica.'), 'write', 'READONLY', true],
    [reply('MISCONF Redis is configured to save RDB snapshots, but it\'s currently unable to persist to disk.'), 'write', 'MISCONF', true],
    [reply('LOADING Redis is loading the dataset in memory'), 'not-ready', 'LOADING', true],
    [reply('MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to \'no\'.'), 'not-ready', 'MASTERDOWN', true],
    [reply('BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE.'), 'not-ready', 'BUSY', true],
    [reply('NOAUTH Authentication required.'), 'auth', 'NOAUTH', true],
    [reply('WRONGPASS invalid username-password pair or user is disabled.'), 'auth', 'WRONGPASS', true],
    [reply('ERR invalid password'), 'auth', 'WRONGPASS', true],
    [reply('WRONGTYPE Operation against a key holding the wrong kind of value'), 'command', 'WRONGTYPE', false],
    [reply('NOSCRIPT No matching script. Please use EVAL.'), 'command', 'NOSCRIPT', false],
    [reply('NOPERM this user has no permissions to run the \'set\' command'), 'command', 'NOPERM', false],
    [reply('ERR unknown command \'GETEX\', with args beginning with: \'k\' '), 'command', 'unknown command \'GETEX\'', false],
    [reply('ERR wrong number of arguments for \'get\' command'), 'command', 'ERR wrong number of arguments for \'get\'', false],
    [reply('SOMEMODULE error'), 'command', 'SOMEMODULE', false],
    [errno('ECONNRESET', 'read ECONNRESET'), 'transport', 'ECONNRESET', true],
    [errno('EPIPE', 'write EPIPE'), 'transport', 'EPIPE', true],
    [errno('ECONNREFUSED', 'connect ECONNREFUSED 127.0.0.1:1'), 'transport', 'ECONNREFUSED', true],
    [new Error('Command timed out'), 'transport', 'timeout', true],
    [new Error('PING timed out after 250 ms'), 'transport', 'timeout', true],
    [new Error('Connection is closed.'), 'transport', 'connection closed', true],
    ['a string', 'transport', 'unknown', true],
  ]
  for (const [err, cls, code, serverWide] of cases) {
    const got = classifyRedisError(err)
    const name = err instanceof Error ? err.message : err
    t.same(got, { class: cls, code, serverWide }, name)
    t.equal(isCommandRefusal(err), cls === 'command', `${name}: a refusal of the command alone? ${cls === 'command'}`)
  }
})

t.test('EXECABORT takes the class of what made the transaction fail', async (t) => {
  const oom = reply('EXECABORT Transaction discarded because of previous errors.', [reply('OOM command not allowed when used memory > \'maxmemory\'.')])
  t.same(classifyRedisError(oom), { class: 'write', code: 'EXECABORT/OOM', serverWide: true }, 'an OOM inside is a full server')
  const readonly = reply('EXECABORT Transaction discarded because of previous errors.', [reply('READONLY You can\'t write against a read only replica.')])
  t.same(classifyRedisError(readonly), { class: 'write', code: 'EXECABORT/READONLY', serverWide: true })
  const wrongArgs = reply('EXECABORT Transaction discarded because of previous errors.', [reply('ERR unknown command \'NOPE\'')])
  t.same(classifyRedisError(wrongArgs), { class: 'command', code: 'EXECABORT/unknown command \'NOPE\'', serverWide: false }, 'a bad command inside is this call alone')
  t.same(classifyRedisError(reply('EXECABORT Transaction discarded because of previous errors.')), { class: 'command', code: 'EXECABORT', serverWide: false }, 'no cause known: this call, and the write probe checks the server')
})
