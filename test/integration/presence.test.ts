/**
 * Presence and signals on real nodes: one node on the memory store; three nodes on one
 * redis-server and on a 3-master Redis Cluster (a user's two tabs on two nodes appear once, one
 * join and one leave per user, snapshots that match the events); node processes on one Redis for
 * kill -9 (leaves within TTL + refresh, once each, no entry left behind), a drain whose clients
 * come back within the grace (no flapping), and 2,000 users joining one room at once (frames
 * counted). Signals: delivered to the others only, never stored or recovered, bad input answered.
 *
 * Cross-node events reach a node only once Redis has confirmed its subscription to the room's
 * channel, and a plain room's room_joined does not wait for that: a watcher's node may still be
 * subscribing when the next user's join is published. The multi-node tests therefore wait until
 * Redis counts the watcher's node (and each next one) as a subscriber before anyone else joins.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { connect, join, open, token, type Envelope, type TestClient } from '../helpers/client.js';
import { numsub, waitSubscribed } from '../helpers/broker-checks.js';
import { startBrokerNodes } from '../helpers/broker-nodes.js';
import { startTestNode, stopAllNodes, stopTestNode } from '../helpers/node.js';
import { startNodeProcess, stopAllProcesses, type NodeProcess } from '../helpers/processes.js';
import { shardNumsub, startRedisCluster, stopAllClusters } from '../helpers/redis-cluster.js';
import { query } from '../helpers/redis-process.js';
import { startRedis, stopAllRedis, uniquePrefix } from '../helpers/redis.js';
import { waitFor } from '../helpers/wait.js';

const API_KEY = 'presence-suite-publish-key-0123456789abcdef';
const clients: TestClient[] = [];

afterAll(async () => {
  clients.splice(0).forEach((c) => c.close());
  await stopAllNodes();
  await stopAllProcesses();
  await stopAllClusters();
  await stopAllRedis();
});

async function member(url: string, user: string, room: string): Promise<TestClient> {
  const c = await connect(url, user);
  clients.push(c);
  await join(c, room);
  return c;
}

const presenceEvents = (c: TestClient, room: string) => c.received.filter((e) => e.room === room && e.type.startsWith('presence.'));
const summary = (events: Envelope[]) => events.map((e) => `${e.type === 'presence.join' ? '+' : '-'}${e.data.user_id}`);

async function ask(c: TestClient, type: 'presence' | 'presence_stats', room: string): Promise<Envelope> {
  const id = `${type}-${Math.random()}`;
  c.send({ type, room, id });
  return c.next((e) => e.id === id, 10_000);
}

/** Generous bounds for what must happen: on two busy cores a wait may take seconds, never forever. */
const EVENTUALLY_MS = 15_000;

/** The broker channel of `room` under `prefix` (README "Redis"). */
const channelOf = (prefix: string, room: string) => `${prefix}room:${room}`;

