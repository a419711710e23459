/**
 * The configuration schema: defaults, conversions, a boot that fails naming the variable,
 * `.env` loading, and `.env.example` listing exactly the schema's variables.
 */
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { spawnSync } from 'node:child_process'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { ConfigError, ConfigSchema, configKeys, loadConfig, loadDotEnv, redactUrl, urlSecrets } from '../src/config.js'
import { renderConfigurationMd, renderEnvExample } from '../src/config-docs.js'

t.test('defaults: no variable set gives a runnable config', async (t) => {
  const config = loadConfig({})
  t.equal(config.PORT, 3000)
  t.equal(config.HOST, '0.0.0.0')
  t.equal(config.REDIS_URL, undefined)
  t.equal(config.REDIS_KEY_PREFIX, '')
  t.equal(config.REDIS_CONNECT_TIMEOUT_MS, 2000)
  t.equal(config.REDIS_COMMAND_TIMEOUT_MS, 500)
  t.equal(config.REDIS_MAX_RETRIES_PER_REQUEST, 1)
  t.equal(config.REDIS_FAMILY, 4)
  t.equal(config.REDIS_TLS_REJECT_UNAUTHORIZED, true)
})

t.test('strings are converted and empty values count as unset', async (t) => {
  const config = loadConfig({ PORT: '8080', REDIS_FAMILY: '6', REDIS_TLS_REJECT_UNAUTHORIZED: 'false', REDIS_URL: '  ', LOG_LEVEL: 'warn' })
  t.equal(config.PORT, 8080)
  t.equal(config.REDIS_FAMILY, 6)
  t.equal(config.REDIS_TLS_REJECT_UNAUTHORIZED, false)
  t.equal(config.REDIS_URL, undefined)
  t.equal(config.LOG_LEVEL, 'warn')
  t.notOk('PATH' in config, 'only schema variables are read')
})

const BAD: Array<[string, string]> = [
  ['PORT', 'abc'],
  ['PORT', '70000'],
  ['LOG_LEVEL', 'loud'],
  ['NODE_ENV', 'staging'],
  ['REDIS_URL', 'http://localhost:6379'],
  ['REDIS_URL', 'redis://'],
  ['REDIS_URL', 'redis://host:6379/abc'],
  ['REDIS_KEY_PREFIX', 'has space'],
  ['REDIS_CONNECT_TIMEOUT_MS', '-5'],
  ['REDIS_COMMAND_TIMEOUT_MS', '1.5'],
  ['REDIS_MAX_RETRIES_PER_REQUEST', 'many'],
  ['REDIS_KEEPALIVE_MS', 'x'],
  ['REDIS_FAMILY', '5'],
  ['REDIS_TLS_CA', '/nonexistent/ca.pem'],
  ['REDIS_TLS_REJECT_UNAUTHORIZED', 'maybe'],
  ['BODY_LIMIT_BYTES', '1'],
  ['SHUTDOWN_TIMEOUT_MS', 'soon'],
  ['FALLBACK_MAX_ENTRIES', '0'],
  ['FALLBACK_MAX_BYTES', 'lots'],
]

t.test('each bad value fails the boot naming its variable', async (t) => {
  for (const [name, value] of BAD) {
    const err = t.throws(() => loadConfig({ [name]: value }), ConfigError, `${name}=${value} is refused`) as unknown as ConfigError
    t.match(err.message, new RegExp(`\\b${name}\\b`), `the message names ${name}`)
    t.equal(err.problems.length, 1, `only ${name} is reported`)
  }
})

