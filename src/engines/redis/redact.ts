/**
 * Keeps Redis passwords out of logs, errors, health and debug output: the state machine
 * scrubs its error messages with `urlSecrets`, and every URL shown anywhere goes through
 * `redactUrl`. Shared with the app (config, the locks plugin), which imports it from here.
 */

/**
 * `redis://user:secret@host` → `redis://user:***@host`, and `?password=…` → `?password=***`
 * (ioredis reads both); works on comma-separated lists. Errs on the side of hiding: the
 * password runs from the first ':' after `//` to the LAST '@' of the URL, so a raw '@', ',',
 * '#' or '?' inside it (each of which would cut a parsed URL short) never leaves a piece in
 * the logs. A list splits only where a new URL begins.
 */
export function redactUrl (value: string): string {
  return value.split(/,(?=\s*[A-Za-z][A-Za-z0-9+.-]*:\/\/)/).map(redactOneUrl).join(',')
}

function redactOneUrl (url: string): string {
  const span = passwordSpan(url)
  const hidden = span === null ? url : `${url.slice(0, span[0])}***${url.slice(span[1])}`
  return hidden.replace(/([?&]password=)[^&#]*/gi, '$1***')
}

/** Where a URL's password is, read as generously as `redactUrl` reads it: [start, end), or null. */
function passwordSpan (url: string): [number, number] | null {
  const scheme = url.indexOf('//')
  const from = scheme === -1 ? 0 : scheme + 2
  const at = url.lastIndexOf('@')
  const colon = url.indexOf(':', from)
  // No ':' before the '@': a user name alone, not a secret.
  return at >= from && colon !== -1 && colon < at ? [colon + 1, at] : null
}

/**
 * The password of a URL as it may appear in text (an error message): the span `redactUrl`
 * hides, its percent-decoded form, and what the URL parser (ioredis) reads. Empty strings left out.
 */
export function urlSecrets (url: string): string[] {
  const found: string[] = []
  const span = passwordSpan(url)
  if (span !== null) found.push(url.slice(span[0], span[1]))
  try {
    const parsed = new URL(url).password
    found.push(parsed)
  } catch {}
  for (const secret of [...found]) {
    try { found.push(decodeURIComponent(secret)) } catch {}
  }
  for (const [, secret] of url.matchAll(/[?&]password=([^&#]*)/gi)) if (secret !== undefined) found.push(secret)
  // Longest first, so that a shorter one never splits a longer one before it is replaced.
  return [...new Set(found.filter((s) => s.length > 0))].sort((a, b) => b.length - a.length)
}
