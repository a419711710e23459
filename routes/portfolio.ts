/**
 * The caller's own portfolio (the user id comes from the token, never from the request):
 * read (cached, `X-Cache`), buy and sell (idempotent with `Idempotency-Key`), remove a
 * position, and the daily value history. Writes answer 409 with Retry-After when the lock
 * is busy or the version check refused the commit; both are safe to retry.
 */
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import type { FastifyReply } from 'fastify'
import { Type } from 'typebox'
import { ErrorSchema } from '../src/schemas.js'
import { TICKER_DESCRIPTION, TICKER_PATTERN } from '../src/quotes/schemas.js'
import type { PortfolioView } from '../src/portfolio/valuation.js'
import { MAX_PRICE, MAX_TRADE_SHARES, MIN_PRICE, SHARE_DECIMALS } from '../src/portfolio/ledger.js'

const Money = (description?: string) => Type.Union([Type.Number(), Type.Null()], description ? { description } : {})

export const PortfolioSchema = Type.Object({
  userId: Type.String(),
  positions: Type.Array(Type.Object({
    ticker: Type.String(),
    shares: Type.Number(),
    avgCost: Type.Number({ description: 'Average cost per share of the shares held.' }),
    price: Money('Last price (null when no quote could be had).'),
    value: Money(),
    gain: Money(),
    gainPercent: Money(),
  })),
  totals: Type.Object({
    cost: Type.Number(),
    value: Money('Null when a position could not be priced.'),
    gain: Money(),
    gainPercent: Money(),
  }),
  version: Type.Integer({ description: 'Increases by one with every committed write.' }),
  asOf: Type.String({ format: 'date-time', description: 'When the portfolio was priced.' }),
  unpriced: Type.Array(Type.String(), { description: 'Tickers without a quote right now (not cached while non-empty).' }),
}, { $id: 'Portfolio' })

const TradeBodySchema = Type.Object({
  ticker: Type.String({ pattern: TICKER_PATTERN, description: TICKER_DESCRIPTION }),
  side: Type.Union([Type.Literal('buy'), Type.Literal('sell')]),
  shares: Type.Number({ exclusiveMinimum: 0, maximum: MAX_TRADE_SHARES, description: `At most ${SHARE_DECIMALS} decimals.` }),
  price: Type.Number({ minimum: MIN_PRICE, maximum: MAX_PRICE, description: 'Price per share.' }),
}, { additionalProperties: false })

const TradeHeadersSchema = Type.Object({
  'idempotency-key': Type.Optional(Type.String({
    minLength: 1,
    maxLength: 255,
    pattern: '^[\\x21-\\x7E]+$',
    description: 'Makes retries safe for IDEMPOTENCY_TTL_SECONDS (24 h by default): the same key and body answer the first response without a second effect; the same key with another body is a 422.',
  })),
})

const TickerParamsSchema = Type.Object({
  ticker: Type.String({ pattern: TICKER_PATTERN, description: TICKER_DESCRIPTION }),
}, { additionalProperties: false })

const HistoryQuerySchema = Type.Object({
  days: Type.Integer({ minimum: 1, maximum: 3660, default: 30, description: 'How many days back, today included.' }),
})

const HistorySchema = Type.Object({
  userId: Type.String(),
  snapshots: Type.Array(Type.Object({
    date: Type.String({ description: 'YYYY-MM-DD (UTC)' }),
    takenAt: Type.String({ format: 'date-time' }),
    version: Type.Integer(),
    positions: Type.Integer(),
    cost: Type.Number(),
    value: Money(),
    gain: Money(),
    gainPercent: Money(),
  })),
})

const errors = { 401: ErrorSchema, 429: ErrorSchema, 503: ErrorSchema }
const writeErrors = { ...errors, 400: ErrorSchema, 404: ErrorSchema, 409: ErrorSchema, 422: ErrorSchema }

/** 409 (busy lock, refused commit) and 503 are worth retrying: say when. */
function retryHint (reply: FastifyReply, err: unknown): void {
  const status = (err as { statusCode?: number }).statusCode
  if ((status === 409 || status === 503) && !reply.hasHeader('retry-after')) void reply.header('retry-after', '1')
}

const portfolio: FastifyPluginAsyncTypebox = async (fastify) => {
  const { portfolio: service } = fastify
  const auth = { onRequest: [fastify.authenticate] }

  fastify.get('/api/portfolio', {
    ...auth,
    schema: {
      tags: ['portfolio'],
      summary: 'The caller\'s portfolio, priced with the cached quotes (X-Cache: HIT | MISS, Age in seconds)',
      security: [{ bearerAuth: [] }],
      response: { 200: PortfolioSchema, ...errors },
    },
    config: {
      cache: {
        ...service.policy,
        key: (request) => service.key(request.user.sub),
        cacheable: (view: PortfolioView) => service.cacheable(view),
        // A copy whose invalidation has not reached this instance yet is never answered.
        accept: (view: PortfolioView, request) => service.isCurrent(request.user.sub, view),
      },
    },
  }, async (request) => service.view(request.user.sub))

  fastify.post('/api/portfolio/transactions', {
    ...auth,
    schema: {
      tags: ['portfolio'],
      summary: 'Buy or sell; answers the updated portfolio',
      security: [{ bearerAuth: [] }],
      headers: TradeHeadersSchema,
      body: TradeBodySchema,
      response: { 201: PortfolioSchema, ...writeErrors },
    },
  }, async (request, reply) => {
    const { ticker, side, shares, price } = request.body
    const key = request.headers['idempotency-key']
    try {
      const result = await service.trade(request.user.sub, { ticker: ticker.toUpperCase(), side, shares, price }, key)
      if (result.replayed) void reply.header('idempotent-replayed', 'true')
      void reply.code(result.statusCode)
      return result.view
    } catch (err) {
      retryHint(reply, err)
      throw err
    }
  })

  fastify.delete('/api/portfolio/positions/:ticker', {
    ...auth,
    schema: {
      tags: ['portfolio'],
      summary: 'Remove a whole position; answers the updated portfolio',
      security: [{ bearerAuth: [] }],
      params: TickerParamsSchema,
      response: { 200: PortfolioSchema, ...writeErrors },
    },
  }, async (request, reply) => {
    try {
      return await service.removePosition(request.user.sub, request.params.ticker.toUpperCase())
    } catch (err) {
      retryHint(reply, err)
      throw err
    }
  })

  fastify.get('/api/portfolio/history', {
    ...auth,
    schema: {
      tags: ['portfolio'],
      summary: 'The portfolio\'s value once a day (stored by the portfolio-snapshot job)',
      security: [{ bearerAuth: [] }],
      querystring: HistoryQuerySchema,
      response: { 200: HistorySchema, 400: ErrorSchema, ...errors },
    },
  }, async (request) => {
    const userId = request.user.sub
    return { userId, snapshots: await service.history(userId, request.query.days) }
  })
}

export default portfolio
