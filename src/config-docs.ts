/**
 * Renders `.env.example` and `docs/configuration.md` from the config schema's descriptions,
 * so the variables are written down once (`npm run docs:config` writes both files; a test
 * fails when either is stale).
 */
import { CONFIG_SECTIONS, ConfigSchema } from './config.js'

interface VarSchema {
  description?: string
  default?: unknown
  examples?: unknown[]
  type?: string
  enum?: unknown[]
  anyOf?: Array<{ const?: unknown }>
  minimum?: number
  maximum?: number
}

const ENV_HEADER = `# ai-capital-api configuration. Every variable is optional: with none set, \`npm start\`
# serves on 0.0.0.0:3000 with no Redis (in-process fallbacks), SQLite under ./data,
# simulated quotes and a generated JWT secret (refused when NODE_ENV=production).
# Copy to .env (read at boot when present; real environment variables win). A value that
# does not validate stops the boot with a message naming the variable.
# Generated from src/config.ts by \`npm run docs:config\`: edit the descriptions there.`

const varSchema = (key: string): VarSchema => (ConfigSchema.properties as Record<string, VarSchema>)[key] ?? {}

/** Wraps text into `# `-prefixed lines of at most `width` characters. */
function commentLines (text: string, width = 92): string[] {
  const lines: string[] = []
  let line = '#'
  for (const word of text.split(/\s+/)) {
    if (line.length + 1 + word.length > width && line !== '#') {
      lines.push(line)
      line = '#'
    }
    line += ` ${word}`
  }
  lines.push(line)
  return lines
}

/** The value `.env.example` shows: the default, else the example, else nothing. */
function exampleValue (schema: VarSchema): string {
  if (schema.default !== undefined) return String(schema.default)
  return schema.examples?.[0] === undefined ? '' : String(schema.examples[0])
}

export function renderEnvExample (): string {
  const out = [ENV_HEADER]
  for (const { title, keys } of CONFIG_SECTIONS) {
    out.push('', `# --- ${title} ${'-'.repeat(Math.max(3, 86 - title.length))}`)
    for (const key of keys) {
      const schema = varSchema(key)
      out.push(...commentLines(schema.description ?? ''), `# ${key}=${exampleValue(schema)}`)
    }
  }
  return out.join('\n') + '\n'
}

/** "integer 1–1000000", "one of a, b", "boolean", "text". */
function allowed (schema: VarSchema): string {
  const options = schema.enum ?? schema.anyOf?.map((s) => s.const).filter((v) => v !== undefined)
  if (options !== undefined && options.length > 0) return `one of ${options.join(', ')}`
  if (schema.type === 'boolean') return 'true or false'
  if (schema.type === 'integer') {
    const max = schema.maximum === Number.MAX_SAFE_INTEGER ? undefined : schema.maximum
    return max === undefined ? `integer ≥ ${schema.minimum ?? 0}` : `integer ${schema.minimum ?? 0}–${max}`
  }
  return 'text'
}

const cell = (text: string): string => text.replace(/\|/g, '\\|')

export function renderConfigurationMd (): string {
  const out = [
    '# Configuration',
    '',
    'Every setting is an environment variable, validated at boot against one schema',
    '(`src/config.ts`); a value that does not validate stops the boot with a message naming the',
    'variable. A `.env` file in the working directory is read when present; real environment',
    'variables win. With nothing set, the service runs on port 3000 with no Redis, SQLite under',
    '`./data`, simulated quotes and a generated JWT secret (refused when `NODE_ENV=production`).',
    '',
    'This page and `.env.example` are generated from the schema by `npm run docs:config`; a test',
    'fails when either is stale. Edit the descriptions in `src/config.ts`.',
  ]
  for (const { title, keys } of CONFIG_SECTIONS) {
    out.push('', `## ${title[0]?.toUpperCase()}${title.slice(1)}`, '', '| variable | default | allowed | what it does |', '|---|---|---|---|')
    for (const key of keys) {
      const schema = varSchema(key)
      const def = schema.default === undefined ? '—' : `\`${String(schema.default) === '' ? '(empty)' : String(schema.default)}\``
      out.push(`| \`${key}\` | ${def} | ${allowed(schema)} | ${cell(schema.description ?? '')} |`)
    }
  }
  return out.join('\n') + '\n'
}
