/**
 * The PresenceStore contract (src/presence.ts), run against every implementation as server.ts builds
 * it: the memory store, and the Redis store on a real single redis-server and on a real 3-master
 * Redis Cluster. A deployment has three nodes' stores sharing one state: Redis stores with their own
 * connections and node ids on one prefix; the memory store is one node's whole world, so there every
 * node is the same store. Nothing of Redis is faked.
 *
 * Covered: adds, removes (with a reason, or a grace) and the snapshots and stats that read them; a
 * user with connections on several nodes present once, with one join and one leave whatever calls
 * race; versions that only grow, also across a room that empties and comes back after the store
 * forgot it; entries whose node stopped refreshing expiring once, whichever nodes sweep at once, and
 * refreshes keeping entries alive and re-adding lost ones; sweepIdle; and, with the tracker on top of
 * each store, presence events only up to WS_PRESENCE_EVENTS_MAX_USERS, counted by the store.
 *
 * Expiry needs time to pass: entries live SHORT_TTL_MS, and the tests wait for the store to report
 * the expiry, not for a clock. Where a scenario needs a call to come before an entry expires, the
 * store's own answer says whether it did (a sweep would have reported the entry), and the scenario
 * is run again in a fresh room if a busy machine stalled past it.
 */
import type { Cluster } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { BrokerTarget, Payload } from '../../src/broker.js';
import { createMemoryBroker } from '../../src/broker-memory.js';
import { loadConfig } from '../../src/config.js';
import { createLogger } from '../../src/log.js';
import { createMetrics } from '../../src/metrics.js';
import { createMemoryPresence } from '../../src/presence-memory.js';
import { createPresenceTracker } from '../../src/presence-tracker.js';
import type { PresenceChange, PresenceMember, PresenceStore } from '../../src/presence.js';
import { createRedisClients } from '../../src/redis/clients.js';
import type { RedisClients } from '../../src/redis/links.js';
import { createRedisPresence } from '../../src/redis/presence.js';
import { slotOf, tagFor } from '../../src/redis/slots.js';
import { startRedisCluster, stopAllClusters, type RedisCluster } from '../helpers/redis-cluster.js';
import { query } from '../helpers/redis-process.js';
import { startRedis, stopAllRedis, uniquePrefix, type RedisServer } from '../helpers/redis.js';
import { waitFor } from '../helpers/wait.js';

/** Never runs out within a test. */
const LONG_TTL_MS = 600_000;
/** Runs out within a test: entries whose node stops refreshing. */
const SHORT_TTL_MS = 1000;
/** How long a room's Redis keys outlive their last write, as server.ts sets it: past any entry's TTL. */
const KEY_LIFE_MS = LONG_TTL_MS + 60_000;
/** Generous bounds for what must happen: on two busy cores a wait may take seconds, never forever. */
const EVENTUALLY_MS = 15_000;

const opened = new Set<RedisClients>();

afterAll(async () => {
  await Promise.all([...opened].map((c) => c.close()));
  await Promise.all([stopAllRedis(), stopAllClusters()]);
}, 30_000);

interface Deployment {
  /** Three nodes' stores sharing one state. */
  readonly nodes: readonly [PresenceStore, PresenceStore, PresenceStore];
  /** Whether sweepIdle takes the expired entries of rooms nobody calls for (memory) or Redis key expiry does (nothing to report). */
  readonly sweepsIdle: boolean;
  /** Resolves once the store keeps nothing of an emptied room, its version included. */
  forgotten(room: string): Promise<void>;
}

/** A deployment whose Redis keys outlive their last write by `keyLifeMs`. */
type MakeDeployment = (keyLifeMs: number) => Promise<Deployment>;

let redis: RedisServer;
let cluster: RedisCluster;
beforeAll(async () => {
  [redis, cluster] = await Promise.all([startRedis(), startRedisCluster({ replicasPerMaster: 0 })]);
}, 60_000);

