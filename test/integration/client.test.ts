/**
 * ws-edge/client against real nodes (in this process, memory broker) through the `ws` package:
 * requests answered and timed out, the liveness check on a silent link, token refresh in band and
 * after expiry, and each close code's reconnect decision as the server really sends it.
 */
import { createSigner } from 'fast-jwt';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { createClient, createTyping, watchPresence, type Client, type ClientOptions, type Envelope, type StateChange } from '../../src/client/index.js';
import { signToken } from '../../src/auth.js';
import { token } from '../helpers/client.js';
import { startTestNode, stopAllNodes, stopTestNode, TEST_SECRET, type TestNode } from '../helpers/node.js';
import { startTcpProxy } from '../helpers/tcp-proxy.js';
import { waitFor } from '../helpers/wait.js';

const API_KEY = 'client-suite-publish-key-0123456789abcdef';
const clients: Client[] = [];

afterEach(() => {
  clients.splice(0).forEach((c) => c.close());
});
afterAll(stopAllNodes);

function client(url: string, tok: ClientOptions['token'], extra: Partial<ClientOptions> = {}) {
  const states: StateChange[] = [];
  const c = createClient({ url, token: tok, WebSocket, ...extra });
  c.on('state', (s) => states.push(s));
  clients.push(c);
  return { c, states };
}

const connected = (c: Client) => waitFor('connected', () => c.state === 'connected', 5000);

async function publish(node: TestNode, room: string, type: string, data: unknown): Promise<void> {
  const res = await fetch(`${node.internal}/api/v1/publish`, {
    method: 'POST',
    headers: { authorization: `Bearer ${API_KEY}`, 'content-type': 'application/json' },
    body: JSON.stringify({ room, type, data }),
  });
  expect(res.status).toBe(200);
}

