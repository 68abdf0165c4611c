/**
 * The Broker contract (src/broker.ts), run against every implementation as server.ts builds it: the
 * in-memory reference and the Redis fan-out on a real single redis-server, a real Sentinel
 * deployment and a real Redis Cluster (sharded pub/sub). The BrokerTarget is a plain recording
 * sink, the seam the node itself plugs uWS into; nothing of Redis is faked.
 * The second part covers what only the Redis broker has: other nodes, subscriptions, the
 * unsubscribe delay, batching, node-addressed frames and the cross-node latency histogram.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AccessChange, Broker, BrokerTarget, Payload } from '../../src/broker.js';
import type { KeptRevocation } from '../../src/revocation.js';
import { createMemoryBroker } from '../../src/broker-memory.js';
import { headOf, withPosition, type History, type Position } from '../../src/history.js';
import { createMemoryHistory } from '../../src/history-memory.js';
import { loadConfig } from '../../src/config.js';
import { createLogger } from '../../src/log.js';
import { createMetrics, type Metrics } from '../../src/metrics.js';
import { createRedisBroker } from '../../src/redis/broker.js';
import { createRedisClients } from '../../src/redis/clients.js';
import { createRedisHistory } from '../../src/redis/history.js';
import { sampleValue } from '../helpers/node.js';
import { numsub } from '../helpers/broker-checks.js';
import { startRedis, stopAllRedis, uniquePrefix, type RedisServer } from '../helpers/redis.js';
import { startRedisCluster, stopAllClusters, type RedisCluster } from '../helpers/redis-cluster.js';
import { startRedisSentinel, stopAllSentinels, type SentinelSetup } from '../helpers/redis-sentinel.js';
import { waitFor } from '../helpers/wait.js';

const open = new Set<Broker>();

afterAll(async () => {
  await Promise.all([...open].map((b) => b.close()));
  await Promise.all([stopAllRedis(), stopAllSentinels(), stopAllClusters()]);
}, 30_000);

const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));

function text(payload: Payload): string {
  return typeof payload === 'string' ? payload : Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength).toString('utf8');
}

interface RecordingTarget extends BrokerTarget {
  readonly deliveries: Array<{ room: string; payload: Payload }>;
  readonly sequenced: Array<{ room: string; epoch: string; offset: number; text: string }>;
  /** Rooms whose subscription the broker confirmed, in order. */
  readonly confirmed: string[];
  readonly toConnection: Array<{ connectionId: string; payload: Payload }>;
  readonly disconnects: Array<{ userId: string; code: number; reason: string }>;
  readonly accessChanges: AccessChange[];
  readonly revocations: KeptRevocation[];
  /** Payload texts delivered to `room`, in order. */
  texts(room: string): string[];
}

function recordingTarget(): RecordingTarget {
  const deliveries: RecordingTarget['deliveries'] = [];
  const toConnection: RecordingTarget['toConnection'] = [];
  const disconnects: RecordingTarget['disconnects'] = [];
  const accessChanges: AccessChange[] = [];
  const revocations: KeptRevocation[] = [];
  const sequenced: RecordingTarget['sequenced'] = [];
  const confirmed: string[] = [];
  return {
    deliveries,
    sequenced,
    confirmed,
    toConnection,
    disconnects,
    accessChanges,
    revocations,
    revoke: (kept) => void revocations.push(kept),
    deliver: (room, payload) => void deliveries.push({ room, payload }),
    deliverSequenced: (room, epoch, offset, payload) => void sequenced.push({ room, epoch, offset, text: text(payload) }),
    subscribed: (room) => void confirmed.push(room),
    deliverToConnection: (connectionId, payload) => void toConnection.push({ connectionId, payload }),
    disconnectUser: (userId, code, reason) => void disconnects.push({ userId, code, reason }),
    changeAccess: (change) => void accessChanges.push(change),
    texts: (room) => deliveries.filter((d) => d.room === room).map((d) => text(d.payload)),
  };
}

