/**
 * docker-compose.scale.yml with deploy/haproxy/haproxy.cfg and deploy/redis/sentinel.conf,
 * read from the repository (no Docker engine runs here): HAProxy's backend lists every API
 * instance on the port it listens on and checks the readiness route; the instances' health
 * check is a route the app has; every variable they get is in the config schema and the
 * whole environment passes it; they find Redis through the three sentinels, by the master
 * name the sentinels monitor, and PostgreSQL by its service, user and database; the replica
 * follows the master; migrations run once, before the instances; the drain fits HAProxy's
 * checks and Docker's stop grace period; no secret is written in the files; only the proxy
 * is published. Each check is a function returning a problem (or undefined), and broken
 * copies show that each can fail.
 */
import t from 'tap'
import { readFileSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { parse } from 'yaml'
import { configKeys, loadConfig } from '../../src/config.js'
import { build } from '../helper.js'

const root = resolve(import.meta.dirname, '../..')
const read = (file: string): string => readFileSync(join(root, file), 'utf8')

type Obj = Record<string, unknown>
interface Files { compose: Obj, haproxy: string, sentinel: string }

const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v)

function load (): Files {
  return {
    compose: parse(read('docker-compose.scale.yml'), { merge: true }) as Obj,
    haproxy: read('deploy/haproxy/haproxy.cfg'),
    sentinel: read('deploy/redis/sentinel.conf'),
  }
}

/** What `docker compose` substitutes, with test values for the variables the operator sets. */
const OPERATOR_ENV: Record<string, string> = {
  POSTGRES_PASSWORD: 'pg-Password-0123',
  REDIS_PASSWORD: 'redis-Password-0123',
  JWT_SECRET: 'compose-test-secret-0123456789abcdefghijklmnop',
  METRICS_TOKEN: 'metrics-token-0123456789',
}

function substitute (value: string): string {
  return value.replace(/\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}/g, (whole, name: string | undefined, op: string | undefined, arg: string | undefined) => {
    if (whole === '$$') return '$'
    const set = OPERATOR_ENV[name as string]
    if (set !== undefined && set !== '') return set
    if (op?.endsWith('?') === true) throw new Error(`${String(name)} is required: ${String(arg)}`)
    return op?.endsWith('-') === true ? String(arg) : ''
  })
}

const services = (f: Files): Record<string, Obj> => {
  const s = f.compose.services
  return isObj(s) ? Object.fromEntries(Object.entries(s).filter((e): e is [string, Obj] => isObj(e[1]))) : {}
}
const commandOf = (s: Obj): string => (Array.isArray(s.command) ? s.command.join(' ') : String(s.command ?? ''))
const envOf = (s: Obj | undefined): Record<string, string> => {
  const env = s?.environment
  if (!isObj(env)) return {}
  return Object.fromEntries(Object.entries(env).map(([k, v]) => [k, String(v)]))
}
const resolvedEnv = (s: Obj | undefined): Record<string, string> =>
  Object.fromEntries(Object.entries(envOf(s)).map(([k, v]) => [k, substitute(v)]))

/** The API instances: built from the repository and run with the image's own command. */
const apps = (f: Files): Array<[string, Obj]> => Object.entries(services(f)).filter(([, s]) => s.build === '.' && s.command === undefined)
const migrateService = (f: Files): [string, Obj] | undefined =>
  Object.entries(services(f)).find(([, s]) => s.build === '.' && /\bcli\.js migrate\b/.test(commandOf(s)))
const imageOf = (s: Obj): string => String(s.image ?? '')
const sentinels = (f: Files): Array<[string, Obj]> => Object.entries(services(f)).filter(([, s]) => /--sentinel\b/.test(commandOf(s)))
const backendServers = (cfg: string): string[] =>
  [...cfg.matchAll(/^\s*server\s+\S+\s+(\S+)\s+.*\bcheck\b/gm)].map((m) => m[1] as string)
