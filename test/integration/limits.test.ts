/**
 * Limits, end to end on a real node: connections per user, message size (our 1009 and uWS's own
 * ceiling), the per-connection rate limit, the node-wide connection cap, and slow consumers.
 */
import type { Socket } from 'node:net';
import type { IncomingMessage } from 'node:http';
import { afterAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { connect, join, open, token, type Envelope, type TestClient } from '../helpers/client.js';
import { startTestNode, stopAllNodes, type TestNode } from '../helpers/node.js';
import { waitFor } from '../helpers/wait.js';

afterAll(stopAllNodes);

const ISO = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/;

/** A valid send_message frame of exactly `size` bytes (ASCII), padded inside `data`. */
function frameOfSize(size: number, room: string): string {
  const base = JSON.stringify({ type: 'send_message', room, data: { pad: '' } });
  const frame = JSON.stringify({ type: 'send_message', room, data: { pad: 'x'.repeat(size - base.length) } });
  expect(Buffer.byteLength(frame)).toBe(size);
  return frame;
}

async function ping(client: TestClient, id: string): Promise<Envelope> {
  client.send({ type: 'ping', id });
  return client.next((e) => e.id === id);
}

function rawSocket(client: TestClient): Socket {
  return (client.ws as unknown as { _socket: Socket })._socket;
}

interface Refusal {
  statusCode: number;
  headers: IncomingMessage['headers'];
  body: string;
}

/** An upgrade that must be answered with a plain HTTP response instead of 101. */
function refusedUpgrade(url: string, tok: string): Promise<Refusal> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`${url}?token=${encodeURIComponent(tok)}`);
    ws.on('open', () => {
      ws.terminate();
      reject(new Error('upgrade was accepted'));
    });
    ws.on('error', reject);
    ws.on('unexpected-response', (req, res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.on('end', () => {
        req.destroy();
        resolve({ statusCode: res.statusCode ?? 0, headers: res.headers, body });
      });
    });
  });
}

describe('connections per user (WS_MAX_CONNECTIONS_PER_USER=5)', () => {
  it('closes the sixth connection of a user with 4429 while the first five keep working', async () => {
    const node = await startTestNode();
    const first = await Promise.all([1, 2, 3, 4, 5].map(() => connect(node.url, 'alice')));

    const sixth = open(node.url, token('alice'));
    expect(await sixth.closed).toEqual({ code: 4429, reason: 'too many connections for this user' });
    expect(sixth.received).toEqual([]);
    expect(await node.metric('wsedge_auth_failures_total', { reason: 'user_limit' })).toBe(1);

    for (const [i, client] of first.entries()) {
      expect(await ping(client, `p${i}`)).toMatchObject({ type: 'pong', id: `p${i}` });
      expect(client.ws.readyState).toBe(WebSocket.OPEN);
    }
    // Another user is not affected by alice's count.
    const bob = await connect(node.url, 'bob');
    expect(await ping(bob, 'b')).toMatchObject({ type: 'pong', id: 'b' });
    expect(await node.metric('wsedge_connections')).toBe(6);
  });

  it('refuses exactly one of six simultaneous connections of a user', async () => {
    const node = await startTestNode();
    const six = Array.from({ length: 6 }, () => open(node.url, token('dave')));
    const outcomes = await Promise.all(
      six.map((c) =>
        Promise.race([
          c.next((e) => e.type === 'connected').then(() => 'connected'),
          c.closed.then(({ code }) => `closed ${code}`),
        ]),
      ),
    );
    expect(outcomes.filter((o) => o === 'connected')).toHaveLength(5);
    expect(outcomes.filter((o) => o === 'closed 4429')).toHaveLength(1);
    expect(await node.metric('wsedge_connections')).toBe(5);
  });

  it('frees the slot as soon as a connection closes', async () => {
    const node = await startTestNode();
    const five = await Promise.all([1, 2, 3, 4, 5].map(() => connect(node.url, 'carol')));
    const refused = open(node.url, token('carol'));
    expect((await refused.closed).code).toBe(4429);

    five[0]!.close();
    expect((await five[0]!.closed).code).toBe(1005);
    const replacement = await connect(node.url, 'carol');
    expect(await ping(replacement, 'r')).toMatchObject({ type: 'pong', id: 'r' });

    // The slot is taken again: the next one is refused.
    const again = open(node.url, token('carol'));
    expect((await again.closed).code).toBe(4429);
    expect(await node.metric('wsedge_auth_failures_total', { reason: 'user_limit' })).toBe(2);
  });
});