interface BrokerNode {
  readonly nodeId: string;
  readonly broker: Broker;
  readonly history: History;
  readonly target: RecordingTarget;
  readonly metrics: Metrics;
  metric(name: string): Promise<number>;
}

/** Where a broker's Redis is, as a node's environment says it (none: the memory broker). */
type RedisEnv = Record<string, string>;

/** A broker as a node builds it from its environment: Redis when `redisEnv` names one, else the memory broker. */
function makeBrokerNode(nodeId: string, redisEnv: RedisEnv = {}, extra: Record<string, string> = {}): BrokerNode {
  const redis = Object.keys(redisEnv).length > 0;
  const config = loadConfig({
    NODE_ID: nodeId,
    ...extra,
    ...(redis && { REDIS_PREFIX: uniquePrefix(), REDIS_UNSUBSCRIBE_DELAY: '1', ...redisEnv }),
  });
  const target = recordingTarget();
  const metrics = createMetrics();
  const clients = config.redis === undefined ? undefined : createRedisClients(config.redis, config.nodeId);
  const broker = clients === undefined ? createMemoryBroker(target) : createRedisBroker({ config, target, log: createLogger('silent'), metrics, redis: clients });
  const history =
    clients === undefined
      ? createMemoryHistory(config.history, target.deliverSequenced)
      : createRedisHistory({ command: clients.command, cluster: clients.mode === 'cluster', prefix: config.redis!.prefix, nodeId, history: config.history });
  open.add(broker);
  return {
    nodeId,
    broker,
    history,
    target,
    metrics,
    metric: async (name) => sampleValue(await metrics.registry.metrics(), name),
  };
}

async function closeNode(node: BrokerNode): Promise<void> {
  open.delete(node.broker);
  await node.broker.close();
}

/** An encoded envelope as the node would build it; non-ASCII so byte fidelity is visible. */
function envelope(room: string, n: number | string): string {
  return JSON.stringify({ type: 'message.new', room, data: { n, text: 'grüße ✓ 😀' }, sender: 'alice', timestamp: '2024-01-01T00:00:00.000Z' });
}

