/** The scheduler's families, registered by the scheduler plugin from `scheduler.jobs()` at scrape time. */
import type { JobStats, Scheduler } from '../scheduler/scheduler.js'
import type { Metrics, Sample } from './collectors.js'

export function registerJobsMetrics (metrics: Metrics, scheduler: Pick<Scheduler, 'jobs'>): void {
  const { counter, gauge } = metrics
  const read = (figure: (j: JobStats) => number | null) => (): Sample[] => scheduler.jobs().flatMap((j) => {
    const value = figure(j)
    return value === null ? [] : [[{ job: j.name }, value] as const]
  })
  counter('aic_job_runs_total', 'Ticks this instance ran.', ['job'], read((j) => j.runs))
  counter('aic_job_skips_total', 'Ticks this instance skipped (Redis unavailable, previous run still going, late).', ['job'], read((j) => j.skips))
  counter('aic_job_failures_total', 'Runs that threw.', ['job'], read((j) => j.failures))
  counter('aic_job_ran_elsewhere_total', 'Ticks another instance had already taken.', ['job'], read((j) => j.ranElsewhere))
  gauge('aic_job_running', '1 while the job runs on this instance.', ['job'], read((j) => (j.running ? 1 : 0)))
  gauge('aic_job_last_duration_seconds', 'Duration of the job\'s last run on this instance.', ['job'], read((j) => (j.lastDurationMs === null ? null : j.lastDurationMs / 1000)))
}
