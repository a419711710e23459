/**
 * The README's "Try it" block, run as a newcomer would run it: the service started with the
 * development admin of the README's start line, then the curl lines against it. Needs curl
 * and bash (present wherever the README can be followed).
 */
import { execFile } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { promisify } from 'node:util'
import t from 'tap'
import { build } from './helper.js'

const run = promisify(execFile)
const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8')
const tryIt = readme.slice(readme.indexOf('## Try it'))
const blocks = [...tryIt.matchAll(/```bash\n([\s\S]*?)```/g)].map((m) => m[1] ?? '')

t.test('the README has a start line with a development admin and a block of calls', async (t) => {
  t.ok(readme.split('\n').length <= 200, 'the README is at most 200 lines')
  t.match(blocks[0], /ADMIN_EMAIL=\S+ ADMIN_PASSWORD=\S+ npm run dev/)
  t.match(blocks[1], /^API=http:\/\/localhost:3000$/m)
})

t.test('the "Try it" block works against a started service', async (t) => {
  const env = Object.fromEntries([...(blocks[0] ?? '').matchAll(/\b(ADMIN_EMAIL|ADMIN_PASSWORD)=(\S+)/g)].map((m) => [m[1], m[2]]))
  const { app } = await build(t, env)
  const address = await app.listen({ host: '127.0.0.1', port: 0 })
  const script = `set -euo pipefail\n${(blocks[1] ?? '').replace(/^API=.*$/m, `API=${address}`)}`
  const { stdout } = await run('bash', ['-c', script], { timeout: 60_000 })
  t.match(stdout, /"email":"ann@example.com"/, 'the user is registered')
  t.match(stdout, /^x-cache: (MISS|HIT|STALE)\b/im, 'the quote says where it came from')
  t.match(stdout, /^age: \d+/im, 'and how old it is')
  t.match(stdout, /"positions":\[\{"ticker":"AAPL","shares":10/, 'the buy shows in the portfolio')
  t.match(stdout, /"mode":"fallback"/, 'the admin call answers with the Redis state')
  t.notMatch(stdout, /"statusCode":(4|5)\d\d/, 'no call was refused')
})