describe('message size', () => {
  it('accepts and delivers a frame of exactly WS_MESSAGE_MAX_SIZE bytes (4096)', async () => {
    const node = await startTestNode({ WS_MESSAGE_MAX_SIZE: '4096' });
    const sender = await connect(node.url, 'alice');
    const member = await connect(node.url, 'bob');
    await join(sender, 'channel:1');
    await join(member, 'channel:1');

    const frame = frameOfSize(4096, 'channel:1');
    sender.send(frame);
    const got = await member.next((e) => e.type === 'message.new');
    expect(got).toEqual({
      type: 'message.new',
      room: 'channel:1',
      data: JSON.parse(frame).data,
      sender: 'alice',
      user_id: 'alice',
      timestamp: expect.stringMatching(ISO),
    });
    expect(await ping(sender, 'still-open')).toMatchObject({ type: 'pong' });
    expect(await node.metric('wsedge_message_too_big_total', { kind: 'limit' })).toBe(0);
  });

  it('closes with 1009 "message too big" one byte over WS_MESSAGE_MAX_SIZE, and counts kind="limit"', async () => {
    const node = await startTestNode({ WS_MESSAGE_MAX_SIZE: '4096' });
    const sender = await connect(node.url, 'alice');
    const member = await connect(node.url, 'bob');
    await join(sender, 'channel:1');
    await join(member, 'channel:1');

    sender.send(frameOfSize(4097, 'channel:1'));
    expect(await sender.closed).toEqual({ code: 1009, reason: 'message too big' });
    await member.expectNothing((e) => e.type === 'message.new');
    expect(await ping(member, 'm')).toMatchObject({ type: 'pong' });
    expect(await node.metric('wsedge_message_too_big_total', { kind: 'limit' })).toBe(1);
    expect(await node.metric('wsedge_message_too_big_total', { kind: 'ceiling' })).toBe(0);
    expect(await node.metric('wsedge_connections_closed_total', { code: '1009' })).toBe(1);
  });

  it('still answers 1009 at exactly twice the cap, the uWS maxPayloadLength', async () => {
    const node = await startTestNode({ WS_MESSAGE_MAX_SIZE: '4096' });
    const sender = await connect(node.url, 'alice');
    sender.send(frameOfSize(8192, 'channel:1'));
    expect(await sender.closed).toEqual({ code: 1009, reason: 'message too big' });
    expect(await node.metric('wsedge_message_too_big_total', { kind: 'limit' })).toBe(1);
  });

  it('lets uWS drop a frame above twice the cap (client sees 1006) and counts kind="ceiling"', async () => {
    const node = await startTestNode({ WS_MESSAGE_MAX_SIZE: '4096' });
    const sender = await connect(node.url, 'alice');
    const other = await connect(node.url, 'bob');
    sender.send(frameOfSize(8193, 'channel:1'));
    expect((await sender.closed).code).toBe(1006);
    await waitFor('the server saw the close', () => node.connections() === 1);
    expect(await node.metric('wsedge_message_too_big_total', { kind: 'ceiling' })).toBe(1);
    expect(await node.metric('wsedge_message_too_big_total', { kind: 'limit' })).toBe(0);
    expect(await node.metric('wsedge_connections_closed_total', { code: '1006' })).toBe(1);
    expect(await ping(other, 'o')).toMatchObject({ type: 'pong' });
  });

  it('accepts and delivers a frame of exactly 1 MiB with the default cap, and closes 1009 at 1 MiB + 1', async () => {
    const node = await startTestNode();
    const sender = await connect(node.url, 'alice');
    const member = await connect(node.url, 'bob');
    await join(sender, 'channel:big');
    await join(member, 'channel:big');

    const frame = frameOfSize(1_048_576, 'channel:big');
    sender.send(frame);
    const got = await member.next((e) => e.type === 'message.new', 10_000);
    expect(got.room).toBe('channel:big');
    expect(got.sender).toBe('alice');
    expect(got.data).toEqual(JSON.parse(frame).data);
    // The sender is a member too and gets its own copy.
    expect((await sender.next((e) => e.type === 'message.new', 10_000)).data).toEqual(JSON.parse(frame).data);

    sender.send(frameOfSize(1_048_577, 'channel:big'));
    expect(await sender.closed).toEqual({ code: 1009, reason: 'message too big' });
    await member.expectNothing((e) => e.type === 'message.new');
    expect(await node.metric('wsedge_message_too_big_total', { kind: 'limit' })).toBe(1);
  });
});

