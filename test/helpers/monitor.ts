/**
 * MONITOR through `redis-cli` rather than ioredis: ioredis 6's monitor mode over RESP3 can
 * throw "Command queue state error" when a line arrives between two of its own replies,
 * which fails the test that only wanted to watch.
 */
import { spawn } from 'node:child_process'

export interface MonitorLine {
  /** `lua` for commands run inside a script, else the client's address. */
  source: string
  /** The command and its arguments as sent, e.g. `['INCRBY', 'rate_limit:ip:1.2.3.4', '1']`. */
  args: string[]
  raw: string
}

export interface Monitor {
  readonly lines: MonitorLine[]
  stop (): void
}

/** Starts watching every command the server on `port` receives; resolves once MONITOR is on. */
export async function startMonitor (port: number, password?: string): Promise<Monitor> {
  const auth = password !== undefined ? ['-a', password, '--no-auth-warning'] : []
  const child = spawn('redis-cli', ['-p', String(port), ...auth, 'MONITOR'], { stdio: ['ignore', 'pipe', 'ignore'] })
  const lines: MonitorLine[] = []
  let buffer = ''
  let ready: () => void = () => {}
  const started = new Promise<void>((resolve) => { ready = resolve })
  child.stdout.on('data', (d: Buffer) => {
    buffer += d.toString('utf8')
    let nl: number
    while ((nl = buffer.indexOf('\n')) >= 0) {
      const line = buffer.slice(0, nl).trim()
      buffer = buffer.slice(nl + 1)
      if (line === 'OK') { ready(); continue }
      const parsed = parseLine(line)
      if (parsed) lines.push(parsed)
    }
  })
  const timer = setTimeout(() => ready(), 3000)
  await started
  clearTimeout(timer)
  return { lines, stop: () => { child.kill('SIGKILL') } }
}

function parseLine (raw: string): MonitorLine | null {
  const m = /^\d+\.\d+ \[\d+ ([^\]]+)\] (.*)$/.exec(raw)
  if (!m) return null
  const args: string[] = []
  const re = /"((?:[^"\\]|\\.)*)"/g
  let a: RegExpExecArray | null
  while ((a = re.exec(m[2]!)) !== null) args.push(a[1]!.replace(/\\(.)/g, '$1'))
  return { source: m[1]!, args, raw }
}
