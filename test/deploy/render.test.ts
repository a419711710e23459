/**
 * render.yaml, read from the repository: one web service run as several instances, one
 * Render Key Value (Redis) instance and one managed PostgreSQL, wired through their internal
 * connection strings, no external access, no disk (nothing an instance keeps is its own),
 * migrations as the pre-deploy step, health check on the readiness route, generated secrets,
 * NODE_ENV=production, the Node line package.json names, commands that build and start what
 * the repository builds, and an environment the config schema accepts. Each check is a function returning a problem (or
 * undefined); broken copies of the real file are fed through the same checks to show each
 * one can fail.
 *
 * `yaml` is not a dependency of the project, so a small parser for the block subset a
 * Blueprint uses (maps, lists of maps, scalars, `[]`, comments) reads the file; anything
 * outside that subset fails the test instead of being misread.
 */
import t from 'tap'
import { existsSync, readFileSync } from 'node:fs'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { configKeys, loadConfig } from '../../src/config.js'
import { build } from '../helper.js'

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..')
const RENDER_YAML = readFileSync(join(root, 'render.yaml'), 'utf8')

// ---------------------------------------------------------------------------------------
// A block-YAML subset parser
// ---------------------------------------------------------------------------------------

type Yaml = string | number | boolean | null | Yaml[] | { [key: string]: Yaml }
interface Line { indent: number, text: string, no: number }