describe('presence on one node (memory store)', () => {
  it('a user with two tabs is present once: one join, one leave after the last tab; snapshot, stats and the API agree', async () => {
    const node = await startTestNode({ WS_PRESENCE_ROOMS: 'channel:*', PUBLISH_API_KEY: API_KEY });
    const room = 'channel:tabs';
    const observer = await member(node.url, 'olive', room);
    const tab1 = await member(node.url, 'pat', room);
    const tab2 = await member(node.url, 'pat', room);
    await waitFor('pat joined', () => summary(presenceEvents(observer, room)).includes('+pat'), EVENTUALLY_MS);
    const snapshot = await ask(observer, 'presence', room);
    expect(snapshot.data).toMatchObject({ count: 2, truncated: false, users: [{ user_id: 'olive', connections: 1 }, { user_id: 'pat', connections: 2 }] });
    expect((await ask(observer, 'presence_stats', room)).data).toMatchObject({ users: 2, connections: 3, version: snapshot.data.version });
    const api = await fetch(`${node.internal}/api/v1/rooms/${room}/presence_stats`, { headers: { authorization: `Bearer ${API_KEY}` } });
    expect(await api.json()).toMatchObject({ type: 'presence_stats', room, data: { users: 2, connections: 3 } });

    tab1.send({ type: 'leave_room', room, id: 'l1' });
    await tab1.next((e) => e.id === 'l1');
    await new Promise((r) => setTimeout(r, 200));
    expect(summary(presenceEvents(observer, room))).toEqual(['+olive', '+pat']);
    tab2.close();
    await waitFor('pat left', () => summary(presenceEvents(observer, room)).includes('-pat'), EVENTUALLY_MS);
    const events = presenceEvents(observer, room);
    expect(summary(events)).toEqual(['+olive', '+pat', '-pat']);
    expect(events.at(-1)!.data).toMatchObject({ reason: 'left', users: 1 });
    // Versions grow with every change, and the snapshot sits between the join and the leave.
    expect(events.map((e) => e.data.version)).toEqual([...events.map((e) => e.data.version)].sort((a, b) => a - b));
    expect(snapshot.data.version).toBe(events[1]!.data.version);
    // Presence rooms get presence events instead of user_joined/user_left.
    expect(observer.received.filter((e) => e.type === 'user_joined' || e.type === 'user_left')).toEqual([]);
    await stopTestNode(node);
  });

  it('answers bad presence and signal input with documented errors and keeps the connection; delivers signals to the others only, never stored', async () => {
    const node = await startTestNode({ WS_PRESENCE_ROOMS: 'channel:*', WS_HISTORY_ROOMS: 'channel:*', WS_SIGNAL_RATE: '3' });
    const room = 'channel:sig';
    const alice = await member(node.url, 'alice', room);
    const bob = await member(node.url, 'bob', room);
    const refusals: Array<[object, string]> = [
      [{ type: 'presence', room: 'task:1' }, 'no_presence'],
      [{ type: 'presence', room: 'channel:other' }, 'not_joined'],
      [{ type: 'presence', room: 'bad room' }, 'invalid_room'],
      [{ type: 'signal', room, name: 'dance' }, 'unknown_signal'],
      [{ type: 'signal', room: 'channel:other', name: 'typing' }, 'not_joined'],
      [{ type: 'signal', room, name: 7 }, 'invalid_message'],
      [{ type: 'signal', room: 7, name: 'typing' }, 'invalid_message'],
      [{ type: 'signal', room, name: 'typing', data: 'x'.repeat(5000) }, 'invalid_message'],
    ];
    for (const [frame, code] of refusals) {
      const id = `bad-${Math.random()}`;
      alice.send({ ...frame, id });
      expect((await alice.next((e) => e.id === id)).data, JSON.stringify(frame)).toMatchObject({ code });
    }
    // Three signals a second: the fourth is refused, not delivered, and the socket stays.
    for (let i = 0; i < 4; i++) alice.send({ type: 'signal', room, name: 'typing', data: { i }, id: `s${i}` });
    expect((await alice.next((e) => e.id === 's3')).data).toMatchObject({ code: 'rate_limited' });
    await waitFor('three signals', () => bob.received.filter((e) => e.type === 'signal.typing').length === 3, EVENTUALLY_MS);
    const signal = bob.received.find((e) => e.type === 'signal.typing')!;
    expect(signal).toMatchObject({ room, data: { i: 0 }, sender: 'alice', user_id: 'alice' });
    expect(signal.offset).toBeUndefined();
    await alice.expectNothing((e) => e.type.startsWith('signal.'), 200);
    // Not in the room's history: a sequenced room recovers no signal.
    bob.send({ type: 'history', room, id: 'h' });
    expect((await bob.next((e) => e.id === 'h')).data.events).toEqual([]);
    expect(alice.ws.readyState).toBe(alice.ws.OPEN);
    expect(await node.metric('wsedge_signals_total', { outcome: 'delivered' })).toBe(3);
    expect(await node.metric('wsedge_signals_total', { outcome: 'rate_limited' })).toBe(1);
    await stopTestNode(node);
  });
});

