/**
 * The cluster-wide per-user connection limit (WS_MAX_CONNECTIONS_PER_USER=5) across three real
 * node processes sharing one redis-server: the simultaneous case, release on close, and a node
 * killed with -9 whose slots expire within REDIS_SLOT_TTL. The user's sorted set in Redis is
 * sampled throughout and must never hold more than five members.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { open, token, type TestClient } from '../helpers/client.js';
import { startNodeProcess, stopAllProcesses, type NodeProcess } from '../helpers/processes.js';
import { startRedis, stopAllRedis, uniquePrefix } from '../helpers/redis.js';
import { waitFor } from '../helpers/wait.js';

const clients: TestClient[] = [];

afterAll(async () => {
  for (const client of clients) client.close();
  await stopAllProcesses();
  await stopAllRedis();
});

const USER = 'many-tabs';
const LIMIT_CLOSE = { code: 4429, reason: 'too many connections for this user' };
const SLOT_TTL_S = 3;

type Outcome = { connected: string } | { closed: { code: number; reason: string } };
interface Attempt {
  readonly node: NodeProcess;
  readonly client: TestClient;
  readonly outcome: Promise<Outcome>;
}

/** Opens a socket for USER on `node`; resolves with its connection id, or with how it was closed. */
function attempt(node: NodeProcess): Attempt {
  const client = open(node.url, token(USER));
  clients.push(client);
  // Raced with `closed`: a refused socket never sends `connected`.
  const connected = client.next((e) => e.type === 'connected', 5000).then((e): Outcome => ({ connected: e.data.connection_id as string }));
  const outcome = Promise.race([connected, client.closed.then((closed): Outcome => ({ closed }))]);
  connected.catch(() => {}); // the refused socket's wait times out later; the race has settled by then
  return { node, client, outcome };
}

describe('cluster-wide connections per user over three node processes', () => {
  it('admits exactly five of six simultaneous connects, frees a slot on close, and frees a killed node’s slots within the TTL', { timeout: 30_000 }, async () => {
    const redis = await startRedis();
    const prefix = uniquePrefix();
    const key = `${prefix}conns:{${USER}}`;
    const nodes = await Promise.all(
      [1, 2, 3].map((i) => startNodeProcess({ NODE_ID: `limit-${i}`, REDIS_URL: redis.url, REDIS_PREFIX: prefix, REDIS_SLOT_TTL: String(SLOT_TTL_S) })),
    );
    // Until its command connection is ready a node counts locally, so wait for every broker.
    const brokerState = async (n: NodeProcess) => ((await (await fetch(`${n.http}/readyz`)).json()) as { broker: string }).broker;
    await waitFor('every broker is up', async () => (await Promise.all(nodes.map(brokerState))).every((b) => b === 'up'), 5000);

    // Sample the user's set for the whole test: it must never exceed the limit.
    const samples: number[] = [];
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        const reply = await redis.command('ZCARD', key);
        samples.push(Number(/^:(\d+)\r\n$/.exec(reply)![1]));
        await new Promise((r) => setTimeout(r, 20));
      }
    })();
    const zcard = async () => Number(/^:(\d+)\r\n$/.exec(await redis.command('ZCARD', key))![1]);

    // Six at once, two per node.
    const six = nodes.flatMap((node) => [attempt(node), attempt(node)]);
    const outcomes = await Promise.all(six.map((a) => a.outcome));
    const admitted = outcomes.flatMap((o, i) => ('connected' in o ? [{ ...six[i]!, connectionId: o.connected }] : []));
    const refused = outcomes.filter((o): o is { closed: { code: number; reason: string } } => 'closed' in o);
    expect(admitted).toHaveLength(5);
    expect(refused).toEqual([{ closed: LIMIT_CLOSE }]);
    expect(await zcard()).toBe(5);
    const failures = await Promise.all(nodes.map((n) => n.metric('wsedge_auth_failures_total', { reason: 'user_limit' })));
    expect(failures.reduce((a, b) => a + b, 0)).toBe(1);
    // Every upgrade waited for Redis and still happened inside the upgrade callback: no build
    // printed its warning about HttpResponse writes outside a cork.
    for (const node of nodes) expect(node.stderr()).not.toContain('corked callback');

    const live = new Set(admitted);
    const liveOn = (node: NodeProcess) => [...live].filter((c) => c.node === node);

    // Closing one frees its slot at once: a connect on another node succeeds without retrying.
    const fromNode = nodes.find((n) => liveOn(n).length === 2)!;
    const toNode = nodes.find((n) => n !== fromNode && liveOn(n).length < 2)!;
    const leaving = liveOn(fromNode)[0]!;
    leaving.client.close();
    expect(await leaving.client.closed).toMatchObject({ code: 1005 });
    live.delete(leaving);
    const replacement = attempt(toNode);
    const replaced = await replacement.outcome;
    expect(replaced).toEqual({ connected: expect.stringMatching(new RegExp(`^${toNode.nodeId}\\.`)) });
    live.add({ ...replacement, connectionId: (replaced as { connected: string }).connected });
    expect(await zcard()).toBe(5);

    // kill -9 a node holding two of the user's connections.
    const victim = nodes.find((n) => liveOn(n).length === 2)!;
    const survivors = nodes.filter((n) => n !== victim);
    const orphans = liveOn(victim);
    // Let the victim refresh its entries once first, so what expires is a refreshed entry.
    const score = async () => Number(/^\$\d+\r\n(\d+)\r\n$/.exec(await redis.command('ZSCORE', key, orphans[0]!.connectionId))![1]);
    const before = await score();
    await waitFor('the victim refreshes its registry entries', async () => (await score()) > before, 2000);
    await victim.kill9();
    const killedAt = Date.now();
    for (const orphan of orphans) {
      expect((await orphan.client.closed).code).toBe(1006);
      live.delete(orphan);
    }
    // Right after the crash its entries still count: no sixth connection.
    const tooSoon = await attempt(survivors[0]!).outcome;
    expect(tooSoon).toEqual({ closed: LIMIT_CLOSE });
    expect(Date.now() - killedAt).toBeLessThan(1000);

    // Within the TTL (plus 2 s of slack) the dead node's slots are gone.
    let regained: Outcome | undefined;
    let target = 0;
    while (regained === undefined || 'closed' in regained) {
      expect(Date.now() - killedAt).toBeLessThanOrEqual((SLOT_TTL_S + 2) * 1000);
      if (regained !== undefined) expect(regained).toEqual({ closed: LIMIT_CLOSE });
      await new Promise((r) => setTimeout(r, 100));
      regained = await attempt(survivors[target++ % 2]!).outcome;
    }
    expect(Date.now() - killedAt).toBeLessThanOrEqual((SLOT_TTL_S + 2) * 1000);
    // Both freed slots are usable; the limit then holds again.
    expect(await attempt(survivors[1]!).outcome).toEqual({ connected: expect.stringMatching(new RegExp(`^${survivors[1]!.nodeId}\\.`)) });
    expect(await attempt(survivors[0]!).outcome).toEqual({ closed: LIMIT_CLOSE });
    expect(await zcard()).toBe(5);

    sampling = false;
    await sampler;
    expect(samples.length).toBeGreaterThan(50);
    expect(Math.max(...samples)).toBeLessThanOrEqual(5);
  });
});
