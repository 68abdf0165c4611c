/**
 * Membership events bounded cluster-wide (src/announcements.ts, issue 25): the AnnouncementStore
 * contract against both stores (this node's memory; a real redis-server), then the rule as clients
 * see it on two nodes sharing Redis, where each node's own count used to decide (every node
 * announced up to the cap), and a killed node's announced members, whose leave a survivor announces
 * once their places lapse.
 */
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createMemoryAnnouncements, type Announced, type AnnouncementStore } from '../../src/announcements.js';
import { createRedisAnnouncements } from '../../src/redis/announcements.js';
import { closeMembers, member, startBrokerNodes, stopNodes } from '../helpers/broker-nodes.js';
import { join, open, token, type Envelope, type TestClient } from '../helpers/client.js';
import type { TestNode } from '../helpers/node.js';
import { startNodeProcess, stopAllProcesses } from '../helpers/processes.js';
import { startRedis, stopAllRedis, uniquePrefix, type RedisServer } from '../helpers/redis.js';
import { waitFor } from '../helpers/wait.js';

let redis: RedisServer;
const clients: Redis[] = [];

beforeAll(async () => {
  redis = await startRedis();
});

afterAll(async () => {
  closeMembers();
  clients.forEach((c) => c.disconnect());
  await stopAllProcesses();
  await stopAllRedis();
}, 30_000);

const person = (n: number): Announced => ({ connectionId: `node.${n}`, userId: `u${n}`, username: `User ${n}` });
let rooms = 0;
const freshRoom = () => `project:${++rooms}`;

const stores: Array<[string, () => AnnouncementStore]> = [
  ['memory', createMemoryAnnouncements],
  [
    'redis',
    () => {
      const client = new Redis(redis.port, '127.0.0.1');
      clients.push(client);
      return createRedisAnnouncements(client, uniquePrefix(), 600);
    },
  ],
];

describe.each(stores)('AnnouncementStore contract: %s', (_name, makeStore) => {
  it('takes places up to the cap, then none; a given place is free again; a member holds one place however often it asks', async () => {
    const store = makeStore();
    const room = freshRoom();
    const taken = [];
    for (let n = 1; n <= 5; n++) taken.push((await store.take(room, person(n), 3)).taken);
    expect(taken).toEqual([true, true, true, false, false]);
    expect((await store.take(room, person(2), 3)).taken).toBe(true);
    store.give(room, person(2));
    await waitFor('the given place', async () => (await store.take(room, person(4), 3)).taken);
    expect((await store.take(room, person(5), 3)).taken).toBe(false);
  });

  it('a cap of 0 never takes a place; rooms are separate', async () => {
    const store = makeStore();
    const [a, b] = [freshRoom(), freshRoom()];
    expect((await store.take(a, person(1), 0)).taken).toBe(false);
    expect((await store.take(a, person(1), 1)).taken).toBe(true);
    expect((await store.take(b, person(2), 1)).taken).toBe(true);
    expect((await store.take(a, person(2), 1)).taken).toBe(false);
  });
});

describe('AnnouncementStore in Redis: lapsed places', () => {
  it('a member its node stopped refreshing lapses: the next take frees its place and returns it once', async () => {
    const client = new Redis(redis.port, '127.0.0.1');
    clients.push(client);
    const prefix = uniquePrefix();
    const store = createRedisAnnouncements(client, prefix, 1);
    const room = freshRoom();
    expect((await store.take(room, person(1), 1)).taken).toBe(true);
    // A cap of 0 takes nothing: each call only reports lapsed members.
    const lapsed = await waitFor('the lapsed member', async () => {
      const { lapsed: found } = await store.take(room, person(9), 0);
      return found.length > 0 && found;
    });
    expect(lapsed).toEqual([person(1)]);
    expect((await store.take(room, person(2), 1)).taken).toBe(true);
    expect((await store.take(room, person(3), 0)).lapsed).toEqual([]);
  });
});

const isJoined = (e: Envelope) => e.type === 'user_joined';

describe('two nodes on Redis, WS_MEMBERSHIP_EVENTS_MAX_MEMBERS=3', () => {
  let nodes: TestNode[] = [];
  afterAll(() => stopNodes(nodes));

  /** Every join after the first has an outcome (the first member's own join has one too, announced to nobody). */
  const settled = async (joins: number): Promise<boolean> => {
    const counts = await Promise.all(nodes.flatMap((n) => ['announced', 'full'].map((outcome) => n.metric('wsedge_membership_announcements_total', { outcome }))));
    return counts.reduce((a, b) => a + b, 0) >= joins;
  };

  it('10 joins alternating between the nodes: 3 announced cluster-wide (the first member hears 2), not 3 per node', async () => {
    nodes = await startBrokerNodes({ REDIS_URL: redis.url }, uniquePrefix(), ['ann-a', 'ann-b'], { WS_MEMBERSHIP_EVENTS_MAX_MEMBERS: '3' });
    const room = 'channel:announced';
    const members: TestClient[] = [];
    for (let n = 0; n < 10; n++) {
      members.push(await member(nodes[n % 2]!, `member-${n}`, [room]));
      await waitFor(`the outcome of join ${n + 1}`, () => settled(n + 1));
    }
    const heard = members[0]!.received.filter(isJoined).map((e) => e.data.user_id);
    const announced = await Promise.all(nodes.map((n) => n.metric('wsedge_membership_announcements_total', { outcome: 'announced' })));
    console.log(`user_joined heard by the first member: ${heard.length} (${heard.join(', ')}); announced per node: ${announced.join(', ')}`);
    await members[0]!.expectNothing((e) => isJoined(e) && !heard.includes(e.data.user_id as string));
    expect(heard).toEqual(['member-1', 'member-2']);
    expect(announced.reduce((a, b) => a + b, 0)).toBe(3);
    // Unannounced leaves are silent; member-1 was announced: its leave is, and frees a place.
    for (const n of [9, 7, 5, 1]) members[n]!.close();
    expect(await members[0]!.next((e) => e.type === 'user_left')).toMatchObject({ data: { user_id: 'member-1' } });
    await members[0]!.expectNothing((e) => e.type === 'user_left');
    // Node b has one member left (under the cap), and a place is free: announced.
    const late = await member(nodes[1]!, 'member-late', [room]);
    expect(await members[0]!.next((e) => isJoined(e) && e.data.user_id === 'member-late')).toBeDefined();
    late.close();
  });
});

describe('a killed node', () => {
  it("its announced members' leave is announced by a survivor once their places lapse (REDIS_SLOT_TTL)", async () => {
    const prefix = uniquePrefix();
    const env = { REDIS_URL: redis.url, REDIS_PREFIX: prefix, REDIS_SLOT_TTL: '3' };
    const [survivor, victim] = await Promise.all([startNodeProcess({ ...env, NODE_ID: 'ann-s' }), startNodeProcess({ ...env, NODE_ID: 'ann-v' })]);
    const alice = open(survivor.url, token('alice'));
    await alice.next((e) => e.type === 'connected');
    await join(alice, 'channel:kill');
    const bob = open(victim.url, token('bob'));
    await bob.next((e) => e.type === 'connected');
    await join(bob, 'channel:kill');
    await alice.next((e) => isJoined(e) && e.data.user_id === 'bob');
    const killedAt = Date.now();
    await victim.kill9();
    await alice.next((e) => e.type === 'user_left' && e.data.user_id === 'bob', 20_000);
    console.log(`user_left for the killed node's member after ${Date.now() - killedAt} ms (REDIS_SLOT_TTL 3 s)`);
    alice.close();
  });
});
