/**
 * Chat the product can store (issue 22) on real nodes against a real backend process
 * (test/backend/chat_backend.py: Python, SQLite): the publish proxy (stored, then delivered with the
 * backend's message_id and the sender's user_id; denies, 500s, garbage and timeouts never delivered;
 * one sender's messages in send order when answers overtake each other; the per-connection cap),
 * sends with an idempotency key delivered once (plain and sequenced, one node and three on Redis),
 * and RPC over the socket. Counted: numbered messages from several clients through the proxy on
 * three nodes, rows stored against deliveries.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { startBrokerNodes, stopNodes } from '../helpers/broker-nodes.js';
import { BACKEND_KEY, startChatBackend, stopAllChatBackends, type ChatBackend } from '../helpers/backend.js';
import { connect, join, type Envelope, type TestClient } from '../helpers/client.js';
import { startTestNode, stopAllNodes, type TestNode } from '../helpers/node.js';
import { startRedis, stopAllRedis, uniquePrefix } from '../helpers/redis.js';
import { waitFor } from '../helpers/wait.js';

const clients: TestClient[] = [];

afterAll(async () => {
  clients.splice(0).forEach((c) => c.close());
  stopAllChatBackends();
  await stopAllNodes();
  await stopAllRedis();
});

function backendEnv(backend: ChatBackend, extra: Record<string, string> = {}): Record<string, string> {
  return { WS_PUBLISH_PROXY_URL: `${backend.url}/publish`, WS_PUBLISH_PROXY_ROOMS: 'channel:*', WS_RPC_URL: `${backend.url}/rpc`, WS_BACKEND_KEY: BACKEND_KEY, ...extra };
}

async function member(node: TestNode, user: string, rooms: string[]): Promise<TestClient> {
  const c = await connect(node.url, user);
  clients.push(c);
  for (const room of rooms) await join(c, room);
  return c;
}

let counter = 0;
async function request(c: TestClient, frame: Record<string, unknown>, timeoutMs = 10_000): Promise<Envelope> {
  const id = `q${++counter}`;
  c.send({ ...frame, id });
  return c.next((e) => e.id === id, timeoutMs);
}

const text = (e: Envelope): string => (e.data as { text?: string } | null)?.text ?? '';
const messagesIn = (c: TestClient, room: string) => c.received.filter((e) => e.type === 'message.new' && e.room === room);

describe('the publish proxy (one node, a real backend storing in SQLite)', () => {
  it('stores, then delivers with the backend’s message_id and the sender’s user_id; message_sent carries what was published', async () => {
    const backend = await startChatBackend();
    const node = await startTestNode(backendEnv(backend));
    const [alice, bob] = await Promise.all([member(node, 'alice', ['channel:1', 'project:1']), member(node, 'bob', ['channel:1'])]);
    const sent = await request(alice, { type: 'send_message', room: 'channel:1', data: { text: 'hello' } });
    expect(sent).toMatchObject({ type: 'message_sent', room: 'channel:1', data: { text: 'hello', message_id: 1 } });
    const got = await bob.next((e) => e.type === 'message.new');
    expect(got).toMatchObject({ room: 'channel:1', sender: 'alice', user_id: 'alice', data: { text: 'hello', message_id: 1 } });
    // Rooms outside WS_PUBLISH_PROXY_ROOMS are not asked about (and still carry user_id).
    expect(await request(alice, { type: 'send_message', room: 'project:1', data: { text: 'direct' } })).toEqual(expect.objectContaining({ type: 'message_sent', room: 'project:1' }));
    expect((await backend.stats()).rows).toBe(1);
    expect(await node.metric('wsedge_backend_calls_total', { kind: 'publish', outcome: 'ok' })).toBe(1);
  });

  it('a deny reaches only the sender, with the backend’s code; a 500, garbage or a timeout is unavailable; the socket stays open and nothing is delivered', async () => {
    const backend = await startChatBackend();
    const node = await startTestNode(backendEnv(backend, { WS_BACKEND_TIMEOUT: '300' }));
    const [alice, bob] = await Promise.all([member(node, 'alice', ['channel:1']), member(node, 'bob', ['channel:1'])]);
    expect((await request(alice, { type: 'send_message', room: 'channel:1', data: { text: 'deny' } })).data).toEqual({ code: 'rejected', message: 'no spam here', error: 'no spam here', detail: 'spam' });
    for (const bad of ['boom', 'garbage', 'slow:1000']) {
      expect((await request(alice, { type: 'send_message', room: 'channel:1', data: { text: bad } })).data, bad).toEqual({ code: 'unavailable', message: 'the backend is unreachable; try again', error: 'the backend is unreachable; try again' });
    }
    expect(await request(alice, { type: 'ping' })).toMatchObject({ type: 'pong' });
    await request(bob, { type: 'ping' });
    expect(messagesIn(bob, 'channel:1').map(text)).toEqual([]);
    expect(messagesIn(alice, 'channel:1').map(text)).toEqual([]);
    expect(await node.metric('wsedge_backend_refusals_total', { kind: 'publish' })).toBe(1);
    expect(await node.metric('wsedge_backend_calls_total', { kind: 'publish', outcome: 'timeout' })).toBe(1);
  });

  it('keeps one sender’s messages in send order when the backend answers them out of order', async () => {
    const backend = await startChatBackend();
    const node = await startTestNode(backendEnv(backend));
    const [alice, bob] = await Promise.all([member(node, 'alice', ['channel:1']), member(node, 'bob', ['channel:1'])]);
    const texts = ['slow:400 first', 'slow:200 second', 'third', 'slow:100 fourth', 'fifth'].map((t) => (t.startsWith('slow:') ? t.split(' ')[0]! : t));
    texts.forEach((t, i) => alice.send({ type: 'send_message', room: 'channel:1', data: { text: t, n: i }, id: `o${i}` }));
    await waitFor('five messages at bob', () => messagesIn(bob, 'channel:1').length === 5, 10_000);
    expect(messagesIn(bob, 'channel:1').map((e) => (e.data as { n: number }).n)).toEqual([0, 1, 2, 3, 4]);
  });

  it('refuses the sends queued behind one refused unavailable, so the sender’s resends keep the order; nothing behind it is delivered first', async () => {
    const backend = await startChatBackend();
    const node = await startTestNode(backendEnv(backend, { WS_BACKEND_TIMEOUT: '300' }));
    const [alice, bob] = await Promise.all([member(node, 'alice', ['channel:1']), member(node, 'bob', ['channel:1'])]);
    // 0 times out at the backend; 1 and 2 are allowed (and stored) while 0 waits; 3 comes after 0's answer.
    ['slow:1000', 'second', 'third'].forEach((t, n) => alice.send({ type: 'send_message', room: 'channel:1', data: { text: t, n }, idempotency_key: `k${n}`, id: `b${n}` }));
    const replies = await Promise.all([0, 1, 2].map((n) => alice.next((e) => e.id === `b${n}`)));
    expect(replies.map((e) => (e.data as { code?: string; message?: string }).message)).toEqual(['the backend is unreachable; try again', 'an earlier send to this room was refused unavailable; send again after it', 'an earlier send to this room was refused unavailable; send again after it']);
    // The resends, in order, the first now fast: each delivered once, in send order.
    ['first', 'second', 'third'].forEach((t, n) => alice.send({ type: 'send_message', room: 'channel:1', data: { text: t, n }, idempotency_key: `k${n}`, id: `r${n}` }));
    await waitFor('three messages at bob', () => messagesIn(bob, 'channel:1').length === 3, 10_000);
    expect(messagesIn(bob, 'channel:1').map((e) => (e.data as { n: number }).n)).toEqual([0, 1, 2]);
  });

  it('caps one connection’s sends under way: the excess is rate_limited at once, the rest are answered', async () => {
    const backend = await startChatBackend();
    const node = await startTestNode(backendEnv(backend, { WS_BACKEND_MAX_PER_CONNECTION: '3', WS_BACKEND_CONCURRENCY: '2' }));
    const alice = await member(node, 'alice', ['channel:1']);
    for (let i = 0; i < 6; i++) alice.send({ type: 'send_message', room: 'channel:1', data: { text: 'slow:300' }, id: `c${i}` });
    const replies = await Promise.all(Array.from({ length: 6 }, (_, i) => alice.next((e) => e.id === `c${i}`)));
    expect(replies.map((e) => (e.type === 'error' ? (e.data as { code: string }).code : e.type))).toEqual(['message_sent', 'message_sent', 'message_sent', 'rate_limited', 'rate_limited', 'rate_limited']);
    expect((await backend.stats()).max_in_flight).toBeLessThanOrEqual(2);
  });
});

describe('sends with an idempotency_key', () => {
  it('a repeat is answered with the first result and delivered once: plain, sequenced, and through the proxy', async () => {
    const backend = await startChatBackend();
    const node = await startTestNode(backendEnv(backend, { WS_HISTORY_ROOMS: 'task:*' }));
    const [alice, bob] = await Promise.all([member(node, 'alice', ['project:1', 'task:1', 'channel:1']), member(node, 'bob', ['project:1', 'task:1', 'channel:1'])]);
    for (const room of ['project:1', 'task:1', 'channel:1']) {
      const first = await request(alice, { type: 'send_message', room, data: { text: `once in ${room}` }, idempotency_key: 'k-1' });
      const again = await request(alice, { type: 'send_message', room, data: { text: `once in ${room}` }, idempotency_key: 'k-1' });
      expect(first.type, room).toBe('message_sent');
      expect(again, room).toMatchObject({ type: 'message_sent', room, duplicate: true });
      const { id: _a, timestamp: _b, duplicate: _c, ...firstResult } = first as Envelope & Record<string, unknown>;
      const { id: _d, timestamp: _e, duplicate: _f, ...againResult } = again as Envelope & Record<string, unknown>;
      expect(againResult, room).toEqual(firstResult);
    }
    await request(bob, { type: 'ping' });
    for (const room of ['project:1', 'task:1', 'channel:1']) expect(messagesIn(bob, room).length, room).toBe(1);
    expect((await backend.stats()).rows).toBe(1);
    // Another user's same key is another send.
    const carol = await member(node, 'carol', ['project:1']);
    expect(await request(carol, { type: 'send_message', room: 'project:1', data: {}, idempotency_key: 'k-1' })).not.toHaveProperty('duplicate');
    expect((await request(alice, { type: 'send_message', room: 'project:1', data: {}, idempotency_key: 'x'.repeat(129) })).data).toMatchObject({ code: 'invalid_message' });
  });

  it('across three nodes on Redis: a repeat sent through another node is not delivered again', async () => {
    const redis = await startRedis();
    const nodes = await startBrokerNodes({ REDIS_URL: redis.url }, uniquePrefix(), ['ia', 'ib', 'ic'], { WS_HISTORY_ROOMS: 'task:*' });
    const watcher = await member(nodes[2]!, 'watcher', ['project:9', 'task:9']);
    for (const room of ['project:9', 'task:9']) {
      const a = await member(nodes[0]!, 'alice', [room]);
      const b = await member(nodes[1]!, 'alice', [room]);
      expect((await request(a, { type: 'send_message', room, data: { n: 1 }, idempotency_key: 'same' })).type).toBe('message_sent');
      expect(await request(b, { type: 'send_message', room, data: { n: 1 }, idempotency_key: 'same' })).toMatchObject({ type: 'message_sent', duplicate: true });
      expect((await request(b, { type: 'send_message', room, data: { n: 2 }, idempotency_key: 'other' })).type).toBe('message_sent');
      await waitFor(`n 2 in ${room}`, () => messagesIn(watcher, room).some((e) => (e.data as { n: number }).n === 2), 10_000);
      expect(messagesIn(watcher, room).map((e) => (e.data as { n: number }).n), room).toEqual([1, 2]);
      a.close();
      b.close();
    }
    await stopNodes(nodes);
  });
});

describe('rpc over the socket', () => {
  it('answers with the backend’s data, passes its refusal with its code, is unavailable when it is slow, and is refused without WS_RPC_URL', async () => {
    const backend = await startChatBackend();
    const node = await startTestNode(backendEnv(backend, { WS_BACKEND_TIMEOUT: '300' }));
    const alice = await member(node, 'alice', ['channel:1']);
    await request(alice, { type: 'send_message', room: 'channel:1', data: { text: 'stored' } });
    expect(await request(alice, { type: 'rpc', method: 'messages.count', data: { room: 'channel:1' } })).toMatchObject({ type: 'rpc_result', data: { count: 1 } });
    expect((await request(alice, { type: 'rpc', method: 'nope', data: null })).data).toEqual({ code: 'rejected', message: 'no method nope', error: 'no method nope', detail: 'unknown_method' });
    expect((await request(alice, { type: 'rpc', method: 'slow', data: { ms: 1000 } })).data).toMatchObject({ code: 'unavailable' });
    expect((await request(alice, { type: 'rpc', method: 'Bad Method', data: null })).data).toMatchObject({ code: 'invalid_message' });
    alice.send({ type: 'rpc', method: 'messages.count' });
    expect(await alice.next((e) => e.type === 'error')).toMatchObject({ data: { code: 'invalid_message', message: 'an rpc needs an "id" for its reply' } });
    const plain = await startTestNode();
    const bob = await member(plain, 'bob', []);
    expect((await request(bob, { type: 'rpc', method: 'messages.count', data: null })).data).toMatchObject({ code: 'unknown_type' });
  });
});

describe('signals the backend should hear (WS_SIGNALS_TO_BACKEND)', () => {
  it('a read signal reaches the other members live and the backend as a signed webhook event, stored once; typing is not sent; a close follows as user.offline', async () => {
    const backend = await startChatBackend();
    const node = await startTestNode(backendEnv(backend, { WS_SIGNALS_TO_BACKEND: 'read', WS_EVENTS_GRACE: '1', ...backend.webhookEnv }));
    const [alice, bob] = await Promise.all([member(node, 'alice', ['channel:1']), member(node, 'bob', ['channel:1'])]);
    alice.send({ type: 'signal', room: 'channel:1', name: 'typing' });
    alice.send({ type: 'signal', room: 'channel:1', name: 'read', data: { message_id: 7 } });
    expect(await bob.next((e) => e.type === 'signal.read')).toMatchObject({ room: 'channel:1', user_id: 'alice', data: { message_id: 7 } });
    // Alice's user.offline is appended a grace window after her signals: once it is applied, a typing event would be too.
    const closedAt = Date.now();
    alice.close();
    const stats = await waitFor('alice’s user.offline applied', async () => {
      const s = await backend.stats();
      return s.lifecycle['user:alice']?.type === 'user.offline' ? s : false;
    }, 10_000);
    expect(stats.event_types).toEqual({ 'user.online': 2, 'room.occupied': 1, 'signal.read': 1, 'user.offline': 1 });
    expect({ reads: stats.reads, duplicates: stats.duplicate_events, refused: stats.refused_webhooks }).toEqual({ reads: 1, duplicates: 0, refused: 0 });
    expect(stats.lifecycle['user:alice']!.last_seen).toBeGreaterThanOrEqual(closedAt);
    expect(stats.lifecycle['user:bob']!.type).toBe('user.online');
    // Counted once acknowledged, after the node has read the backend's 2xx.
    const delivered = await waitFor('the delivered events counted', async () => {
      const n = await node.metric('wsedge_webhook_events_total', { outcome: 'delivered' });
      return n === stats.events ? n : false;
    }, 10_000);
    expect(await node.metric('wsedge_events_total', { type: 'signal' })).toBe(1);
    console.log(JSON.stringify({ scenario: 'signals-webhook', appended_signals: 1, delivered, applied: stats.event_types, reads: stats.reads, duplicates: stats.duplicate_events }));
  });

  it('the backend’s webhook applies an event id once, drops an older version, and refuses a forged or stale request with 401', async () => {
    const backend = await startChatBackend();
    const read = { id: '1765121000123-0', type: 'signal', time: 1765121000123, name: 'read', room: 'channel:1', user_id: 'carol', username: 'carol', connection_id: 'c1', data: { message_id: 3 } };
    const offline = { id: '1765121000200-0', type: 'user.offline', time: 1765121000200, user_id: 'carol', version: 20, last_seen: 1765121000100 };
    const staleOnline = { id: '1765121000300-0', type: 'user.online', time: 1765121000300, user_id: 'carol', version: 10 };
    expect(await backend.postEvents([read, offline])).toBe(200);
    expect(await backend.postEvents([read, offline, staleOnline])).toBe(200);
    expect(await backend.postEvents([{ ...read, id: '1765121000400-0' }], { secret: 'not-the-secret-of-this-backend-0123456789' })).toBe(401);
    expect(await backend.postEvents([{ ...read, id: '1765121000500-0' }], { timestamp: Math.floor(Date.now() / 1000) - 301 })).toBe(401);
    const stats = await backend.stats();
    expect({ reads: stats.reads, events: stats.events, duplicates: stats.duplicate_events, refused: stats.refused_webhooks }).toEqual({ reads: 1, events: 3, duplicates: 2, refused: 2 });
    expect(stats.lifecycle['user:carol']).toEqual({ type: 'user.offline', version: 20, last_seen: 1765121000100 });
  });
});

describe('counted: numbered messages through the proxy on three nodes on Redis', () => {
  it('every message is stored once and every member receives each once, with its message_id, in each sender’s order', { timeout: 90_000 }, async () => {
    const backend = await startChatBackend();
    const redis = await startRedis();
    const nodes = await startBrokerNodes({ REDIS_URL: redis.url }, uniquePrefix(), ['pa', 'pb', 'pc'], backendEnv(backend));
    const SENDERS = 6;
    const EACH = 50;
    const members = await Promise.all(Array.from({ length: SENDERS }, (_, i) => member(nodes[i % 3]!, `u${i}`, ['channel:count'])));
    await Promise.all(members.map(async (c, i) => {
      for (let n = 1; n <= EACH; n++) {
        const sent = await request(c, { type: 'send_message', room: 'channel:count', data: { text: `m${n}`, from: i, n }, idempotency_key: `u${i}-${n}` });
        expect(sent.type).toBe('message_sent');
      }
    }));
    const total = SENDERS * EACH;
    await waitFor('every member has every message', () => members.every((c) => messagesIn(c, 'channel:count').length >= total), 20_000).catch(() => {});
    let duplicated = 0;
    let lost = 0;
    let outOfOrder = 0;
    let withoutId = 0;
    for (const c of members) {
      const got = messagesIn(c, 'channel:count');
      const ids = new Set(got.map((e) => (e.data as { message_id: number }).message_id));
      duplicated += got.length - ids.size;
      lost += total - ids.size;
      withoutId += got.filter((e) => typeof (e.data as { message_id?: number }).message_id !== 'number' || e.user_id === undefined).length;
      for (let i = 0; i < SENDERS; i++) {
        const ns = got.filter((e) => (e.data as { from: number }).from === i).map((e) => (e.data as { n: number }).n);
        if (ns.some((n, k) => k > 0 && n <= ns[k - 1]!)) outOfOrder += 1;
      }
    }
    const { rows } = await backend.stats();
    console.log(JSON.stringify({ scenario: 'proxy-counted', nodes: 3, senders: SENDERS, sent: total, rows, members: members.length, lost, duplicated, out_of_order: outOfOrder, without_message_id: withoutId }));
    expect({ rows, lost, duplicated, outOfOrder, withoutId }).toEqual({ rows: total, lost: 0, duplicated: 0, outOfOrder: 0, withoutId: 0 });
    await stopNodes(nodes);
  });
});
