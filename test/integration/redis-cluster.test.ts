/**
 * The Redis broker on a real Redis Cluster (3 masters, 3 replicas, one cluster for the file) with
 * in-process nodes: cross-node delivery for rooms on different shards over shard channels only
 * (SPUBLISH/SSUBSCRIBE, never a classic PUBLISH broadcast), the cluster-wide per-user limit with
 * the user's key in one slot. Shard faults (failover, frozen or killed master) are covered by
 * redis-cluster-faults.test.ts.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { closeMembers, member, startBrokerNodes, stopNodes } from '../helpers/broker-nodes.js';
import { open, token, type TestClient } from '../helpers/client.js';
import { stopAllNodes, type TestNode } from '../helpers/node.js';
import { uniquePrefix } from '../helpers/redis.js';
import { keyslot, roomsOnMasters, shardSubscribed, startRedisCluster, stopAllClusters, type RedisCluster } from '../helpers/redis-cluster.js';
import { info, query, sleep } from '../helpers/redis-process.js';

// Six redis-server processes and gossip on 2 cores that may be busy.
const SETUP_TIMEOUT_MS = 60_000;
const LIMIT_CLOSE = { code: 4429, reason: 'too many connections for this user' };

let cluster: RedisCluster;
/** Clients the per-user limit test opens itself. */
const clients: TestClient[] = [];

beforeAll(async () => {
  cluster = await startRedisCluster({ masters: 3, replicasPerMaster: 1 });
}, SETUP_TIMEOUT_MS);

afterAll(async () => {
  closeMembers();
  for (const client of clients) client.close();
  await stopAllNodes();
  await stopAllClusters();
}, 30_000);

const startNodes = (prefix: string, ids: string[], extra: Record<string, string> = {}) => startBrokerNodes({ REDIS_CLUSTER_NODES: cluster.seeds }, prefix, ids, extra);

/** calls=N of one command in INFO commandstats; 0 if never called. */
async function commandCalls(port: number, command: string): Promise<number> {
  const stat = (await info(port, 'commandstats'))[`cmdstat_${command}`];
  return stat === undefined ? 0 : Number(/calls=(\d+)/.exec(stat)![1]);
}