function contract(name: string, make: (nodeId: string) => Promise<BrokerNode>): void {
  describe(`Broker contract: ${name}`, () => {
    it('reports up once connected', async () => {
      const node = await make('up-node');
      await waitFor('the broker is up', () => node.broker.isUp(), 5000);
      expect(node.broker.isUp()).toBe(true);
      await closeNode(node);
    });

    it('delivers a publish locally before publish() returns, with the very same payload string', async () => {
      const node = await make('local-node');
      const payload = envelope('channel:local', 1);
      node.broker.publish('channel:local', payload);
      // No await since publish(): the delivery already happened, synchronously.
      expect(node.target.deliveries).toHaveLength(1);
      expect(node.target.deliveries[0]!.room).toBe('channel:local');
      expect(node.target.deliveries[0]!.payload).toBe(payload);
      await pause(200);
      expect(node.target.deliveries).toHaveLength(1);
      await closeNode(node);
    });

    it('keeps the order of 1000 publishes from one publisher', async () => {
      const node = await make('order-node');
      const sent = Array.from({ length: 1000 }, (_, i) => envelope('channel:order', i));
      for (const payload of sent) node.broker.publish('channel:order', payload);
      expect(node.target.texts('channel:order')).toEqual(sent);
      await pause(200);
      expect(node.target.texts('channel:order')).toEqual(sent);
      await closeNode(node);
    });

    it('hands sendToConnection for a local connection id to deliverToConnection', async () => {
      const node = await make('conn-node');
      const payload = envelope('user:alice', 'direct');
      node.broker.sendToConnection('conn-node.1f', payload);
      expect(node.target.toConnection).toHaveLength(1);
      expect(node.target.toConnection[0]!.connectionId).toBe('conn-node.1f');
      expect(text(node.target.toConnection[0]!.payload)).toBe(payload);
      await pause(200);
      expect(node.target.toConnection).toHaveLength(1);
      expect(node.target.deliveries).toEqual([]);
      await closeNode(node);
    });

    it('hands disconnectUser to the local target once, with code and reason', async () => {
      const node = await make('kick-node');
      node.broker.disconnectUser('alice', 4403, 'kicked by an admin');
      expect(node.target.disconnects).toEqual([{ userId: 'alice', code: 4403, reason: 'kicked by an admin' }]);
      await pause(200);
      expect(node.target.disconnects).toEqual([{ userId: 'alice', code: 4403, reason: 'kicked by an admin' }]);
      await closeNode(node);
    });

    it('hands changeAccess to the local target once', async () => {
      const node = await make('access-node');
      await waitFor('the broker is up', () => node.broker.isUp(), 5000);
      const change = { op: 'unsubscribe', userId: 'alice', room: 'project:1', connectionId: 'x.1' } as const;
      expect(await node.broker.changeAccess(change)).toBe(true);
      expect(node.target.accessChanges).toEqual([change]);
      await pause(200);
      expect(node.target.accessChanges).toEqual([change]);
      await closeNode(node);
    });

    it('delivers nothing after close()', async () => {
      const node = await make('closed-node');
      await waitFor('the broker is up', () => node.broker.isUp(), 5000);
      node.broker.subscribe('channel:closed');
      await node.broker.close();
      open.delete(node.broker);
      node.broker.publish('channel:closed', envelope('channel:closed', 1));
      node.broker.sendToConnection('closed-node.1', envelope('user:alice', 2));
      node.broker.disconnectUser('alice', 4403, 'gone');
      expect(await node.broker.changeAccess({ op: 'subscribe', userId: 'alice', room: 'project:1', connectionId: undefined })).toBe(false);
      await pause(200);
      const { deliveries, toConnection, disconnects, accessChanges } = node.target;
      expect({ deliveries, toConnection, disconnects, accessChanges }).toEqual({ deliveries: [], toConnection: [], disconnects: [], accessChanges: [] });
    });
  });
}

let redis: RedisServer;
let sentinel: SentinelSetup;
let cluster: RedisCluster;
// Five processes for Sentinel and three for the Cluster on 2 cores that may be busy.
beforeAll(async () => {
  [redis, sentinel, cluster] = await Promise.all([startRedis(), startRedisSentinel(), startRedisCluster({ replicasPerMaster: 0 })]);
}, 60_000);

contract('memory', async (nodeId) => makeBrokerNode(nodeId));
contract('single Redis', async (nodeId) => makeBrokerNode(nodeId, { REDIS_URL: redis.url }));
contract('Redis Sentinel', async (nodeId) => makeBrokerNode(nodeId, { REDIS_SENTINELS: sentinel.sentinels, REDIS_SENTINEL_NAME: sentinel.masterName }));
contract('Redis Cluster', async (nodeId) => makeBrokerNode(nodeId, { REDIS_CLUSTER_NODES: cluster.seeds }));

async function subscribeCalls(server: RedisServer): Promise<number> {
  const info = await server.command('INFO', 'commandstats');
  const match = /cmdstat_subscribe:calls=(\d+),/.exec(info);
  return match ? Number(match[1]) : 0;
}

/**
 * Sequenced rooms (src/history.ts) on one topology: `make(nodeId, prefix)` builds a node with its
 * history, nodes with one prefix sharing the room streams. Kept small: WS_HISTORY_SIZE 10, TTL 1 s.
 */
