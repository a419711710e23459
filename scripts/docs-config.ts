/**
 * `npm run docs:config`: writes `.env.example` and `docs/configuration.md` from the config
 * schema. `--check` writes nothing and exits 1 when either file is stale.
 */
import { readFileSync, writeFileSync } from 'node:fs'
import { renderConfigurationMd, renderEnvExample } from '../src/config-docs.js'

const files: Array<[string, string]> = [
  ['.env.example', renderEnvExample()],
  ['docs/configuration.md', renderConfigurationMd()],
]
const check = process.argv.includes('--check')
let stale = 0
for (const [path, text] of files) {
  let current = ''
  try { current = readFileSync(path, 'utf8') } catch {}
  if (current === text) continue
  stale++
  if (check) process.stderr.write(`${path} is stale: run npm run docs:config\n`)
  else writeFileSync(path, text)
}
if (check && stale > 0) process.exit(1)
