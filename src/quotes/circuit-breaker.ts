/**
 * A circuit breaker for an upstream: after `threshold` failures in a row it opens and every
 * call fails at once for `cooldownMs`; then one trial call is let through (half-open): its
 * success closes the circuit, its failure opens it again. Only failures that say the
 * upstream is unwell count (see `isFailure`); a "no such symbol" answer is a healthy upstream.
 */
import { ServiceUnavailableError } from '../errors.js'

export type BreakerState = 'closed' | 'open' | 'half-open'

export interface CircuitBreakerOptions {
  threshold: number
  cooldownMs: number
  /** Which errors count against the upstream. */
  isFailure: (err: unknown) => boolean
  onStateChange?: (state: BreakerState, reason: string) => void
  now?: () => number
}

export class CircuitBreaker {
  state: BreakerState = 'closed'
  consecutiveFailures = 0
  opens = 0
  rejected = 0
  #openUntil = 0
  #trialRunning = false
  readonly #opts: CircuitBreakerOptions
  readonly #now: () => number

  constructor (options: CircuitBreakerOptions) {
    this.#opts = options
    this.#now = options.now ?? Date.now
  }

  async run<T> (call: () => Promise<T>, label = 'upstream'): Promise<T> {
    if (this.state === 'open') {
      if (this.#now() < this.#openUntil) return this.#reject(label)
      this.#transition('half-open', 'cooldown elapsed, letting one trial call through')
    }
    let trial = false
    if (this.state === 'half-open') {
      if (this.#trialRunning) return this.#reject(label)
      this.#trialRunning = true
      trial = true
    }
    try {
      const result = await call()
      this.consecutiveFailures = 0
      if (this.state !== 'closed') this.#transition('closed', 'trial call succeeded')
      return result
    } catch (err) {
      if (this.#opts.isFailure(err)) {
        this.consecutiveFailures++
        if (this.state !== 'open' && (trial || this.consecutiveFailures >= this.#opts.threshold)) this.#open(trial ? 'trial call failed' : `${this.consecutiveFailures} failures in a row`)
      } else {
        this.consecutiveFailures = 0
        if (trial) this.#transition('closed', 'trial call answered')
      }
      throw err
    } finally {
      if (trial) this.#trialRunning = false
    }
  }

  /** Seconds until a trial call is allowed (0 when closed). */
  get retryInSeconds (): number {
    return this.state === 'open' ? Math.max(1, Math.ceil((this.#openUntil - this.#now()) / 1000)) : 0
  }

  #reject (label: string): never {
    this.rejected++
    throw new ServiceUnavailableError(`${label} is unavailable (circuit open after repeated failures); retry in ${this.retryInSeconds} s`)
  }

  #open (reason: string): void {
    this.#openUntil = this.#now() + this.#opts.cooldownMs
    this.opens++
    this.#transition('open', reason)
  }

  #transition (state: BreakerState, reason: string): void {
    if (this.state === state) return
    this.state = state
    this.#opts.onStateChange?.(state, reason)
  }
}
