/**
 * Redis faults against real in-process nodes and a real redis-server: Redis stopped (local rooms
 * keep working, one log line per state change, per-node user limits), Redis restarted empty on the
 * same port (every room resubscribed, the connection registry rebuilt, nothing from the outage
 * delivered late), and a blackholed link that only the liveness probe can notice.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { connect, join, open, token, type Envelope, type TestClient } from '../helpers/client.js';
import { startTestNode, stopAllNodes, type TestNode } from '../helpers/node.js';
import { startRedis, stopAllRedis, uniquePrefix } from '../helpers/redis.js';
import { startTcpProxy, stopAllProxies } from '../helpers/tcp-proxy.js';
import { numsub, waitSubscribed } from '../helpers/broker-checks.js';
import { query } from '../helpers/redis-process.js';
import { waitFor } from '../helpers/wait.js';

const clients: TestClient[] = [];

afterAll(async () => {
  for (const client of clients) client.close();
  await stopAllNodes();
  await stopAllProxies();
  await stopAllRedis();
});

const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Node settings for fault tests: a fast probe, a short slot TTL, and a rate limit that lets 50 frames through at once. */
function nodeEnv(redisUrl: string, prefix: string, nodeId: string, extra: Record<string, string> = {}): Record<string, string> {
  return {
    NODE_ID: nodeId,
    REDIS_URL: redisUrl,
    REDIS_PREFIX: prefix,
    REDIS_PROBE_INTERVAL: '1',
    REDIS_PROBE_TIMEOUT: '1',
    REDIS_SLOT_TTL: '3',
    REDIS_UNSUBSCRIBE_DELAY: '1',
    WS_RATE_LIMIT: '200',
    WS_RATE_BURST: '200',
    ...extra,
  };
}

async function readyz(node: TestNode): Promise<{ status: number; body: { broker?: unknown } }> {
  const res = await fetch(`${node.http}/readyz`);
  return { status: res.status, body: (await res.json()) as { broker?: unknown } };
}

/** Waits until the gauge and readiness agree that the broker is up (1) or down (0) on every node. */
async function brokerState(nodes: TestNode[], value: 0 | 1, timeoutMs: number): Promise<void> {
  const state = value === 1 ? 'up' : 'down';
  await waitFor(
    `wsedge_broker_up is ${value} and /readyz says broker "${state}" on ${nodes.map((n) => n.nodeId).join(', ')}`,
    async () => {
      const seen = await Promise.all(nodes.map(async (n) => [await n.metric('wsedge_broker_up'), (await readyz(n)).body.broker] as const));
      return seen.every(([gauge, broker]) => gauge === value && broker === state);
    },
    timeoutMs,
  );
}

/** Connects and returns the client with its connection id (from `connected`). */
async function connectWithId(url: string, userId: string): Promise<{ client: TestClient; connectionId: string }> {
  const client = open(url, token(userId));
  clients.push(client);
  const hello = await client.next((e) => e.type === 'connected');
  return { client, connectionId: hello.data.connection_id as string };
}

async function member(url: string, userId: string, rooms: string[]): Promise<TestClient> {
  const client = await connect(url, userId);
  clients.push(client);
  for (const room of rooms) await join(client, room);
  return client;
}

const isMessage = (room: string, key: string, value: unknown) => (e: Envelope) => e.type === 'message.new' && e.room === room && e.data?.[key] === value;

