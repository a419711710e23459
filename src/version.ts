import { readFileSync } from 'node:fs'

/** The package version, read once; works from src/ (tsx) and from dist/src/ (built). */
export const VERSION: string = (() => {
  for (const rel of ['../package.json', '../../package.json']) {
    try {
      const pkg = JSON.parse(readFileSync(new URL(rel, import.meta.url), 'utf8')) as { name?: string, version?: string }
      if (pkg.name === 'ai-capital-api' && typeof pkg.version === 'string') return pkg.version
    } catch {}
  }
  return '0.0.0'
})()
