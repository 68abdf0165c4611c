/**
 * POST /api/v1/users/status (issue 23): whether each user is connected anywhere, with how many
 * connections and when last seen, read from the cluster-wide seat registry. Three in-process nodes
 * on one redis-server and on a 3-master Cluster, one memory node, node processes killed with -9
 * (their users' seats expire within REDIS_SLOT_TTL), bad bodies and a Redis outage.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { startBrokerNodes, stopNodes } from '../helpers/broker-nodes.js';
import { connect, type TestClient } from '../helpers/client.js';
import { startTestNode, stopAllNodes, type TestNode } from '../helpers/node.js';
import { startNodeProcess, stopAllProcesses } from '../helpers/processes.js';
import { startRedis, stopAllRedis, uniquePrefix } from '../helpers/redis.js';
import { startRedisCluster, stopAllClusters } from '../helpers/redis-cluster.js';
import { waitFor } from '../helpers/wait.js';

const API_KEY = 'user-status-suite-key-0123456789abcdef';
const clients: TestClient[] = [];

afterAll(async () => {
  clients.splice(0).forEach((c) => c.close());
  await stopAllNodes();
  await stopAllProcesses();
  await stopAllRedis();
  await stopAllClusters();
});

interface Status {
  readonly user_id: string;
  readonly online: boolean;
  readonly connections: number;
  readonly last_seen: string | null;
}

async function ask(internal: string, body: unknown): Promise<{ status: number; body: { users?: Status[]; error?: string } }> {
  const res = await fetch(`${internal}/api/v1/users/status`, { method: 'POST', headers: { authorization: `Bearer ${API_KEY}`, 'content-type': 'application/json' }, body: JSON.stringify(body) });
  return { status: res.status, body: (await res.json()) as { users?: Status[]; error?: string } };
}

const statusOf = async (internal: string, ids: string[]): Promise<Status[]> => {
  const answer = await ask(internal, { user_ids: ids });
  expect(answer.status).toBe(200);
  return answer.body.users!;
};

/** Waits until the node's Redis connection answers status (a node just started may still be connecting). */
const redisReady = (internal: string) => waitFor('status answered', async () => (await ask(internal, { user_ids: ['probe'] })).status === 200, 10_000);

async function client(url: string, user: string): Promise<TestClient> {
  const c = await connect(url, user);
  clients.push(c);
  return c;
}

describe.each([
  ['one redis-server', async () => ({ REDIS_URL: (await startRedis()).url })],
  ['a 3-master Redis Cluster', async () => ({ REDIS_CLUSTER_NODES: (await startRedisCluster({ replicasPerMaster: 0 })).seeds })],
])('user status across three nodes on %s', (_name, topology) => {
  it('counts a user’s connections on every node, sees each close, and says when an offline user was last seen', { timeout: 60_000 }, async () => {
    const nodes = await startBrokerNodes(await topology(), uniquePrefix(), ['sa', 'sb', 'sc'], { PUBLISH_API_KEY: API_KEY });
    const asker = nodes[2]!.internal;
    const [a, b] = await Promise.all([client(nodes[0]!.url, 'olga'), client(nodes[1]!.url, 'olga')]);
    expect(await statusOf(asker, ['olga', 'nobody'])).toEqual([
      { user_id: 'olga', online: true, connections: 2, last_seen: null },
      { user_id: 'nobody', online: false, connections: 0, last_seen: null },
    ]);
    a.close();
    await waitFor('one connection left', async () => (await statusOf(asker, ['olga']))[0]!.connections === 1, 10_000);
    const before = Date.now();
    b.close();
    await waitFor('olga offline', async () => !(await statusOf(asker, ['olga']))[0]!.online, 10_000);
    const [olga] = await statusOf(asker, ['olga']);
    expect(olga).toMatchObject({ online: false, connections: 0 });
    expect(Date.parse(olga!.last_seen!)).toBeGreaterThanOrEqual(before - 2000);
    // 500 ids in one question, most never seen: one script per user, pipelined per shard.
    const many = Array.from({ length: 500 }, (_, i) => `u${i}`);
    const started = process.hrtime.bigint();
    const answers = await statusOf(asker, many);
    console.log(JSON.stringify({ scenario: 'users-status', topology: _name, ids: many.length, ms: Number(process.hrtime.bigint() - started) / 1e6 }));
    expect(answers.map((s) => s.user_id)).toEqual(many);
    await stopNodes(nodes);
  });
});

describe('user status: crashes, one node, bad input', () => {
  it('a user whose only node was killed with -9 goes offline once its seats expire (REDIS_SLOT_TTL), last seen at the last refresh', { timeout: 60_000 }, async () => {
    const redis = await startRedis();
    const env = { REDIS_URL: redis.url, REDIS_PREFIX: uniquePrefix(), REDIS_SLOT_TTL: '3', PUBLISH_API_KEY: API_KEY };
    const [victim, survivor] = await Promise.all([startNodeProcess({ ...env, NODE_ID: 'kv' }), startNodeProcess({ ...env, NODE_ID: 'ks' })]);
    await Promise.all([redisReady(victim.internal), redisReady(survivor.internal)]);
    await client(victim.url, 'petra');
    expect((await statusOf(survivor.internal, ['petra']))[0]).toMatchObject({ online: true, connections: 1 });
    const killedAt = Date.now();
    await victim.kill9();
    await waitFor('petra offline', async () => !(await statusOf(survivor.internal, ['petra']))[0]!.online, 20_000);
    const offlineAfterMs = Date.now() - killedAt;
    const [petra] = await statusOf(survivor.internal, ['petra']);
    console.log(JSON.stringify({ scenario: 'users-status-kill9', slot_ttl_s: 3, offline_after_ms: offlineAfterMs, last_seen_before_kill_ms: killedAt - Date.parse(petra!.last_seen!) }));
    expect(Date.parse(petra!.last_seen!)).toBeLessThanOrEqual(killedAt + 1000);
  });

  it('answers from the node itself without Redis, and refuses bad bodies with 400 invalid_user_ids', async () => {
    const node: TestNode = await startTestNode({ PUBLISH_API_KEY: API_KEY });
    const c = await client(node.url, 'quinn');
    expect(await statusOf(node.internal, ['quinn'])).toEqual([{ user_id: 'quinn', online: true, connections: 1, last_seen: null }]);
    c.close();
    await waitFor('quinn offline', async () => !(await statusOf(node.internal, ['quinn']))[0]!.online, 10_000);
    expect((await statusOf(node.internal, ['quinn']))[0]!.last_seen).toMatch(/^\d{4}-\d\d-\d\dT/);
    for (const body of [{}, { user_ids: [] }, { user_ids: 'quinn' }, { user_ids: ['a', 'a'] }, { user_ids: ['bad id'] }, { user_ids: Array.from({ length: 501 }, (_, i) => `u${i}`) }]) {
      const answer = await ask(node.internal, body);
      expect([answer.status, answer.body.error], JSON.stringify(body).slice(0, 60)).toEqual([400, 'invalid_user_ids']);
    }
  });

  it('is 503 unavailable while Redis is down (a per-node answer would be wrong cluster-wide)', async () => {
    const redis = await startRedis();
    const node = await startTestNode({ REDIS_URL: redis.url, REDIS_PREFIX: uniquePrefix(), PUBLISH_API_KEY: API_KEY });
    await redisReady(node.internal);
    await redis.stop();
    await waitFor('503 while Redis is down', async () => (await ask(node.internal, { user_ids: ['rita'] })).status === 503, 10_000);
    expect((await ask(node.internal, { user_ids: ['rita'] })).body.error).toBe('unavailable');
  });
});
