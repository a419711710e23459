/**
 * The CLI's `main` run in process with captured output: the same path as the binary, without
 * a process start per case.
 */
import { PassThrough, Readable } from 'node:stream'
import { main } from '../../src/cli.js'

export interface CliRun { code: number | null, stdout: string, stderr: string }

export async function runCli (args: string[], env: Record<string, string | undefined>, stdin = ''): Promise<CliRun> {
  const out = new PassThrough()
  const err = new PassThrough()
  let stdout = ''
  let stderr = ''
  out.on('data', (d: Buffer) => { stdout += d.toString() })
  err.on('data', (d: Buffer) => { stderr += d.toString() })
  const code = await main(args, { stdin: Readable.from([Buffer.from(stdin)]), stdout: out, stderr: err, env, dotEnv: false })
  return { code, stdout, stderr }
}
