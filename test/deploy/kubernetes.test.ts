/**
 * The Kubernetes manifests in deploy/kubernetes, read from the repository (no cluster runs
 * here): the Deployment's probes are the liveness and readiness routes (which answer on a
 * freshly built app), its preStop covers the service's drain delay and fits with the
 * shutdown timeout inside the grace period, it has resource requests and limits, its secrets
 * come from a Secret (and no manifest holds one), and every variable it or the migration Job
 * sets is in the config schema and passes it; the Service, PodDisruptionBudget and
 * HorizontalPodAutoscaler select or target the Deployment's pods and not the Job's; the Job
 * runs `node dist/src/cli.js migrate` on the same image. Each check is a function returning a
 * problem (or undefined), and broken copies show that each can fail.
 */
import t from 'tap'
import { readFileSync, readdirSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { parseAllDocuments } from 'yaml'
import { configKeys, loadConfig } from '../../src/config.js'
import { build } from '../helper.js'

const root = resolve(import.meta.dirname, '../..')
const DIR = 'deploy/kubernetes'

type Obj = Record<string, any> // eslint-disable-line @typescript-eslint/no-explicit-any -- manifests are read as plain data

function load (): Obj[] {
  const docs: Obj[] = []
  for (const file of readdirSync(join(root, DIR)).filter((f) => f.endsWith('.yaml')).sort()) {
    for (const doc of parseAllDocuments(readFileSync(join(root, DIR, file), 'utf8'))) {
      if (doc.errors.length > 0) throw new Error(`${file}: ${doc.errors[0]?.message}`)
      const value = doc.toJS() as Obj | null
      if (value !== null) docs.push({ ...value, __file: file })
    }
  }
  return docs
}

const ofKind = (docs: Obj[], kind: string): Obj[] => docs.filter((d) => d.kind === kind)
const one = (docs: Obj[], kind: string): Obj | undefined => ofKind(docs, kind)[0]
const deployment = (docs: Obj[]): Obj | undefined => one(docs, 'Deployment')
const apiContainer = (docs: Obj[]): Obj | undefined => deployment(docs)?.spec?.template?.spec?.containers?.[0]
const job = (docs: Obj[]): Obj | undefined => one(docs, 'Job')
const podLabels = (workload: Obj | undefined): Obj => workload?.spec?.template?.metadata?.labels ?? {}
const selects = (selector: Obj | undefined, labels: Obj): boolean =>
  selector !== undefined && Object.keys(selector).length > 0 && Object.entries(selector).every(([k, v]) => labels[k] === v)

const SECRET_NAME = /SECRET|PASSWORD|TOKEN|API_KEY|DATABASE_URL/
const SECRET_STAND_IN: Record<string, string> = {
  JWT_SECRET: 'k8s-test-secret-0123456789abcdefghijklmnopqr',
  DATABASE_URL: 'postgres://aic:pw@postgres:5432/aic',
  REDIS_PASSWORD: 'redis-password',
  REDIS_SENTINEL_PASSWORD: 'sentinel-password',
  METRICS_TOKEN: 'metrics-token-0123456789',
}

/** The environment a container gets: its ConfigMaps (envFrom), its literal values, and stand-ins for secrets. */
function environment (docs: Obj[], container: Obj | undefined): { env: Record<string, string>, problems: string[] } {
  const env: Record<string, string> = {}
  const problems: string[] = []
  for (const from of container?.envFrom ?? []) {
    if (from.secretRef !== undefined) { problems.push(`envFrom secretRef ${String(from.secretRef.name)}: the names are not in the manifests to check`); continue }
    const map = ofKind(docs, 'ConfigMap').find((m) => m.metadata?.name === from.configMapRef?.name)
    if (map === undefined) { problems.push(`ConfigMap ${String(from.configMapRef?.name)} is not in the manifests`); continue }
    Object.assign(env, map.data ?? {})
  }
  for (const e of container?.env ?? []) {
    if (e.value !== undefined) env[e.name] = String(e.value)
    else if (e.valueFrom?.secretKeyRef !== undefined) env[e.name] = SECRET_STAND_IN[e.name] ?? 'stand-in'
    else problems.push(`${String(e.name)} has neither a value nor a secretKeyRef`)
  }
  return { env, problems }
}

const seconds = (ms: number): number => ms / 1000

type Check = { name: string, run: (docs: Obj[]) => string | undefined }

const CHECKS: Check[] = [
  {
    name: 'one Deployment, Service, PodDisruptionBudget, HorizontalPodAutoscaler and migration Job',
    run: (docs) => {
      const missing = ['Deployment', 'Service', 'PodDisruptionBudget', 'HorizontalPodAutoscaler', 'Job', 'ConfigMap'].filter((k) => ofKind(docs, k).length !== 1)
      return missing.length === 0 ? undefined : `not exactly one of: ${missing.join(', ')}`
    },
  },
  {
    name: 'liveness on /api/health/live and readiness on /api/health/ready, on a port the container names',
    run: (docs) => {
      const c = apiContainer(docs)
      const ports = new Set<unknown>((c?.ports ?? []).flatMap((p: Obj) => [p.name, p.containerPort]))
      for (const [probe, path] of [['livenessProbe', '/api/health/live'], ['readinessProbe', '/api/health/ready'], ['startupProbe', '/api/health/live']] as const) {
        const get = c?.[probe]?.httpGet
        if (get === undefined && probe === 'startupProbe') continue
        if (get?.path !== path) return `${probe} is ${JSON.stringify(get?.path)}`
        if (!ports.has(get.port)) return `${probe} port ${String(get.port)} is not a container port`
      }
      return undefined
    },
  },
  {
    name: 'preStop covers the drain delay, and preStop + SHUTDOWN_TIMEOUT_MS fit in terminationGracePeriodSeconds',
    run: (docs) => {
      const c = apiContainer(docs)
      const command = c?.lifecycle?.preStop?.exec?.command as string[] | undefined
      const native = c?.lifecycle?.preStop?.sleep?.seconds as number | undefined
      const preStop = native ?? (command?.length === 2 && command[0] === 'sleep' ? Number(command[1]) : NaN)
      if (!Number.isFinite(preStop)) return `preStop is ${JSON.stringify(c?.lifecycle?.preStop)}`
      const config = loadConfig(environment(docs, c).env)
      const grace = deployment(docs)?.spec?.template?.spec?.terminationGracePeriodSeconds ?? 30
      if (preStop < seconds(config.SHUTDOWN_DELAY_MS)) return `preStop ${preStop} s < SHUTDOWN_DELAY_MS ${config.SHUTDOWN_DELAY_MS} ms`
      if (!(preStop < grace)) return `preStop ${preStop} s is not below the grace period ${grace} s`
      return preStop + seconds(config.SHUTDOWN_TIMEOUT_MS) < grace ? undefined : `preStop ${preStop} s + SHUTDOWN_TIMEOUT_MS ${config.SHUTDOWN_TIMEOUT_MS} ms ≥ grace period ${grace} s`
    },
  },
  {
    name: 'resource requests (cpu, memory) and a memory limit on every container; load shedding below the limit',
    run: (docs) => {
      for (const c of [apiContainer(docs), ...(job(docs)?.spec?.template?.spec?.containers ?? [])] as Array<Obj | undefined>) {
        const r = c?.resources
        if (r?.requests?.cpu === undefined || r?.requests?.memory === undefined || r?.limits?.memory === undefined) return `${String(c?.name)}: resources ${JSON.stringify(r)}`
      }
      const limit = /^(\d+)Mi$/.exec(String(apiContainer(docs)?.resources?.limits?.memory))
      if (limit === null) return 'the memory limit is not in Mi'
      const config = loadConfig(environment(docs, apiContainer(docs)).env)
      const bytes = Number(limit[1]) * 1_048_576
      const bound = Math.max(config.MAX_RSS_BYTES, config.MAX_HEAP_USED_BYTES)
      return bound > 0 && bound < bytes ? undefined : `load shedding bound ${bound} is not set below the memory limit ${bytes}`
    },
  },
  {
    name: 'secrets come from a Secret through secretKeyRef; no manifest holds one',
    run: (docs) => {
      if (ofKind(docs, 'Secret').length > 0) return 'a Secret manifest is committed'
      for (const c of [apiContainer(docs), ...(job(docs)?.spec?.template?.spec?.containers ?? [])] as Array<Obj | undefined>) {
        for (const e of c?.env ?? []) {
          if (SECRET_NAME.test(String(e.name)) && e.valueFrom?.secretKeyRef?.key === undefined) return `${String(c?.name)}: ${String(e.name)} is not from a Secret`
        }
      }
      for (const map of ofKind(docs, 'ConfigMap')) {
        const secret = Object.keys(map.data ?? {}).filter((k) => SECRET_NAME.test(k))
        if (secret.length > 0) return `ConfigMap ${String(map.metadata?.name)} holds ${secret.join(', ')}`
      }
      return environment(docs, apiContainer(docs)).env.JWT_SECRET === undefined ? 'the API has no JWT_SECRET' : undefined
    },
  },
  {
    name: 'every variable the Deployment and the Job set is in the config schema, and the environment passes it',
    run: (docs) => {
      for (const c of [apiContainer(docs), ...(job(docs)?.spec?.template?.spec?.containers ?? [])] as Array<Obj | undefined>) {
        const { env, problems } = environment(docs, c)
        if (problems.length > 0) return `${String(c?.name)}: ${problems[0]}`
        const unknown = Object.keys(env).filter((k) => !(configKeys as string[]).includes(k))
        if (unknown.length > 0) return `${String(c?.name)}: unknown ${unknown.join(', ')}`
        try { loadConfig(env) } catch (err) { return `${String(c?.name)}: ${(err as Error).message}` }
      }
      const api = environment(docs, apiContainer(docs)).env
      if (api.REDIS_SENTINELS === undefined && api.REDIS_URL === undefined && api.REDIS_CLUSTER_NODES === undefined) return 'the API has no Redis'
      return /^postgres/.test(api.DATABASE_URL ?? '') ? undefined : 'the API has no PostgreSQL DATABASE_URL'
    },
  },
  {
    name: "the Deployment's selector matches its pods; the Service and the PDB select them and not the Job's",
    run: (docs) => {
      const labels = podLabels(deployment(docs))
      if (!selects(deployment(docs)?.spec?.selector?.matchLabels, labels)) return 'the Deployment selector does not match its template'
      const jobLabels = podLabels(job(docs))
      const service = one(docs, 'Service')
      const pdb = one(docs, 'PodDisruptionBudget')
      for (const [what, selector] of [['Service', service?.spec?.selector], ['PodDisruptionBudget', pdb?.spec?.selector?.matchLabels]] as const) {
        if (!selects(selector, labels)) return `the ${what} does not select the API pods`
        if (selects(selector, jobLabels)) return `the ${what} selects the migration Job's pod`
      }
      const names = new Set((apiContainer(docs)?.ports ?? []).flatMap((p: Obj) => [p.name, p.containerPort]))
      if (!(service?.spec?.ports ?? []).every((p: Obj) => names.has(p.targetPort))) return 'a Service targetPort is not a container port'
      const budget = pdb?.spec?.maxUnavailable ?? undefined
      const min = one(docs, 'HorizontalPodAutoscaler')?.spec?.minReplicas ?? deployment(docs)?.spec?.replicas
      if (budget === undefined && pdb?.spec?.minAvailable === undefined) return 'the PDB sets neither maxUnavailable nor minAvailable'
      if (pdb?.spec?.minAvailable !== undefined && !(Number(pdb.spec.minAvailable) < Number(min))) return `minAvailable ${String(pdb.spec.minAvailable)} blocks every drain with ${String(min)} replicas`
      return undefined
    },
  },
  {
    name: 'the HPA scales the Deployment, from at least two replicas',
    run: (docs) => {
      const hpa = one(docs, 'HorizontalPodAutoscaler')
      const ref = hpa?.spec?.scaleTargetRef
      if (ref?.kind !== 'Deployment' || ref?.name !== deployment(docs)?.metadata?.name || ref?.apiVersion !== 'apps/v1') return `scaleTargetRef is ${JSON.stringify(ref)}`
      if (!(hpa?.spec?.minReplicas >= 2) || !(hpa?.spec?.maxReplicas >= hpa?.spec?.minReplicas)) return `replicas ${String(hpa?.spec?.minReplicas)}..${String(hpa?.spec?.maxReplicas)}`
      const cpu = (hpa?.spec?.metrics ?? []).find((m: Obj) => m.resource?.name === 'cpu')
      if (cpu !== undefined && apiContainer(docs)?.resources?.requests?.cpu === undefined) return 'CPU utilization needs a CPU request'
      return (hpa?.spec?.metrics ?? []).length > 0 ? undefined : 'no metric'
    },
  },
  {
    name: 'the migration Job runs node dist/src/cli.js migrate on the Deployment\'s image with its DATABASE_URL, once',
    run: (docs) => {
      const j = job(docs)
      const c = j?.spec?.template?.spec?.containers?.[0]
      const command = [...(c?.command ?? []), ...(c?.args ?? [])]
      if (JSON.stringify(command) !== JSON.stringify(['node', 'dist/src/cli.js', 'migrate'])) return `command is ${JSON.stringify(command)}`
      if (c?.image !== apiContainer(docs)?.image) return `image ${String(c?.image)}, the Deployment runs ${String(apiContainer(docs)?.image)}`
      const ref = (list: Obj[] | undefined): string => JSON.stringify(list?.find((e) => e.name === 'DATABASE_URL')?.valueFrom?.secretKeyRef)
      if (ref(c?.env) !== ref(apiContainer(docs)?.env)) return 'the Job\'s DATABASE_URL is not the Deployment\'s'
      if (!['Never', 'OnFailure'].includes(j?.spec?.template?.spec?.restartPolicy)) return `restartPolicy ${String(j?.spec?.template?.spec?.restartPolicy)}`
      return j?.spec?.activeDeadlineSeconds > 0 ? undefined : 'no activeDeadlineSeconds: a Job stuck on an unreachable database would never end'
    },
  },
  {
    name: 'an image with a tag (not latest), and containers that run as non-root on a read-only root file system',
    run: (docs) => {
      for (const w of [deployment(docs), job(docs)]) {
        const spec = w?.spec?.template?.spec
        for (const c of spec?.containers ?? []) {
          if (!/:[\w.-]+$/.test(String(c.image)) || /:latest$/.test(String(c.image))) return `${String(c.name)}: image ${String(c.image)}`
          if (spec?.securityContext?.runAsNonRoot !== true) return `${String(c.name)}: runAsNonRoot is not true`
          if (c.securityContext?.readOnlyRootFilesystem !== true || c.securityContext?.allowPrivilegeEscalation !== false) return `${String(c.name)}: securityContext ${JSON.stringify(c.securityContext)}`
        }
      }
      return undefined
    },
  },
]

function problems (docs: Obj[]): string[] {
  return CHECKS.map((c) => {
    let problem: string | undefined
    try { problem = c.run(docs) } catch (err) { problem = `threw: ${(err as Error).message}` }
    return problem === undefined ? undefined : `${c.name}: ${problem}`
  }).filter((p): p is string => p !== undefined)
}

t.test('the manifests pass every check', async (t) => {
  const docs = load()
  for (const check of CHECKS) t.equal(check.run(docs), undefined, check.name)
})

t.test('the kustomization lists every manifest but the Job, which runs first', async (t) => {
  const kustomization = load().find((d) => d.kind === 'Kustomization')
  const files = readdirSync(join(root, DIR)).filter((f) => f.endsWith('.yaml') && f !== 'kustomization.yaml' && f !== 'migrate-job.yaml').sort()
  t.same([...(kustomization?.resources ?? [])].sort(), files)
})

t.test('the probe paths answer 200 on a freshly built app', async (t) => {
  const c = apiContainer(load())
  const { app } = await build(t, { LOG_LEVEL: 'warn' })
  for (const probe of ['livenessProbe', 'readinessProbe', 'startupProbe']) {
    const path = String(c?.[probe]?.httpGet?.path)
    t.equal((await app.inject(path)).statusCode, 200, `${probe} ${path}`)
  }
})

t.test('the checks catch broken variants of the real manifests', async (t) => {
  const variants: Array<[string, (docs: Obj[]) => void]> = [
    ['liveness on the readiness route', (d) => { apiContainer(d)!.livenessProbe.httpGet.path = '/api/health/ready' }],
    ['readiness on /api/health', (d) => { apiContainer(d)!.readinessProbe.httpGet.path = '/api/health' }],
    ['a probe on an unnamed port', (d) => { apiContainer(d)!.readinessProbe.httpGet.port = 'web' }],
    ['no preStop', (d) => { delete apiContainer(d)!.lifecycle }],
    ['a preStop shorter than the drain delay', (d) => { apiContainer(d)!.lifecycle.preStop.exec.command = ['sleep', '1'] }],
    ['a grace period the drain does not fit', (d) => { deployment(d)!.spec.template.spec.terminationGracePeriodSeconds = 15 }],
    ['no resource requests', (d) => { delete apiContainer(d)!.resources.requests }],
    ['a secret in the ConfigMap', (d) => { one(d, 'ConfigMap')!.data.JWT_SECRET = 'committed-secret-0123456789abcdefghijklmnop' }],
    ['a literal secret', (d) => { apiContainer(d)!.env[0] = { name: 'JWT_SECRET', value: 'committed-secret-0123456789abcdefghijklmnop' } }],
    ['a committed Secret', (d) => { d.push({ kind: 'Secret', metadata: { name: 'ai-capital-api' }, stringData: { JWT_SECRET: 'x' } }) }],
    ['a typo in a variable', (d) => { one(d, 'ConfigMap')!.data.REDIS_SENTINEL = 'mymaster' }],
    ['an invalid value', (d) => { one(d, 'ConfigMap')!.data.SHUTDOWN_DELAY_MS = 'five seconds' }],
    ['a Service that selects nothing', (d) => { one(d, 'Service')!.spec.selector['app.kubernetes.io/component'] = 'web' }],
    ['a PDB that also selects the Job', (d) => { one(d, 'PodDisruptionBudget')!.spec.selector.matchLabels = { 'app.kubernetes.io/name': 'ai-capital-api' } }],
    ['a PDB that blocks every drain', (d) => { const s = one(d, 'PodDisruptionBudget')!.spec; delete s.maxUnavailable; s.minAvailable = 3 }],
    ['an HPA on another Deployment', (d) => { one(d, 'HorizontalPodAutoscaler')!.spec.scaleTargetRef.name = 'other' }],
    ['a Job on another image', (d) => { job(d)!.spec.template.spec.containers[0].image = 'ai-capital-api:0.0.9' }],
    ['a Job that starts the server', (d) => { job(d)!.spec.template.spec.containers[0].command = ['node', 'dist/src/server.js'] }],
    ['the latest tag', (d) => { apiContainer(d)!.image = 'ai-capital-api:latest' }],
  ]
  for (const [name, mutate] of variants) {
    const docs = load()
    mutate(docs)
    const found = problems(docs)
    t.ok(found.length > 0, `${name}: caught (${found[0] ?? 'not caught'})`)
  }
})
