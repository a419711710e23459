/**
 * `npm run bench:charts [results.json …]`: draws each recorded run (default
 * bench/results/latest.json) as an SVG beside it: one bar per scenario, its req/s as a ratio
 * to the bare Fastify route of the same run, the range over repeated runs as a whisker and
 * the target, where there is one, as a mark. No dependency: the SVG is written by hand.
 */
import { readFileSync, writeFileSync } from 'node:fs'

interface Scenario {
  name: string
  ok: boolean
  target?: { minRatio?: number } | null
  measurement?: { reqPerSec: number } | null
  pairs?: Array<{ ratio: number }>
}

interface Results {
  date: string
  machine: { cpuModel: string, cpuCount: number, node: string }
  baseline: { start?: { reqPerSec: number }, end?: { reqPerSec: number } }
  scenarios: Scenario[]
}

interface Bar { name: string, ratio: number, low: number, high: number, target: number | undefined }

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.floor((s.length - 1) / 2)] ?? 0
}

export function barsOf (results: Results): Bar[] {
  const bare = [results.baseline.start?.reqPerSec, results.baseline.end?.reqPerSec].filter((x): x is number => x !== undefined)
  const bareMean = bare.reduce((a, b) => a + b, 0) / Math.max(1, bare.length)
  const bars: Bar[] = []
  for (const s of results.scenarios) {
    if (!s.ok || s.measurement == null) continue
    const ratios = s.pairs?.map((p) => p.ratio) ?? []
    const ratio = ratios.length > 0 ? median(ratios) : s.measurement.reqPerSec / bareMean
    bars.push({
      name: s.name,
      ratio,
      low: ratios.length > 0 ? Math.min(...ratios) : ratio,
      high: ratios.length > 0 ? Math.max(...ratios) : ratio,
      target: s.target?.minRatio,
    })
  }
  return bars
}

const esc = (text: string): string => text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;')

export function renderSvg (results: Results): string {
  const bars = barsOf(results)
  const rowH = 22
  const labelW = 560
  const plotW = 360
  const top = 46
  const maxRatio = Math.max(1.1, ...bars.map((b) => b.high))
  const x = (r: number): number => labelW + (r / maxRatio) * plotW
  const height = top + bars.length * rowH + 30
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${labelW + plotW + 80}" height="${height}" font-family="sans-serif" font-size="12">`,
    '<rect width="100%" height="100%" fill="white"/>',
    `<text x="10" y="18" font-size="14" font-weight="bold">req/s as a ratio to bare Fastify, same run (${esc(results.date.slice(0, 10))}, ${results.machine.cpuCount} × ${esc(results.machine.cpuModel)}, Node ${esc(results.machine.node)})</text>`,
    `<text x="10" y="36" fill="#555">bar: median ratio; whisker: range over the runs; red mark: the target</text>`,
  ]
  for (const tick of [0, 0.25, 0.5, 0.75, 1]) {
    out.push(`<line x1="${x(tick)}" y1="${top - 4}" x2="${x(tick)}" y2="${height - 24}" stroke="#ddd"/>`,
      `<text x="${x(tick)}" y="${height - 10}" text-anchor="middle" fill="#555">${tick}</text>`)
  }
  bars.forEach((b, i) => {
    const y = top + i * rowH
    const met = b.target === undefined || b.ratio >= b.target
    out.push(
      `<text x="${labelW - 8}" y="${y + 14}" text-anchor="end">${esc(b.name.length > 88 ? b.name.slice(0, 87) + '…' : b.name)}</text>`,
      `<rect x="${labelW}" y="${y + 4}" width="${x(b.ratio) - labelW}" height="${rowH - 8}" fill="${met ? '#4a7fb5' : '#c98a2b'}"/>`,
      `<line x1="${x(b.low)}" y1="${y + rowH / 2}" x2="${x(b.high)}" y2="${y + rowH / 2}" stroke="#222"/>`,
      `<text x="${x(b.high) + 6}" y="${y + 14}">${b.ratio.toFixed(2)}</text>`,
    )
    if (b.target !== undefined) out.push(`<line x1="${x(b.target)}" y1="${y + 2}" x2="${x(b.target)}" y2="${y + rowH - 2}" stroke="#d00" stroke-width="2"/>`)
  })
  out.push('</svg>')
  return out.join('\n') + '\n'
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const files = process.argv.slice(2)
  for (const file of files.length > 0 ? files : ['bench/results/latest.json']) {
    const svg = renderSvg(JSON.parse(readFileSync(file, 'utf8')) as Results)
    writeFileSync(file.replace(/\.json$/, '.svg'), svg)
    process.stdout.write(`wrote ${file.replace(/\.json$/, '.svg')}\n`)
  }
}