describe('Redis stopped', () => {
  it('keeps local rooms working, reports the broker down once per node, counts dropped publishes, and falls back to per-node user limits', { timeout: 30_000 }, async () => {
    const redis = await startRedis();
    const prefix = uniquePrefix();
    const [a, b, strict] = await Promise.all([
      startTestNode(nodeEnv(redis.url, prefix, 'stop-a', { WS_MAX_CONNECTIONS_PER_USER: '2' })),
      startTestNode(nodeEnv(redis.url, prefix, 'stop-b', { WS_MAX_CONNECTIONS_PER_USER: '2' })),
      startTestNode(nodeEnv(redis.url, prefix, 'stop-s', { WS_READY_REQUIRES_BROKER: 'true' })),
    ]);
    await brokerState([a, b, strict], 1, 5000);
    expect(await readyz(a)).toEqual({ status: 200, body: { status: 'ready', node_id: 'stop-a', broker: 'up', connections: 0 } });
    expect(await readyz(strict)).toEqual({ status: 200, body: { status: 'ready', node_id: 'stop-s', broker: 'up', connections: 0 } });

    // While Redis is up the limit is cluster-wide: two on A leave no room on B.
    await member(a.url, 'cap', []);
    await member(a.url, 'cap', []);
    const capOnB = open(b.url, token('cap'));
    clients.push(capOnB);
    expect(await capOnB.closed).toEqual({ code: 4429, reason: 'too many connections for this user' });

    const room = 'channel:outage';
    const [a1, a2, b1, b2] = await Promise.all([member(a.url, 'a1', [room]), member(a.url, 'a2', [room]), member(b.url, 'b1', [room]), member(b.url, 'b2', [room])]);
    await waitSubscribed(redis.port, `${prefix}room:${room}`, 2, 3000);
    a1.send({ type: 'send_message', room, data: { phase: 'before' } });
    await b1.next(isMessage(room, 'phase', 'before'));

    const marks = { a: a.logs.length, b: b.logs.length };
    await redis.stop();
    await brokerState([a, b, strict], 0, 5000);
    expect(await readyz(a)).toEqual({ status: 200, body: { status: 'ready', node_id: 'stop-a', broker: 'down', connections: 4 } });
    expect(await readyz(b)).toEqual({ status: 200, body: { status: 'ready', node_id: 'stop-b', broker: 'down', connections: 2 } });
    expect(await readyz(strict)).toEqual({ status: 503, body: { status: 'broker_down', node_id: 'stop-s', broker: 'down', connections: 0 } });

    for (let n = 0; n < 50; n++) a1.send({ type: 'send_message', room, data: { n } });
    for (let m = 0; m < 5; m++) b1.send({ type: 'send_message', room, data: { m } });
    for (let n = 0; n < 50; n++) expect(await a2.next((e) => e.type === 'message.new' && e.data?.n !== undefined)).toMatchObject({ room, data: { n } });
    for (let m = 0; m < 5; m++) expect(await b2.next((e) => e.type === 'message.new' && e.data?.m !== undefined)).toMatchObject({ room, data: { m } });
    await a1.next(isMessage(room, 'n', 49));
    await pause(300);
    expect(b1.received.filter((e) => e.type === 'message.new' && e.data?.n !== undefined)).toEqual([]);
    expect(b2.received.filter((e) => e.type === 'message.new' && e.data?.n !== undefined)).toEqual([]);
    expect(a2.received.filter((e) => e.type === 'message.new' && e.data?.m !== undefined)).toEqual([]);

    expect(await a.metric('wsedge_broker_publish_errors_total', { reason: 'down' })).toBe(50);
    expect(await b.metric('wsedge_broker_publish_errors_total', { reason: 'down' })).toBe(5);
    // One line per state change, none per message.
    const warnings = (logs: Array<Record<string, unknown>>) => logs.filter((l) => ['warn', 'error', 'fatal'].includes(l['level'] as string)).map((l) => l['event'] ?? l['msg']);
    expect(warnings(a.logs.slice(marks.a))).toEqual(['broker_down']);
    expect(warnings(b.logs.slice(marks.b))).toEqual(['broker_down']);

    // Per-node counting while Redis is away (documented): two on each node, a third on A refused.
    for (const node of [a, a, b, b]) await member(node.url, 'lim', []);
    const third = open(a.url, token('lim'));
    clients.push(third);
    expect(await third.closed).toEqual({ code: 4429, reason: 'too many connections for this user' });
    expect(await a.metric('wsedge_connections')).toBe(6);
    expect(await b.metric('wsedge_connections')).toBe(4);

    for (const node of [a, b, strict]) {
      const down = node.logs.filter((l) => l['event'] === 'broker_down');
      expect(down).toHaveLength(1);
      expect(down[0]).toMatchObject({ level: 'warn' });
    }
  });
});

describe('Redis unreachable at start', () => {
  it('reports the broker down from the start, in the gauge and readiness, and up once Redis appears', { timeout: 20_000 }, async () => {
    const redis = await startRedis();
    await redis.stop();
    const node = await startTestNode(nodeEnv(redis.url, uniquePrefix(), 'late'));
    await pause(500); // several failed connection attempts
    expect({ readyz: await readyz(node), gauge: await node.metric('wsedge_broker_up') }).toEqual({
      readyz: { status: 200, body: { status: 'ready', node_id: 'late', broker: 'down', connections: 0 } },
      gauge: 0,
    });

    await redis.restart();
    await brokerState([node], 1, 8000);
    expect(await node.metric('wsedge_broker_reconnects_total')).toBe(0);
  });
});

