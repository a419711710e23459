/**
 * Proves the fault-injection helpers against a real redis-server. Every other
 * Redis fault test trusts these helpers, so if a "pause" didn't really freeze
 * the server or the proxy could reorder bytes, those tests would be lying.
 */
import t, { type Test } from 'tap';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { fileURLToPath } from 'node:url';
import {
  decideRedisSkip,
  getFreePort,
  makeSelfSignedCert,
  opensslAvailable,
  redisServerAvailable,
  skipUnlessRedis,
  startRedis,
  tlsSupported,
  type RedisProcess,
} from './helpers/redis-server.js';
import { startProxy, type TcpProxy } from './helpers/tcp-proxy.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const redisOpts = skipUnlessRedis();

// ---------------------------------------------------------------------------
// Raw RESP client: deliberately dumb so it can observe exactly what arrives.
// ---------------------------------------------------------------------------

interface RawClient {
  socket: net.Socket;
  send(...args: string[]): void;
  /** Resolve with `n` bytes of reply data, or null if they don't arrive in time. */
  read(minBytes: number, timeoutMs: number): Promise<string | null>;
  /** Resolve once the socket closed (with the error, if any). */
  closed: Promise<Error | undefined>;
}

function resp(...args: string[]): string {
  return `*${args.length}\r\n${args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join('')}`;
}

function rawConnect(port: number, opts: { ca?: string } = {}): Promise<RawClient> {
  return new Promise((resolve, reject) => {
    let buf = Buffer.alloc(0);
    let waiter: (() => void) | undefined;
    let lastError: Error | undefined;
    const onConnect = (): void => {
      socket.off('error', reject);
      socket.on('error', (e) => (lastError = e));
      resolve(client);
    };
    const socket: net.Socket =
      opts.ca !== undefined
        ? tls.connect({ host: '127.0.0.1', port, ca: fs.readFileSync(opts.ca) }, onConnect)
        : net.connect({ host: '127.0.0.1', port }, onConnect);
    socket.once('error', reject);
    socket.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      waiter?.();
    });
    const closed = new Promise<Error | undefined>((res) => socket.on('close', () => res(lastError)));
    const client: RawClient = {
      socket,
      closed,
      send: (...args) => socket.write(resp(...args)),
      read: (minBytes, timeoutMs) =>
        new Promise((res) => {
          const check = (): boolean => {
            if (buf.length < minBytes) return false;
            const out = buf.subarray(0, minBytes).toString('utf8');
            buf = buf.subarray(minBytes);
            waiter = undefined;
            clearTimeout(timer);
            res(out);
            return true;
          };
          const timer = setTimeout(() => {
            waiter = undefined;
            res(null);
          }, timeoutMs);
          if (!check()) waiter = check;
        }),
    };
  });
}

async function withClient(t: Tap, port: number, opts: { ca?: string } = {}): Promise<RawClient> {
  const c = await rawConnect(port, opts);
  t.teardown(() => void c.socket.destroy());
  return c;
}

type Tap = Test;

/** Alive = /proc entry exists and isn't a zombie (PID 1 in containers may not reap). */
function processAlive(pid: number): boolean {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return !/^\d+ \(.*\) [ZX] /.test(stat);
  } catch {
    return false;
  }
}

async function eventually(cond: () => boolean, timeoutMs: number): Promise<boolean> {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    if (cond()) return true;
    await new Promise((r) => setTimeout(r, 25));
  }
  return cond();
}

async function redis(t: Tap, opts: Parameters<typeof startRedis>[0] = {}): Promise<RedisProcess> {
  const r = await startRedis(opts);
  t.teardown(() => r.stop());
  return r;
}

async function proxyTo(t: Tap, r: RedisProcess): Promise<TcpProxy> {
  const p = await startProxy({ port: r.port });
  t.teardown(() => p.close());
  return p;
}

// ---------------------------------------------------------------------------
// skip / CI guard
// ---------------------------------------------------------------------------

t.test('skipUnlessRedis: skip locally, fail on CI', async (t) => {
  t.same(decideRedisSkip(true, {}), {});
  t.same(decideRedisSkip(true, { CI: 'true' }), {});
  t.same(decideRedisSkip(false, {}), { skip: 'redis-server not installed' });
  t.same(decideRedisSkip(false, { CI: 'false' }), { skip: 'redis-server not installed' });
  t.throws(() => decideRedisSkip(false, { CI: 'true' }), /redis-server is required when CI=true/);

  // Same decisions through the real PATH probe, with an injected environment.
  const empty = fs.mkdtempSync(path.join(os.tmpdir(), 'empty-path-'));
  t.teardown(() => fs.rmSync(empty, { recursive: true, force: true }));
  t.equal(redisServerAvailable(empty), false);
  t.same(skipUnlessRedis({ PATH: empty }), { skip: 'redis-server not installed' });
  t.throws(() => skipUnlessRedis({ PATH: empty, CI: 'true' }), /required when CI=true/);
  if (redisServerAvailable()) t.same(skipUnlessRedis({ PATH: process.env.PATH, CI: 'true' }), {});
});

