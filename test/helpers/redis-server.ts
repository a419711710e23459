/**
 * Private, disposable `redis-server` processes for fault-injection tests.
 *
 * Why this exists: the Redis layer's interesting behaviour (degradation,
 * reconnects, lock expiry, TTL handling) only shows up when Redis itself
 * misbehaves — it dies, freezes, restarts empty, demands a password, or talks
 * TLS. Those faults cannot be injected into the machine's shared Redis on 6379
 * without breaking every other consumer of it, so every test gets its own
 * server on its own free port, with no persistence, in its own temp dir.
 *
 * Safety rules baked in here:
 *  - we never connect to 6379 and never FLUSHALL; isolation comes from
 *    separate processes, not from wiping data;
 *  - every spawned process is tracked and SIGKILLed when the test process
 *    exits (even on an uncaught exception), so a crashed test cannot leave
 *    redis-server processes behind.
 */
import { spawn, spawnSync, execFile, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';

/** Files needed to run redis-server with TLS (paths, PEM). */
export interface TlsFiles {
  /** Server certificate (PEM). */
  cert: string;
  /** Server private key (PEM). */
  key: string;
  /** CA that signed `cert`; clients use it to verify the server. */
  ca: string;
}

export interface StartRedisOptions {
  /** Fixed port. Omit to get a free one (recommended). */
  port?: number;
  /** Extra redis-server arguments, e.g. `['--rename-command', 'KEYS', '']`. */
  args?: string[];
  /** Sets `--requirepass`; readiness check and `command()` authenticate. */
  password?: string;
  /**
   * Serve TLS only: the port becomes `--tls-port` and the plain port is
   * disabled (`--port 0`). Clients are not required to present certs.
   */
  tls?: TlsFiles;
}

export interface RedisProcess {
  /** The port clients connect to (the TLS port when `tls` was given). */
  readonly port: number;
  /** `redis://127.0.0.1:P` (or `rediss://`), with `:password@` when set. */
  readonly url: string;
  /** PID of the current server process; changes after `restart()`. */
  readonly pid: number;
  /** Send a signal (default SIGKILL = crash) and resolve once it exited. */
  kill(signal?: NodeJS.Signals): Promise<void>;
  /** SIGSTOP: the socket stays open but nothing is answered (a "hung" server). */
  pause(): void;
  /** SIGCONT: undo `pause()`. */
  resume(): void;
  /**
   * Kill (if alive) and start again on the SAME port with the same args —
   * the server comes back empty, like a real crash + restart without
   * persistence. Resolves when it answers PING.
   */
  restart(): Promise<void>;
  /** Graceful shutdown with a SIGKILL fallback; idempotent. */
  stop(): Promise<void>;
  /**
   * Run `redis-cli` against this server and return trimmed stdout. Error
   * replies (e.g. `ERR unknown command`) come back as text, like redis-cli
   * prints them; only failing to reach the server rejects.
   */
  command(...args: string[]): Promise<string>;
}

// Generous: on a busy machine (load 15 on two cores) a fresh redis-server can take seconds to answer.
const READY_TIMEOUT_MS = 20_000;
const RESTART_BIND_RETRY_MS = 3_000;
const OUTPUT_TAIL_CHARS = 4_000;

// ---------------------------------------------------------------------------
// Leak protection
// ---------------------------------------------------------------------------

/** Live children and their temp dirs, so we can clean up at process exit. */
const liveChildren = new Set<ChildProcess>();
const tempDirs = new Set<string>();
let exitHooksInstalled = false;

function killAllSync(): void {
  for (const child of liveChildren) {
    // SIGKILL also works on SIGSTOPped processes, so paused servers die too.
    try {
      if (child.pid !== undefined) process.kill(child.pid, 'SIGKILL');
    } catch {
      /* already gone */
    }
  }
  liveChildren.clear();
  for (const dir of tempDirs) {
    try {
      fs.rmSync(dir, { recursive: true, force: true });
    } catch {
      /* best effort */
    }
  }
  tempDirs.clear();
}

/**
 * 'exit' covers normal ends and uncaught exceptions. Signals (tap's timeout
 * sends SIGTERM) skip 'exit', so we also hook them — without changing whether
 * the process dies. Our handler is prepended and removes itself before
 * anything else runs, so cooperative handlers such as signal-exit (loaded by
 * tap) see themselves as the only listener and re-raise the signal as usual;
 * if nobody else listens we re-raise it ourselves. Nothing helps on SIGKILL of
 * the test process itself.
 */
function installExitHooks(): void {
  if (exitHooksInstalled) return;
  exitHooksInstalled = true;
  process.on('exit', killAllSync);
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    const handler = (): void => {
      process.removeListener(sig, handler);
      killAllSync();
      if (process.listenerCount(sig) === 0) process.kill(process.pid, sig);
    };
    process.prependListener(sig, handler);
  }
}