describe('Redis Cluster broker', () => {
  it('delivers cross-node, once and in per-publisher order, for rooms on three different shards', { timeout: 30_000 }, async () => {
    const prefix = uniquePrefix();
    const nodes = await startNodes(prefix, ['rc-a', 'rc-b', 'rc-c']);
    const placed = await roomsOnMasters(cluster, prefix, 'spread', (await cluster.masters()).map((m) => m.port));
    const rooms = placed.map((p) => p.room);
    expect(new Set(placed.map((p) => p.master)).size).toBeGreaterThanOrEqual(2);
    expect(new Set(placed.map((p) => p.slot)).size).toBe(placed.length);

    const users = ['ua', 'ub', 'uc'];
    const members = await Promise.all(nodes.map((node, i) => member(node, users[i]!, rooms)));
    for (const p of placed) await shardSubscribed(cluster, p.channel, 3, 5000);

    for (const [i, client] of members.entries()) {
      for (const room of rooms) for (let n = 0; n < 50; n++) client.send({ type: 'send_message', room, data: { from: users[i], n } });
    }
    // Each member gets every publisher's 50 per room: its own locally, the others' through the cluster.
    for (const client of members) {
      for (const room of rooms) {
        for (const from of users) {
          for (let n = 0; n < 50; n++) {
            const e = await client.next((m) => m.type === 'message.new' && m.room === room && m.data?.from === from, 5000);
            expect(e.data).toEqual({ from, n });
          }
        }
      }
    }
    await sleep(300);
    for (const client of members) expect(client.received.filter((e) => e.type === 'message.new')).toEqual([]);
    await stopNodes(nodes);
  });

  it('uses shard channels on the owning master only: SSUBSCRIBE and SPUBLISH, never a classic PUBLISH', { timeout: 30_000 }, async () => {
    const prefix = uniquePrefix();
    const masters = (await cluster.masters()).map((m) => m.port);
    const publishesBefore = await Promise.all(masters.map((m) => commandCalls(m, 'publish')));
    const spublishesBefore = await Promise.all(masters.map((m) => commandCalls(m, 'spublish')));
    const nodes = await startNodes(prefix, ['sc-a', 'sc-b']);
    const [a, b] = nodes as [TestNode, TestNode];
    const placed = await roomsOnMasters(cluster, prefix, 'shard', masters);
    const ca = await member(a, 'sa', placed.map((p) => p.room));
    const cb = await member(b, 'sb', placed.map((p) => p.room));
    for (const p of placed) await shardSubscribed(cluster, p.channel, 2, 5000);
    for (const p of placed) {
      ca.send({ type: 'send_message', room: p.room, data: { check: p.room } });
      await cb.next((e) => e.type === 'message.new' && e.room === p.room && e.data?.check === p.room);
    }

    for (const p of placed) {
      expect(await query(p.master, ['PUBSUB', 'SHARDCHANNELS', `${prefix}room:*`])).toContain(p.channel);
      for (const other of masters.filter((m) => m !== p.master)) {
        expect(await query(other, ['PUBSUB', 'SHARDCHANNELS', `${prefix}room:*`])).not.toContain(p.channel);
      }
    }
    for (const m of masters) expect(await query(m, ['PUBSUB', 'CHANNELS', `${prefix}*`])).toEqual([]);
    // Nothing at all was published the classic way, which a cluster copies to every node.
    expect(await Promise.all(masters.map((m) => commandCalls(m, 'publish')))).toEqual(publishesBefore);
    const spublishesAfter = await Promise.all(masters.map((m) => commandCalls(m, 'spublish')));
    for (const [i, m] of masters.entries()) {
      if (placed.some((p) => p.master === m)) expect(spublishesAfter[i]!).toBeGreaterThan(spublishesBefore[i]!);
    }
    await stopNodes(nodes);
  });

  it('admits exactly five of six simultaneous connects over three nodes; the user key lives in one slot', { timeout: 30_000 }, async () => {
    const prefix = uniquePrefix();
    const nodes = await startNodes(prefix, ['lim-1', 'lim-2', 'lim-3'], { WS_MAX_CONNECTIONS_PER_USER: '5' });
    const key = `${prefix}conns:{alice}`;
    expect(await keyslot(cluster, key)).toBe(await keyslot(cluster, '{alice}'));

    type Outcome = { connected: string } | { closed: { code: number; reason: string } };
    const attempt = (node: TestNode): Promise<Outcome> => {
      const client = open(node.url, token('alice'));
      clients.push(client);
      const connected = client.next((e) => e.type === 'connected', 8000).then((e): Outcome => ({ connected: e.data.connection_id as string }));
      connected.catch(() => {});
      return Promise.race([connected, client.closed.then((closed): Outcome => ({ closed }))]);
    };
    const outcomes = await Promise.all(nodes.flatMap((node) => [attempt(node), attempt(node)]));
    expect(outcomes.filter((o) => 'connected' in o)).toHaveLength(5);
    expect(outcomes.filter((o) => 'closed' in o)).toEqual([{ closed: LIMIT_CLOSE }]);

    const owner = await cluster.masterForKey(key);
    expect(await query(owner, ['ZCARD', key])).toBe(5);
    for (const other of (await cluster.masters()).filter((m) => m.port !== owner)) {
      expect(await cluster.command(other.port, 'ZCARD', key)).toMatch(new RegExp(`^-MOVED ${await keyslot(cluster, key)} 127\\.0\\.0\\.1:${owner}\r\n$`));
    }
    const ids = outcomes.flatMap((o) => ('connected' in o ? [o.connected] : []));
    expect(((await query(owner, ['ZRANGE', key, '0', '-1'])) as string[]).sort()).toEqual(ids.sort());
    const failures = await Promise.all(nodes.map((n) => n.metric('wsedge_auth_failures_total', { reason: 'user_limit' })));
    expect(failures.reduce((x, y) => x + y, 0)).toBe(1);
    await stopNodes(nodes);
  });

});
