/**
 * CORS_ORIGINS: the exact origins whose browser scripts may call the API with credentials
 * (plugins/cors.ts). Checked at boot by the config schema; no wildcard, no path.
 */

/** The entries of CORS_ORIGINS, trimmed, without a trailing slash. */
export function corsOrigins (value: string | undefined): string[] {
  if (value === undefined) return []
  return value.split(',').map((s) => s.trim().replace(/\/$/, '')).filter((s) => s !== '')
}

/** What is wrong with a CORS_ORIGINS value, or null when every entry is an exact origin. */
export function corsOriginsProblem (value: string): string | null {
  const list = corsOrigins(value)
  if (list.length === 0) return 'is empty; leave it unset to allow no cross-origin caller'
  for (const entry of list) {
    if (entry === '*' || entry.includes('*')) {
      return `"${entry}": wildcards are not allowed (credentials are sent, so every origin must be named, e.g. https://app.example.com)`
    }
    let origin: string
    try {
      origin = new URL(entry).origin
    } catch {
      return `"${entry}" is not an origin (scheme://host[:port], e.g. https://app.example.com)`
    }
    if (!/^https?:\/\//.test(entry)) return `"${entry}" must start with http:// or https://`
    if (origin.toLowerCase() !== entry.toLowerCase()) {
      return `"${entry}" is not an origin: no path, query or user (use ${origin})`
    }
  }
  return null
}
