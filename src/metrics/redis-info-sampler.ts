/**
 * Reads Redis INFO on a timer (never per scrape) for the redis_* metrics, so that a scrape
 * costs no Redis round trip and a flood of scrapes is not a flood of INFO calls. A tick is
 * skipped while the shared state says Redis is away (nothing waits on a dead Redis), and a
 * failed INFO is reported to the state like any other failed command.
 */
import type { Redis } from 'ioredis'
import { parseInfo, type RedisInfo } from '../debug/redis-info.js'

export interface SamplerState {
  readonly client: Redis | null
  readonly available: boolean
  reportFailure (err: unknown, operation?: string): void
  on (event: 'up', listener: () => void): unknown
  off (event: 'up', listener: () => void): unknown
}

export interface RedisInfoSamplerOptions {
  state: SamplerState
  intervalMs: number
  /** The database whose key count is reported (redis_db_keys{db="db<N>"}). */
  db: number
  now?: () => number
}

export class RedisInfoSampler {
  readonly db: number
  readonly intervalMs: number
  /** The figures of the last successful INFO, and when it was read (ms since the epoch). */
  latest: RedisInfo | null = null
  at = 0
  /** INFO calls sent, and how many failed. */
  samples = 0
  failures = 0
  readonly #state: SamplerState
  readonly #now: () => number
  #timer: NodeJS.Timeout | null = null
  #inFlight: Promise<void> | null = null
  readonly #onUp = (): void => { void this.sample() }

  constructor (options: RedisInfoSamplerOptions) {
    this.#state = options.state
    this.intervalMs = options.intervalMs
    this.db = options.db
    this.#now = options.now ?? Date.now
  }

  /** Samples now and then every interval; also as soon as Redis comes back. No-op without Redis. */
  start (): void {
    if (this.#state.client === null || this.#timer !== null) return
    this.#timer = setInterval(() => { void this.sample() }, this.intervalMs)
    this.#timer.unref()
    this.#state.on('up', this.#onUp)
    void this.sample()
  }

  /**
   * True when the service uses Redis now and the last INFO is recent (within three
   * intervals): the redis_* figures are current. False while Redis is away or INFO fails.
   */
  get up (): boolean {
    return this.#state.available && this.latest !== null && this.#now() - this.at <= 3 * this.intervalMs
  }

  /** One INFO, unless Redis is away or one is already on its way. */
  async sample (): Promise<void> {
    const client = this.#state.client
    if (client === null || !this.#state.available) return
    if (this.#inFlight !== null) return this.#inFlight
    this.#inFlight = (async () => {
      this.samples++
      try {
        const text = await client.info()
        this.latest = parseInfo(text, this.db)
        this.at = this.#now()
      } catch (err) {
        this.failures++
        this.#state.reportFailure(err, 'metrics.info')
      }
    })().finally(() => { this.#inFlight = null })
    return this.#inFlight
  }

  async stop (): Promise<void> {
    if (this.#timer !== null) clearInterval(this.#timer)
    this.#timer = null
    this.#state.off('up', this.#onUp)
    await this.#inFlight
  }
}
