/**
 * How requests are validated, and what a refused one is told.
 *
 * - JSON bodies are validated as sent: no type coercion, so `true`, `"5"` or `[5]` where a
 *   number belongs is a 400, never a trade. Query strings, path parameters and headers
 *   arrive as text, so there (only there) `"5"` becomes 5 and `"true"` true.
 * - Numbers must be finite everywhere. Ajv's own check lets a coerced `Infinity` (from
 *   `?limit=Infinity` or `1e309`) past its bounds, so every validated value is walked once
 *   more and a non-finite number refused.
 * - Messages name the field and say what is wrong in words ("email: not a valid address",
 *   "price: must be a number from 0.000001 to 1000000000"); a regex is never echoed.
 */
import { AjvCompiler } from '@fastify/ajv-compiler'
import type { ValidatorFactory } from '@fastify/ajv-compiler'
import type { FastifySchemaValidationError, SchemaErrorDataVar } from 'fastify/types/schema.js'
import { EMAIL_PATTERN } from './auth/email.js'
import { TICKER_PATTERN } from './quotes/schemas.js'

const COMMON = {
  useDefaults: true,
  // Unknown fields of a schema with additionalProperties: false are dropped, not refused.
  removeAdditional: true,
  // One error is enough to answer, and allErrors is a known denial-of-service lever.
  allErrors: false,
  // NaN and Infinity are not numbers here (JSON.parse turns 1e309 into Infinity).
  strictNumbers: true,
  // The error keeps the schema it failed, so the message can say what was expected.
  verbose: true,
} as const

/** Coercion where the input is text (query string, path parameters, headers), none for bodies. */
export const AJV_BODY_OPTIONS = { ...COMMON, coerceTypes: false } as const
export const AJV_TEXT_OPTIONS = { ...COMMON, coerceTypes: 'array' } as const

type Validate = ((data: unknown, context?: unknown) => unknown) & { errors?: unknown, schemaEnv?: unknown }

/** Fastify's validator factory: two Ajv instances (see above) and a finiteness check after either. */
export function buildValidator (): ValidatorFactory {
  const pool = AjvCompiler()
  // Fastify's own `ajv` option is not used: these two sets are the whole configuration.
  return (externalSchemas) => {
    const forBody = pool(externalSchemas, { customOptions: { ...AJV_BODY_OPTIONS } })
    const forText = pool(externalSchemas, { customOptions: { ...AJV_TEXT_OPTIONS } })
    return (route) => {
      const validate = (route.httpPart === 'body' ? forBody : forText)(route) as Validate
      const checked: Validate = (data, context) => {
        if (validate(data, context) !== true) {
          checked.errors = validate.errors
          return false
        }
        const path = nonFinitePath(data, '')
        if (path === null) return true
        checked.errors = [{ keyword: 'finite', instancePath: path, schemaPath: '#', params: {}, message: 'must be a finite number' }]
        return false
      }
      // Fastify passes the parent to a function with schemaEnv, so Ajv can coerce a root value.
      checked.schemaEnv = validate.schemaEnv
      return checked as ReturnType<ReturnType<ValidatorFactory>>
    }
  }
}

/** The JSON pointer of the first non-finite number in `data`, or null. */
export function nonFinitePath (data: unknown, path: string): string | null {
  if (typeof data === 'number') return Number.isFinite(data) ? null : path
  if (data === null || typeof data !== 'object') return null
  if (Array.isArray(data)) {
    for (let i = 0; i < data.length; i++) {
      const found = nonFinitePath(data[i], `${path}/${i}`)
      if (found !== null) return found
    }
    return null
  }
  for (const [key, value] of Object.entries(data)) {
    const found = nonFinitePath(value, `${path}/${key.replace(/~/g, '~0').replace(/\//g, '~1')}`)
    if (found !== null) return found
  }
  return null
}

interface SchemaLike {
  type?: string | string[]
  properties?: Record<string, unknown>
  required?: string[]
  minimum?: number
  maximum?: number
  exclusiveMinimum?: number
  exclusiveMaximum?: number
  minLength?: number
  maxLength?: number
  pattern?: string
  format?: string
  const?: unknown
  enum?: unknown[]
  anyOf?: SchemaLike[]
  description?: string
}

