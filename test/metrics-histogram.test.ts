/**
 * The hot-path histogram: buckets, exposition through a prom-client registry, and reset.
 */
import t from 'tap'
import { Registry } from 'prom-client'
import { FastHistogram } from '../src/metrics/collectors.js'

function histogramIn (registry: Registry): FastHistogram {
  const h = new FastHistogram('test_seconds', 'test', ['route'], [0.1, 1])
  registry.registerMetric(h)
  return h
}

t.test('observations land in cumulative buckets with _sum and _count', async (t) => {
  const registry = new Registry()
  const series = histogramIn(registry).series(['/a'])
  for (const v of [0.05, 0.5, 5]) series.observe(v)
  const text = await registry.metrics()
  t.match(text, /test_seconds_bucket\{route="\/a",le="0\.1"\} 1\n/)
  t.match(text, /test_seconds_bucket\{route="\/a",le="1"\} 2\n/)
  t.match(text, /test_seconds_bucket\{route="\/a",le="\+Inf"\} 3\n/)
  t.match(text, /test_seconds_count\{route="\/a"\} 3\n/)
  t.match(text, /test_seconds_sum\{route="\/a"\} 5\.55\n/)
})

t.test('after a registry reset, a series a caller kept still counts and is exposed', async (t) => {
  const registry = new Registry()
  const h = histogramIn(registry)
  const kept = h.series(['/a'])
  kept.observe(0.5)
  kept.observe(0.5)
  registry.resetMetrics()
  t.match(await registry.metrics(), /test_seconds_count\{route="\/a"\} 0\n/, 'zeroed by the reset')
  kept.observe(0.05)
  const text = await registry.metrics()
  t.match(text, /test_seconds_count\{route="\/a"\} 1\n/, 'the kept series is the exposed one')
  t.match(text, /test_seconds_bucket\{route="\/a",le="0\.1"\} 1\n/)
  t.equal(h.series(['/a']), kept, 'the same series object for the same labels')
})
