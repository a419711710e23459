/**
 * Stock quotes. A ticker is checked by the schema before anything else runs, so a malformed
 * one is a 400 that never reaches Redis or the provider. `X-Cache` says where the answer came
 * from (HIT, MISS, or STALE when the provider failed and an expired quote was served) and
 * `Age` how many seconds old it is.
 */
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from 'typebox'
import { ErrorSchema } from '../src/schemas.js'
import type { FastifyReply } from 'fastify'
import { MAX_BATCH, type QuoteLookup } from '../src/quotes/quote-service.js'
import { QuoteSchema, TICKER_DESCRIPTION, TICKER_ITEM_PATTERN, TICKER_MAX_LENGTH, TICKER_PATTERN } from '../src/quotes/schemas.js'

const TickerParamsSchema = Type.Object({
  ticker: Type.String({ pattern: TICKER_PATTERN, description: TICKER_DESCRIPTION }),
}, { additionalProperties: false })

const TICKER_ITEM = TICKER_ITEM_PATTERN
const BatchQuerySchema = Type.Object({
  tickers: Type.String({
    pattern: `^${TICKER_ITEM}(,${TICKER_ITEM})*$`,
    maxLength: MAX_BATCH * (TICKER_MAX_LENGTH + 1) * 2,
    description: `Comma-separated tickers, 1 to ${MAX_BATCH} distinct (duplicates are answered once).`,
  }),
})

const CacheHeader = Type.Union([Type.Literal('HIT'), Type.Literal('MISS'), Type.Literal('STALE')])

const BatchSchema = Type.Object({
  quotes: Type.Array(Type.Object({ ...QuoteSchema.properties, cache: CacheHeader })),
  errors: Type.Array(Type.Object({ ticker: Type.String(), statusCode: Type.Integer(), message: Type.String() })),
})

const errors = { 400: ErrorSchema, 404: ErrorSchema, 502: ErrorSchema, 503: ErrorSchema, 504: ErrorSchema }

/**
 * Serialised quotes by their object. The cache hands out deeply frozen values, one object
 * shared by every reader: of an L1 entry for as long as L1 holds it, and of one L2 read or
 * load by all the requests that waited on it (with L1 off, a burst of requests for one
 * ticker shares one Redis GET and so one serialisation). An entry goes with its object.
 */
const serialized = new WeakMap<object, string>()

function sendQuote (reply: FastifyReply, result: QuoteLookup): void {
  let json = serialized.get(result.quote)
  if (json === undefined) {
    json = reply.serialize(result.quote) as string
    serialized.set(result.quote, json)
  }
  void reply.header('x-cache', result.cache).header('age', String(result.age)).type('application/json; charset=utf-8').send(json)
}

const stocks: FastifyPluginAsyncTypebox = async (fastify) => {
  const { quotes } = fastify

  fastify.get('/api/stocks/:ticker', {
    schema: {
      tags: ['stocks'],
      summary: 'One quote (cached; X-Cache: HIT | MISS | STALE, Age in seconds)',
      params: TickerParamsSchema,
      response: { 200: QuoteSchema, ...errors },
    },
  }, function quote (request, reply) {
    // A fresh L1 copy is answered synchronously; anything else once the cache has it.
    const result = quotes.lookup(request.params.ticker)
    if (result instanceof Promise) return result.then((r) => { sendQuote(reply, r) })
    sendQuote(reply, result)
  })

  fastify.get('/api/stocks', {
    schema: {
      tags: ['stocks'],
      summary: `Up to ${MAX_BATCH} quotes in one call (one Redis round trip for the cached ones)`,
      querystring: BatchQuerySchema,
      response: { 200: BatchSchema, ...errors },
    },
  }, async (request, reply) => {
    const { quotes: found, errors: failed } = await quotes.getMany(request.query.tickers.split(','))
    const statuses = new Set(found.map((q) => q.cache))
    const overall = statuses.has('STALE') ? 'STALE' : statuses.has('MISS') || found.length === 0 ? 'MISS' : 'HIT'
    void reply.header('x-cache', overall)
    if (found.length > 0) void reply.header('age', String(Math.max(...found.map((q) => q.age))))
    return {
      quotes: found.map((q) => ({ ...q.quote, cache: q.cache })),
      errors: failed,
    }
  })
}

export default stocks