function sequencedContract(name: string, make: (nodeId: string, prefix: string) => BrokerNode, nodes: 1 | 2): void {
  describe(`Sequenced rooms: ${name}`, () => {
    const head = (room: string, n: number | string) => headOf(envelope(room, n));
    async function subscribedNode(nodeId: string, prefix: string, room: string): Promise<BrokerNode> {
      const node = make(nodeId, prefix);
      await waitFor(`${nodeId} up`, () => node.broker.isUp(), 10_000);
      node.broker.subscribe(room);
      await waitFor(`${nodeId} confirms ${room}`, () => node.target.confirmed.includes(room), 10_000);
      return node;
    }

    it('numbers 50 concurrent appends 1..50 under one epoch and delivers each once, in offset order, as the stored bytes', async () => {
      const room = 'channel:seq';
      const prefix = uniquePrefix();
      const members = await Promise.all(Array.from({ length: nodes }, (_, i) => subscribedNode(`seq-${i}`, prefix, room)));
      const origin = members[0]!;
      const positions = await Promise.all(Array.from({ length: 50 }, (_, n) => origin.history.append(room, head(room, n))));
      const epoch = positions[0]!.epoch;
      expect(new Set(positions.map((p) => p.epoch))).toEqual(new Set([epoch]));
      expect(positions.map((p) => p.offset).sort((a, b) => a - b)).toEqual(Array.from({ length: 50 }, (_, i) => i + 1));
      const expected = positions.map((p, n) => ({ room, epoch, offset: p.offset, text: withPosition(head(room, n), epoch, p.offset) })).sort((a, b) => a.offset - b.offset);
      for (const node of members) {
        await waitFor(`${node.nodeId} receives 50`, () => node.target.sequenced.length >= 50, 10_000);
        expect(node.target.sequenced).toEqual(expected);
        expect(JSON.parse(node.target.sequenced[0]!.text)).toMatchObject({ type: 'message.new', room, offset: 1, epoch });
      }
      await pause(200);
      for (const node of members) expect(node.target.sequenced).toHaveLength(50);
      console.log(JSON.stringify({ topology: name, nodes: members.length, published: 50, received: members.map((m) => m.target.sequenced.length) }));
      await Promise.all(members.map(closeNode));
    });

    it('reads the kept events after an offset, at most WS_HISTORY_SIZE of them, with the position', async () => {
      const room = 'task:kept';
      const node = await subscribedNode('read-node', uniquePrefix(), room);
      const fresh = await node.history.read(room, 0, 0);
      expect(fresh).toEqual({ epoch: expect.stringMatching(/^[A-Za-z0-9_-]{1,64}$/), offset: 0, entries: [] });
      const positions: Position[] = [];
      for (let n = 1; n <= 15; n++) positions.push(await node.history.append(room, head(room, n)));
      // The first append continues the epoch the read gave the fresh room.
      expect(positions[0]).toEqual({ epoch: fresh.epoch, offset: 1, duplicate: false });
      const all = await node.history.read(room, 0, 100);
      expect({ epoch: all.epoch, offset: all.offset }).toEqual({ epoch: fresh.epoch, offset: 15 });
      expect(all.entries.map((e) => e.offset)).toEqual([6, 7, 8, 9, 10, 11, 12, 13, 14, 15]);
      // An append's reply can come before its delivery through pub/sub: compare once all 15 arrived.
      await waitFor('the 15 deliveries', () => node.target.sequenced.length === 15, 10_000);
      expect(all.entries.map((e) => text(e.payload))).toEqual(node.target.sequenced.slice(5).map((d) => d.text));
      const some = await node.history.read(room, 12, 2);
      expect(some.entries.map((e) => e.offset)).toEqual([13, 14]);
      expect((await node.history.read(room, 15, 100)).entries).toEqual([]);
      await closeNode(node);
    });

    it('starts a new epoch at offset 1 once the room was idle past WS_HISTORY_TTL, and reads nothing of the old one', async () => {
      const room = 'project:ttl';
      const node = await subscribedNode('ttl-node', uniquePrefix(), room);
      const first = await node.history.append(room, head(room, 'old'));
      await pause(2100);
      const next = await node.history.append(room, head(room, 'new'));
      expect(next.offset).toBe(1);
      expect(next.epoch).not.toBe(first.epoch);
      const read = await node.history.read(room, 0, 10);
      expect(read.entries.map((e) => JSON.parse(text(e.payload)).data.n)).toEqual(['new']);
      await closeNode(node);
    });
  });
}

