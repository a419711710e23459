/** Email syntax (the same pattern the route schemas use) and the one normal form we store. */

/** ajv-formats' "email" pattern, as a string for JSON schemas. */
export const EMAIL_PATTERN = "^[a-zA-Z0-9.!#$%&'*+/=?^_`{|}~-]+@[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?(?:\\.[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*$"
const EMAIL_RE = new RegExp(EMAIL_PATTERN)

export function isEmail (value: string): boolean {
  return value.length <= 254 && EMAIL_RE.test(value)
}

/** Trimmed, NFC, lower case: `Alice@Example.COM ` and `alice@example.com` are one account. */
export function normaliseEmail (value: string): string {
  return value.trim().normalize('NFC').toLowerCase()
}
