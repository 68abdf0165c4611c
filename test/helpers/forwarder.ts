/**
 * A TCP forwarder whose target can change: a fixed address for a backend slot whose node restarts
 * on a new port (HAProxy's servers are fixed; a node killed with open connections cannot bind its
 * old port again until their TIME_WAIT ends, about 60 s).
 */
import { createServer, connect, type Socket } from 'node:net';
import type { AddressInfo } from 'node:net';

export interface Forwarder {
  readonly port: number;
  /** New connections go to 127.0.0.1:<port>; open ones stay where they are. */
  retarget(port: number): void;
  stop(): Promise<void>;
}

const running = new Set<Forwarder>();

export async function startForwarder(target: number): Promise<Forwarder> {
  let current = target;
  const sockets = new Set<Socket>();
  const server = createServer((client) => {
    const upstream = connect(current, '127.0.0.1');
    sockets.add(client).add(upstream);
    const end = (): void => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    for (const socket of [client, upstream]) socket.on('error', end).on('close', end);
    client.pipe(upstream).pipe(client);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const forwarder: Forwarder = {
    port: (server.address() as AddressInfo).port,
    retarget: (port) => void (current = port),
    stop: () =>
      new Promise((resolve) => {
        running.delete(forwarder);
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };
  running.add(forwarder);
  return forwarder;
}

export async function stopAllForwarders(): Promise<void> {
  await Promise.all([...running].map((f) => f.stop()));
}
