/**
 * ws-edge/client's HTTP fallback socket (src/client/transport.ts) against a scripted HTTP server
 * on port 0: the stream address it derives from the WebSocket endpoint, POSTs answered 429/503
 * sent again with the same seq, and the token of a refresh_token taken used by the POSTs after it.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { BEARER_PREFIX, PROTOCOL } from '../../src/messages.js';
import { FallbackSocket, streamUrl } from '../../src/client/transport.js';
import { waitFor } from '../helpers/wait.js';

describe('streamUrl', () => {
  it('replaces only a trailing /connect of the path, keeping host and query', () => {
    expect(streamUrl('wss://connect.example.com/api/v1/ws/connect')).toBe('https://connect.example.com/api/v1/ws/stream?');
    expect(streamUrl('ws://127.0.0.1:8080/api/v1/ws/connect?x=1')).toBe('http://127.0.0.1:8080/api/v1/ws/stream?x=1&');
    expect(streamUrl('wss://interconnect.io/api/v1/ws/connect')).toBe('https://interconnect.io/api/v1/ws/stream?');
  });
});

interface Post {
  readonly seq: number;
  readonly auth: string | undefined;
  readonly body: string;
}

/** Answers the stream with a session line and `connected`, and keeps it open; each POST with the next of `answers` (then 202). */
async function startScripted(answers: Array<{ status: number; retryAfter?: string }>) {
  const posts: Post[] = [];
  const server: Server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const query = new URL(req.url!, 'http://x').searchParams;
    if (req.method === 'GET') {
      res.writeHead(200, { 'content-type': 'application/x-ndjson' });
      res.write(`${JSON.stringify({ session_id: 's1' })}\n{"type":"connected"}\n`);
      return;
    }
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      posts.push({ seq: Number(query.get('seq')), auth: req.headers.authorization, body: Buffer.concat(chunks).toString() });
      const answer = answers.shift() ?? { status: 202 };
      res.writeHead(answer.status, answer.retryAfter === undefined ? {} : { 'retry-after': answer.retryAfter });
      res.end('{}');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `ws://127.0.0.1:${(server.address() as AddressInfo).port}/api/v1/ws/connect`;
  return { url, posts, stop: () => new Promise<void>((resolve) => (server.closeAllConnections(), server.close(() => resolve()))) };
}

let stop: (() => Promise<void>) | undefined;
afterEach(async () => {
  await stop?.();
  stop = undefined;
});

/** A fallback socket on the scripted server whose session line has arrived; `closes` records onclose. */
async function open(answers: Array<{ status: number; retryAfter?: string }>) {
  const scripted = await startScripted(answers);
  stop = scripted.stop;
  const socket = FallbackSocket(scripted.url, [PROTOCOL, `${BEARER_PREFIX}old`]);
  const closes: number[] = [];
  socket.onclose = (e) => void closes.push(e.code);
  // As the connection does: nothing is sent before `connected`, which follows the session line.
  await new Promise((resolve) => (socket.onmessage = resolve));
  return { socket, closes, posts: scripted.posts, close: () => socket.close() };
}

describe('FallbackSocket POSTs', () => {
  it('sends a POST answered 429 or 503 again with the same seq, after Retry-After or a backoff', async () => {
    const { socket, closes, posts, close } = await open([{ status: 429, retryAfter: '0.01' }, { status: 503 }]);
    socket.send('{"type":"ping","id":"1"}');
    socket.send('{"type":"ping","id":"2"}');
    await waitFor('posts.length 4', () => posts.length === 4, 5000);
    expect(posts.map((p) => p.seq)).toEqual([1, 1, 1, 2]);
    expect(posts.map((p) => p.body)).toEqual(['{"type":"ping","id":"1"}', '{"type":"ping","id":"1"}', '{"type":"ping","id":"1"}', '{"type":"ping","id":"2"}']);
    expect(closes).toEqual([]);
    close();
  });

  it('closes with 1006 after 5 retries, at once on another refusal, and at once when asked to wait more than 4 s', async () => {
    const busy = { status: 503, retryAfter: '0.01' };
    const first = await open([busy, busy, busy, busy, busy, busy]);
    first.socket.send('{"type":"ping","id":"1"}');
    await waitFor('first.closes.length 1', () => first.closes.length === 1, 5000);
    expect(first.closes).toEqual([1006]);
    expect(first.posts.map((p) => p.seq)).toEqual([1, 1, 1, 1, 1, 1]);
    await stop!();

    const second = await open([{ status: 401 }]);
    second.socket.send('{"type":"ping","id":"1"}');
    await waitFor('second.closes.length 1', () => second.closes.length === 1, 5000);
    expect(second.closes).toEqual([1006]);
    expect(second.posts).toHaveLength(1);
    await stop!();

    // An address blocked for failed tokens (429, Retry-After: 60): reconnect with the backoff, not a minute of frozen sends.
    const third = await open([{ status: 429, retryAfter: '60' }]);
    third.socket.send('{"type":"ping","id":"1"}');
    await waitFor('third.closes.length 1', () => third.closes.length === 1, 5000);
    expect(third.closes).toEqual([1006]);
    expect(third.posts).toHaveLength(1);
  });

  it('carries the token of a refresh_token taken on the POSTs after it', async () => {
    const { socket, posts, close } = await open([]);
    socket.send('{"type":"ping","id":"1"}');
    socket.send('{"type":"refresh_token","token":"new","id":"2"}');
    socket.send('{"type":"ping","id":"3"}');
    await waitFor('posts.length 3', () => posts.length === 3, 5000);
    expect(posts.map((p) => p.auth)).toEqual(['Bearer old', 'Bearer old', 'Bearer new']);
    close();
  });

  it('keeps the old token when the refresh_token POST is not taken', async () => {
    const { socket, closes, posts } = await open([{ status: 401 }]);
    socket.send('{"type":"refresh_token","token":"new","id":"1"}');
    await waitFor('closes.length 1', () => closes.length === 1, 5000);
    expect(posts.map((p) => p.auth)).toEqual(['Bearer old']);
  });
});
