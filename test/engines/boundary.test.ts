/**
 * The engines' boundary (docs/adr/0004-engines-and-app.md), as the linter enforces it: an
 * engine file may not import Fastify, @fastify/* or anything outside src/engines, at any
 * depth; imports between engines and of packages are fine; and the engines as they are
 * pass the check.
 */
import { fileURLToPath } from 'node:url'
import t from 'tap'
import { ESLint } from 'eslint'

const root = fileURLToPath(new URL('../..', import.meta.url))
const eslint = new ESLint({ cwd: root })

async function restricted (filePath: string, code: string): Promise<string[]> {
  const [result] = await eslint.lintText(code, { filePath })
  return (result?.messages ?? []).filter((m) => m.ruleId === 'no-restricted-imports').map((m) => m.message)
}

t.test('Fastify and app code are refused in engine files, at every depth', async (t) => {
  const framework = "import fp from 'fastify-plugin'\nimport type { FastifyError } from 'fastify'\nimport createError from '@fastify/error'\nexport { fp, createError }\nexport type { FastifyError }\n"
  t.equal((await restricted('src/engines/locks/x.ts', framework)).length, 3, 'fastify, fastify-plugin, @fastify/*')
  t.equal((await restricted('src/engines/x.ts', "import { loadConfig } from '../config.js'\nexport { loadConfig }\n")).length, 1, 'depth 1: ../ leaves the engines')
  t.equal((await restricted('src/engines/locks/x.ts', "import { ConflictError } from '../../errors.js'\nexport { ConflictError }\n")).length, 1, 'depth 2')
  t.equal((await restricted('src/engines/cache/parts/x.ts', "import { escapeGlob } from '../../../debug/redis-info.js'\nexport { escapeGlob }\n")).length, 1, 'depth 3')
})

t.test('imports between engines and of packages are allowed', async (t) => {
  t.same(await restricted('src/engines/locks/x.ts', "import { prefixPattern } from '../redis/scan.js'\nimport { Redis } from 'ioredis'\nexport { prefixPattern, Redis }\n"), [])
  t.same(await restricted('src/engines/cache/parts/x.ts', "import { LockBusyError } from '../../locks/errors.js'\nexport { LockBusyError }\n"), [])
  t.same(await restricted('src/engines/x.ts', "import { redactUrl } from './redis/redact.js'\nexport { redactUrl }\n"), [])
})

t.test('the app may import Fastify (the rule covers the engines only)', async (t) => {
  t.same(await restricted('plugins/x.ts', "import fp from 'fastify-plugin'\nexport { fp }\n"), [])
})

t.test('the engines as they are pass the check', async (t) => {
  const results = await eslint.lintFiles(['src/engines/**/*.ts'])
  const problems = results.flatMap((r) => r.messages.filter((m) => m.ruleId === 'no-restricted-imports').map((m) => `${r.filePath}: ${m.message}`))
  t.same(problems, [])
  t.ok(results.length >= 15, `${results.length} engine files linted`)
})