// ---------------------------------------------------------------------------
// Environment probes
// ---------------------------------------------------------------------------

/** Whether `bin` is an executable file in one of the PATH directories. */
function onPath(bin: string, pathEnv: string | undefined): boolean {
  for (const dir of (pathEnv ?? '').split(path.delimiter)) {
    if (!dir) continue;
    try {
      fs.accessSync(path.join(dir, bin), fs.constants.X_OK);
      return true;
    } catch {
      /* keep looking */
    }
  }
  return false;
}

/** True when `redis-server` is on PATH (PATH is injectable for tests). */
export function redisServerAvailable(pathEnv: string | undefined = process.env.PATH): boolean {
  return onPath('redis-server', pathEnv);
}

/** True when the `openssl` CLI is on PATH (needed by makeSelfSignedCert). */
export function opensslAvailable(pathEnv: string | undefined = process.env.PATH): boolean {
  return onPath('openssl', pathEnv);
}

/**
 * Decide how a Redis-backed test should run. Pure so the CI rule can be
 * tested without uninstalling Redis.
 *
 * Locally a missing redis-server just skips, so contributors without Redis
 * can still run the suite. On CI a skip would silently turn every fault test
 * green, so there it is a hard error instead.
 */
export function decideRedisSkip(available: boolean, env: NodeJS.ProcessEnv): { skip?: string } {
  if (available) return {};
  if (env.CI === 'true') throw new Error('redis-server is required when CI=true');
  return { skip: 'redis-server not installed' };
}

/**
 * Spread into tap test options: `t.test('name', skipUnlessRedis(), async t => …)`.
 * Returns `{}` when redis-server is available, `{ skip }` otherwise, and
 * throws when CI=true (see decideRedisSkip).
 */
export function skipUnlessRedis(env: NodeJS.ProcessEnv = process.env): { skip?: string } {
  return decideRedisSkip(redisServerAvailable(env.PATH), env);
}

let tlsSupportedCache: boolean | undefined;

/**
 * Whether this redis-server was built with TLS. Builds without it reject
 * `--tls-port` as a bad directive (or say TLS is "not supported"), so we ask
 * the binary directly: with both ports 0 a TLS-capable build accepts the
 * config and exits at once with "not listen anywhere" — it never binds.
 */
export function tlsSupported(): boolean {
  if (tlsSupportedCache !== undefined) return tlsSupportedCache;
  if (!redisServerAvailable()) return (tlsSupportedCache = false);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'redis-tlsprobe-'));
  try {
    const r = spawnSync(
      'redis-server',
      ['--port', '0', '--tls-port', '0', '--save', '', '--appendonly', 'no', '--dir', dir],
      { encoding: 'utf8', timeout: 5_000 },
    );
    const out = `${r.stdout ?? ''}${r.stderr ?? ''}`;
    tlsSupportedCache =
      !/Bad directive|not supported|wrong number of arguments/i.test(out) &&
      /not listen anywhere/i.test(out);
  } catch {
    tlsSupportedCache = false;
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  return tlsSupportedCache;
}

// ---------------------------------------------------------------------------
// TLS material
// ---------------------------------------------------------------------------