/** One node's store: every "node" is that store. A room's state goes with its last entry. */
const memoryDeployment: MakeDeployment = async () => {
  const store = createMemoryPresence();
  return { nodes: [store, store, store], sweepsIdle: true, forgotten: async () => {} };
};

/** The command connection is ready for scripts (in a cluster: to every master; commands are not queued while connecting). */
async function commandReady(clients: RedisClients): Promise<void> {
  await waitFor('the Redis command connection', () => {
    if (clients.command.status !== 'ready') return false;
    if (clients.mode !== 'cluster') return true;
    const masters = (clients.command as Cluster).nodes('master');
    return masters.length > 0 && masters.every((m) => m.status === 'ready');
  }, EVENTUALLY_MS);
}

/** Three nodes' Redis stores on one prefix, as server.ts builds them from the environment. */
async function redisDeployment(env: Record<string, string>, keyLifeMs: number, portOf: (key: string) => Promise<number>): Promise<Deployment> {
  const prefix = uniquePrefix();
  const nodes = await Promise.all(
    ['na', 'nb', 'nc'].map(async (nodeId) => {
      const config = loadConfig({ NODE_ID: nodeId, REDIS_PREFIX: prefix, ...env });
      const clients = createRedisClients(config.redis!, nodeId);
      opened.add(clients);
      await commandReady(clients);
      return createRedisPresence({ command: clients.command, prefix, nodeId, keyLifeMs });
    }),
  );
  return {
    nodes: nodes as [PresenceStore, PresenceStore, PresenceStore],
    sweepsIdle: false,
    async forgotten(room) {
      // The version key (README "Redis"); EXISTS does not touch its expiry, as every store call does.
      const key = `${prefix}{${tagFor(slotOf(`${prefix}room:${room}`))}}pv:${room}`;
      const port = await portOf(key);
      await waitFor(`${key} expired`, async () => Number(await query(port, ['EXISTS', key])) === 0, EVENTUALLY_MS, 100);
    },
  };
}

let rooms = 0;
const freshRoom = (): string => `project:contract-${++rooms}`;

/** Connection `conn` of `user`, on node `node` (a connection id names its node). */
const member = (user: string, conn = 1, node = 'na'): PresenceMember => ({ connectionId: `${node}.${user}-${conn}`, userId: user, username: `${user} (display)` });

/** A change as the assertions read it. */
const brief = (c: PresenceChange): string => `${c.kind === 'join' ? '+' : '-'}${c.userId}${c.reason === undefined ? '' : `:${c.reason}`}`;

/**
 * Runs `scenario` in a fresh room until it reports that its calls came in time (it returns the room),
 * at most five times: a stall past SHORT_TTL_MS shows in the store's answers, and is no failure.
 */
async function inTime(scenario: (room: string) => Promise<boolean>): Promise<string> {
  for (let attempt = 0; attempt < 5; attempt++) {
    const room = freshRoom();
    if (await scenario(room)) return room;
  }
  throw new Error(`the machine stalled past ${SHORT_TTL_MS} ms in five attempts`);
}