// ---------------------------------------------------------------------------
// redis-server
// ---------------------------------------------------------------------------

t.test('getFreePort returns a bindable port', async (t) => {
  const port = await getFreePort();
  t.ok(port > 0 && port !== 6379);
  const srv = net.createServer();
  await new Promise<void>((res) => srv.listen(port, '127.0.0.1', res));
  await new Promise((res) => srv.close(res));
});

t.test('startRedis: private server, redis-cli commands', redisOpts, async (t) => {
  const r = await redis(t);
  t.not(r.port, 6379);
  t.equal(r.url, `redis://127.0.0.1:${r.port}`);
  t.ok(processAlive(r.pid));
  t.equal(await r.command('SET', 'stock:AAPL', '190.5', 'PX', '60000'), 'OK');
  t.equal(await r.command('GET', 'stock:AAPL'), '190.5');
  const pttl = Number(await r.command('PTTL', 'stock:AAPL'));
  t.ok(pttl > 0 && pttl <= 60000, `PTTL ${pttl}`);
  t.equal(await r.command('GET', 'missing'), '', 'nil is an empty string');
  t.equal(await r.command('CONFIG', 'GET', 'save'), 'save', 'persistence disabled');
});

t.test('startRedis refuses the shared port 6379', async (t) => {
  await t.rejects(startRedis({ port: 6379 }), /6379/);
});

t.test('extra args are passed through', redisOpts, async (t) => {
  const r = await redis(t, { args: ['--rename-command', 'KEYS', ''] });
  t.match(await r.command('KEYS', '*'), /unknown command/);
});

t.test('a failing server reports its output', redisOpts, async (t) => {
  await t.rejects(startRedis({ args: ['--no-such-directive', 'x'] }), /exited early[\s\S]*Bad directive/);
});

t.test('pause freezes the server, resume answers the pending PING', redisOpts, async (t) => {
  const r = await redis(t);
  const c = await withClient(t, r.port);
  r.pause();
  c.send('PING');
  t.equal(await c.read(7, 300), null, 'no reply within 300 ms while paused');
  r.resume();
  t.equal(await c.read(7, 10_000), '+PONG\r\n', 'reply arrives after resume');
});

t.test('kill + restart on the same port', redisOpts, async (t) => {
  const r = await redis(t);
  const { port } = r;
  const firstPid = r.pid;
  await r.command('SET', 'k', 'v');
  await r.kill();
  t.notOk(processAlive(firstPid), 'kill resolves after exit');
  await t.rejects(rawConnect(port), { code: 'ECONNREFUSED' });
  await t.rejects(r.command('PING'), /failed/);

  await r.restart();
  t.equal(r.port, port, 'same port');
  t.not(r.pid, firstPid, 'new process');
  t.equal(await r.command('GET', 'k'), '', 'data gone: no persistence');
  t.equal(await r.command('SET', 'k', 'v2'), 'OK');
  t.equal(await r.command('GET', 'k'), 'v2');

  // restart also works on a live (even paused) server
  r.pause();
  await r.restart();
  t.equal(await r.command('PING'), 'PONG');
});

t.test('restart waits for a briefly busy port', redisOpts, async (t) => {
  const r = await redis(t);
  await r.kill();
  // Something else grabs the port for a moment (e.g. a lingering listener).
  const squatter = net.createServer();
  await new Promise<void>((res) => squatter.listen(r.port, '127.0.0.1', res));
  setTimeout(() => squatter.close(), 400);
  const start = Date.now();
  await r.restart();
  t.ok(Date.now() - start >= 300, 'restart retried until the port was free');
  t.equal(await r.command('PING'), 'PONG');
});

t.test('kill with SIGTERM works on a paused server', redisOpts, async (t) => {
  const r = await redis(t);
  const pid = r.pid;
  r.pause();
  await r.kill('SIGTERM');
  t.notOk(processAlive(pid));
});