/** A topology for three in-process nodes: their environment, and how many subscribers Redis counts on a channel. */
interface Topology {
  readonly env: Record<string, string>;
  subscribers(channel: string): Promise<number>;
}

describe.each([
  [
    'one redis-server',
    async (): Promise<Topology> => {
      const redis = await startRedis();
      return { env: { REDIS_URL: redis.url }, subscribers: (channel) => numsub(redis.port, channel) };
    },
  ],
  [
    'a 3-master Redis Cluster',
    async (): Promise<Topology> => {
      const cluster = await startRedisCluster({ replicasPerMaster: 0 });
      return { env: { REDIS_CLUSTER_NODES: cluster.seeds }, subscribers: async (channel) => shardNumsub(await cluster.masterForKey(channel), channel) };
    },
  ],
])('presence across three nodes on %s', (_name, makeTopology) => {
  it('a user with two tabs on two nodes appears once; one join and one leave per user, seen on every node; snapshots agree', { timeout: 90_000 }, async () => {
    const topology = await makeTopology();
    const prefix = uniquePrefix();
    const nodes = await startBrokerNodes(topology.env, prefix, ['pa', 'pb', 'pc'], { WS_PRESENCE_ROOMS: 'project:*' });
    const room = 'project:cluster';
    const channel = channelOf(prefix, room);
    /** Until Redis counts `count` nodes subscribed to the room: from then on, every join published reaches them. */
    const subscribedBy = (count: number) =>
      waitFor(`${count} node(s) subscribed to ${channel}`, async () => (await topology.subscribers(channel)) === count, EVENTUALLY_MS, 50);
    const watcher = await member(nodes[2]!.url, 'watcher', room);
    await subscribedBy(1);
    const tabA = await member(nodes[0]!.url, 'quinn', room);
    await subscribedBy(2);
    const tabB = await member(nodes[1]!.url, 'quinn', room);
    await subscribedBy(3);
    const other = await member(nodes[1]!.url, 'rosa', room);
    await waitFor('both joined', () => summary(presenceEvents(watcher, room)).filter((s) => s.startsWith('+')).length === 3, EVENTUALLY_MS);
    const snapshots = await Promise.all([tabA, tabB, watcher].map((c) => ask(c, 'presence', room)));
    for (const s of snapshots) expect(s.data).toEqual(snapshots[0]!.data);
    expect(snapshots[0]!.data.users.map((u: { user_id: string; connections: number }) => `${u.user_id}:${u.connections}`).sort()).toEqual(['quinn:2', 'rosa:1', 'watcher:1']);
    tabA.close();
    // Tab A's entry is gone before tab B closes: quinn is still present through tab B, and not seen leaving.
    await waitFor('tab A’s entry removed', async () => (await ask(watcher, 'presence_stats', room)).data.connections === 3, EVENTUALLY_MS, 50);
    expect(summary(presenceEvents(watcher, room))).not.toContain('-quinn');
    tabB.close();
    other.close();
    await waitFor('both left', () => summary(presenceEvents(watcher, room)).filter((s) => s.startsWith('-')).length === 2, EVENTUALLY_MS);
    // A window in which no further presence event may arrive.
    await new Promise((r) => setTimeout(r, 300));
    // Everyone else saw the same: one join and one leave per user, in version order.
    const seen = presenceEvents(watcher, room);
    expect(summary(seen).sort()).toEqual(['+quinn', '+rosa', '+watcher', '-quinn', '-rosa']);
    const stats = await ask(watcher, 'presence_stats', room);
    expect(stats.data).toMatchObject({ users: 1, connections: 1, version: Math.max(...seen.map((e) => e.data.version)) });
    watcher.close();
    await Promise.all(nodes.map(stopTestNode));
  });
});

