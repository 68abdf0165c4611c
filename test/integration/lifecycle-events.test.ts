/**
 * Lifecycle events and webhooks (issue 23): user.online / user.offline and room.occupied /
 * room.vacated once per transition cluster-wide, signals the backend hears, delivered to a real
 * receiver process, signed. One contract run against the memory node and against three nodes on
 * one redis-server and on a 3-master Cluster; then what only Redis has: kill -9 of the node that
 * held a user, a receiver that answers 500 for a while, and the stream a backend reads itself.
 *
 * A test that something did NOT happen waits for a marker instead of a time: a marker user's own
 * user.offline, appended after (its grace window started later), so anything wrong is in by then.
 */
import { Redis } from 'ioredis';
import { afterAll, describe, expect, it } from 'vitest';
import { brokerNodeEnv, startBrokerNodes, stopNodes } from '../helpers/broker-nodes.js';
import { connect, join, type TestClient } from '../helpers/client.js';
import { startTestNode, stopAllNodes } from '../helpers/node.js';
import { startNodeProcess, stopAllProcesses } from '../helpers/processes.js';
import { startRedis, stopAllRedis, uniquePrefix } from '../helpers/redis.js';
import { startRedisCluster, stopAllClusters } from '../helpers/redis-cluster.js';
import { waitFor } from '../helpers/wait.js';
import { startReceiver, stopAllReceivers, WEBHOOK_SECRET, type ReceivedEvent, type Receiver } from '../helpers/webhooks.js';

const GRACE_S = 1;
const clients: TestClient[] = [];

afterAll(async () => {
  clients.splice(0).forEach((c) => c.close());
  stopAllReceivers();
  await stopAllNodes();
  await stopAllProcesses();
  await stopAllRedis();
  await stopAllClusters();
});

const eventsEnv = (receiver: Receiver, extra: Record<string, string> = {}): Record<string, string> => ({
  WS_WEBHOOK_URL: receiver.url,
  WS_WEBHOOK_SECRET: WEBHOOK_SECRET,
  WS_EVENTS_GRACE: String(GRACE_S),
  WS_SIGNALS_TO_BACKEND: 'read',
  ...extra,
});

async function client(url: string, user: string): Promise<TestClient> {
  const c = await connect(url, user);
  clients.push(c);
  return c;
}

const of = (receiver: Receiver, key: string, type?: string): ReceivedEvent[] => receiver.events.filter((e) => (e.user_id === key || e.room === key) && (type === undefined || e.type === type));

/** Waits for `n` events of `type` about `key` (a user or a room). */
const arrived = (receiver: Receiver, key: string, type: string, n = 1): Promise<ReceivedEvent[]> =>
  receiver.until(`${n} ${type} of ${key}`, () => {
    const found = of(receiver, key, type);
    return found.length >= n ? found : undefined;
  });

/** A user who comes and goes: once its user.offline is in, everything appended before it is in too. */
async function marker(receiver: Receiver, url: string, name: string): Promise<void> {
  const c = await client(url, name);
  c.close();
  await arrived(receiver, name, 'user.offline');
}

type Cluster = { urls: string[]; stop(): Promise<void> };

const topologies: Array<[string, (receiver: Receiver) => Promise<Cluster>]> = [
  [
    'one memory node',
    async (receiver) => {
      const node = await startTestNode(eventsEnv(receiver));
      return { urls: [node.url, node.url, node.url], stop: async () => void (await stopNodes([node])) };
    },
  ],
  [
    'three nodes on one redis-server',
    async (receiver) => {
      const nodes = await startBrokerNodes({ REDIS_URL: (await startRedis()).url }, uniquePrefix(), ['la', 'lb', 'lc'], eventsEnv(receiver));
      return { urls: nodes.map((n) => n.url), stop: () => stopNodes(nodes) };
    },
  ],
  [
    'three nodes on a 3-master Redis Cluster',
    async (receiver) => {
      const nodes = await startBrokerNodes({ REDIS_CLUSTER_NODES: (await startRedisCluster({ replicasPerMaster: 0 })).seeds }, uniquePrefix(), ['ca', 'cb', 'cc'], eventsEnv(receiver));
      return { urls: nodes.map((n) => n.url), stop: () => stopNodes(nodes) };
    },
  ],
];