function scalar (raw: string, no: number): Yaml {
  const s = raw.trim()
  if (s === '[]') return []
  if (s === '{}') return {}
  if (/^"(?:[^"\\]|\\.)*"$/.test(s)) return JSON.parse(s) as string
  if (/^'(?:[^']|'')*'$/.test(s)) return s.slice(1, -1).replace(/''/g, "'")
  if (/^[[{&*!|>%@`]/.test(s)) throw new Error(`line ${no}: unsupported YAML: ${s}`)
  if (s === 'true') return true
  if (s === 'false') return false
  if (s === 'null' || s === '~' || s === '') return null
  if (/^-?\d+(\.\d+)?$/.test(s)) return Number(s)
  return s
}

/** Strips a trailing ` # comment` outside quotes. */
function stripComment (text: string): string {
  let quote: string | null = null
  for (let i = 0; i < text.length; i++) {
    const c = text[i]
    if (quote !== null) {
      if (c === quote) quote = null
    } else if (c === '"' || c === "'") {
      quote = c
    } else if (c === '#' && (i === 0 || text[i - 1] === ' ')) {
      return text.slice(0, i).trimEnd()
    }
  }
  return text
}

export function parseYaml (text: string): Yaml {
  const lines: Line[] = []
  text.split(/\r?\n/).forEach((raw, i) => {
    if (/\t/.test(raw.match(/^\s*/)?.[0] ?? '')) throw new Error(`line ${i + 1}: tab indentation`)
    const body = stripComment(raw)
    if (body.trim() === '') return
    lines.push({ indent: body.length - body.trimStart().length, text: body.trim(), no: i + 1 })
  })
  let pos = 0

  function block (indent: number): Yaml {
    const first = lines[pos]
    if (first === undefined || first.indent < indent) return null
    return first.text.startsWith('- ') || first.text === '-' ? list(first.indent) : map(first.indent)
  }

  function map (indent: number, into: { [key: string]: Yaml } = {}): { [key: string]: Yaml } {
    while (pos < lines.length) {
      const line = lines[pos] as Line
      if (line.indent < indent) break
      if (line.indent > indent) throw new Error(`line ${line.no}: unexpected indentation`)
      const m = /^([A-Za-z0-9_.-]+):(?:\s+(.*))?$/.exec(line.text)
      if (!m) throw new Error(`line ${line.no}: expected "key: value", got ${line.text}`)
      const key = m[1] as string
      if (key in into) throw new Error(`line ${line.no}: duplicate key ${key}`)
      pos++
      if (m[2] !== undefined && m[2] !== '') {
        into[key] = scalar(m[2], line.no)
      } else {
        const next = lines[pos]
        // A list may sit at the same indentation as its key.
        into[key] = next !== undefined && (next.indent > indent || (next.indent === indent && next.text.startsWith('- '))) ? block(next.indent) : null
      }
    }
    return into
  }

  function list (indent: number): Yaml[] {
    const items: Yaml[] = []
    while (pos < lines.length) {
      const line = lines[pos] as Line
      if (line.indent !== indent || !line.text.startsWith('- ')) {
        if (line.indent > indent) throw new Error(`line ${line.no}: unexpected indentation`)
        break
      }
      const rest = line.text.slice(2)
      if (/^[A-Za-z0-9_.-]+:(\s|$)/.test(rest)) {
        // "- key: value" opens a map whose other keys are indented to the first key.
        lines[pos] = { indent: indent + 2, text: rest, no: line.no }
        items.push(map(indent + 2))
      } else {
        pos++
        items.push(scalar(rest, line.no))
      }
    }
    return items
  }

  const doc = block(0)
  if (pos < lines.length) throw new Error(`line ${lines[pos]?.no}: could not be read`)
  return doc
}

// ---------------------------------------------------------------------------------------
// The checks
// ---------------------------------------------------------------------------------------

type Obj = { [key: string]: Yaml }
const isObj = (v: Yaml | undefined): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v)
const services = (doc: Yaml): Obj[] => (isObj(doc) && Array.isArray(doc.services) ? doc.services.filter(isObj) : [])
const web = (doc: Yaml): Obj | undefined => services(doc).find((s) => s.type === 'web')
const redis = (doc: Yaml): Obj | undefined => services(doc).find((s) => s.type === 'redis' || s.type === 'keyvalue')
const envVars = (doc: Yaml): Obj[] => {
  const list = web(doc)?.envVars
  return Array.isArray(list) ? list.filter(isObj) : []
}
const envVar = (doc: Yaml, key: string): Obj | undefined => envVars(doc).find((e) => e.key === key)
const databases = (doc: Yaml): Obj[] => (isObj(doc) && Array.isArray(doc.databases) ? doc.databases.filter(isObj) : [])

/** Variables Render itself reads (not the service's config). */
const RENDER_VARIABLES = new Set(['NODE_VERSION'])
const SECRET_NAME = /SECRET|PASSWORD|TOKEN|API_KEY/

type Check = { name: string, run: (doc: Yaml) => string | undefined }

const CHECKS: Check[] = [
  {
    name: 'one web service and one Redis (Key Value) instance',
    run: (doc) => {
      const types = services(doc).map((s) => s.type)
      return types.filter((x) => x === 'web').length === 1 && types.filter((x) => x === 'redis' || x === 'keyvalue').length === 1
        ? undefined
        : `services are ${JSON.stringify(types)}`
    },
  },
  {
    name: 'the web service builds and starts what the repository builds (or runs the Dockerfile)',
    run: (doc) => {
      const w = web(doc)
      if (w?.runtime === 'docker') {
        const path = String(w.dockerfilePath ?? './Dockerfile')
        return existsSync(join(root, path)) ? undefined : `dockerfilePath ${path} does not exist`
      }
      if (w?.runtime !== 'node') return `runtime is ${String(w?.runtime)}`
      const buildCommand = String(w.buildCommand ?? '')
      if (!/\bnpm ci\b/.test(buildCommand) || !/\bnpm run build\b/.test(buildCommand)) return `buildCommand "${buildCommand}" does not run npm ci and npm run build`
      // NODE_ENV=production applies at build time too: npm would leave out TypeScript.
      if (envVar(doc, 'NODE_ENV')?.value === 'production' && !/--include=dev/.test(buildCommand)) return 'npm ci runs with NODE_ENV=production without --include=dev: no TypeScript to build with'
      const startCommand = String(w.startCommand ?? '')
      const start = /^node\s+(?:--\S+\s+)*(\S+)$/.exec(startCommand)
      if (!start) return `startCommand "${startCommand}" is not "node [--flags] <file>"`
      const source = (start[1] as string).replace(/^dist\//, '').replace(/\.js$/, '.ts')
      const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { scripts?: Record<string, string> }
      if (!existsSync(join(root, source))) return `startCommand runs ${start[1]}, but ${source} does not exist`
      if (!/tsc -p tsconfig\.build\.json/.test(pkg.scripts?.build ?? '')) return 'npm run build is not the tsc build this start command expects'
      // The node flags too: the service runs on Render as `npm start` runs it.
      if (startCommand !== pkg.scripts?.start) return `startCommand "${startCommand}" is not the package.json start script "${String(pkg.scripts?.start)}"`
      return undefined
    },
  },
  {
    name: 'health check on the readiness route',
    run: (doc) => (web(doc)?.healthCheckPath === '/api/health/ready' ? undefined : `healthCheckPath is ${String(web(doc)?.healthCheckPath)}`),
  },
  {
    name: 'REDIS_URL comes from the Redis instance\'s internal connection string',
    run: (doc) => {
      const from = envVar(doc, 'REDIS_URL')?.fromService
      const r = redis(doc)
      if (!isObj(from)) return 'REDIS_URL has no fromService'
      if (from.type !== r?.type || from.name !== r?.name) return `REDIS_URL points at ${String(from.type)}/${String(from.name)}, the instance is ${String(r?.type)}/${String(r?.name)}`
      return from.property === 'connectionString' ? undefined : `property is ${String(from.property)}`
    },
  },
  {
    name: 'Redis is private: ipAllowList is an empty list, and it is in the web service\'s region',
    run: (doc) => {
      const r = redis(doc)
      if (!Array.isArray(r?.ipAllowList) || r.ipAllowList.length !== 0) return `ipAllowList is ${JSON.stringify(r?.ipAllowList)}`
      return (r.region ?? 'oregon') === (web(doc)?.region ?? 'oregon') ? undefined : 'Redis and the web service are in different regions (no private network between them)'
    },
  },
  {
    name: 'Redis has an eviction policy',
    run: (doc) => (typeof redis(doc)?.maxmemoryPolicy === 'string' ? undefined : 'no maxmemoryPolicy'),
  },
  {
    name: 'NODE_ENV=production',
    run: (doc) => (envVar(doc, 'NODE_ENV')?.value === 'production' ? undefined : 'NODE_ENV is not production'),
  },
  {
    name: 'JWT_SECRET and METRICS_TOKEN are generated by Render',
    run: (doc) => ['JWT_SECRET', 'METRICS_TOKEN'].map((k) => (envVar(doc, k)?.generateValue === true ? undefined : `${k} is not generateValue: true`)).find(Boolean),
  },
  {
    name: 'no secret is written in the file',
    run: (doc) => envVars(doc).filter((e) => SECRET_NAME.test(String(e.key)) && 'value' in e).map((e) => `${String(e.key)} has a literal value`)[0],
  },
  {
    name: 'several instances, no disk, no SQLite file',
    run: (doc) => {
      const w = web(doc)
      if (typeof w?.numInstances !== 'number' || w.numInstances < 2) return `numInstances is ${String(w?.numInstances)}`
      if (w.plan === 'free' || w.plan === undefined) return 'several instances need a paid plan'
      if ('disk' in w) return 'a service with a disk runs one instance (and nothing the service keeps belongs on one)'
      return envVar(doc, 'DATABASE_PATH') === undefined ? undefined : 'DATABASE_PATH is set: every instance would have its own SQLite file'
    },
  },
  {
    name: 'DATABASE_URL comes from the managed PostgreSQL\'s internal connection string; the database is private, in the same region',
    run: (doc) => {
      const dbs = databases(doc)
      if (dbs.length !== 1) return `${dbs.length} databases`
      const from = envVar(doc, 'DATABASE_URL')?.fromDatabase
      if (!isObj(from)) return 'DATABASE_URL has no fromDatabase'
      if (from.name !== dbs[0]?.name) return `DATABASE_URL points at ${String(from.name)}, the database is ${String(dbs[0]?.name)}`
      if (from.property !== 'connectionString') return `property is ${String(from.property)}`
      if (!Array.isArray(dbs[0]?.ipAllowList) || dbs[0].ipAllowList.length !== 0) return `the database's ipAllowList is ${JSON.stringify(dbs[0]?.ipAllowList)}`
      if (dbs[0].plan === 'free') return 'a free database expires after 30 days'
      return (dbs[0].region ?? 'oregon') === (web(doc)?.region ?? 'oregon') ? undefined : 'the database and the web service are in different regions'
    },
  },
  {
    name: 'migrations run once per deploy, as the pre-deploy command',
    run: (doc) => (web(doc)?.preDeployCommand === 'node dist/src/cli.js migrate' ? undefined : `preDeployCommand is ${String(web(doc)?.preDeployCommand)}`),
  },
  {
    name: 'NODE_VERSION is the Node line package.json\'s engines names',
    run: (doc) => {
      const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { engines?: { node?: string } }
      const major = /^>=\s*(\d+)/.exec(pkg.engines?.node ?? '')?.[1]
      const value = String(envVar(doc, 'NODE_VERSION')?.value)
      return value === major ? undefined : `NODE_VERSION is ${value}, engines.node is ${String(pkg.engines?.node)}`
    },
  },
  {
    name: 'every variable is one the service (or Render) knows',
    run: (doc) => envVars(doc).map((e) => String(e.key)).filter((k) => !RENDER_VARIABLES.has(k) && !(configKeys as string[]).includes(k)).map((k) => `unknown variable ${k}`)[0],
  },
  {
    name: 'the environment passes the config schema (generated and prompted values stood in for)',
    run: (doc) => {
      const env: Record<string, string> = {}
      for (const e of envVars(doc)) {
        const key = String(e.key)
        if ('value' in e) env[key] = String(e.value)
        else if (e.generateValue === true) env[key] = 'G3nErAtEd+By/RenDer0123456789abcdefghijklmnopq='
        else if (isObj(e.fromService)) env[key] = 'redis://red-abc123:6379'
        else if (isObj(e.fromDatabase)) env[key] = 'postgresql://aic:Pw0123456789@dpg-abc123-a/aic'
      }
      try {
        loadConfig(env)
        return undefined
      } catch (err) {
        return (err as Error).message
      }
    },
  },
]

function problems (doc: Yaml): string[] {
  return CHECKS.map((c) => {
    const problem = c.run(doc)
    return problem === undefined ? undefined : `${c.name}: ${problem}`
  }).filter((p): p is string => p !== undefined)
}

// ---------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------

t.test('the parser reads the subset and refuses what it does not know', async (t) => {
  t.same(parseYaml('a: 1\nb:\n  - c: "x # y"  # comment\n    d: []\n  - e\nf: true\n'), { a: 1, b: [{ c: 'x # y', d: [] }, 'e'], f: true })
  t.same(parseYaml('k:\n- a\n- b\n'), { k: ['a', 'b'] }, 'a list at its key\'s indentation')
  t.throws(() => parseYaml('a: &anchor 1\n'))
  t.throws(() => parseYaml('a: 1\na: 2\n'), /duplicate/)
  t.throws(() => parseYaml('a:\n  b: 1\n    c: 2\n'), /indentation/)
})

t.test('render.yaml passes every check', async (t) => {
  const doc = parseYaml(RENDER_YAML)
  for (const check of CHECKS) t.equal(check.run(doc), undefined, check.name)
})

t.test('the health check path answers 200 on a freshly built app', async (t) => {
  const doc = parseYaml(RENDER_YAML)
  const { app } = await build(t, { LOG_LEVEL: 'warn' })
  const res = await app.inject(String(web(doc)?.healthCheckPath))
  t.equal(res.statusCode, 200)
})

t.test('TRUST_PROXY as shipped tells clients apart behind Cloudflare and Render\'s proxy', async (t) => {
  const trusted = String(envVar(parseYaml(RENDER_YAML), 'TRUST_PROXY')?.value)
  const { app } = await build(t, { TRUST_PROXY: trusted, RATE_LIMIT_MAX: '2', LOG_LEVEL: 'warn' })
  // What Render's proxy sends (it connects from 10.x; Cloudflare's edge is the last hop it adds).
  const via = (client: string, edge = '104.22.17.40'): Promise<number> => app.inject({
    url: '/api/stocks/AAPL', remoteAddress: '10.21.157.68', headers: { 'x-forwarded-for': `${client}, ${edge}` },
  }).then((res) => res.statusCode)
  t.same([await via('203.0.113.10'), await via('203.0.113.10'), await via('203.0.113.10')], [200, 200, 429], 'one client is limited')
  t.equal(await via('198.51.100.20'), 200, 'another client through the same edge has its own budget')
  t.equal(await via('198.51.100.30', '2606:4700:10::6816:1'), 200, 'and through an IPv6 edge')
  t.equal(await via('203.0.113.10', '162.158.1.1'), 429, 'the first client is the same client through another edge')
})

t.test('the checks catch broken variants of the real file', async (t) => {
  const variants: Array<[string, (s: string) => string]> = [
    ['no Redis service', (s) => s.replace(/ {2}- type: redis[\s\S]*$/, '')],
    ['REDIS_URL from another service', (s) => s.replace('name: ai-capital-redis\n          property', 'name: other-redis\n          property')],
    ['external URL property', (s) => s.replace('property: connectionString', 'property: host')],
    ['Redis open to the internet', (s) => s.replace('ipAllowList: []', 'ipAllowList:\n      - source: 0.0.0.0/0\n        description: everywhere')],
    ['Redis in another region', (s) => s.replace(/(type: redis\n {4}name: ai-capital-redis\n {4}region:) oregon/, '$1 frankfurt')],
    ['no eviction policy', (s) => s.replace(/ {4}maxmemoryPolicy: .*\n/, '')],
    ['liveness instead of readiness', (s) => s.replace('healthCheckPath: /api/health/ready', 'healthCheckPath: /api/health/live')],
    ['a committed JWT secret', (s) => s.replace('key: JWT_SECRET\n        generateValue: true', 'key: JWT_SECRET\n        value: not-so-secret-but-long-enough-0123456789')],
    ['no metrics token', (s) => s.replace(/ {6}- key: METRICS_TOKEN\n {8}generateValue: true\n/, '')],
    ['development mode', (s) => s.replace('value: production', 'value: development')],
    ['one instance', (s) => s.replace('numInstances: 3', 'numInstances: 1')],
    ['a free plan for several instances', (s) => s.replace(/plan: starter\n {4}numInstances/, 'plan: free\n    numInstances')],
    ['a disk', (s) => s.replace('    numInstances: 3\n', '    numInstances: 3\n    disk:\n      name: data\n      mountPath: /var/data\n      sizeGB: 1\n')],
    ['an SQLite file per instance', (s) => s.replace('      - key: DATABASE_URL\n', '      - key: DATABASE_PATH\n        value: /var/data/ai-capital.db\n      - key: DATABASE_URL\n')],
    ['DATABASE_URL from another database', (s) => s.replace('name: ai-capital-db\n          property', 'name: other-db\n          property')],
    ['no managed database', (s) => s.replace(/\ndatabases:[\s\S]*$/, '\n')],
    ['the database open to the internet', (s) => s.replace(/(postgresMajorVersion: "16"\n[\s\S]*)ipAllowList: \[\]/, '$1ipAllowList:\n      - source: 0.0.0.0/0\n        description: everywhere')],
    ['a free database', (s) => s.replace('plan: basic-256mb', 'plan: free')],
    ['the database in another region', (s) => s.replace(/(name: ai-capital-db\n {4}region:) oregon/, '$1 frankfurt')],
    ['no pre-deploy migration', (s) => s.replace(/ {4}preDeployCommand: .*\n/, '')],
    ['an old Node line', (s) => s.replace('value: "24"', 'value: "20"')],
    ['a typo in a variable name', (s) => s.replace('key: TRUST_PROXY', 'key: TRUST_PROXIES')],
    ['an invalid value', (s) => s.replace(/value: 10\.0\.0\.0\/8,.*/, 'value: "true"')],
    ['build without dev dependencies', (s) => s.replace('npm ci --include=dev', 'npm ci')],
    ['a start file that does not exist', (s) => s.replace(/node (.*)dist\/src\/server\.js/, 'node $1dist/server.js')],
    ['node flags other than the start script\'s', (s) => s.replace(/startCommand: node .*dist\/src\/server\.js/, 'startCommand: node --no-concurrent-marking dist/src/server.js')],
  ]
  for (const [name, mutate] of variants) {
    const text = mutate(RENDER_YAML)
    t.not(text, RENDER_YAML, `${name}: the mutation applies`)
    t.ok(problems(parseYaml(text)).length > 0, `${name}: caught (${problems(parseYaml(text))[0] ?? 'not caught'})`)
  }
})
