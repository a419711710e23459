/**
 * The Dockerfile: clean under a Dockerfile linter (dockerfile-utils, the validator behind the
 * Docker language server; `npm run lint:docker` runs the same in CI), and the few things the
 * image must be: the Node line package.json's `engines` names, production dependencies only,
 * a non-root user, bound to 0.0.0.0, a health check, no secret baked in, and the start
 * script's command.
 */
import { readFileSync } from 'node:fs'
import { join, resolve } from 'node:path'
import t from 'tap'
import { validate } from 'dockerfile-utils'

const root = resolve(import.meta.dirname, '../..')
const read = (file: string): string => readFileSync(join(root, file), 'utf8')
const dockerfile = read('Dockerfile')
const pkg = JSON.parse(read('package.json')) as { engines: { node: string }, scripts: Record<string, string> }

/** Instructions, continuation lines joined and comments dropped, grouped by stage. */
function stages (text: string): Array<Array<{ cmd: string, args: string }>> {
  const joined = text.split('\n').filter((l) => !/^\s*#/.test(l)).join('\n').replace(/\\\n/g, ' ')
  const out: Array<Array<{ cmd: string, args: string }>> = []
  for (const line of joined.split('\n')) {
    const m = /^\s*([A-Za-z]+)\s+(.*)$/.exec(line)
    if (!m) continue
    const ins = { cmd: m[1]!.toUpperCase(), args: m[2]!.trim() }
    if (ins.cmd === 'FROM') out.push([])
    out.at(-1)?.push(ins)
  }
  return out
}

const all = stages(dockerfile)
const runtime = all.at(-1) ?? []
const of = (stage: typeof runtime, cmd: string): string[] => stage.filter((i) => i.cmd === cmd).map((i) => i.args)

t.test('dockerfile-utils finds no error and no warning; a broken copy shows it runs', async (t) => {
  t.same(validate(dockerfile).map((d) => `line ${d.range.start.line + 1}: ${d.message}`), [])
  t.ok(validate(`${dockerfile}\nCMD ["node"]\n`).length > 0, 'a second CMD is reported')
})

t.test('every stage is the official slim image of the Node line package.json supports', async (t) => {
  const major = /^>=\s*(\d+)/.exec(pkg.engines.node)?.[1]
  t.ok(major, `engines.node is ">=N" (${pkg.engines.node})`)
  t.ok(all.length >= 2, 'a build stage and a runtime stage')
  for (const from of all.map((s) => of(s, 'FROM')[0] ?? '')) t.match(from, new RegExp(`^node:${major}-[a-z]+-slim\\b`), from)
})

t.test('the runtime stage: production dependencies only, no toolchain, NODE_ENV=production', async (t) => {
  const build = all[0] ?? []
  t.ok(of(build, 'RUN').some((r) => /\bnpm (prune|ci|install)\b.*--omit[= ]dev/.test(r)), 'the build stage prunes dev dependencies')
  t.ok(of(runtime, 'COPY').some((c) => /^--from=\S+\s+\S*node_modules\b/.test(c)), 'the runtime stage copies the pruned node_modules')
  t.notOk(of(runtime, 'RUN').some((r) => /\bnpm (ci|install|i)\b|\b(g\+\+|make|python3)\b/.test(r)), 'and installs nothing itself')
  t.match(of(runtime, 'ENV').join(' '), /\bNODE_ENV=production\b/)
})

t.test('the runtime stage runs as a non-root user, listens on 0.0.0.0, and has a health check', async (t) => {
  const user = of(runtime, 'USER').at(-1)
  t.ok(user !== undefined && !/^(root|0)(:|$)/.test(user), `USER ${user ?? 'unset'}`)
  t.match(of(runtime, 'ENV').join(' '), /\bHOST=0\.0\.0\.0\b/)
  t.match(of(runtime, 'HEALTHCHECK').join(' '), /\/api\/health\/live\b/, 'HEALTHCHECK probes the liveness route')
})

t.test('CMD is the start script in exec form: node is PID 1, no npm or shell in between', async (t) => {
  const cmd = JSON.parse(of(runtime, 'CMD').at(-1) ?? 'null') as string[] | null
  t.same(cmd, pkg.scripts.start?.split(/\s+/))
})

t.test('no secret is baked in: no ENV or ARG named like one, no .env copied or sent as context', async (t) => {
  const names = all.flat().filter((i) => i.cmd === 'ENV' || i.cmd === 'ARG').flatMap((i) => [...i.args.matchAll(/(?:^|\s)([A-Za-z_][A-Za-z0-9_]*)(?==|\s|$)/g)].map((m) => m[1]!))
  t.same(names.filter((n) => /SECRET|PASSWORD|TOKEN|API_?KEY|PRIVATE_?KEY|CREDENTIAL/i.test(n)), [])
  t.notOk(all.flat().some((i) => /^(COPY|ADD)$/.test(i.cmd) && /(^|[\s/"])\.env\b/.test(i.args)), 'no COPY of .env')
  const ignored = read('.dockerignore').split('\n').map((l) => l.trim())
  for (const entry of ['.env', '.env.*', 'node_modules', '.git']) t.ok(ignored.includes(entry), `.dockerignore lists ${entry}`)
})

t.test('the build stage copies every directory tsconfig.build.json compiles', async (t) => {
  const include = (JSON.parse(read('tsconfig.build.json')) as { include: string[] }).include
  const copied = of(all[0] ?? [], 'COPY').map((c) => c.split(/\s+/)[0])
  for (const dir of include) t.ok(copied.includes(dir), `COPY ${dir}`)
})