describe('ws-edge/client against a node', () => {
  it('joins, receives in order, sends and reads history: every request settled by its reply', async () => {
    const node = await startTestNode({ PUBLISH_API_KEY: API_KEY, WS_HISTORY_ROOMS: 'task:*' });
    const { c } = client(node.url, token('carol', { rooms: ['task:*', 'project:1'] }));
    const events: Envelope[] = [];
    c.connect();
    await connected(c);
    expect(c.connection).toMatchObject({ user_id: 'carol', max_message_size: 1_048_576 });
    const [task, project] = await Promise.all([c.join('task:1', { event: (e) => events.push(e) }), c.join('project:1', { event: (e) => events.push(e) })]);
    expect(task).toMatchObject({ type: 'room_joined', room: 'task:1', offset: 0 });
    expect(project).toMatchObject({ type: 'room_joined', room: 'project:1' });
    for (let n = 1; n <= 3; n++) await publish(node, 'task:1', 'task.updated', { n });
    await publish(node, 'project:1', 'project.updated', { n: 1 });
    const sent = await c.send('task:1', { text: 'hi' });
    expect(sent).toMatchObject({ type: 'message_sent', room: 'task:1', offset: 4 });
    await waitFor('five events', () => events.length === 5, 3000);
    expect(events.filter((e) => e.room === 'task:1').map((e) => e.offset)).toEqual([1, 2, 3, 4]);
    expect(c.position('task:1')).toMatchObject({ offset: 4 });
    const history = await c.history('task:1', { limit: 2, reverse: true });
    expect(history.data.events.map((e) => e.offset)).toEqual([4, 3]);
    expect(await c.ping()).toBeGreaterThanOrEqual(0);
    // Refusals carry the server's machine code and message, and the connection stays.
    await expect(c.join('project:2')).rejects.toMatchObject({ name: 'ClientError', code: 'forbidden', message: 'not allowed to join this room' });
    await expect(c.send('channel:9', {})).rejects.toMatchObject({ code: 'not_joined' });
    await expect(c.history('project:1')).rejects.toMatchObject({ code: 'no_history' });
    // Above max_message_size: refused here, never sent (the server would close with 1009).
    await expect(c.send('task:1', 'x'.repeat(1_048_576))).rejects.toMatchObject({ code: 'message_too_big' });
    await c.leave('project:1');
    expect(c.state).toBe('connected');
    await stopTestNode(node);
  });

  it('keeps a live presence list and typing state from the server’s presence events and signals', async () => {
    const node = await startTestNode({ WS_PRESENCE_ROOMS: 'channel:*' });
    const room = 'channel:live';
    const a = client(node.url, token('ann')).c;
    const b = client(node.url, token('ben')).c;
    const lists: string[][] = [];
    const typingSeen: string[][] = [];
    void a.join(room);
    a.connect();
    await connected(a);
    const list = watchPresence(a, room, (users) => lists.push([...users.keys()].sort()));
    const typing = createTyping(a, room, (others) => typingSeen.push([...others.values()]), { expireMs: 500 });
    await waitFor('ann alone', () => lists.at(-1)?.join() === 'ann', 3000);
    void b.join(room);
    b.connect();
    await waitFor('ben present', () => lists.at(-1)?.join() === 'ann,ben', 3000);
    const bTyping = createTyping(b, room, () => {}, { throttleMs: 10_000 });
    bTyping.typing();
    bTyping.typing(); // throttled: one signal
    await waitFor('ben typing', () => typingSeen.at(-1)?.join() === 'ben', 2000);
    bTyping.stop();
    await waitFor('ben stopped', () => typingSeen.at(-1)?.length === 0, 2000);
    bTyping.typing();
    await waitFor('ben typing again', () => typingSeen.at(-1)?.join() === 'ben', 2000);
    // No typing_stop this time: expired after expireMs.
    await waitFor('ben’s typing expired', () => typingSeen.at(-1)?.length === 0, 2000);
    expect(typingSeen).toEqual([['ben'], [], ['ben'], []]);
    b.close();
    await waitFor('ben gone', () => lists.at(-1)?.join() === 'ann', 3000);
    expect(list.complete()).toBe(true);
    list.stop();
    typing.dispose();
    await stopTestNode(node);
  });

  it('joins with a room grant; a provider’s grant is renewed in band before exp, a fixed one ends with left(grant_expired)', { timeout: 20_000 }, async () => {
    const node = await startTestNode({ JWT_CLOCK_TOLERANCE: '0' });
    const { c } = client(node.url, token('gwen', { rooms: [] }));
    const grant = (room: string) => signToken({ secret: TEST_SECRET, userId: 'gwen', room, ttlSeconds: 3 });
    let provided = 0;
    const left: string[] = [];
    c.connect();
    await connected(c);
    await c.join('project:renewed', { left: (r) => left.push(`renewed ${r}`) }, { grant: async () => (provided++, grant('project:renewed')) });
    await c.join('project:fixed', { left: (r) => left.push(`fixed ${r}`) }, { grant: grant('project:fixed') });
    await expect(c.join('project:none')).rejects.toMatchObject({ code: 'forbidden' });
    await waitFor('the fixed grant ended', () => left.length === 1, 6000);
    // Past two more lifetimes of the provider's grants.
    await new Promise((r) => setTimeout(r, 4000));
    expect(left).toEqual(['fixed grant_expired']);
    expect(provided).toBeGreaterThanOrEqual(4);
    expect(c.state).toBe('connected');
    await stopTestNode(node);
  });

  it('queues sends made before the connection when queueSize allows, and rejects the one past it', async () => {
    const node = await startTestNode({ WS_HISTORY_ROOMS: 'task:*' });
    const { c } = client(node.url, token('quinn'), { queueSize: 2 });
    const got: unknown[] = [];
    void c.join('task:q', { event: (e) => e.type === 'message.new' && got.push(e.data) });
    const queued = [c.send('task:q', { n: 1 }), c.send('task:q', { n: 2 })];
    await expect(c.send('task:q', { n: 3 })).rejects.toMatchObject({ code: 'disconnected', message: 'the send queue is full (2)' });
    c.connect();
    const sent = await Promise.all(queued);
    expect(sent.map((m) => m.offset)).toEqual([1, 2]);
    await waitFor('both messages', () => got.length === 2, 2000);
    expect(got).toEqual([{ n: 1 }, { n: 2 }]);
    await stopTestNode(node);
  });

  it('times out a request on a silent link, then the liveness check reconnects and the rooms come back', async () => {
    const node = await startTestNode({ WS_HISTORY_ROOMS: 'task:*', PUBLISH_API_KEY: API_KEY });
    const proxy = await startTcpProxy(node.port);
    const url = `ws://127.0.0.1:${proxy.port}/api/v1/ws/connect`;
    const { c, states } = client(url, token('dave'), { requestTimeout: 300, pingAfter: 400, pongTimeout: 400 });
    const reset: unknown[] = [];
    const recovered: unknown[] = [];
    const got: number[] = [];
    c.connect();
    await connected(c);
    await c.join('task:live', { event: (e) => got.push(e.offset!), reset: (p) => reset.push(p), recovered: (p) => recovered.push(p) });
    await publish(node, 'task:live', 'task.updated', { n: 1 });
    await waitFor('first event', () => got.length === 1, 2000);
    proxy.blackhole(true);
    await expect(c.ping()).rejects.toMatchObject({ code: 'timeout' });
    await waitFor('the liveness check gave up', () => states.some((s) => s.reason === 'no pong'), 3000);
    expect(states.find((s) => s.reason === 'no pong')).toMatchObject({ state: 'disconnected', code: 1006 });
    await publish(node, 'task:live', 'task.updated', { n: 2 });
    proxy.blackhole(false);
    proxy.closeAll();
    await waitFor('back and recovered', () => recovered.length === 1, 10_000);
    await publish(node, 'task:live', 'task.updated', { n: 3 });
    await waitFor('every event once', () => got.length === 3, 2000);
    expect({ got, reset }).toEqual({ got: [1, 2, 3], reset: [] });
    await proxy.stop();
  });

  it('refreshes its token in band before exp: a session outlives several token lifetimes without a reconnect', { timeout: 20_000 }, async () => {
    const node = await startTestNode();
    let minted = 0;
    const { c, states } = client(node.url, () => (minted++, token('erin', { ttlSeconds: 2 })));
    c.connect();
    await connected(c);
    await new Promise((r) => setTimeout(r, 5500));
    expect(c.state).toBe('connected');
    expect(states.map((s) => s.state)).toEqual(['connecting', 'connected']);
    expect(minted).toBeGreaterThanOrEqual(3);
    await stopTestNode(node);
  });

  it('after 4401 at expiry reconnects only with a new token', { timeout: 20_000 }, async () => {
    const node = await startTestNode({ JWT_CLOCK_TOLERANCE: '0' });
    // A provider that cannot refresh yet: the same token until `ready`.
    let current = token('frank', { ttlSeconds: 2 });
    let ready = false;
    const { c, states } = client(node.url, () => (ready ? (current = token('frank', { ttlSeconds: 60, username: 'frank2' })) : current), { backoff: { base: 200, cap: 500 } });
    c.connect();
    await connected(c);
    await waitFor('closed at exp', () => states.some((s) => s.code === 4401), 6000);
    expect(states.find((s) => s.code === 4401)).toMatchObject({ state: 'disconnected', reason: 'token expired' });
    await new Promise((r) => setTimeout(r, 1000));
    // Asked again after each backoff, never connected with the refused token.
    expect(c.state).not.toBe('connected');
    expect(states.filter((s) => s.state === 'connected')).toHaveLength(1);
    ready = true;
    await connected(c);
    expect(c.connection?.username).toBe('frank2');
    await stopTestNode(node);
  });

  it('after 4401 token revoked asks its provider for a new token and reconnects with it, rooms rejoined', async () => {
    const node = await startTestNode({ PUBLISH_API_KEY: API_KEY });
    // Issued 5 s ago: covered by a revoke of what was issued before 2 s ago; the provider's next token is not.
    const old = createSigner({ key: TEST_SECRET, algorithm: 'HS256', expiresIn: 600_000, clockTimestamp: Date.now() - 5000 })({ sub: 'gus', rooms: ['*'] });
    const asked: string[] = [];
    const { c, states } = client(node.url, () => {
      const next = asked.length === 0 ? old : token('gus', { username: 'gus2' });
      asked.push(next);
      return next;
    }, { backoff: { base: 50, cap: 200 } });
    c.connect();
    await connected(c);
    const events: Envelope[] = [];
    await c.join('project:9', { event: (e) => events.push(e) });
    const res = await fetch(`${node.internal}/api/v1/revoke`, {
      method: 'POST',
      headers: { authorization: `Bearer ${API_KEY}`, 'content-type': 'application/json' },
      body: JSON.stringify({ user_id: 'gus', issued_before: Math.floor(Date.now() / 1000) - 2 }),
    });
    expect(res.status).toBe(200);
    await waitFor('reconnected after the revoke', () => states.filter((s) => s.state === 'connected').length === 2, 5000);
    expect(states.find((s) => s.code === 4401)).toMatchObject({ state: 'disconnected', reason: 'token revoked' });
    expect(asked).toHaveLength(2);
    expect(asked[1]).not.toBe(old);
    expect(c.connection?.username).toBe('gus2');
    // The room comes back with the reconnect's resume: publish until an event of it arrives.
    await waitFor('project:9 rejoined', async () => {
      await publish(node, 'project:9', 'task.updated', { n: 1 });
      return events.some((e) => e.room === 'project:9');
    }, 5000, 100);
    console.log(`client on 4401 token revoked: provider asked ${asked.length} times (1 refused token, 1 new), reconnected with the new token, project:9 rejoined`);
    await stopTestNode(node);
  });

  it('waits at least 30 s after 4429, 0-5 s after 1012, and stops after 4403', async () => {
    const node = await startTestNode({ WS_MAX_CONNECTIONS_PER_USER: '1', PUBLISH_API_KEY: API_KEY });
    const first = client(node.url, token('gina'));
    first.c.connect();
    await connected(first.c);
    const second = client(node.url, token('gina'));
    second.c.connect();
    await waitFor('4429', () => second.states.some((s) => s.code === 4429), 3000);
    const limited = second.states.find((s) => s.code === 4429)!;
    expect(limited).toMatchObject({ state: 'disconnected', reason: 'too many connections for this user' });
    expect(limited.delay).toBeGreaterThanOrEqual(30_000);
    second.c.close();

    const res = await fetch(`${node.internal}/api/v1/disconnect`, {
      method: 'POST',
      headers: { authorization: `Bearer ${API_KEY}`, 'content-type': 'application/json' },
      body: JSON.stringify({ user_id: 'gina' }),
    });
    expect(res.status).toBe(200);
    await waitFor('4403', () => first.c.state === 'closed', 3000);
    expect(first.states.at(-1)).toEqual({ state: 'closed', code: 4403, reason: 'disconnected' });

    const third = client(node.url, token('hank'));
    third.c.connect();
    await connected(third.c);
    await stopTestNode(node);
    await waitFor('1012', () => third.states.some((s) => s.code === 1012), 5000);
    const drained = third.states.find((s) => s.code === 1012)!;
    expect(drained).toMatchObject({ state: 'disconnected', reason: 'service restart' });
    expect(drained.delay).toBeLessThanOrEqual(5000);
  });
});
