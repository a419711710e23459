/**
 * A TCP man-in-the-middle between the service and Redis for network faults.
 *
 * Why not just pause/kill redis-server? Those fake *server* faults. Network
 * faults look different to a client: a partition keeps the socket open but
 * silently stops delivering bytes (blackhole), a slow link adds latency to
 * every packet, a middlebox kills connections (reset) or refuses new ones.
 * Clients must survive all of these without ever pairing a reply with the
 * wrong command, so the proxy's core invariant is: on a live connection bytes
 * are never reordered or dropped — they are only delayed or held. Bytes are
 * lost only together with the connection that carried them (reset()).
 *
 * The proxy is byte-transparent, so it works for TLS Redis too (the TLS
 * session is end-to-end between client and server).
 */
import net from 'node:net';

export interface ProxyTarget {
  /** Upstream host; defaults to 127.0.0.1. */
  host?: string;
  /** Upstream port (the private redis-server). */
  port: number;
  /** Embedded in `url` as `:password@`, for clients configured by URL. */
  password?: string;
  /** Upstream speaks TLS: `url` uses `rediss://`. Bytes are passed through untouched. */
  tls?: boolean;
}

export interface TcpProxy {
  /** Port the proxy listens on (127.0.0.1). */
  readonly port: number;
  /** `redis://127.0.0.1:<port>` (rediss:// and :password@ when configured). */
  readonly url: string;
  /** Number of currently open client connections. */
  readonly connections: number;
  /** Bytes currently held or delayed, both directions, all connections. */
  readonly pendingBytes: number;
  /** Delay every chunk, both directions, by `ms` (order is preserved). 0 disables. */
  setLatency(ms: number): void;
  /** Hold all bytes in both directions (buffered, never dropped) until flush(). */
  blackhole(): void;
  /** Deliver everything held, in order, and resume normal forwarding. */
  flush(): void;
  /** Kill every current connection (RST when possible); new ones are still accepted. */
  reset(): void;
  /** While on, new incoming connections are destroyed immediately. */
  refuse(on: boolean): void;
  /** Stop listening and destroy all connections. */
  close(): Promise<void>;
}

/** An item travelling one way: a chunk of bytes, or the sender's EOF/error. */
type Payload = { kind: 'data'; data: Buffer } | { kind: 'end' } | { kind: 'destroy' };
/** A payload stamped with the earliest time it may be delivered. */
type Item = Payload & { due: number };

/** Shared, proxy-wide fault switches read by every pipe. */
interface Faults {
  latencyMs: number;
  holding: boolean;
}

/**
 * One direction of one connection. A single FIFO per direction is what
 * guarantees ordering: latency only stamps a due time on each item and the
 * head must leave before anything behind it, so a later chunk with a shorter
 * delay can never overtake an earlier one. EOF travels through the same queue
 * so a FIN never overtakes data either.
 */
class Pipe {
  private readonly queue: Item[] = [];
  private timer: NodeJS.Timeout | undefined;
  private timerDue = 0;

  constructor(
    private readonly dst: net.Socket,
    private readonly faults: Faults,
  ) {}

  get pendingBytes(): number {
    let n = 0;
    for (const it of this.queue) if (it.kind === 'data') n += it.data.length;
    return n;
  }

  push(payload: Payload): void {
    this.queue.push({ ...payload, due: Date.now() + this.faults.latencyMs });
    this.pump();
  }

  /** Deliver everything queued right now, ignoring remaining delays. */
  flushAll(): void {
    for (const it of this.queue) it.due = 0;
    this.pump();
  }

  pump(): void {
    if (this.faults.holding) return;
    const now = Date.now();
    while (this.queue.length > 0) {
      const head = this.queue[0]!;
      if (head.due > now) {
        this.schedule(head.due);
        return;
      }
      this.queue.shift();
      this.deliver(head);
    }
    this.clearTimer();
  }

  /** Drop everything (only used when the connection itself is being killed). */
  discard(): void {
    this.queue.length = 0;
    this.clearTimer();
  }

  private deliver(item: Item): void {
    if (this.dst.destroyed) return;
    switch (item.kind) {
      case 'data':
        this.dst.write(item.data);
        break;
      case 'end':
        this.dst.end();
        break;
      case 'destroy':
        resetSocket(this.dst);
        break;
    }
  }

  private schedule(due: number): void {
    if (this.timer && this.timerDue === due) return;
    this.clearTimer();
    this.timerDue = due;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.pump();
    }, Math.max(0, due - Date.now()));
  }

  private clearTimer(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
  }
}