t.test('stop is graceful, idempotent and works when paused', redisOpts, async (t) => {
  const r = await startRedis();
  const pid = r.pid;
  r.pause();
  await r.stop();
  await r.stop();
  t.notOk(processAlive(pid));
});

t.test('password-protected server', redisOpts, async (t) => {
  const r = await redis(t, { password: 's3cret' });
  t.equal(r.url, `redis://:s3cret@127.0.0.1:${r.port}`);
  t.equal(await r.command('SET', 'a', '1'), 'OK');
  t.equal(await r.command('GET', 'a'), '1');
  const c = await withClient(t, r.port);
  c.send('PING');
  t.match(await c.read(7, 1000), /^-NOAUTH/, 'unauthenticated PING rejected');
  await r.restart();
  t.equal(await r.command('PING'), 'PONG', 'restart keeps the password');
});

t.test('leftover servers are killed when the test process dies', redisOpts, async (t) => {
  const helper = path.join(here, 'helpers', 'redis-server.ts');
  for (const mode of ['throw', 'SIGTERM'] as const) {
    const script = `
      import { startRedis } from ${JSON.stringify(helper)};
      const r = await startRedis();
      r.pause();
      console.log(r.pid);
      ${mode === 'throw' ? "throw new Error('boom');" : "process.kill(process.pid, 'SIGTERM'); setTimeout(() => {}, 5000);"}
    `;
    const child = spawn(process.execPath, ['--import=tsx', '--input-type=module', '-e', script], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((res) =>
      child.on('exit', (c, s) => res([c, s])),
    );
    const pid = Number(out.trim());
    t.ok(pid > 0, `${mode}: child started redis (pid ${pid})`);
    if (mode === 'throw') t.not(code, 0, 'child failed');
    else t.equal(signal, 'SIGTERM', 'child still dies of SIGTERM');
    t.ok(await eventually(() => !processAlive(pid), 10_000), `${mode}: redis-server ${pid} was killed`);
  }
});

// ---------------------------------------------------------------------------
// TCP proxy
// ---------------------------------------------------------------------------

t.test('proxy forwards both ways and counts connections', redisOpts, async (t) => {
  const r = await redis(t);
  const p = await proxyTo(t, r);
  t.equal(p.url, `redis://127.0.0.1:${p.port}`);
  const c = await withClient(t, p.port);
  c.send('PING');
  t.equal(await c.read(7, 1000), '+PONG\r\n');
  t.equal(p.connections, 1);
  c.send('SET', 'via', 'proxy');
  t.equal(await c.read(5, 1000), '+OK\r\n');
  t.equal(await r.command('GET', 'via'), 'proxy');
  c.socket.end();
  await c.closed;
  t.ok(await eventually(() => p.connections === 0, 10_000), 'connection count drops');

  const withPw = await startProxy({ port: r.port, password: 'p@ss' });
  t.teardown(() => withPw.close());
  t.equal(withPw.url, `redis://:p%40ss@127.0.0.1:${withPw.port}`);
});

t.test('latency delays each PING by at least the latency, keeping order', redisOpts, async (t) => {
  const r = await redis(t);
  const p = await proxyTo(t, r);
  const c = await withClient(t, p.port);
  p.setLatency(100);
  const start = Date.now();
  c.send('PING');
  t.equal(await c.read(7, 10_000), '+PONG\r\n');
  const rtt = Date.now() - start;
  t.ok(rtt >= 100, `RTT ${rtt} ms ≥ 100 ms`);

  // Changing latency mid-stream must not let later chunks overtake earlier ones.
  const expected: string[] = [];
  for (let i = 0; i < 30; i++) {
    p.setLatency(i % 2 === 0 ? 80 : 0);
    c.send('ECHO', `msg-${i}`);
    expected.push(`$${`msg-${i}`.length}\r\nmsg-${i}\r\n`);
    await new Promise((res) => setImmediate(res));
  }
  const want = expected.join('');
  t.equal(await c.read(Buffer.byteLength(want), 3000), want, 'replies in order');
  p.setLatency(0);
});

t.test('blackhole holds bytes until flush, then delivers them intact', redisOpts, async (t) => {
  const r = await redis(t);
  const p = await proxyTo(t, r);
  const c = await withClient(t, p.port);
  p.blackhole();
  c.send('PING');
  t.equal(await c.read(7, 300), null, 'PING not answered while blackholed');
  t.ok(p.pendingBytes > 0, 'request is held, not dropped');
  t.equal(await r.command('GET', 'big'), '', 'command did not reach redis');

  const big = 'x'.repeat(200_000);
  c.send('SET', 'big', big);
  c.send('GET', 'big');
  p.flush();
  const want = `+PONG\r\n+OK\r\n$${big.length}\r\n${big}\r\n`;
  t.equal(await c.read(Buffer.byteLength(want), 3000), want, 'all replies intact and in order');

  // Replies produced by redis while blackholed are held too (server→client).
  const c2 = await withClient(t, p.port);
  r.pause();
  c2.send('ECHO', 'held-reply'); // reaches the frozen server before the partition
  await new Promise((res) => setTimeout(res, 50));
  p.blackhole();
  r.resume(); // redis answers now, into the partition
  t.equal(await c2.read(1, 300), null, 'reply held by the proxy');
  t.ok(p.pendingBytes > 0);
  p.flush();
  t.equal(await c2.read(17, 1000), '$10\r\nheld-reply\r\n');
  t.equal(p.pendingBytes, 0);
});

t.test('reset closes current connections, new ones still work', redisOpts, async (t) => {
  const r = await redis(t);
  const p = await proxyTo(t, r);
  const c = await withClient(t, p.port);
  c.send('PING');
  t.equal(await c.read(7, 1000), '+PONG\r\n');
  p.blackhole();
  c.send('PING');
  p.reset();
  const err = await c.closed;
  t.ok(c.socket.destroyed, 'client socket closed');
  t.match(err, { code: 'ECONNRESET' }, 'closed with RST');
  t.ok(await eventually(() => p.connections === 0, 10_000));
  p.flush();
  const c2 = await withClient(t, p.port);
  c2.send('PING');
  t.equal(await c2.read(7, 1000), '+PONG\r\n');
});

t.test('refuse destroys new connections; existing ones keep working', redisOpts, async (t) => {
  const r = await redis(t);
  const p = await proxyTo(t, r);
  const old = await withClient(t, p.port);
  p.refuse(true);
  const c = await rawConnect(p.port).catch((e: Error) => e);
  if (!(c instanceof Error)) {
    t.teardown(() => void c.socket.destroy());
    c.send('PING');
    t.equal(await c.read(1, 300), null, 'no reply');
    await c.closed;
  }
  t.pass('refused connection closed');
  old.send('PING');
  t.equal(await old.read(7, 1000), '+PONG\r\n', 'existing connection unaffected');
  p.refuse(false);
  const c2 = await withClient(t, p.port);
  c2.send('PING');
  t.equal(await c2.read(7, 1000), '+PONG\r\n');
});

t.test('proxy to a dead upstream closes the client', redisOpts, async (t) => {
  const r = await redis(t);
  const p = await proxyTo(t, r);
  await r.kill();
  const c = await withClient(t, p.port);
  await c.closed;
  t.ok(c.socket.destroyed);
});

// ---------------------------------------------------------------------------
// TLS
// ---------------------------------------------------------------------------

const tlsSkip = !redisServerAvailable()
  ? (redisOpts.skip ?? 'redis-server not installed')
  : !opensslAvailable()
    ? 'openssl CLI not installed'
    : !tlsSupported()
      ? 'redis-server built without TLS'
      : undefined;

t.test('TLS redis-server answers PING over TLS', tlsSkip ? { skip: tlsSkip } : {}, async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'redis-tls-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const files = await makeSelfSignedCert(dir);
  const r = await redis(t, { tls: files, password: 'pw' });
  t.equal(r.url, `rediss://:pw@127.0.0.1:${r.port}`);
  const c = await withClient(t, r.port, { ca: files.ca });
  c.send('AUTH', 'pw');
  c.send('PING');
  t.equal(await c.read(12, 10_000), '+OK\r\n+PONG\r\n');
  t.equal(await r.command('SET', 'secure', 'yes'), 'OK', 'redis-cli --tls works');
  t.equal(await r.command('GET', 'secure'), 'yes');

  // Plain TCP to the TLS port gets nowhere.
  const plain = await withClient(t, r.port);
  plain.send('PING');
  t.not(await plain.read(7, 300), '+PONG\r\n');

  // The proxy passes TLS through untouched.
  const p = await startProxy({ port: r.port, tls: true, password: 'pw' });
  t.teardown(() => p.close());
  t.equal(p.url, `rediss://:pw@127.0.0.1:${p.port}`);
  const viaProxy = await withClient(t, p.port, { ca: files.ca });
  viaProxy.send('AUTH', 'pw');
  viaProxy.send('PING');
  t.equal(await viaProxy.read(12, 10_000), '+OK\r\n+PONG\r\n');
});