const seconds = (v: unknown): number => {
  const m = /^(\d+)(ms|s|m)?$/.exec(String(v ?? ''))
  if (m === null) return NaN
  const n = Number(m[1])
  return m[2] === 'ms' ? n / 1000 : m[2] === 'm' ? n * 60 : n
}
const dependsOn = (s: Obj): Obj => (isObj(s.depends_on) ? s.depends_on : {})
const healthPath = (s: Obj): string | undefined => /https?:\/\/[^/'"\s]+(\/[^'"\s)]*)/.exec(JSON.stringify(isObj(s.healthcheck) ? s.healthcheck.test : ''))?.[1]

type Check = { name: string, run: (f: Files) => string | undefined }

const SECRET_NAME = /SECRET|PASSWORD|TOKEN|API_KEY/

const CHECKS: Check[] = [
  {
    name: 'three API instances, the same image and environment',
    run: (f) => {
      const list = apps(f)
      if (list.length !== 3) return `${list.length} instances`
      const envs = new Set(list.map(([, s]) => JSON.stringify(envOf(s))))
      return envs.size === 1 ? undefined : 'the instances have different environments'
    },
  },
  {
    name: "HAProxy's backend lists every instance on its port, and nothing else",
    run: (f) => {
      const expected = apps(f).map(([name, s]) => `${name}:${loadConfig(resolvedEnv(s)).PORT}`).sort()
      const listed = backendServers(f.haproxy).sort()
      return JSON.stringify(listed) === JSON.stringify(expected) ? undefined : `backend servers ${JSON.stringify(listed)}, instances ${JSON.stringify(expected)}`
    },
  },
  {
    name: 'HAProxy checks the readiness route; the instances\' health check is the readiness or liveness route',
    run: (f) => {
      const check = /^\s*option\s+httpchk\s+GET\s+(\S+)/m.exec(f.haproxy)?.[1]
      if (check !== '/api/health/ready') return `httpchk is ${String(check)}`
      if (!/^\s*http-check\s+expect\s+status\s+200\b/m.test(f.haproxy)) return 'no http-check expect status 200'
      const paths = apps(f).map(([, s]) => healthPath(s))
      return paths.every((p) => p === '/api/health/ready' || p === '/api/health/live') ? undefined : `instance health checks: ${JSON.stringify(paths)}`
    },
  },
  {
    name: 'the proxy is in front: the instances wait for it to be healthy, and only it is published',
    run: (f) => {
      const lb = Object.entries(services(f)).find(([, s]) => /^haproxy:/.test(imageOf(s)))
      if (lb === undefined) return 'no haproxy service'
      const volumes = JSON.stringify(lb[1].volumes ?? [])
      if (!volumes.includes('./deploy/haproxy/haproxy.cfg:/usr/local/etc/haproxy/haproxy.cfg')) return 'haproxy.cfg is not mounted'
      const published = Object.entries(services(f)).filter(([, s]) => Array.isArray(s.ports) && s.ports.length > 0).map(([n]) => n)
      if (JSON.stringify(published) !== JSON.stringify([lb[0]])) return `published: ${JSON.stringify(published)}`
      const waits = apps(f).filter(([name]) => (dependsOn(lb[1])[name] as Obj | undefined)?.condition === 'service_healthy')
      return waits.length === apps(f).length ? undefined : 'the proxy does not wait for every instance to be healthy'
    },
  },
  {
    name: 'every variable of the instances and of the migrate step is in the config schema, and the environment passes it',
    run: (f) => {
      const migrate = migrateService(f)
      for (const [name, s] of [...apps(f), ...(migrate !== undefined ? [migrate] : [])]) {
        const unknown = Object.keys(envOf(s)).filter((k) => !(configKeys as string[]).includes(k))
        if (unknown.length > 0) return `${name}: unknown ${unknown.join(', ')}`
        try {
          loadConfig(resolvedEnv(s))
        } catch (err) {
          return `${name}: ${(err as Error).message}`
        }
      }
      return undefined
    },
  },
  {
    name: 'the instances find Redis through the three sentinels by the name they monitor, with the data nodes\' password',
    run: (f) => {
      const env = envOf(apps(f)[0]?.[1])
      if (env.REDIS_URL !== undefined) return 'REDIS_URL is set (a fixed address does not follow a failover)'
      const monitor = /^sentinel\s+monitor\s+(\S+)\s+(\S+)\s+(\d+)\s+(\d+)\s*$/m.exec(f.sentinel)
      if (monitor === null) return 'sentinel.conf has no sentinel monitor line'
      const [, name, , , quorum] = monitor
      if (env.REDIS_SENTINEL_NAME !== name) return `REDIS_SENTINEL_NAME is ${String(env.REDIS_SENTINEL_NAME)}, the sentinels monitor ${String(name)}`
      const port = /^port\s+(\d+)/m.exec(f.sentinel)?.[1] ?? '26379'
      const expected = sentinels(f).map(([n]) => `${n}:${port}`).sort()
      const listed = String(env.REDIS_SENTINELS ?? '').split(',').map((x) => x.trim()).sort()
      if (expected.length !== 3 || JSON.stringify(listed) !== JSON.stringify(expected)) return `REDIS_SENTINELS ${JSON.stringify(listed)}, sentinel services ${JSON.stringify(expected)}`
      if (Number(quorum) <= expected.length / 2 || Number(quorum) > expected.length) return `quorum ${String(quorum)} of ${expected.length}`
      for (const [n, s] of sentinels(f)) {
        if (!JSON.stringify(s.volumes ?? []).includes('./deploy/redis/sentinel.conf:')) return `${n} does not mount sentinel.conf`
        if (!commandOf(s).includes(`sentinel auth-pass ${String(name)} $$REDIS_PASSWORD`)) return `${n} is not given the data nodes' password for ${String(name)}`
        if (substitute(envOf(s).REDIS_PASSWORD ?? '') !== substitute(env.REDIS_PASSWORD ?? '-')) return `${n}'s REDIS_PASSWORD is not the instances'`
      }
      return undefined
    },
  },
  {
    name: 'the monitored master is the Redis service, and the replica replicates it',
    run: (f) => {
      const monitor = /^sentinel\s+monitor\s+\S+\s+(\S+)\s+(\d+)/m.exec(f.sentinel)
      const [, host, port] = monitor ?? []
      const master = services(f)[host ?? '']
      if (master === undefined || !/^redis:/.test(imageOf(master)) || /--replicaof\b/.test(commandOf(master))) return `the monitored host ${String(host)} is not a Redis master service`
      const replicas = Object.entries(services(f)).filter(([, s]) => /--replicaof\s+(\S+)\s+(\d+)/.exec(commandOf(s))?.slice(1).join(':') === `${String(host)}:${String(port)}`)
      if (replicas.length !== 1) return `${replicas.length} replicas of ${String(host)}:${String(port)}`
      for (const [n, s] of [[host, master] as [string, Obj], ...replicas]) {
        const cmd = commandOf(s)
        if (!/--requirepass\s+"\$\$REDIS_PASSWORD"/.test(cmd) || !/--masterauth\s+"\$\$REDIS_PASSWORD"/.test(cmd)) return `${n}: no requirepass/masterauth from REDIS_PASSWORD (a promoted replica must accept the same password)`
        if (!new RegExp(`--replica-announce-ip\\s+${n}\\b`).test(cmd)) return `${n} does not announce its service name`
      }
      return undefined
    },
  },
  {
    name: 'the instances and the migrate step reach the PostgreSQL service with its user and database',
    run: (f) => {
      const pg = Object.entries(services(f)).find(([, s]) => /^postgres:/.test(imageOf(s)))
      if (pg === undefined) return 'no postgres service'
      const pgEnv = envOf(pg[1])
      const migrate = migrateService(f)
      for (const [name, s] of [...apps(f), ...(migrate !== undefined ? [migrate] : [])]) {
        const raw = envOf(s).DATABASE_URL ?? ''
        let url: URL
        try { url = new URL(substitute(raw)) } catch { return `${name}: DATABASE_URL is not a URL` }
        if (!/^postgres(ql)?:$/.test(url.protocol)) return `${name}: DATABASE_URL is ${url.protocol}`
        if (url.hostname !== pg[0]) return `${name}: DATABASE_URL host ${url.hostname}, the service is ${pg[0]}`
        if (url.username !== pgEnv.POSTGRES_USER || url.pathname !== `/${String(pgEnv.POSTGRES_DB)}`) return `${name}: user/database ${url.username}${url.pathname}, PostgreSQL has ${String(pgEnv.POSTGRES_USER)}/${String(pgEnv.POSTGRES_DB)}`
        if (decodeURIComponent(url.password) !== substitute(pgEnv.POSTGRES_PASSWORD ?? '')) return `${name}: DATABASE_URL's password is not POSTGRES_PASSWORD`
      }
      return /pg_isready/.test(JSON.stringify(isObj(pg[1].healthcheck) ? pg[1].healthcheck.test : '')) ? undefined : 'PostgreSQL has no pg_isready health check'
    },
  },
  {
    name: 'migrations run once, before the instances: a migrate service they wait for',
    run: (f) => {
      const migrate = migrateService(f)
      if (migrate === undefined) return 'no service runs node dist/src/cli.js migrate'
      if (JSON.stringify(migrate[1].command) !== JSON.stringify(['node', 'dist/src/cli.js', 'migrate'])) return `command is ${JSON.stringify(migrate[1].command)}`
      const late = apps(f).filter(([, s]) => (dependsOn(s)[migrate[0]] as Obj | undefined)?.condition !== 'service_completed_successfully')
      if (late.length > 0) return `${late.map(([n]) => n).join(', ')} do not wait for ${migrate[0]} to complete`
      const pgName = Object.entries(services(f)).find(([, s]) => /^postgres:/.test(imageOf(s)))?.[0] ?? ''
      return (dependsOn(migrate[1])[pgName] as Obj | undefined)?.condition === 'service_healthy' ? undefined : `${migrate[0]} does not wait for PostgreSQL to be healthy`
    },
  },
  {
    name: 'the drain fits: HAProxy takes an instance out within SHUTDOWN_DELAY_MS, and Docker waits past SHUTDOWN_TIMEOUT_MS',
    run: (f) => {
      const inter = seconds(/default-server[^\n]*\binter\s+(\S+)/.exec(f.haproxy)?.[1])
      const fall = Number(/default-server[^\n]*\bfall\s+(\d+)/.exec(f.haproxy)?.[1])
      if (!Number.isFinite(inter) || !Number.isFinite(fall)) return 'default-server has no inter/fall'
      for (const [name, s] of apps(f)) {
        const config = loadConfig(resolvedEnv(s))
        if (config.SHUTDOWN_DELAY_MS < inter * fall * 1000) return `${name}: SHUTDOWN_DELAY_MS ${config.SHUTDOWN_DELAY_MS} < inter × fall ${inter * fall * 1000} ms`
        const grace = seconds(s.stop_grace_period ?? '10s')
        if (!(grace * 1000 > config.SHUTDOWN_TIMEOUT_MS)) return `${name}: stop_grace_period ${grace} s is not above SHUTDOWN_TIMEOUT_MS ${config.SHUTDOWN_TIMEOUT_MS} ms`
      }
      return undefined
    },
  },
  {
    name: "TRUST_PROXY is the proxy's network",
    run: (f) => {
      const networks = isObj(f.compose.networks) ? f.compose.networks : {}
      const subnets = Object.values(networks).flatMap((n) => (isObj(n) && isObj(n.ipam) && Array.isArray(n.ipam.config) ? n.ipam.config : [])).map((c) => (isObj(c) ? String(c.subnet) : ''))
      const trust = envOf(apps(f)[0]?.[1]).TRUST_PROXY
      return trust !== undefined && subnets.includes(trust) ? undefined : `TRUST_PROXY ${String(trust)}, subnets ${JSON.stringify(subnets)}`
    },
  },
  {
    name: 'no secret is written in the files: secret variables come from the operator\'s environment',
    run: (f) => {
      for (const [name, s] of Object.entries(services(f))) {
        for (const [k, v] of Object.entries(envOf(s))) {
          if (SECRET_NAME.test(k) && !/^\$\{[A-Z_]+:\?[^}]*\}$/.test(v)) return `${name}: ${k} is not a required \${VAR:?…} reference`
          if (k === 'DATABASE_URL' && !/:\$\{[A-Z_]+:\?[^}]*\}@/.test(v)) return `${name}: DATABASE_URL's password is not a reference`
        }
      }
      const settings = f.sentinel.split('\n').filter((l) => !/^\s*#/.test(l)).join('\n')
      return /requirepass|auth-pass/.test(settings) ? 'sentinel.conf holds a password' : undefined
    },
  },
]

