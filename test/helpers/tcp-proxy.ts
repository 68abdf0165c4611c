/**
 * An in-process TCP forwarder for link faults between a node and Redis: cut every connection, or
 * blackhole it (bytes vanish, sockets stay open), which is what a half-open or starved link looks
 * like to a client that only notices a closed socket.
 */
import { connect, createServer, type Server, type Socket } from 'node:net';

export interface TcpProxy {
  readonly port: number;
  /** redis://127.0.0.1:<port>, for pointing REDIS_URL through the proxy. */
  readonly url: string;
  /**
   * While on, bytes in both directions are dropped (never delivered later) and no socket is closed;
   * new connections are still accepted and connected upstream.
   */
  blackhole(on: boolean): void;
  /** Client connections currently open through the proxy. */
  connections(): number;
  /** Destroys every current connection, both sides; new ones are still accepted. */
  closeAll(): void;
  /** Destroys every connection and stops listening. */
  stop(): Promise<void>;
}

const running = new Set<TcpProxy>();

export function startTcpProxy(targetPort: number): Promise<TcpProxy> {
  let blackholed = false;
  const pairs = new Set<{ client: Socket; upstream: Socket }>();

  const server: Server = createServer((client) => {
    const upstream = connect(targetPort, '127.0.0.1');
    const pair = { client, upstream };
    pairs.add(pair);
    const teardown = () => {
      pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    forward(client, upstream, () => blackholed);
    forward(upstream, client, () => blackholed);
    for (const socket of [client, upstream]) {
      socket.on('error', teardown);
      socket.on('close', teardown);
    }
  });

  const proxy = new Promise<TcpProxy>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      if (address === null || typeof address === 'string') return reject(new Error(`unexpected listen address ${String(address)}`));
      const closeAll = () => {
        for (const { client, upstream } of pairs) {
          client.destroy();
          upstream.destroy();
        }
        pairs.clear();
      };
      const tcpProxy: TcpProxy = {
        port: address.port,
        url: `redis://127.0.0.1:${address.port}`,
        blackhole(on) {
          blackholed = on;
        },
        connections: () => pairs.size,
        closeAll,
        stop() {
          running.delete(tcpProxy);
          closeAll();
          return new Promise((done) => server.close(() => done()));
        },
      };
      running.add(tcpProxy);
      resolve(tcpProxy);
    });
  });
  return proxy;
}

/** Stops every proxy started by this worker; for afterAll. */
export async function stopAllProxies(): Promise<void> {
  await Promise.all([...running].map((p) => p.stop()));
}

/** Copies `from` to `to` with backpressure, dropping data while `dropping()`; forwards a half-close. */
function forward(from: Socket, to: Socket, dropping: () => boolean): void {
  from.on('data', (chunk: Buffer) => {
    if (dropping() || to.destroyed) return;
    if (!to.write(chunk)) {
      from.pause();
      to.once('drain', () => from.resume());
    }
  });
  from.on('end', () => to.end());
}