/** RST if the runtime supports it (Node ≥ 16.17/18.3), otherwise a plain destroy. */
function resetSocket(sock: net.Socket): void {
  if (sock.destroyed) return;
  const s = sock as net.Socket & { resetAndDestroy?: () => net.Socket };
  try {
    if (typeof s.resetAndDestroy === 'function' && !sock.connecting) s.resetAndDestroy();
    else sock.destroy();
  } catch {
    sock.destroy();
  }
}

interface Conn {
  client: net.Socket;
  upstream: net.Socket;
  toUpstream: Pipe;
  toClient: Pipe;
}

/** Start a proxy on 127.0.0.1:<free port> forwarding to `target`. */
export async function startProxy(target: ProxyTarget): Promise<TcpProxy> {
  const host = target.host ?? '127.0.0.1';
  const faults: Faults = { latencyMs: 0, holding: false };
  const conns = new Set<Conn>();
  let refusing = false;

  const server = net.createServer({ allowHalfOpen: true }, (client) => {
    client.on('error', () => undefined);
    if (refusing) {
      resetSocket(client);
      return;
    }
    client.setNoDelay(true);
    const upstream = net.connect({ host, port: target.port, allowHalfOpen: true });
    upstream.setNoDelay(true);
    upstream.on('error', () => undefined);
    const conn: Conn = {
      client,
      upstream,
      toUpstream: new Pipe(upstream, faults),
      toClient: new Pipe(client, faults),
    };
    conns.add(conn);

    // Writes to a still-connecting socket are buffered by Node, so client
    // bytes can be queued before the upstream connection is established.
    client.on('data', (data) => conn.toUpstream.push({ kind: 'data', data }));
    upstream.on('data', (data) => conn.toClient.push({ kind: 'data', data }));
    client.on('end', () => conn.toUpstream.push({ kind: 'end' }));
    upstream.on('end', () => conn.toClient.push({ kind: 'end' }));

    // An abrupt close (RST, connect failure) is forwarded as an abrupt close,
    // but only after the bytes that preceded it — and, while blackholed, not
    // before flush(): a partitioned client must not learn the server died.
    client.on('close', (hadError) => {
      if (hadError) conn.toUpstream.push({ kind: 'destroy' });
      maybeForget(conn);
    });
    upstream.on('close', (hadError) => {
      if (hadError) conn.toClient.push({ kind: 'destroy' });
      else if (!upstream.readableEnded) conn.toClient.push({ kind: 'end' });
      maybeForget(conn);
    });
  });

  function maybeForget(conn: Conn): void {
    if (conn.client.destroyed && conn.upstream.destroyed) {
      conn.toClient.discard();
      conn.toUpstream.discard();
      conns.delete(conn);
    }
  }

  server.on('error', () => undefined);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  const addr = server.address();
  if (addr === null || typeof addr === 'string') throw new Error('proxy: no TCP address');
  const port = addr.port;
  const auth = target.password !== undefined ? `:${encodeURIComponent(target.password)}@` : '';
  const url = `${target.tls ? 'rediss' : 'redis'}://${auth}127.0.0.1:${port}`;

  // RST only for reset(): on Node 20 a socket torn down with resetAndDestroy() while the
  // process is closing can leave the exit-time handle cleanup spinning forever, so close()
  // uses a plain destroy.
  const killAll = (rst: boolean): void => {
    for (const c of conns) {
      c.toClient.discard();
      c.toUpstream.discard();
      if (rst) {
        resetSocket(c.client);
        resetSocket(c.upstream);
      } else {
        c.client.destroy();
        c.upstream.destroy();
      }
    }
    conns.clear();
  };

  return {
    port,
    url,
    get connections(): number {
      let n = 0;
      for (const c of conns) if (!c.client.destroyed) n++;
      return n;
    },
    get pendingBytes(): number {
      let n = 0;
      for (const c of conns) n += c.toClient.pendingBytes + c.toUpstream.pendingBytes;
      return n;
    },
    setLatency(ms: number): void {
      if (!Number.isFinite(ms) || ms < 0) throw new RangeError(`invalid latency ${ms}`);
      faults.latencyMs = ms;
    },
    blackhole(): void {
      faults.holding = true;
    },
    flush(): void {
      faults.holding = false;
      for (const c of conns) {
        c.toUpstream.flushAll();
        c.toClient.flushAll();
      }
    },
    reset(): void {
      killAll(true);
    },
    refuse(on: boolean): void {
      refusing = on;
    },
    close(): Promise<void> {
      return new Promise<void>((resolve) => {
        server.close(() => resolve());
        killAll(false);
      });
    },
  };
}
