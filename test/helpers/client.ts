/** A real WebSocket client (the `ws` package) that queues every message for assertions. */
import WebSocket from 'ws';
import { signToken, type TokenRequest } from '../../src/auth.js';
import { TEST_SECRET } from './node.js';
import type { WireMessage } from '../../src/messages.js';
import { createWaiters } from './wait.js';

/** A received server message (the protocol's own type). */
export type Envelope = WireMessage;

export interface TestClient {
  readonly ws: WebSocket;
  /** Every message received so far, in order (consumed ones removed by `next`). */
  readonly received: Envelope[];
  /** Resolves with the first queued (or future) message matching, or rejects after `timeoutMs`. */
  next(match?: (e: Envelope) => boolean, timeoutMs?: number): Promise<Envelope>;
  /** Resolves if nothing matching arrives within `ms`; rejects otherwise. */
  expectNothing(match?: (e: Envelope) => boolean, ms?: number): Promise<void>;
  send(frame: unknown): void;
  /** Resolves with the close code and reason. */
  closed: Promise<{ code: number; reason: string }>;
  close(): void;
}

export function token(userId = 'alice', extra: Partial<TokenRequest> = {}): string {
  return signToken({ secret: TEST_SECRET, userId, rooms: ['*'], ttlSeconds: 3600, ...extra });
}

export interface ConnectOptions {
  readonly query?: string;
  readonly protocols?: string[];
  readonly headers?: Record<string, string>;
  /** ws option: answer pings automatically (default true). */
  readonly autoPong?: boolean;
}

/** Opens a socket; the URL gets `?token=<tok>` unless `query` is given. Does not wait for `connected`. */
export function open(url: string, tok: string | undefined, opts: ConnectOptions = {}): TestClient {
  const query = opts.query ?? (tok === undefined ? '' : `?token=${encodeURIComponent(tok)}`);
  const ws = new WebSocket(url + query, opts.protocols ?? [], {
    headers: opts.headers ?? {},
    autoPong: opts.autoPong ?? true,
    maxPayload: 64 * 1024 * 1024,
  });
  const received: Envelope[] = [];
  const { wake, until } = createWaiters();
  ws.on('message', (raw, isBinary) => {
    received.push(isBinary ? { type: '<binary>' } : (JSON.parse(String(raw)) as Envelope));
    wake();
  });
  ws.on('error', () => {});
  let isClosed = false;
  const closed = new Promise<{ code: number; reason: string }>((resolve) =>
    ws.on('close', (code, reason) => {
      isClosed = true; // before waking waiters, so they see the close at once
      resolve({ code, reason: reason.toString() });
      wake();
    }),
  );

  const next: TestClient['next'] = (match = () => true, timeoutMs = 3000) =>
    until(
      () => {
        const index = received.findIndex(match);
        if (index >= 0) return received.splice(index, 1)[0]!;
        if (isClosed) throw new Error(`socket closed while waiting; received: ${JSON.stringify(received)}`);
        return undefined;
      },
      timeoutMs,
      () => `timed out waiting for a message; received: ${JSON.stringify(received).slice(0, 500)}`,
    );

  return {
    ws,
    received,
    next,
    async expectNothing(match = () => true, ms = 300) {
      await new Promise((r) => setTimeout(r, ms));
      const found = received.find(match);
      if (found) throw new Error(`unexpected message ${JSON.stringify(found)}`);
    },
    send: (frame) => ws.send(typeof frame === 'string' || Buffer.isBuffer(frame) ? frame : JSON.stringify(frame)),
    closed,
    close: () => ws.close(),
  };
}

/** Opens a socket and waits for `connected`. */
export async function connect(url: string, userId = 'alice', extra: Partial<TokenRequest> = {}, opts: ConnectOptions = {}): Promise<TestClient> {
  const client = open(url, token(userId, extra), opts);
  await client.next((e) => e.type === 'connected');
  return client;
}

/** Joins and waits for room_joined. */
export async function join(client: TestClient, room: string): Promise<void> {
  const id = `join-${room}-${Math.random()}`;
  client.send({ type: 'join_room', room, id });
  const reply = await client.next((e) => e.id === id);
  if (reply.type !== 'room_joined') throw new Error(`join ${room} failed: ${JSON.stringify(reply)}`);
}

/** Resolves with the HTTP status of a refused upgrade (the ws client's unexpected-response). */
export function upgradeStatus(url: string, tok: string, headers: Record<string, string> = {}): Promise<number> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`${url}?token=${tok}`, { headers });
    ws.on('unexpected-response', (_req, res) => {
      resolve(res.statusCode ?? 0);
      ws.terminate();
    });
    ws.on('open', () => {
      ws.close();
      reject(new Error('upgrade was accepted'));
    });
    ws.on('error', () => {});
  });
}