describe('rate limit (WS_RATE_LIMIT=5, WS_RATE_BURST=5)', () => {
  it('answers a burst of 10 pings with 5 pongs and 5 rate_limited errors, and counts them', async () => {
    const node = await startTestNode({ WS_RATE_LIMIT: '5', WS_RATE_BURST: '5' });
    const client = await connect(node.url, 'alice');
    for (let i = 0; i < 10; i++) client.send({ type: 'ping', id: `p${i}` });

    const replies: Envelope[] = [];
    for (let i = 0; i < 10; i++) replies.push(await client.next((e) => e.type === 'pong' || e.type === 'error'));
    const pongs = replies.filter((e) => e.type === 'pong');
    const errors = replies.filter((e) => e.type === 'error');
    expect(pongs.map((e) => e.id)).toEqual(['p0', 'p1', 'p2', 'p3', 'p4']);
    expect(errors).toHaveLength(5);
    for (const error of errors) {
      expect(error).toEqual({
        type: 'error',
        data: { code: 'rate_limited', message: 'at most 5 messages per second', error: 'at most 5 messages per second' },
        timestamp: expect.stringMatching(ISO),
      });
    }
    await client.expectNothing((e) => e.type === 'pong' || e.type === 'error');
    expect(await node.metric('wsedge_rate_limited_total')).toBe(5);
    expect(await node.metric('wsedge_message_errors_total', { code: 'rate_limited' })).toBe(5);

    // The bucket refills at 5 per second: after a second the client is served again.
    await new Promise((r) => setTimeout(r, 1100));
    expect(await ping(client, 'later')).toMatchObject({ type: 'pong', id: 'later' });
    expect(client.ws.readyState).toBe(WebSocket.OPEN);
  });

  it('closes a client that keeps flooding with 4429 (WS_RATE_LIMIT_CLOSE_AFTER=20)', async () => {
    const node = await startTestNode({ WS_RATE_LIMIT: '5', WS_RATE_BURST: '5', WS_RATE_LIMIT_CLOSE_AFTER: '20' });
    const flooder = await connect(node.url, 'alice');
    const bystander = await connect(node.url, 'bob');
    for (let i = 0; i < 100; i++) flooder.send({ type: 'ping', id: `p${i}` });

    expect(await flooder.closed).toEqual({ code: 4429, reason: 'rate limit exceeded' });
    expect(flooder.received.filter((e) => e.type === 'pong')).toHaveLength(5);
    // 20 rate-limited frames are answered; the 21st closes the socket.
    expect(flooder.received.filter((e) => e.type === 'error' && e.data?.code === 'rate_limited')).toHaveLength(20);
    expect(await node.metric('wsedge_policy_closes_total', { reason: 'flooding' })).toBe(1);
    expect(await node.metric('wsedge_rate_limited_total')).toBe(21);
    expect(await node.metric('wsedge_connections_closed_total', { code: '4429' })).toBe(1);
    expect(await ping(bystander, 'b')).toMatchObject({ type: 'pong', id: 'b' });
  });
});