/** What a pattern means, in words, for the patterns the service uses. */
const PATTERN_WORDS = new Map<string, string>([
  [EMAIL_PATTERN, 'not a valid address'],
  [TICKER_PATTERN, 'not a valid ticker symbol'],
])
/** By field name, for patterns built inside a route file. */
const FIELD_PATTERN_WORDS: Record<string, string> = {
  tickers: 'not a comma-separated list of valid ticker symbols',
  'idempotency-key': 'must be printable ASCII without spaces',
}

const WHERE: Record<SchemaErrorDataVar, string> = {
  body: 'request body',
  querystring: 'query string',
  params: 'path',
  headers: 'headers',
}

/** `/a/0/b` → `a[0].b`; the JSON pointer escapes undone. */
function fieldName (instancePath: string, extra?: string): string {
  const parts = instancePath.split('/').slice(1).map((p) => p.replace(/~1/g, '/').replace(/~0/g, '~'))
  if (extra !== undefined) parts.push(extra)
  return parts.reduce((name, part) => /^\d+$/.test(part) ? `${name}[${part}]` : name === '' ? part : `${name}.${part}`, '')
}

function num (n: number): string {
  // 1e-6 → 0.000001, 1e9 → 1000000000 (no exponent for the bounds people read).
  return Math.abs(n) >= 1e-6 && Math.abs(n) < 1e21 ? n.toLocaleString('en-US', { useGrouping: false, maximumFractionDigits: 20 }) : String(n)
}

function listWords (items: readonly string[], conjunction: 'and' | 'or'): string {
  if (items.length <= 1) return items.join('')
  return `${items.slice(0, -1).join(', ')} ${conjunction} ${items[items.length - 1] as string}`
}

/** "a number from 1 to 3660", "a whole number greater than 0 and at most 1000000000". */
export function describeNumber (schema: SchemaLike): string {
  const noun = schema.type === 'integer' ? 'a whole number' : 'a number'
  const low = schema.exclusiveMinimum !== undefined ? `greater than ${num(schema.exclusiveMinimum)}` : schema.minimum !== undefined ? `at least ${num(schema.minimum)}` : null
  const high = schema.exclusiveMaximum !== undefined ? `less than ${num(schema.exclusiveMaximum)}` : schema.maximum !== undefined ? `at most ${num(schema.maximum)}` : null
  if (schema.minimum !== undefined && schema.maximum !== undefined) return `${noun} from ${num(schema.minimum)} to ${num(schema.maximum)}`
  if (low !== null && high !== null) return `${noun} ${low} and ${high}`
  if (low !== null || high !== null) return `${noun} ${low ?? high}`
  return noun
}

function describeLength (schema: SchemaLike): string {
  const { minLength: min, maxLength: max } = schema
  if (min !== undefined && max !== undefined) return min === max ? `${min} characters` : `${min} to ${max} characters`
  if (min !== undefined) return min === 1 ? 'not empty' : `at least ${min} characters`
  if (max !== undefined) return `at most ${max} characters`
  return 'a string'
}

const TYPE_WORDS: Record<string, string> = {
  string: 'a string',
  boolean: 'true or false',
  object: 'an object',
  array: 'a list',
  null: 'null',
}

function describeType (schema: SchemaLike): string {
  const types = Array.isArray(schema.type) ? schema.type : schema.type !== undefined ? [schema.type] : []
  const words = types.map((type) => type === 'number' || type === 'integer' ? describeNumber({ ...schema, type }) : type === 'string' && (schema.minLength !== undefined || schema.maxLength !== undefined) ? `a string of ${describeLength(schema)}` : TYPE_WORDS[type] ?? type)
  return words.length === 0 ? 'of another type' : listWords(words, 'or')
}

/** "email and password", or "key or prefix" when nothing is required. */
export function bodyFieldsWords (schema: SchemaLike | undefined): string {
  const properties = Object.getOwnPropertyNames(schema?.properties ?? {})
  const required = schema?.required ?? []
  if (required.length > 0) return `a JSON object with ${listWords(required, 'and')}`
  if (properties.length > 0) return `a JSON object with ${listWords(properties, 'or')}`
  return 'a JSON object'
}