describe('Redis restarted empty on the same port', () => {
  it('resubscribes every room, rebuilds the connection registry, resumes cross-node delivery and delivers nothing from the outage', { timeout: 30_000 }, async () => {
    const redis = await startRedis();
    const prefix = uniquePrefix();
    const [a, b] = await Promise.all([startTestNode(nodeEnv(redis.url, prefix, 'rs-a')), startTestNode(nodeEnv(redis.url, prefix, 'rs-b'))]);
    await brokerState([a, b], 1, 5000);

    const ua = await member(a.url, 'ua', ['channel:r1', 'channel:r2']);
    const ub = await member(b.url, 'ub', ['channel:r1', 'channel:r3']);
    const reg = [await connectWithId(a.url, 'reg'), await connectWithId(a.url, 'reg'), await connectWithId(b.url, 'reg')];
    const regIds = reg.map((r) => r.connectionId).sort();
    const regKey = `${prefix}conns:{reg}`;
    expect(await query(redis.port, ['ZRANGE', regKey, '0', '-1'])).toEqual(expect.arrayContaining(regIds));
    await waitSubscribed(redis.port, `${prefix}room:channel:r1`, 2, 3000);
    ua.send({ type: 'send_message', room: 'channel:r1', data: { phase: 'before' } });
    await ub.next(isMessage('channel:r1', 'phase', 'before'));

    await redis.stop();
    await brokerState([a, b], 0, 5000);
    for (let n = 0; n < 10; n++) ua.send({ type: 'send_message', room: 'channel:r1', data: { stale: n } });
    await ua.next(isMessage('channel:r1', 'stale', 9));
    expect(await a.metric('wsedge_broker_publish_errors_total', { reason: 'down' })).toBe(10);

    await redis.restart();
    const restarted = Date.now();
    await brokerState([a, b], 1, 8000);
    const recoveredIn = Date.now() - restarted;
    expect(recoveredIn).toBeLessThan(8000);
    expect(await a.metric('wsedge_broker_reconnects_total')).toBe(1);
    expect(await b.metric('wsedge_broker_reconnects_total')).toBe(1);

    // Every room with a local member on either node, and nothing else, is subscribed again.
    const rooms = (await query(redis.port, ['PUBSUB', 'CHANNELS', `${prefix}room:*`])) as string[];
    expect([...rooms].sort()).toEqual(
      ['channel:r1', 'channel:r2', 'channel:r3', 'user:ua', 'user:ub', 'user:reg'].map((r) => `${prefix}room:${r}`).sort(),
    );
    expect(await numsub(redis.port, `${prefix}room:channel:r1`)).toBe(2);
    expect(await numsub(redis.port, `${prefix}room:user:reg`)).toBe(2);
    expect(await numsub(redis.port, `${prefix}room:channel:r2`)).toBe(1);
    expect(await numsub(redis.port, `${prefix}room:channel:r3`)).toBe(1);
    expect(await a.metric('wsedge_broker_subscriptions')).toBe(4);
    expect(await b.metric('wsedge_broker_subscriptions')).toBe(4);

    // The registry, empty after the restart, holds every live connection again.
    await waitFor('the registry holds reg’s three connections', async () => (await query(redis.port, ['ZCARD', regKey])) === 3, 3000);
    expect((await query(redis.port, ['ZRANGE', regKey, '0', '-1']) as string[]).sort()).toEqual(regIds);
    expect(await query(redis.port, ['ZCARD', `${prefix}conns:{ua}`])).toBe(1);
    expect(await query(redis.port, ['ZCARD', `${prefix}conns:{ub}`])).toBe(1);

    // Nothing sent during the outage reaches B afterwards.
    await pause(1500);
    const stale = (e: Envelope) => e.type === 'message.new' && e.data?.stale !== undefined;
    expect(ub.received.filter(stale)).toEqual([]);

    ua.send({ type: 'send_message', room: 'channel:r1', data: { phase: 'after' } });
    expect(await ub.next(isMessage('channel:r1', 'phase', 'after'))).toMatchObject({ sender: 'ua', data: { phase: 'after' } });
    ub.send({ type: 'send_message', room: 'channel:r1', data: { phase: 'reply' } });
    expect(await ua.next(isMessage('channel:r1', 'phase', 'reply'))).toMatchObject({ sender: 'ub', data: { phase: 'reply' } });
    await pause(300);
    expect(ub.received.filter(stale)).toEqual([]);
  });
});