describe.each(topologies)('lifecycle events on %s', (name, start) => {
  it('one user.online and one user.offline per transition, none for a close while another tab is open or a reconnect within grace', { timeout: 60_000 }, async () => {
    const receiver = await startReceiver();
    const cluster = await start(receiver);
    const [a, b] = await Promise.all([client(cluster.urls[0]!, 'olga'), client(cluster.urls[1]!, 'olga')]);
    await arrived(receiver, 'olga', 'user.online');

    a.close();
    await marker(receiver, cluster.urls[2]!, 'm1');
    expect(of(receiver, 'olga').map((e) => e.type)).toEqual(['user.online']);

    // A reload: the last tab closes and a new one opens within the grace window.
    b.close();
    await b.closed;
    const c = await client(cluster.urls[2]!, 'olga');
    await marker(receiver, cluster.urls[0]!, 'm2');
    expect(of(receiver, 'olga').map((e) => e.type)).toEqual(['user.online']);

    const closedAt = Date.now();
    c.close();
    const [offline] = await arrived(receiver, 'olga', 'user.offline');
    const latencyMs = Date.now() - closedAt;
    console.log(JSON.stringify({ scenario: 'user-offline', topology: name, grace_s: GRACE_S, offline_after_ms: latencyMs }));
    expect(offline!.last_seen).toBeGreaterThanOrEqual(closedAt - 1000);
    // The grace window was kept: appended no sooner than grace after the last close.
    expect(offline!.time - offline!.last_seen!).toBeGreaterThanOrEqual(GRACE_S * 1000 - 50);
    const versions = of(receiver, 'olga').map((e) => e.version!);
    expect(versions[1]).toBeGreaterThan(versions[0]!);
    expect(new Set(receiver.events.map((e) => e.id)).size).toBe(receiver.events.length);
    expect(receiver.requests.filter((r) => r.status === 'rejected')).toEqual([]);
    await cluster.stop();
  });

  it('room.occupied once for members on several nodes, room.vacated once after the last leaves; signals with the sender', { timeout: 60_000 }, async () => {
    const receiver = await startReceiver();
    const cluster = await start(receiver);
    const [a, b] = await Promise.all([client(cluster.urls[0]!, 'rita'), client(cluster.urls[1]!, 'sam')]);
    await join(a, 'channel:7');
    await join(b, 'channel:7');
    await arrived(receiver, 'channel:7', 'room.occupied');
    a.send({ type: 'signal', room: 'channel:7', name: 'read', data: { message_id: 41 } });
    a.send({ type: 'signal', room: 'channel:7', name: 'typing', data: null });
    const [read] = await arrived(receiver, 'channel:7', 'signal');
    expect(read).toMatchObject({ name: 'read', room: 'channel:7', user_id: 'rita', username: 'rita', data: { message_id: 41 } });

    a.send({ type: 'leave_room', room: 'channel:7', id: 'l1' });
    await a.next((e) => e.id === 'l1');
    await marker(receiver, cluster.urls[2]!, 'm3');
    expect(of(receiver, 'channel:7').map((e) => e.type)).toEqual(['room.occupied', 'signal']);
    b.close();
    const [vacated] = await arrived(receiver, 'channel:7', 'room.vacated');
    expect(vacated!.version).toBeGreaterThan(of(receiver, 'channel:7', 'room.occupied')[0]!.version!);
    // Personal rooms make no room events; typing is not a signal the backend hears.
    expect(receiver.events.filter((e) => e.room?.startsWith('user:') || e.name === 'typing')).toEqual([]);
    await cluster.stop();
  });
});