t.test('a bad value never echoes a secret', async (t) => {
  const err = t.throws(() => loadConfig({ REDIS_URL: 'redis://:topsecret@host:6379/abc' })) as unknown as ConfigError
  t.notMatch(err.message, /topsecret/)
  t.equal(redactUrl('redis://user:pw@a:1,redis://:pw2@b:2'), 'redis://user:***@a:1,redis://:***@b:2')
  // The URL parser (and ioredis) splits the userinfo at the last '@': all of the password goes.
  t.equal(redactUrl('redis://app:s3cr@tPW@127.0.0.1:6380/2'), 'redis://app:***@127.0.0.1:6380/2')
  t.equal(new URL('redis://app:s3cr@tPW@127.0.0.1:6380').password, 's3cr%40tPW', 'what ioredis would send as the password')
  t.equal(redactUrl('rediss://u:p%40ss@h:1/0,redis://:a@b@c@h2:2'), 'rediss://u:***@h:1/0,redis://:***@h2:2')
  t.equal(redactUrl('redis://h:1?db=1&password=hunter2&family=4'), 'redis://h:1?db=1&password=***&family=4', 'a password in the query too')
  t.equal(redactUrl('redis://only-a-user@h:1'), 'redis://only-a-user@h:1', 'a user name alone is shown')
  t.equal(redactUrl('redis://h:1/0'), 'redis://h:1/0')
  // Characters that cut a parsed URL short, or a list, inside the password: none of it shows.
  t.equal(redactUrl('redis://:pa,ss@h:1'), 'redis://:***@h:1')
  t.equal(redactUrl('redis://:ab#cd@h1:1,redis://:x?y@h2:2'), 'redis://:***@h1:1,redis://:***@h2:2')
  t.equal(redactUrl('redis://a:1, rediss://u:p@b:2'), 'redis://a:1, rediss://u:***@b:2', 'a list with a space after the comma')
  t.equal(redactUrl('u:secret@h:6379'), 'u:***@h:6379', 'no scheme')
  t.equal(redactUrl('redis://:pw@[::1]:6379/0'), 'redis://:***@[::1]:6379/0', 'an IPv6 host stays readable')
  t.equal(redactUrl('/tmp/redis.sock?password=s3&db=2'), '/tmp/redis.sock?password=***&db=2', 'a unix socket')
  // What error texts are scrubbed of: the same span, decoded, as parsed, and from the query.
  t.same(urlSecrets('redis://:pa,ss@h:1'), ['pa,ss'])
  t.same(urlSecrets('redis://u:p%40ss@h:1'), ['p%40ss', 'p@ss'])
  t.same(urlSecrets('redis://:ab#cd@h:1'), ['ab#cd'], 'the whole raw span (no URL parser reads this one)')
  t.same(urlSecrets('redis://:a:b@h:1'), ['a%3Ab', 'a:b'], 'a raw colon stays in the password, raw and as the parser encodes it')
  t.same(urlSecrets('redis://h:1?password=q1'), ['q1'])
  t.same(urlSecrets('redis://only-a-user@h:1'), [])
})

t.test('the server refuses to start on a bad value, naming the variable, exit code 1', async (t) => {
  const res = spawnSync(process.execPath, ['--import', 'tsx', 'src/server.ts'], {
    env: { ...process.env, PORT: 'not-a-port', REDIS_URL: '' },
    encoding: 'utf8',
    timeout: 60_000,
  })
  t.equal(res.status, 1)
  t.match(res.stderr, /Invalid configuration/)
  t.match(res.stderr, /PORT/)
  t.notMatch(res.stderr, /\n\s+at /, 'no stack trace')
})

t.test('a .env file is read when present, and the real environment wins', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'aic-env-'))
  const file = join(dir, '.env')
  writeFileSync(file, 'PORT=4567\nSHUTDOWN_TIMEOUT_MS=1234\n')
  const saved = { PORT: process.env.PORT, SHUTDOWN_TIMEOUT_MS: process.env.SHUTDOWN_TIMEOUT_MS }
  t.teardown(() => {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k]
      else process.env[k] = v
    }
  })
  delete process.env.SHUTDOWN_TIMEOUT_MS
  process.env.PORT = '4000'
  loadDotEnv(file)
  const config = loadConfig()
  t.equal(config.SHUTDOWN_TIMEOUT_MS, 1234, 'a variable from .env is used')
  t.equal(config.PORT, 4000, 'the real environment wins over .env')
  loadDotEnv(join(dir, 'missing.env'))
  t.pass('a missing .env file is fine')
})

t.test('.env.example and docs/configuration.md are generated from the schema and up to date', async (t) => {
  const env = readFileSync(new URL('../.env.example', import.meta.url), 'utf8')
  const md = readFileSync(new URL('../docs/configuration.md', import.meta.url), 'utf8')
  t.equal(env, renderEnvExample(), '.env.example is current (npm run docs:config)')
  t.equal(md, renderConfigurationMd(), 'docs/configuration.md is current (npm run docs:config)')
  const listed = new Set([...env.matchAll(/^#?\s*([A-Z][A-Z0-9_]+)=/gm)].map((m) => m[1]))
  t.same([...listed].sort(), [...configKeys].sort(), '.env.example lists exactly the schema variables')
})

t.test('every variable has a description, and one without a default an example', async (t) => {
  const properties = ConfigSchema.properties as Record<string, { description?: string, default?: unknown, examples?: unknown[] }>
  const defaults = loadConfig({}) as Record<string, unknown>
  for (const key of configKeys) {
    t.ok((properties[key]?.description ?? '').length > 10, `${key} is described`)
    if (defaults[key] === undefined && properties[key]?.examples === undefined) {
      t.ok(/SECRET|PASSWORD|TOKEN|API_KEY|ADMIN_EMAIL/.test(key), `${key}: no default and no example only for secrets`)
    }
  }
})