/** Presence keys of a prefix on one Redis: entries, owners, users, names, versions. */
async function presenceKeys(port: number, prefix: string): Promise<string[]> {
  return ((await query(port, ['KEYS', `${prefix}*p[eounv]:*`])) as string[]).sort();
}

describe('presence on node processes behind one Redis', () => {
  const PRESENCE = { WS_PRESENCE_ROOMS: 'channel:*', WS_PRESENCE_TTL: '3', WS_PRESENCE_REFRESH: '1', WS_PRESENCE_GRACE: '4', WS_ROOM_ACCESS: 'open' };

  it('kill -9 of a node: its users leave within TTL + refresh, one leave each, seen on the other nodes; no entry left behind', { timeout: 60_000 }, async () => {
    const redis = await startRedis();
    const prefix = uniquePrefix();
    const env = { REDIS_URL: redis.url, REDIS_PREFIX: prefix, ...PRESENCE };
    const [victim, survivor] = await Promise.all([startNodeProcess(env), startNodeProcess(env)]);
    const room = 'channel:crash';
    const watcher = await member(survivor!.url, 'watcher', room);
    await waitSubscribed(redis.port, channelOf(prefix, room), 1, EVENTUALLY_MS);
    const doomed = await Promise.all(['v1', 'v2', 'v3'].map((u) => member(victim!.url, u, room)));
    await waitFor('joined', () => presenceEvents(watcher, room).length === 4, EVENTUALLY_MS);
    const killedAt = Date.now();
    await victim!.kill9();
    await waitFor('the victim’s users left', () => presenceEvents(watcher, room).filter((e) => e.type === 'presence.leave').length === 3, 10_000);
    const leftAfterMs = Date.now() - killedAt;
    await new Promise((r) => setTimeout(r, 1500));
    const leaves = presenceEvents(watcher, room).filter((e) => e.type === 'presence.leave');
    console.log(JSON.stringify({ scenario: 'presence-kill9', users: doomed.length, leave_events: leaves.length, left_after_ms: leftAfterMs, bound_ms: 4000 }));
    expect(summary(leaves).sort()).toEqual(['-v1', '-v2', '-v3']);
    expect(leaves.every((e) => e.data.reason === 'expired')).toBe(true);
    // TTL 3 s + refresh 1 s, plus a sweep interval of slack for the process start-up.
    expect(leftAfterMs).toBeLessThan(5500);
    // Only the watcher's entry is left; once it goes, only the room's version, expiring on its own.
    const entries = (await presenceKeys(redis.port, prefix)).find((k) => k.includes('pe:'))!;
    expect((await query(redis.port, ['ZRANGE', entries, '0', '-1'])) as string[]).toHaveLength(1);
    watcher.close();
    await waitFor('only the version key', async () => (await presenceKeys(redis.port, prefix)).every((k) => k.includes('pv:')), 5000);
    const [version] = await presenceKeys(redis.port, prefix);
    expect(Number(await query(redis.port, ['PTTL', version!]))).toBeGreaterThan(0);
  });

  it('a drain (1012) whose clients reconnect elsewhere within the grace: no leave and no second join for them', { timeout: 60_000 }, async () => {
    const redis = await startRedis();
    const prefix = uniquePrefix();
    const env = { REDIS_URL: redis.url, REDIS_PREFIX: prefix, ...PRESENCE, WS_DRAIN_TIMEOUT: '1' };
    const [drained, other] = await Promise.all([startNodeProcess(env), startNodeProcess(env)]);
    const room = 'channel:deploy';
    const watcher = await member(other!.url, 'watcher', room);
    await waitSubscribed(redis.port, channelOf(prefix, room), 1, EVENTUALLY_MS);
    const users = Array.from({ length: 10 }, (_, i) => `mover${i}`);
    const movers = await Promise.all(users.map((u) => member(drained!.url, u, room)));
    await waitFor('joined', () => presenceEvents(watcher, room).length === users.length + 1, EVENTUALLY_MS);
    const closes = movers.map((m) => m.closed);
    const stopping = drained!.stop();
    // Each reconnects to the other node as soon as it sees 1012, as the client library does (0-5 s later).
    const back = await Promise.all(closes.map(async (closed, i) => (await closed).code === 1012 && member(other!.url, users[i]!, room)));
    await stopping;
    expect(back.every(Boolean)).toBe(true);
    // Past the grace: the old entries expire (the stats call sweeps them too), the users stay.
    await waitFor('the drained node’s entries expired', async () => (await ask(watcher, 'presence_stats', room)).data.connections === users.length + 1, EVENTUALLY_MS, 200);
    // A window in which a leave or join of a mover, had there been one, would have arrived.
    await new Promise((r) => setTimeout(r, 300));
    const flaps = presenceEvents(watcher, room).filter((e) => e.data.user_id !== 'watcher').length - users.length;
    console.log(JSON.stringify({ scenario: 'presence-drain', users: users.length, flapping_events: flaps }));
    expect(flaps).toBe(0);
    expect((await ask(watcher, 'presence_stats', room)).data).toMatchObject({ users: users.length + 1, connections: users.length + 1 });
  });

  it('2,000 users join one room at once: presence events stop at WS_PRESENCE_EVENTS_MAX_USERS, frames counted', { timeout: 120_000 }, async () => {
    const redis = await startRedis();
    const env = { REDIS_URL: redis.url, REDIS_PREFIX: uniquePrefix(), ...PRESENCE, WS_PRESENCE_TTL: '30', WS_PRESENCE_REFRESH: '10', WS_MAX_CONNECTIONS_PER_USER: '10' };
    const nodes: NodeProcess[] = await Promise.all([startNodeProcess(env), startNodeProcess(env), startNodeProcess(env)]);
    const room = 'channel:storm';
    const USERS = 2000;
    const sockets: TestClient[] = [];
    for (let i = 0; i < USERS; i += 200) {
      const batch = await Promise.all(
        Array.from({ length: 200 }, async (_, j) => {
          const c = open(nodes[(i + j) % 3]!.url, token(`storm${i + j}`));
          await c.next((e) => e.type === 'connected', 10_000);
          return c;
        }),
      );
      sockets.push(...batch);
    }
    // Every join at once.
    sockets.forEach((c) => c.send({ type: 'join_room', room, id: 'j' }));
    await waitFor('every join answered', () => sockets.every((c) => c.received.some((e) => e.id === 'j')), 30_000);
    await waitFor('every user present', async () => (await ask(sockets[0]!, 'presence_stats', room)).data.users === USERS, 20_000);
    await new Promise((r) => setTimeout(r, 1000));
    const frames = sockets.map((c) => c.received.filter((e) => e.type.startsWith('presence.')).length);
    const total = frames.reduce((a, b) => a + b, 0);
    let maxUsers = 0;
    for (const c of sockets) for (const e of c.received) if (e.type === 'presence.join') maxUsers = Math.max(maxUsers, e.data.users as number);
    const stats = await ask(sockets[0]!, 'presence_stats', room);
    console.log(JSON.stringify({ scenario: 'presence-storm', users: USERS, nodes: 3, cap: 100, presence_frames_total: total, per_client_max: Math.max(...frames), per_node: [0, 1, 2].map((n) => frames.filter((_, i) => i % 3 === n).reduce((a, b) => a + b, 0)), largest_users_in_an_event: maxUsers, stats: stats.data }));
    expect(stats.data).toMatchObject({ users: USERS, connections: USERS });
    expect(maxUsers).toBeLessThanOrEqual(100);
    // At most one event per user up to the cap, each to at most every member: linear in the room, not N².
    expect(total).toBeLessThanOrEqual(100 * USERS);
    sockets.forEach((c) => c.close());
  });
});