const HISTORY_ENV = { WS_HISTORY_SIZE: '10', WS_HISTORY_TTL: '1' };
sequencedContract('memory', (nodeId) => makeBrokerNode(nodeId, {}, HISTORY_ENV), 1);
sequencedContract('single Redis', (nodeId, prefix) => makeBrokerNode(nodeId, { REDIS_URL: redis.url, REDIS_PREFIX: prefix }, HISTORY_ENV), 2);
sequencedContract('Redis Sentinel', (nodeId, prefix) => makeBrokerNode(nodeId, { REDIS_SENTINELS: sentinel.sentinels, REDIS_SENTINEL_NAME: sentinel.masterName, REDIS_PREFIX: prefix }, HISTORY_ENV), 2);
sequencedContract('Redis Cluster', (nodeId, prefix) => makeBrokerNode(nodeId, { REDIS_CLUSTER_NODES: cluster.seeds, REDIS_PREFIX: prefix }, HISTORY_ENV), 2);

describe('Redis broker between two nodes', () => {
  /** Two brokers A and B on one Redis and one prefix, both up. */
  async function pair(server: RedisServer = redis): Promise<{ a: BrokerNode; b: BrokerNode; prefix: string }> {
    const prefix = uniquePrefix();
    const env = { REDIS_URL: server.url, REDIS_PREFIX: prefix };
    const a = makeBrokerNode('node-a', env);
    const b = makeBrokerNode('node-b', env);
    await waitFor('both brokers are up', () => a.broker.isUp() && b.broker.isUp(), 5000);
    return { a, b, prefix };
  }

  async function subscribed(node: BrokerNode, count: number): Promise<void> {
    await waitFor(`${node.nodeId} has ${count} confirmed subscriptions`, async () => (await node.metric('wsedge_broker_subscriptions')) === count, 3000);
  }

  it('delivers A’s room event to B only once B’s subscription is confirmed, exactly once and byte for byte, and never echoes it back to A', async () => {
    const { a, b, prefix } = await pair();
    const room = 'channel:fanout';
    a.broker.subscribe(room);
    await subscribed(a, 1);

    const early = envelope(room, 'early');
    a.broker.publish(room, early);
    await pause(200);
    expect(b.target.deliveries).toEqual([]);

    b.broker.subscribe(room);
    await subscribed(b, 1);
    expect(await numsub(redis.port, `${prefix}room:${room}`)).toBe(2);

    const payload = envelope(room, 'late');
    a.broker.publish(room, payload);
    await waitFor('B receives the event', () => b.target.deliveries.length > 0, 2000);
    await pause(300);
    expect(b.target.deliveries).toHaveLength(1);
    expect(b.target.deliveries[0]!.room).toBe(room);
    expect(text(b.target.deliveries[0]!.payload)).toBe(payload);
    // A delivered each of its events once, locally; its own echo from Redis is ignored.
    expect(a.target.texts(room)).toEqual([early, payload]);
    await Promise.all([closeNode(a), closeNode(b)]);
  });

  it('keeps per-publisher order across nodes: 1000 events from A reach B in order, each once', async () => {
    const { a, b } = await pair();
    const room = 'channel:ordered';
    b.broker.subscribe(room);
    await subscribed(b, 1);
    const sent = Array.from({ length: 1000 }, (_, i) => envelope(room, i));
    for (const payload of sent) a.broker.publish(room, payload);
    await waitFor('B receives 1000 events', () => b.target.deliveries.length >= 1000, 5000);
    await pause(200);
    expect(b.target.texts(room)).toEqual(sent);
    await Promise.all([closeNode(a), closeNode(b)]);
  });

  it('keeps delivering after unsubscribe() for REDIS_UNSUBSCRIBE_DELAY, then stops', async () => {
    const { a, b, prefix } = await pair();
    const room = 'channel:linger';
    const channel = `${prefix}room:${room}`;
    b.broker.subscribe(room);
    await subscribed(b, 1);

    b.broker.unsubscribe(room);
    const left = Date.now();
    await pause(300);
    const during = envelope(room, 'during');
    a.broker.publish(room, during);
    await waitFor('B still receives within the delay', () => b.target.deliveries.length === 1, 2000);
    expect(text(b.target.deliveries[0]!.payload)).toBe(during);
    expect(await numsub(redis.port, channel)).toBe(1);

    await waitFor('B has unsubscribed in Redis', async () => (await numsub(redis.port, channel)) === 0, 3000);
    expect(Date.now() - left).toBeGreaterThanOrEqual(1000);
    await subscribed(b, 0);
    a.broker.publish(room, envelope(room, 'after'));
    await pause(300);
    expect(b.target.texts(room)).toEqual([during]);
    await Promise.all([closeNode(a), closeNode(b)]);
  });

  it('cancels a pending unsubscribe when the room is subscribed again within the delay', async () => {
    const { a, b, prefix } = await pair();
    const room = 'channel:churn';
    const channel = `${prefix}room:${room}`;
    b.broker.subscribe(room);
    await subscribed(b, 1);

    b.broker.unsubscribe(room);
    await pause(200);
    b.broker.subscribe(room);
    await pause(1500); // past the 1 s delay
    expect(await numsub(redis.port, channel)).toBe(1);
    expect(await b.metric('wsedge_broker_subscriptions')).toBe(1);

    const payload = envelope(room, 'still');
    a.broker.publish(room, payload);
    await waitFor('B receives after the cancelled unsubscribe', () => b.target.deliveries.length === 1, 2000);
    expect(text(b.target.deliveries[0]!.payload)).toBe(payload);
    await Promise.all([closeNode(a), closeNode(b)]);
  });

  it('batches a burst of 200 subscribe() calls into at most two SUBSCRIBE commands', async () => {
    // A server of its own: commandstats are server-wide.
    const server = await startRedis();
    const { a, b, prefix } = await pair(server);
    const before = await subscribeCalls(server);
    const rooms = Array.from({ length: 200 }, (_, i) => `channel:burst${i}`);
    for (const room of rooms) b.broker.subscribe(room);
    await subscribed(b, 200);
    const after = await subscribeCalls(server);
    expect(after - before).toBeGreaterThanOrEqual(1);
    expect(after - before).toBeLessThanOrEqual(2);
    expect(await numsub(server.port, `${prefix}room:channel:burst0`)).toBe(1);
    expect(await numsub(server.port, `${prefix}room:channel:burst199`)).toBe(1);

    const payload = envelope('channel:burst123', 'x');
    a.broker.publish('channel:burst123', payload);
    await waitFor('B receives on a burst-subscribed room', () => b.target.deliveries.length === 1, 2000);
    expect(b.target.deliveries[0]!.room).toBe('channel:burst123');
    expect(text(b.target.deliveries[0]!.payload)).toBe(payload);
    await Promise.all([closeNode(a), closeNode(b)]);
  });

  it('carries sendToConnection from A to a connection id of B’s node, and to no one else', async () => {
    const { a, b, prefix } = await pair();
    const c = makeBrokerNode('node-c', { REDIS_URL: redis.url, REDIS_PREFIX: prefix });
    await waitFor('C is up', () => c.broker.isUp(), 5000);
    const payload = envelope('user:bob', 'direct');
    a.broker.sendToConnection('node-b.2a', payload);
    await waitFor('B receives the direct message', () => b.target.toConnection.length === 1, 2000);
    await pause(200);
    expect(b.target.toConnection).toHaveLength(1);
    expect(b.target.toConnection[0]!.connectionId).toBe('node-b.2a');
    expect(text(b.target.toConnection[0]!.payload)).toBe(payload);
    expect(a.target.toConnection).toEqual([]);
    expect(c.target.toConnection).toEqual([]);
    expect(b.target.deliveries).toEqual([]);
    await Promise.all([closeNode(a), closeNode(b), closeNode(c)]);
  });

  it('carries changeAccess from A to B: unsubscribe with and without a connection, subscribe', async () => {
    const { a, b } = await pair();
    const changes = [
      { op: 'unsubscribe', userId: 'bob', room: 'project:9', connectionId: undefined },
      { op: 'unsubscribe', userId: 'bob', room: 'task:3', connectionId: 'nodeb.1k' },
      { op: 'subscribe', userId: 'bob', room: 'channel:new', connectionId: undefined },
    ] as const;
    for (const change of changes) expect(await a.broker.changeAccess(change)).toBe(true);
    await waitFor('B receives the changes', () => b.target.accessChanges.length === 3, 2000);
    expect(b.target.accessChanges).toEqual(changes);
    expect(a.target.accessChanges).toEqual(changes);
    await Promise.all([closeNode(a), closeNode(b)]);
  });

  it('carries revoke from A to B, applied on A at once: by user and issue time, and by jti', async () => {
    const { a, b } = await pair();
    const kept: KeptRevocation[] = [
      { rule: { kind: 'user', userId: 'bob', issuedBefore: 1_700_000_000_000 }, expiresAt: Date.now() + 60_000 },
      { rule: { kind: 'jti', tokenId: 'token-7/x' }, expiresAt: Date.now() + 60_000 },
    ];
    for (const revocation of kept) expect(await a.broker.revoke(revocation)).toBe(true);
    expect(a.target.revocations).toEqual(kept);
    await waitFor('B receives the revocations', () => b.target.revocations.length === 2, 2000);
    expect(b.target.revocations).toEqual(kept);
    await Promise.all([closeNode(a), closeNode(b)]);
  });

  it('carries disconnectUser from A to B, with code and a reason containing spaces', async () => {
    const { a, b } = await pair();
    a.broker.disconnectUser('bob', 4403, 'removed from the workspace');
    expect(a.target.disconnects).toEqual([{ userId: 'bob', code: 4403, reason: 'removed from the workspace' }]);
    await waitFor('B receives the disconnect', () => b.target.disconnects.length === 1, 2000);
    await pause(200);
    expect(b.target.disconnects).toEqual([{ userId: 'bob', code: 4403, reason: 'removed from the workspace' }]);
    expect(a.target.disconnects).toHaveLength(1);
    await Promise.all([closeNode(a), closeNode(b)]);
  });

  it('counts the cross-node latency of events B receives, not of its own', async () => {
    const { a, b } = await pair();
    const room = 'channel:latency';
    a.broker.subscribe(room);
    b.broker.subscribe(room);
    await Promise.all([subscribed(a, 1), subscribed(b, 1)]);
    expect(await b.metric('wsedge_cross_node_latency_seconds_count')).toBe(0);
    for (let i = 0; i < 3; i++) a.broker.publish(room, envelope(room, i));
    b.broker.publish(room, envelope(room, 'own'));
    await waitFor('B has three remote events and its own', () => b.target.texts(room).length === 4, 2000);
    await waitFor('A has its three and B’s', () => a.target.texts(room).length === 4, 2000);
    expect(await b.metric('wsedge_cross_node_latency_seconds_count')).toBe(3);
    expect(await a.metric('wsedge_cross_node_latency_seconds_count')).toBe(1);
    const sum = await b.metric('wsedge_cross_node_latency_seconds_sum');
    expect(sum).toBeGreaterThanOrEqual(0);
    expect(sum).toBeLessThan(3);
    await Promise.all([closeNode(a), closeNode(b)]);
  });

  it('stops delivering A’s events to B once B is closed', async () => {
    const { a, b } = await pair();
    const room = 'channel:gone';
    b.broker.subscribe(room);
    await subscribed(b, 1);
    await closeNode(b);
    a.broker.publish(room, envelope(room, 'after-close'));
    await pause(300);
    expect(b.target.deliveries).toEqual([]);
    await closeNode(a);
  });
});