function run(bin: string, args: string[], cwd?: string): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(bin, args, { cwd, timeout: 15_000 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${bin} ${args.join(' ')} failed: ${err.message}\n${stderr}`));
      else resolve(stdout);
    });
  });
}

/**
 * Create a throwaway CA and a server certificate for 127.0.0.1/localhost in
 * `dir`. A real CA chain (instead of one self-signed leaf) lets tests verify
 * the server properly through `ca`, exactly like production clients would.
 * Our own openssl config is used so the result doesn't depend on the
 * distribution's openssl.cnf defaults.
 */
export async function makeSelfSignedCert(
  dir: string,
): Promise<{ ca: string; cert: string; key: string; caKey: string }> {
  if (!opensslAvailable()) throw new Error('openssl CLI not found on PATH');
  fs.mkdirSync(dir, { recursive: true });
  const p = (f: string): string => path.join(dir, f);
  fs.writeFileSync(
    p('ca.cnf'),
    [
      '[req]',
      'distinguished_name = dn',
      'x509_extensions = v3_ca',
      'prompt = no',
      '[dn]',
      'CN = redis-test-ca',
      '[v3_ca]',
      'basicConstraints = critical,CA:TRUE',
      'keyUsage = critical,keyCertSign,cRLSign',
      'subjectKeyIdentifier = hash',
      '',
    ].join('\n'),
  );
  fs.writeFileSync(
    p('server.cnf'),
    ['[req]', 'distinguished_name = dn', 'prompt = no', '[dn]', 'CN = localhost', ''].join('\n'),
  );
  fs.writeFileSync(
    p('server.ext'),
    [
      'basicConstraints = CA:FALSE',
      'keyUsage = critical,digitalSignature,keyEncipherment',
      'extendedKeyUsage = serverAuth,clientAuth',
      'subjectAltName = IP:127.0.0.1,DNS:localhost',
      '',
    ].join('\n'),
  );
  await run('openssl', [
    'req', '-x509', '-new', '-nodes', '-newkey', 'rsa:2048', '-sha256', '-days', '2',
    '-config', p('ca.cnf'), '-keyout', p('ca.key'), '-out', p('ca.crt'),
  ]);
  await run('openssl', [
    'req', '-new', '-nodes', '-newkey', 'rsa:2048', '-sha256',
    '-config', p('server.cnf'), '-keyout', p('server.key'), '-out', p('server.csr'),
  ]);
  // Explicit random serial: -CAcreateserial would write a .srl file next to the CA.
  const serial = `0x${Buffer.from(Array.from({ length: 8 }, () => Math.floor(Math.random() * 256))).toString('hex')}`;
  await run('openssl', [
    'x509', '-req', '-sha256', '-days', '2', '-in', p('server.csr'),
    '-CA', p('ca.crt'), '-CAkey', p('ca.key'), '-set_serial', serial,
    '-extfile', p('server.ext'), '-out', p('server.crt'),
  ]);
  return { ca: p('ca.crt'), cert: p('server.crt'), key: p('server.key'), caKey: p('ca.key') };
}

// ---------------------------------------------------------------------------
// Ports and readiness
// ---------------------------------------------------------------------------

/**
 * Ask the kernel for a free port. There is an unavoidable race between
 * closing this listener and redis-server binding it; startRedis retries with
 * a new port when that race is lost.
 */
export function getFreePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      if (addr === null || typeof addr === 'string') {
        srv.close();
        reject(new Error('could not determine free port'));
        return;
      }
      srv.close((err) => (err ? reject(err) : resolve(addr.port)));
    });
  });
}

function respCommand(...args: string[]): string {
  return `*${args.length}\r\n${args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join('')}`;
}

/**
 * One raw PING (after AUTH if needed). A raw socket instead of a client
 * library keeps the helper independent of the code under test, and of any
 * client-side retry logic that could mask a server that isn't really up.
 */
function pingOnce(
  port: number,
  opts: { password?: string; ca?: string; timeoutMs: number },
): Promise<'ok' | 'not-ready'> {
  return new Promise((resolve) => {
    let done = false;
    let buf = '';
    const finish = (r: 'ok' | 'not-ready'): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      sock.destroy();
      resolve(r);
    };
    const payload =
      (opts.password !== undefined ? respCommand('AUTH', opts.password) : '') + respCommand('PING');
    const sock: net.Socket =
      opts.ca !== undefined
        ? tls.connect({ host: '127.0.0.1', port, ca: fs.readFileSync(opts.ca) }, () => sock.write(payload))
        : net.connect({ host: '127.0.0.1', port }, () => sock.write(payload));
    const timer = setTimeout(() => finish('not-ready'), opts.timeoutMs);
    sock.setEncoding('utf8');
    sock.on('data', (d: string) => {
      buf += d;
      if (buf.includes('+PONG\r\n')) finish('ok');
      // -LOADING, -NOAUTH, -WRONGPASS…: not usable yet (or misconfigured); keep polling
      else if (/^-.*\r\n/m.test(buf)) finish('not-ready');
    });
    sock.on('error', () => finish('not-ready'));
    sock.on('close', () => finish('not-ready'));
  });
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Resolve when `child` exits (immediately if it already has). */
function waitExit(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => child.once('exit', () => resolve()));
}

// ---------------------------------------------------------------------------
// startRedis
// ---------------------------------------------------------------------------

class PortInUseError extends Error {}

class ManagedRedis implements RedisProcess {
  readonly port: number;
  readonly url: string;
  private child: ChildProcess | undefined;
  private output = '';
  private stopped = false;

  constructor(
    port: number,
    private readonly dir: string,
    private readonly opts: StartRedisOptions,
  ) {
    this.port = port;
    const auth = opts.password !== undefined ? `:${encodeURIComponent(opts.password)}@` : '';
    this.url = `${opts.tls ? 'rediss' : 'redis'}://${auth}127.0.0.1:${port}`;
  }

  get pid(): number {
    return this.child?.pid ?? -1;
  }

  private get alive(): boolean {
    return this.child !== undefined && this.child.exitCode === null && this.child.signalCode === null;
  }

  private serverArgs(): string[] {
    const { tls: t, password, args = [] } = this.opts;
    const P = String(this.port);
    return [
      ...(t
        ? [
            '--port', '0', '--tls-port', P,
            '--tls-cert-file', t.cert, '--tls-key-file', t.key, '--tls-ca-cert-file', t.ca,
            '--tls-auth-clients', 'no',
          ]
        : ['--port', P]),
      '--bind', '127.0.0.1',
      '--save', '',
      '--appendonly', 'no',
      '--daemonize', 'no',
      '--dir', this.dir,
      '--loglevel', 'warning',
      ...(password !== undefined ? ['--requirepass', password] : []),
      ...args,
    ];
  }

  private tail(): string {
    return this.output.slice(-OUTPUT_TAIL_CHARS).trim() || '(no output)';
  }

  /**
   * Spawn once and wait for PING. Throws PortInUseError when the server
   * exited because the port was taken, so callers can decide to retry.
   */
  async spawnAndWait(deadline: number): Promise<void> {
    fs.mkdirSync(this.dir, { recursive: true });
    this.output = '';
    const child = spawn('redis-server', this.serverArgs(), { stdio: ['ignore', 'pipe', 'pipe'] });
    this.child = child;
    liveChildren.add(child);
    const collect = (d: Buffer): void => {
      this.output = (this.output + d.toString('utf8')).slice(-OUTPUT_TAIL_CHARS * 2);
    };
    child.stdout?.on('data', collect);
    child.stderr?.on('data', collect);
    let spawnError: Error | undefined;
    child.on('error', (err) => (spawnError = err));
    child.on('exit', () => liveChildren.delete(child));

    while (Date.now() < deadline) {
      if (spawnError) throw new Error(`failed to spawn redis-server: ${spawnError.message}`);
      if (child.exitCode !== null || child.signalCode !== null) {
        // give the pipes a moment to deliver the final log lines
        await sleep(20);
        if (/address already in use/i.test(this.output)) {
          throw new PortInUseError(`port ${this.port} in use:\n${this.tail()}`);
        }
        throw new Error(
          `redis-server on port ${this.port} exited early (code ${child.exitCode}, signal ${child.signalCode}):\n${this.tail()}`,
        );
      }
      const r = await pingOnce(this.port, {
        ...(this.opts.password !== undefined ? { password: this.opts.password } : {}),
        ...(this.opts.tls ? { ca: this.opts.tls.ca } : {}),
        timeoutMs: 500,
      });
      if (r === 'ok') return;
      await sleep(25);
    }
    await this.kill('SIGKILL');
    throw new Error(
      `redis-server on port ${this.port} not ready after ${READY_TIMEOUT_MS} ms:\n${this.tail()}`,
    );
  }

  async kill(signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    const child = this.child;
    if (!child || !this.alive) return;
    const exited = waitExit(child);
    child.kill(signal);
    // A stopped process only acts on non-KILL signals once continued.
    if (signal !== 'SIGKILL' && signal !== 'SIGCONT') child.kill('SIGCONT');
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`redis-server pid ${child.pid} did not exit after ${signal}`)),
        10_000,
      );
    });
    try {
      await Promise.race([exited, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  pause(): void {
    if (this.alive) this.child?.kill('SIGSTOP');
  }

  resume(): void {
    if (this.alive) this.child?.kill('SIGCONT');
  }

  async restart(): Promise<void> {
    await this.kill('SIGKILL');
    this.stopped = false;
    tempDirs.add(this.dir);
    // After SIGKILL the kernel frees the listening port at once (no
    // TIME_WAIT on a listener), but another process may grab it briefly;
    // keep trying for a while before giving up.
    const bindDeadline = Date.now() + RESTART_BIND_RETRY_MS;
    for (;;) {
      try {
        await this.spawnAndWait(Date.now() + READY_TIMEOUT_MS);
        return;
      } catch (err) {
        if (!(err instanceof PortInUseError) || Date.now() >= bindDeadline) throw err;
        await sleep(100);
      }
    }
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    const child = this.child;
    if (child && this.alive) {
      child.kill('SIGCONT'); // a paused server would never see SIGTERM
      child.kill('SIGTERM');
      const graceful = await Promise.race([waitExit(child).then(() => true), sleep(2_000).then(() => false)]);
      if (!graceful) await this.kill('SIGKILL');
    }
    if (child) liveChildren.delete(child);
    fs.rmSync(this.dir, { recursive: true, force: true });
    tempDirs.delete(this.dir);
  }

  command(...args: string[]): Promise<string> {
    const cliArgs = [
      '-h', '127.0.0.1', '-p', String(this.port),
      ...(this.opts.password !== undefined ? ['-a', this.opts.password, '--no-auth-warning'] : []),
      ...(this.opts.tls ? ['--tls', '--cacert', this.opts.tls.ca] : []),
      ...args,
    ];
    return new Promise((resolve, reject) => {
      // Generous: spawning redis-cli can take seconds on a busy machine.
      execFile('redis-cli', cliArgs, { timeout: 20_000 }, (err, stdout, stderr) => {
        // redis-cli exits 0 for error replies and non-zero only when it
        // could not talk to the server at all.
        if (err) reject(new Error(`redis-cli ${args.join(' ')} failed: ${err.message}\n${stderr}${stdout}`));
        else resolve(stdout.trim());
      });
    });
  }
}

/**
 * Start a private redis-server and resolve once it answers PING.
 *
 * Without an explicit port a free one is chosen; if another process steals
 * it between probing and binding we simply try a fresh port.
 */
export async function startRedis(opts: StartRedisOptions = {}): Promise<RedisProcess> {
  if (opts.port === 6379) throw new Error('refusing to use port 6379: it belongs to the shared Redis');
  installExitHooks();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'redis-test-'));
  tempDirs.add(dir);
  const maxAttempts = opts.port === undefined ? 5 : 1;
  let lastErr: unknown;
  for (let attempt = 0; attempt < maxAttempts; attempt++) {
    const port = opts.port ?? (await getFreePort());
    const proc = new ManagedRedis(port, dir, opts);
    try {
      await proc.spawnAndWait(Date.now() + READY_TIMEOUT_MS);
      return proc;
    } catch (err) {
      lastErr = err;
      await proc.kill('SIGKILL').catch(() => undefined);
      if (!(err instanceof PortInUseError)) break;
    }
  }
  fs.rmSync(dir, { recursive: true, force: true });
  tempDirs.delete(dir);
  throw lastErr;
}