describe('lifecycle events on Redis: crashes, a receiver that is down, the stream', () => {
  it('kill -9 of the only node holding a user: exactly one user.offline, from a survivor, within TTL + refresh + grace', { timeout: 60_000 }, async () => {
    const receiver = await startReceiver();
    const redis = await startRedis();
    const env = brokerNodeEnv({ REDIS_URL: redis.url }, uniquePrefix(), '', eventsEnv(receiver));
    const [victim, survivor] = await Promise.all([startNodeProcess({ ...env, NODE_ID: 'kv' }), startNodeProcess({ ...env, NODE_ID: 'ks' })]);
    await client(victim.url, 'petra');
    await arrived(receiver, 'petra', 'user.online');
    const killedAt = Date.now();
    await victim.kill9();
    const [offline] = await arrived(receiver, 'petra', 'user.offline');
    await marker(receiver, survivor.url, 'm4');
    // The killed node may have delivered a batch whose acknowledgement it never sent: the survivor
    // sends it again with the same ids (receivers keep the ids they saw). Transitions stay one each.
    const distinct = [...new Map(of(receiver, 'petra').map((e) => [e.id, e])).values()];
    console.log(JSON.stringify({ scenario: 'user-offline-kill9', slot_ttl_s: 3, grace_s: GRACE_S, appended_after_kill_ms: offline!.time - killedAt, delivered_after_kill_ms: Date.now() - killedAt, last_seen_before_kill_ms: killedAt - offline!.last_seen!, redelivered: of(receiver, 'petra').length - distinct.length }));
    expect(offline!.last_seen).toBeLessThanOrEqual(killedAt);
    expect(distinct.map((e) => e.type)).toEqual(['user.online', 'user.offline']);
  });

  it('a receiver answering 500 for a while gets every event afterwards, each id once, in order per user', { timeout: 90_000 }, async () => {
    const receiver = await startReceiver();
    const nodes = await startBrokerNodes({ REDIS_URL: (await startRedis()).url }, uniquePrefix(), ['ra', 'rb', 'rc'], eventsEnv(receiver, { WS_EVENTS_GRACE: '0' }));
    await receiver.answer(500);
    const users = Array.from({ length: 30 }, (_, i) => `w${i}`);
    // Each user comes and goes twice, on two nodes: 4 events each.
    for (const round of [0, 1]) {
      const open = await Promise.all(users.map((u, i) => client(nodes[(i + round) % 3]!.url, u)));
      open.forEach((c) => c.close());
      await Promise.all(open.map((c) => c.closed));
      await waitFor(`round ${round} offline in the stream`, async () => (await Promise.all(nodes.map((n) => n.metric('wsedge_events_total', { type: 'user.offline' })))).reduce((s, v) => s + v, 0) >= users.length * (round + 1), 20_000);
    }
    await receiver.until('three refused requests', () => (receiver.requests.filter((r) => r.status === 500).length >= 3 ? true : undefined));
    await receiver.answer(200);
    await receiver.until('every event', () => (users.every((u) => of(receiver, u).length >= 4) ? true : undefined), 30_000);
    const ids = receiver.events.map((e) => e.id);
    const perUser = users.map((u) => of(receiver, u).map((e) => e.type).join(','));
    console.log(JSON.stringify({ scenario: 'webhook-receiver-down', refused_requests: receiver.requests.filter((r) => r.status === 500).length, events_sent: users.length * 4, events_received: receiver.events.length, distinct_ids: new Set(ids).size }));
    expect(new Set(ids).size).toBe(ids.length);
    expect(new Set(perUser)).toEqual(new Set(['user.online,user.offline,user.online,user.offline']));
    for (const u of users) {
      const versions = of(receiver, u).map((e) => e.version!);
      expect(versions).toEqual([...versions].sort((x, y) => x - y));
    }
    // Counted once the receiver's answer is in, just after the receiver logged the request.
    await waitFor('every delivery counted', async () => (await Promise.all(nodes.map((n) => n.metric('wsedge_webhook_events_total', { outcome: 'delivered' })))).reduce((s, v) => s + v, 0) === receiver.events.length, 10_000);
    await stopNodes(nodes);
  });

  it('the stream a backend reads with its own consumer group: documented key and fields, capped', { timeout: 30_000 }, async () => {
    const redis = await startRedis();
    const prefix = uniquePrefix();
    const node = await startTestNode({ REDIS_URL: redis.url, REDIS_PREFIX: prefix, WS_EVENTS: 'user.online,user.offline', WS_EVENTS_GRACE: '0', WS_EVENTS_MAXLEN: '100' });
    const reader = new Redis(redis.url);
    const key = `${prefix}{events}`;
    await reader.xgroup('CREATE', key, 'backend', '0', 'MKSTREAM');
    for (let i = 0; i < 150; i += 1) (await client(node.url, `s${i}`)).close();
    await waitFor('300 events appended', async () => (await node.metric('wsedge_events_total', { type: 'user.offline' })) === 150, 20_000);
    const length = await reader.xlen(key);
    const reply = (await reader.xreadgroup('GROUP', 'backend', 'me', 'COUNT', 1, 'STREAMS', key, '>')) as Array<[string, Array<[string, string[]]>]>;
    const [, fields] = reply[0]![1][0]!;
    expect(fields[0]).toBe('type');
    expect(JSON.parse(fields[3]!)).toMatchObject({ type: fields[1], user_id: expect.stringMatching(/^s\d+$/), version: expect.any(Number), time: expect.any(Number) });
    console.log(JSON.stringify({ scenario: 'events-stream-cap', appended: 300, maxlen: 100, length }));
    // MAXLEN ~ trims whole macro nodes: about the cap, never the whole history.
    expect(length).toBeLessThan(300);
    reader.disconnect();
  });
});