describe('blackholed Redis link', () => {
  it('is detected by the liveness probe, reported in readiness and logs, and recovers when the link does', { timeout: 40_000 }, async () => {
    const redis = await startRedis();
    const proxy = await startTcpProxy(redis.port);
    const prefix = uniquePrefix();
    const [a, b] = await Promise.all([startTestNode(nodeEnv(proxy.url, prefix, 'bh-a')), startTestNode(nodeEnv(redis.url, prefix, 'bh-b'))]);
    await brokerState([a, b], 1, 5000);
    const room = 'channel:hole';
    const ca = await member(a.url, 'ca', [room]);
    const cb = await member(b.url, 'cb', [room]);
    await waitSubscribed(redis.port, `${prefix}room:${room}`, 2, 3000);
    ca.send({ type: 'send_message', room, data: { phase: 'before' } });
    await cb.next(isMessage(room, 'phase', 'before'));

    proxy.blackhole(true);
    const holed = Date.now();
    // probe interval 1 s + probe timeout 1 s + 2 s
    await waitFor('a probe failure is counted', async () => (await a.metric('wsedge_broker_probe_failures_total')) >= 1, 4000);
    expect(Date.now() - holed).toBeLessThanOrEqual(4000);
    await brokerState([a], 0, 1000);
    expect(await readyz(a)).toEqual({ status: 200, body: { status: 'ready', node_id: 'bh-a', broker: 'down', connections: 1 } });
    expect(a.logs.filter((l) => l['event'] === 'broker_probe_failed')[0]).toMatchObject({ level: 'warn', timeout_s: 1 });
    expect(await b.metric('wsedge_broker_up')).toBe(1);

    // A silent link rarely heals at once: keep it starved while the node rebuilds its connections.
    await pause(2000);
    expect(await a.metric('wsedge_broker_up')).toBe(0);
    proxy.blackhole(false);
    await brokerState([a], 1, 10_000);
    expect(await readyz(a)).toEqual({ status: 200, body: { status: 'ready', node_id: 'bh-a', broker: 'up', connections: 1 } });
    await waitSubscribed(redis.port, `${prefix}room:${room}`, 2, 3000);
    ca.send({ type: 'send_message', room, data: { phase: 'after' } });
    expect(await cb.next(isMessage(room, 'phase', 'after'))).toMatchObject({ sender: 'ca' });
    cb.send({ type: 'send_message', room, data: { phase: 'reply' } });
    expect(await ca.next(isMessage(room, 'phase', 'reply'))).toMatchObject({ sender: 'cb' });
  });
});

describe('an upgrade that waits for the connection registry', () => {
  it('opens unadmitted: early frames are handled after connected, in order; a socket closed while waiting gives its slot back; a refusal is 4429', { timeout: 30_000 }, async () => {
    const redis = await startRedis();
    const proxy = await startTcpProxy(redis.port);
    const prefix = uniquePrefix();
    // No probe during the test (it would rebuild the link), two connections per user.
    const node = await startTestNode(nodeEnv(proxy.url, prefix, 'wait-a', { REDIS_PROBE_INTERVAL: '3600', WS_MAX_CONNECTIONS_PER_USER: '2' }));
    await brokerState([node], 1, 5000);
    // The registry's script never reaches Redis: the slot is decided by the command timeout (2 s)
    // and the per-node fallback.
    proxy.blackhole(true);
    const opened = (c: TestClient) => new Promise<void>((resolve) => c.ws.once('open', () => resolve()));

    const early = open(node.url, token('waiter'));
    const gone = open(node.url, token('waiter'));
    clients.push(early, gone);
    await Promise.all([opened(early), opened(gone)]);
    early.send({ type: 'ping', id: 'p0' });
    early.send({ type: 'join_room', room: 'project:early', id: 'j1' });
    early.send({ type: 'ping', id: 'p1' });
    gone.close();
    await gone.closed;
    await early.expectNothing(() => true, 500);

    await early.next((e) => e.type === 'connected', 5000);
    expect(await early.next()).toMatchObject({ type: 'pong', id: 'p0' });
    // The first member's room_joined waits for the node's subscription, which the blackholed link
    // never confirms: it comes at the bound (membership.ts CONFIRM_TIMEOUT_MS), after p1's pong.
    expect(await early.next()).toMatchObject({ type: 'pong', id: 'p1' });
    expect(await early.next(undefined, 10_000)).toMatchObject({ type: 'room_joined', id: 'j1', room: 'project:early' });

    // The closed one's slot was given back: one more fits, the next is refused.
    const second = open(node.url, token('waiter'));
    const third = open(node.url, token('waiter'));
    clients.push(second, third);
    await second.next((e) => e.type === 'connected', 5000);
    expect(await third.closed).toEqual({ code: 4429, reason: 'too many connections for this user' });
    expect(third.received).toEqual([]);
    expect(await node.metric('wsedge_connections')).toBe(2);
    expect(await node.metric('wsedge_auth_failures_total', { reason: 'user_limit' })).toBe(1);
    proxy.blackhole(false);
  });
});