/** The sentence for a body that is missing altogether. */
export function missingBodyMessage (schema: unknown): string {
  return `request body is required: send ${bodyFieldsWords(schema as SchemaLike | undefined)} (Content-Type: application/json)`
}

export const UNSUPPORTED_MEDIA_TYPE_MESSAGE = 'the request body must be JSON: send it with the header Content-Type: application/json'
export const INVALID_JSON_MESSAGE = 'the request body is not valid JSON'

type ErrorWithSchema = FastifySchemaValidationError & { parentSchema?: SchemaLike, data?: unknown }

/** One validation error in words, naming the field. */
export function describeValidationError (errors: FastifySchemaValidationError[], dataVar: SchemaErrorDataVar): string {
  const list = errors as ErrorWithSchema[]
  // An alternative (anyOf) failed: its own error, not the first branch's, says what was expected.
  const error = list.find((e) => e.keyword === 'anyOf') ?? list[0]
  if (error === undefined) return `${WHERE[dataVar]} is not valid`
  const schema: SchemaLike = error.parentSchema ?? {}
  const params = error.params as Record<string, unknown>
  const atRoot = error.instancePath === ''

  if (error.keyword === 'required') {
    const name = fieldName(error.instancePath, String(params.missingProperty))
    return dataVar === 'headers' ? `header ${name} is required` : `${name}: is required`
  }
  if (atRoot && dataVar === 'body' && (error.keyword === 'type' || error.keyword === 'finite')) {
    if (error.data === undefined || error.data === null) return missingBodyMessage(schema)
    return `request body must be ${bodyFieldsWords(schema)}`
  }
  const field = atRoot ? WHERE[dataVar] : dataVar === 'headers' ? `header ${fieldName(error.instancePath)}` : fieldName(error.instancePath)
  switch (error.keyword) {
    case 'finite':
      return `${field}: must be a finite number`
    case 'type':
      return `${field}: must be ${describeType(schema)}`
    case 'minimum':
    case 'maximum':
    case 'exclusiveMinimum':
    case 'exclusiveMaximum':
    case 'multipleOf':
      return `${field}: must be ${describeNumber(schema)}`
    case 'minLength':
    case 'maxLength':
      return `${field}: must be ${describeLength(schema)}`
    case 'pattern': {
      const words = PATTERN_WORDS.get(String(params.pattern)) ?? FIELD_PATTERN_WORDS[fieldName(error.instancePath)]
      if (words !== undefined) return `${field}: ${words}`
      return `${field}: not in the accepted form${schema.description !== undefined ? ` (${schema.description.replace(/\.$/, '')})` : ''}`
    }
    case 'format':
      return `${field}: must be a valid ${String(params.format)}`
    case 'const':
    case 'enum': {
      const allowed = error.keyword === 'const' ? [schema.const] : schema.enum ?? []
      return `${field}: must be ${listWords(allowed.map((v) => JSON.stringify(v)), 'or')}`
    }
    case 'anyOf': {
      const consts = (schema.anyOf ?? []).map((branch) => branch.const)
      if (consts.length > 0 && consts.every((c) => c !== undefined)) return `${field}: must be ${listWords(consts.map((v) => JSON.stringify(v)), 'or')}`
      return `${field}: must be ${listWords((schema.anyOf ?? []).map(describeType), 'or')}`
    }
    case 'additionalProperties':
      return `${field}: ${String(params.additionalProperty)} is not a known field`
    case 'minItems':
    case 'maxItems':
      return `${field}: has too ${error.keyword === 'minItems' ? 'few' : 'many'} items`
    default:
      return `${field}: is not valid`
  }
}

/** Fastify's schemaErrorFormatter: the message above on a plain Error (Fastify makes it a 400). */
export function schemaErrorFormatter (errors: FastifySchemaValidationError[], dataVar: SchemaErrorDataVar): Error {
  return new Error(describeValidationError(errors, dataVar))
}