describe('connections per node (WS_MAX_CONNECTIONS=2)', () => {
  it('refuses the third upgrade with HTTP 503 before any socket exists, and counts it', async () => {
    const node = await startTestNode({ WS_MAX_CONNECTIONS: '2' });
    const a = await connect(node.url, 'alice');
    await connect(node.url, 'bob');

    const refusal = await refusedUpgrade(node.url, token('carol'));
    expect(refusal.statusCode).toBe(503);
    expect(refusal.headers['retry-after']).toBe('1');
    expect(JSON.parse(refusal.body)).toEqual({ code: 'unavailable', message: 'max_connections', error: 'unavailable', reason: 'max_connections' });
    expect(await node.metric('wsedge_upgrades_refused_total', { reason: 'max_connections' })).toBe(1);
    expect(await node.metric('wsedge_connections')).toBe(2);
    expect(await node.metric('wsedge_connections_opened_total')).toBe(2);
    // No socket, so no rejection was counted either.
    expect(await node.metric('wsedge_auth_failures_total', { reason: 'user_limit' })).toBe(0);

    a.close();
    await a.closed;
    const c = await connect(node.url, 'carol');
    expect(await ping(c, 'c')).toMatchObject({ type: 'pong' });
  });
});

describe('slow consumers (WS_MAX_BACKPRESSURE=65536)', () => {
  it('closes a client that stops reading while a reading member of the same room keeps receiving', async () => {
    const node: TestNode = await startTestNode({ WS_MAX_BACKPRESSURE: '65536', WS_MESSAGE_MAX_SIZE: '4096' });
    const slow = await connect(node.url, 'slow');
    const fast = await connect(node.url, 'fast');
    await join(slow, 'project:1');
    await join(fast, 'project:1');
    await slow.next((e) => e.type === 'user_joined' && e.data?.user_id === 'fast');

    rawSocket(slow).pause();
    const pad = 'x'.repeat(1000);
    let published = 0;
    // Publish in small batches, letting the loop run so the reading client drains, until the
    // server has closed the slow one (kernel buffers absorb the first few MB).
    const limit = 50_000;
    while (node.connections() === 2 && published < limit) {
      for (let i = 0; i < 20; i++) node.events.publish('project:1', 'task.updated', { seq: published++, pad });
      await new Promise((r) => setImmediate(r));
    }
    expect(node.connections()).toBe(1);
    expect(published).toBeLessThan(limit);
    // It was the slow one: the room is told it left.
    expect(await fast.next((e) => e.type === 'user_left', 10_000)).toMatchObject({ room: 'project:1', data: { user_id: 'slow' } });
    expect(await node.metric('wsedge_connections_closed_total', { code: '1006' })).toBe(1);
    // Counted once on both builds: by `dropped` on the official one, at the close on the legacy one.
    expect(await node.metric('wsedge_backpressure_drops_total')).toBe(1);
    expect(node.logs.filter((l) => l['event'] === 'slow_consumer')).toMatchObject([{ level: 'info', user_id: 'slow' }]);

    // The reading member got every event, in order, and is still served.
    const events = () => fast.received.filter((e) => e.type === 'task.updated');
    await waitFor('the fast client received every event', () => events().length >= published, 10_000);
    expect(events()).toHaveLength(published);
    expect(events().every((e, i) => e.data.seq === i)).toBe(true);
    expect(await ping(fast, 'f')).toMatchObject({ type: 'pong' });

    // Once the slow client reads again it finds the connection gone, without a close frame.
    rawSocket(slow).resume();
    expect((await slow.closed).code).toBe(1006);
    const slowEvents = slow.received.filter((e) => e.type === 'task.updated');
    expect(slowEvents.length).toBeLessThan(published);
  });
});