function problems (f: Files): string[] {
  return CHECKS.map((c) => {
    let problem: string | undefined
    try { problem = c.run(f) } catch (err) { problem = `threw: ${(err as Error).message}` }
    return problem === undefined ? undefined : `${c.name}: ${problem}`
  }).filter((p): p is string => p !== undefined)
}

t.test('docker-compose.scale.yml and its config files pass every check', async (t) => {
  const f = load()
  for (const check of CHECKS) t.equal(check.run(f), undefined, check.name)
})

t.test('the routes the health checks use answer 200 on a freshly built app', async (t) => {
  const f = load()
  const paths = new Set([/^\s*option\s+httpchk\s+GET\s+(\S+)/m.exec(f.haproxy)?.[1], ...apps(f).map(([, s]) => healthPath(s))])
  const { app } = await build(t, { LOG_LEVEL: 'warn' })
  for (const path of paths) t.equal((await app.inject(String(path))).statusCode, 200, String(path))
})

t.test('the checks catch broken variants of the real files', async (t) => {
  const variants: Array<[string, (f: Files) => void]> = [
    ['an instance missing from the backend', (f) => { f.haproxy = f.haproxy.replace(/^\s*server app-3 .*\n/m, '') }],
    ['a backend on the wrong port', (f) => { f.haproxy = f.haproxy.replace('app-2:3000', 'app-2:8080') }],
    ['a fourth instance not behind the proxy', (f) => { (f.compose.services as Obj)['app-4'] = structuredClone((f.compose.services as Obj)['app-1']) }],
    ['checks on the liveness route', (f) => { f.haproxy = f.haproxy.replace('GET /api/health/ready', 'GET /api/health/live') }],
    ['a typo in a variable', (f) => { for (const [, s] of apps(f)) (s.environment as Obj).SHUTDOWN_DELAY = '5000' }],
    ['REDIS_URL and sentinels together', (f) => { for (const [, s] of apps(f)) (s.environment as Obj).REDIS_URL = 'redis://redis-master:6379' }],
    ['another master name', (f) => { f.sentinel = f.sentinel.replace('monitor mymaster', 'monitor othermaster') }],
    ['a sentinel left out', (f) => { for (const [, s] of apps(f)) (s.environment as Obj).REDIS_SENTINELS = 'sentinel-1:26379,sentinel-2:26379' }],
    ['the replica of another node', (f) => { const s = services(f)['redis-replica'] as Obj; s.command = commandOf(s).replace('--replicaof redis-master', '--replicaof redis-other') }],
    ['PostgreSQL under another name', (f) => { for (const [, s] of apps(f)) (s.environment as Obj).DATABASE_URL = 'postgres://aic:${POSTGRES_PASSWORD:?x}@db:5432/aic' }],
    ['no migrate step', (f) => { delete (f.compose.services as Obj).migrate }],
    ['an instance that does not wait for the migration', (f) => { delete dependsOn(services(f)['app-2'] as Obj).migrate }],
    ['a drain shorter than the checks', (f) => { for (const [, s] of apps(f)) (s.environment as Obj).SHUTDOWN_DELAY_MS = '1000' }],
    ['a stop grace period below the shutdown timeout', (f) => { for (const [, s] of apps(f)) s.stop_grace_period = '10s' }],
    ['a written secret', (f) => { for (const [, s] of apps(f)) (s.environment as Obj).JWT_SECRET = 'written-down-secret-0123456789abcdefghijkl' }],
    ['an instance published on the host', (f) => { (services(f)['app-1'] as Obj).ports = ['3001:3000'] }],
  ]
  for (const [name, mutate] of variants) {
    const f = load()
    mutate(f)
    const found = problems(f)
    t.ok(found.length > 0, `${name}: caught (${found[0] ?? 'not caught'})`)
  }
})