function contract(name: string, make: MakeDeployment): void {
  describe(`PresenceStore contract: ${name}`, () => {
    let deployment: Deployment;
    beforeAll(async () => {
      deployment = await make(KEY_LIFE_MS);
    }, 30_000);

    it('reports a user’s first connection as a join; snapshot and stats read each present user once, with their connections, at the last change’s version', async () => {
      const [na, nb] = deployment.nodes;
      const room = freshRoom();
      const empty = await na.snapshot(room, 100);
      expect(empty).toEqual({ snapshot: { version: 0, users: [], count: 0 }, changes: [] });
      expect(await na.stats(room)).toEqual({ stats: { version: 0, users: 0, connections: 0 }, changes: [] });

      const [aliceJoined] = await na.add(room, member('alice', 1), LONG_TTL_MS);
      expect(aliceJoined).toEqual({ kind: 'join', userId: 'alice', username: 'alice (display)', version: expect.any(Number), users: 1 });
      expect(aliceJoined!.version).toBeGreaterThan(0);
      // A second connection, and an add of an entry the store has: no change.
      expect(await na.add(room, member('alice', 2), LONG_TTL_MS)).toEqual([]);
      expect(await na.add(room, member('alice', 1), LONG_TTL_MS)).toEqual([]);
      const [bobJoined] = await nb.add(room, member('bob', 1, 'nb'), LONG_TTL_MS);
      expect(bobJoined).toMatchObject({ kind: 'join', userId: 'bob', users: 2 });
      expect(bobJoined!.version).toBeGreaterThan(aliceJoined!.version);

      for (const node of deployment.nodes) {
        const { snapshot, changes } = await node.snapshot(room, 100);
        expect(changes).toEqual([]);
        expect({ ...snapshot, users: [...snapshot.users].sort((a, b) => a.user_id.localeCompare(b.user_id)) }).toEqual({
          version: bobJoined!.version,
          count: 2,
          users: [
            { user_id: 'alice', username: 'alice (display)', connections: 2 },
            { user_id: 'bob', username: 'bob (display)', connections: 1 },
          ],
        });
        expect(await node.stats(room)).toEqual({ stats: { version: bobJoined!.version, users: 2, connections: 3 }, changes: [] });
      }
      // `max` caps the list, not the count.
      const capped = (await nb.snapshot(room, 1)).snapshot;
      expect(capped.users).toHaveLength(1);
      expect(capped.count).toBe(2);
      expect((await nb.snapshot(room, 0)).snapshot).toEqual({ version: bobJoined!.version, users: [], count: 2 });
    });

    it('reports a user’s leave with their last connection, with the reason given; removing an entry the store does not have changes nothing', async () => {
      const [na, nb] = deployment.nodes;
      const room = freshRoom();
      await na.add(room, member('alice', 1), LONG_TTL_MS);
      await nb.add(room, member('alice', 2, 'nb'), LONG_TTL_MS);
      const [bobJoined] = await na.add(room, member('bob'), LONG_TTL_MS);
      expect(await na.remove(room, member('alice', 1), 0, 'left')).toEqual([]);
      expect(await na.stats(room)).toMatchObject({ stats: { version: bobJoined!.version, users: 2, connections: 2 } });
      const [aliceLeft] = await nb.remove(room, member('alice', 2, 'nb'), 0, 'left');
      expect(aliceLeft).toEqual({ kind: 'leave', userId: 'alice', username: 'alice (display)', version: expect.any(Number), users: 1, reason: 'left' });
      expect(aliceLeft!.version).toBeGreaterThan(bobJoined!.version);
      const [bobRevoked] = await nb.remove(room, member('bob'), 0, 'revoked');
      expect(bobRevoked).toMatchObject({ kind: 'leave', userId: 'bob', username: 'bob (display)', users: 0, reason: 'revoked' });
      expect(await na.remove(room, member('alice', 1), 0, 'left')).toEqual([]);
      expect(await na.remove(room, member('carol'), 0, 'left')).toEqual([]);
      expect(await na.remove(freshRoom(), member('carol'), 0, 'left')).toEqual([]);
      expect((await nb.snapshot(room, 100)).snapshot).toMatchObject({ users: [], count: 0 });
      expect((await nb.stats(room)).stats).toMatchObject({ users: 0, connections: 0 });
    });

    it('keeps a user with connections on every node present once: one join and one leave cluster-wide, whatever calls race', async () => {
      const [na, nb, nc] = deployment.nodes;
      const room = freshRoom();
      const users = Array.from({ length: 20 }, (_, i) => `u${i}`);
      const placed = users.flatMap((u) => [
        [na, member(u, 1, 'na')],
        [nb, member(u, 2, 'nb')],
        [nc, member(u, 3, 'nc')],
      ] as const);
      const joins = (await Promise.all(placed.map(([node, m]) => node.add(room, m, LONG_TTL_MS)))).flat();
      expect(joins.map(brief).sort()).toEqual(users.map((u) => `+${u}`).sort());
      // Each store call decided alone: every count from 1 to 20 once, every version once.
      expect(joins.map((c) => c.users).sort((a, b) => a - b)).toEqual(users.map((_, i) => i + 1));
      expect(new Set(joins.map((c) => c.version)).size).toBe(users.length);
      const snapshots = await Promise.all(deployment.nodes.map((node) => node.snapshot(room, 100)));
      for (const { snapshot } of snapshots) {
        expect(snapshot.count).toBe(users.length);
        expect(snapshot.users.every((u) => u.connections === 3)).toBe(true);
        expect(snapshot.version).toBe(Math.max(...joins.map((c) => c.version)));
      }

      const leaves = (await Promise.all(placed.map(([node, m]) => node.remove(room, m, 0, 'left')))).flat();
      expect(leaves.map(brief).sort()).toEqual(users.map((u) => `-${u}:left`).sort());
      expect(leaves.map((c) => c.users).sort((a, b) => a - b)).toEqual(users.map((_, i) => i));
      expect(Math.min(...leaves.map((c) => c.version))).toBeGreaterThan(Math.max(...joins.map((c) => c.version)));
      expect((await nc.stats(room)).stats).toMatchObject({ users: 0, connections: 0 });
    });

    it('never lets a version go back: each change is above the last, also when a room empties and comes back, before and after the store forgot it', async () => {
      const [na, nb] = deployment.nodes;
      const room = freshRoom();
      const versions: number[] = [];
      const record = (changes: PresenceChange[]) => versions.push(...changes.map((c) => c.version));
      record(await na.add(room, member('alice'), LONG_TTL_MS));
      record(await nb.add(room, member('bob', 1, 'nb'), LONG_TTL_MS));
      record(await na.remove(room, member('alice'), 0, 'left'));
      expect((await nb.stats(room)).stats.version).toBe(versions.at(-1));
      record(await nb.remove(room, member('bob', 1, 'nb'), 0, 'left'));
      // Emptied: its last version (Redis keeps the version key a while) or none (memory forgets the room).
      expect([0, versions.at(-1)]).toContain((await na.stats(room)).stats.version);
      // Back at once.
      record(await nb.add(room, member('bob', 1, 'nb'), LONG_TTL_MS));
      record(await nb.remove(room, member('bob', 1, 'nb'), 0, 'left'));
      expect(versions).toHaveLength(6);
      expect(versions).toEqual([...versions].sort((a, b) => a - b));
      expect(new Set(versions).size).toBe(versions.length);

      // Back after the store forgot the room: a store whose keys outlive their last write by 300 ms.
      const forgetful = await make(300);
      const [fa] = forgetful.nodes;
      const again = freshRoom();
      const [first] = await fa.add(again, member('alice'), SHORT_TTL_MS);
      const [left] = await fa.remove(again, member('alice'), 0, 'left');
      await forgetful.forgotten(again);
      expect((await fa.stats(again)).stats).toEqual({ version: 0, users: 0, connections: 0 });
      const [back] = await fa.add(again, member('alice'), SHORT_TTL_MS);
      expect([first!.version, left!.version, back!.version]).toEqual([first!.version, left!.version, back!.version].sort((a, b) => a - b));
      expect(back!.version).toBeGreaterThan(left!.version);
      await fa.remove(again, member('alice'), 0, 'left');
    });

    it('expires an entry whose node stopped refreshing: one leave (expired), reported once whichever nodes sweep at once; an entry refreshed in time stays', async () => {
      const [na, nb, nc] = deployment.nodes;
      let bobJoined: PresenceChange | undefined;
      // Bob's entry is refreshed before it runs out; alice's node then adds her and never refreshes.
      const room = await inTime(async (r) => {
        [bobJoined] = await nb.add(r, member('bob', 1, 'nb'), SHORT_TTL_MS);
        const refreshed = await nb.refresh(r, [member('bob', 1, 'nb')], LONG_TTL_MS);
        if (refreshed.length > 0) return false;
        expect(await na.add(r, member('alice'), SHORT_TTL_MS)).toMatchObject([{ kind: 'join', userId: 'alice', users: 2 }]);
        return true;
      });
      const seen: PresenceChange[] = [];
      // What the other nodes call on the room: reads, and bob's node's refresh; several at once.
      const sweepAtOnce = async () => {
        const answers = await Promise.all([
          nb.stats(room).then((r) => r.changes),
          nc.stats(room).then((r) => r.changes),
          nc.snapshot(room, 100).then((r) => r.changes),
          nb.refresh(room, [member('bob', 1, 'nb')], LONG_TTL_MS),
        ]);
        seen.push(...answers.flat());
      };
      await waitFor('alice’s entry to expire', async () => {
        await sweepAtOnce();
        return seen.length > 0;
      }, EVENTUALLY_MS, 50);
      await sweepAtOnce();
      expect(seen.map(brief)).toEqual(['-alice:expired']);
      expect(seen[0]).toMatchObject({ username: 'alice (display)', users: 1 });
      expect(seen[0]!.version).toBeGreaterThan(bobJoined!.version);
      expect((await na.stats(room)).stats).toEqual({ version: seen[0]!.version, users: 1, connections: 1 });
      expect((await na.snapshot(room, 100)).snapshot.users).toEqual([{ user_id: 'bob', username: 'bob (display)', connections: 1 }]);
    });

    it('refresh sets the entries’ expiry to ttl from now, and adds back an entry the store lost', async () => {
      const [na, nb] = deployment.nodes;
      const room = freshRoom();
      await na.add(room, member('alice'), LONG_TTL_MS);
      // Down as well as up: the entry now lives SHORT_TTL_MS.
      expect(await na.refresh(room, [member('alice')], SHORT_TTL_MS)).toEqual([]);
      const seen: PresenceChange[] = [];
      await waitFor('alice’s refreshed entry to expire', async () => {
        seen.push(...(await nb.stats(room)).changes);
        return seen.length > 0;
      }, EVENTUALLY_MS, 50);
      expect(seen.map(brief)).toEqual(['-alice:expired']);
      // An entry the store does not have (Redis restarted empty, an add that failed): a join again.
      const readded = await na.refresh(room, [member('alice'), member('carol')], LONG_TTL_MS);
      expect(readded.map(brief)).toEqual(['+alice', '+carol']);
      expect(readded.map((c) => c.users)).toEqual([1, 2]);
      expect((await nb.stats(room)).stats).toMatchObject({ users: 2, connections: 2 });
      expect(await na.refresh(room, [member('alice'), member('carol')], LONG_TTL_MS)).toEqual([]);
    });

    it('keeps a user removed with a grace present through a connection added elsewhere within it: no leave and no second join when the grace runs out', async () => {
      const [na, nb] = deployment.nodes;
      let aliceJoined: PresenceChange | undefined;
      const room = await inTime(async (r) => {
        [aliceJoined] = await na.add(r, member('alice'), LONG_TTL_MS);
        expect(await na.remove(r, member('alice'), SHORT_TTL_MS, 'left')).toEqual([]);
        // Her client reconnects to another node; an answer with changes means the grace had run out.
        return (await nb.add(r, member('alice', 2, 'nb'), LONG_TTL_MS)).length === 0;
      });
      expect((await na.stats(room)).stats).toEqual({ version: aliceJoined!.version, users: 1, connections: 2 });
      const seen: PresenceChange[] = [];
      await waitFor('the graced entry to expire', async () => {
        const { stats, changes } = await nb.stats(room);
        seen.push(...changes);
        return stats.connections === 1;
      }, EVENTUALLY_MS, 50);
      expect(seen).toEqual([]);
      expect((await na.stats(room)).stats).toEqual({ version: aliceJoined!.version, users: 1, connections: 1 });
    });

    it('sweepIdle reports the expired entries of rooms nobody calls for once (memory), or nothing (Redis keys expire on their own)', async () => {
      const [na] = deployment.nodes;
      const room = freshRoom();
      const live = freshRoom();
      await na.add(room, member('alice'), SHORT_TTL_MS);
      await na.add(live, member('bob'), LONG_TTL_MS);
      const swept: Array<[string, PresenceChange[]]> = [];
      if (deployment.sweepsIdle) {
        await waitFor('an idle sweep to take alice’s entry', async () => {
          swept.push(...(await na.sweepIdle()));
          return swept.some(([, changes]) => changes.length > 0);
        }, EVENTUALLY_MS, 50);
        swept.push(...(await na.sweepIdle()));
        expect(swept.filter(([, changes]) => changes.length > 0).map(([r, changes]) => [r, changes.map(brief)])).toEqual([[room, ['-alice:expired']]]);
        expect((await na.stats(room)).changes).toEqual([]);
      } else {
        expect(await na.sweepIdle()).toEqual([]);
      }
      expect(swept.some(([r]) => r === live)).toBe(false);
      expect((await na.stats(live)).stats).toMatchObject({ users: 1, connections: 1 });
    });

    it('under the tracker: presence events go out only while the room has at most eventsMaxUsers users, as the store counts them', async () => {
      const store = deployment.nodes[0];
      const { presence } = loadConfig({ WS_PRESENCE_ROOMS: 'project:*', WS_PRESENCE_EVENTS_MAX_USERS: '3', WS_PRESENCE_TTL: '600', WS_PRESENCE_REFRESH: '300' });
      const published: Array<{ room: string; payload: Payload }> = [];
      const target: BrokerTarget = {
        deliver: (room, payload) => void published.push({ room, payload }),
        deliverSequenced() {},
        subscribed() {},
        deliverToConnection() {},
        disconnectUser() {},
        changeAccess() {},
        revoke() {},
      };
      const tracker = createPresenceTracker({ config: presence, store, broker: createMemoryBroker(target), metrics: createMetrics(), log: createLogger('silent') });
      try {
        const room = freshRoom();
        const events = () => published.filter((p) => p.room === room).map((p) => JSON.parse(String(p.payload)) as { type: string; data: { user_id: string; users: number } });
        const users = ['u1', 'u2', 'u3', 'u4', 'u5'];
        users.forEach((u) => tracker.entered(room, member(u)));
        await waitFor('five users present', async () => (await tracker.stats(room)).users === 5, EVENTUALLY_MS);
        // The store answers in order: once it counts five, every join was announced or skipped.
        await tracker.stats(room);
        expect(events().map((e) => `${e.type} ${e.data.user_id} ${e.data.users}`)).toEqual(['presence.join u1 1', 'presence.join u2 2', 'presence.join u3 3']);
        [...users].reverse().forEach((u) => tracker.left(room, member(u).connectionId, 'left'));
        await waitFor('everyone gone', async () => (await tracker.stats(room)).users === 0, EVENTUALLY_MS);
        await tracker.stats(room);
        // A leave goes out when the room had at most three users before it.
        expect(events().slice(3).map((e) => `${e.type} ${e.data.user_id} ${e.data.users}`)).toEqual(['presence.leave u3 2', 'presence.leave u2 1', 'presence.leave u1 0']);
      } finally {
        tracker.stop();
      }
    });
  });
}

contract('memory', memoryDeployment);
contract('single Redis', (keyLifeMs) => redisDeployment({ REDIS_URL: redis.url }, keyLifeMs, async () => redis.port));
contract('Redis Cluster', (keyLifeMs) => redisDeployment({ REDIS_CLUSTER_NODES: cluster.seeds }, keyLifeMs, (key) => cluster.masterForKey(key)));
