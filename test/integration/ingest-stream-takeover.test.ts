/**
 * The issue 27 stream measure, moderate: three ws-edge serve processes (dist/) on one redis-server
 * read WS_STREAM; the product appends numbered entries to two sequenced rooms while the consuming
 * node is killed with SIGKILL mid-way. Members on the two other nodes must get every entry once,
 * in order per room: the new holder claims what the dead one left pending, and the entries it had
 * published but not acknowledged dedupe by their id. Counts and the takeover time are printed;
 * bench/ingest.mjs runs the same with 10,000 entries.
 */
import { Redis } from 'ioredis';
import { afterAll, describe, expect, it, onTestFailed } from 'vitest';
import { connect, join, type TestClient } from '../helpers/client.js';
import { startNodeProcess, stopAllProcesses, type NodeProcess } from '../helpers/processes.js';
import { startRedis, stopAllRedis, uniquePrefix } from '../helpers/redis.js';
import { waitFor } from '../helpers/wait.js';

const clients: TestClient[] = [];
let producer: Redis | undefined;

afterAll(async () => {
  clients.splice(0).forEach((c) => c.close());
  producer?.disconnect();
  await stopAllProcesses();
  await stopAllRedis();
});

const ROOMS = ['task:k1', 'task:k2'];
const PER_ROOM = 600;
const API_KEY = 'ingest-takeover-test-key-0123456789';

async function consuming(node: NodeProcess): Promise<boolean> {
  const res = await fetch(`${node.http}/readyz`).catch(() => undefined);
  if (res === undefined) return false;
  const body = (await res.json()) as { ingest?: { stream_consuming?: boolean } };
  return body.ingest?.stream_consuming === true;
}

const numbered = (c: TestClient, room: string): number[] => c.received.filter((e) => e.room === room && e.type === 'task.numbered').map((e) => (e.data as { n: number }).n);

type Entry = [id: string, command: string];

/** Reads up to `count` entries as consumer `name` without acknowledging them: its pending ones first, then new ones. */
async function readAs(redis: Redis, stream: string, name: string, count: number): Promise<Entry[]> {
  const read = async (from: string, max: number): Promise<Entry[]> => {
    const reply = (await redis.xreadgroup('GROUP', 'ws-edge', name, 'COUNT', max, 'STREAMS', stream, from)) as Array<[string, Array<[string, string[]]>]> | null;
    return (reply?.[0]?.[1] ?? []).map(([id, fields]) => [id, fields[1]!]);
  };
  const pending = await read('0', count);
  return [...pending, ...(pending.length < count ? await read('>', count - pending.length) : [])];
}

async function publishAs(node: NodeProcess, body: unknown): Promise<void> {
  const res = await fetch(`${node.internal}/api/v1/publish`, { method: 'POST', headers: { authorization: `Bearer ${API_KEY}`, 'content-type': 'application/json' }, body: JSON.stringify(body) });
  expect(res.status).toBe(200);
}

describe('stream ingestion across a kill -9 of the consuming node', () => {
  it('delivers every entry once, in order per room, to members of sequenced rooms; the pending entries are taken over within the lease bound', { timeout: 60_000 }, async () => {
    const redis = await startRedis();
    const stream = `${uniquePrefix()}{in}`;
    const prefix = uniquePrefix();
    const nodes = await Promise.all(['ka', 'kb', 'kc'].map((id) => startNodeProcess({ NODE_ID: id, REDIS_URL: redis.url, REDIS_PREFIX: prefix, WS_STREAM: stream, WS_STREAM_BATCH: '50', WS_HISTORY_ROOMS: 'task:*', WS_HISTORY_SIZE: '1000', WS_RATE_LIMIT: '2000', WS_RATE_BURST: '2000', PUBLISH_API_KEY: API_KEY })));
    onTestFailed(() => {
      for (const n of nodes) console.log(`--- ${n.nodeId} ---\n${n.logs.filter((l) => l['level'] !== 'info' || String(l['event']).startsWith('stream')).map((l) => JSON.stringify(l)).join('\n')}\n${n.stderr()}`);
    });
    const holder = await waitFor('one consuming node', async () => {
      const flags = await Promise.all(nodes.map(consuming));
      return flags.filter(Boolean).length === 1 ? nodes[flags.indexOf(true)]! : false;
    });
    const others = nodes.filter((n) => n !== holder);
    const members = await Promise.all(others.flatMap((n, i) => [0, 1].map(async (j) => {
      const c = await connect(n.url, `m${i}${j}`);
      clients.push(c);
      for (const room of ROOMS) await join(c, room);
      return c;
    })));

    producer = new Redis(redis.url);
    const p = producer;
    let sent = 0;
    const appending = (async () => {
      // 20 entries per round trip, the rooms alternating: the product writing as it commits.
      while (sent < PER_ROOM) {
        const batch = p.pipeline();
        for (let i = 0; i < 10 && sent < PER_ROOM; i += 1) {
          sent += 1;
          for (const room of ROOMS) batch.xadd(stream, '*', 'command', JSON.stringify({ room, type: 'task.numbered', data: { n: sent } }));
        }
        await batch.exec();
        await new Promise((r) => setImmediate(r));
      }
    })();

    await waitFor('a third of the entries at the first member', () => numbered(members[0]!, ROOMS[0]!).length >= PER_ROOM / 3 || false, 20_000, 10);
    // A crash in the middle of a round, made certain: the holder frozen, then 40 entries read in its
    // name (its own pending ones first, so the order stays the stream's) and the first 20 of them
    // published as it would have (the entry id as the idempotency key), then SIGKILL.
    holder.child.kill('SIGSTOP');
    const inFlight = await readAs(p, stream, holder.nodeId, 40);
    for (const [id, command] of inFlight.slice(0, 20)) await publishAs(others[0]!, { ...JSON.parse(command), idempotency_key: `stream:${id}` });
    const killedAt = Date.now();
    const before = numbered(members[0]!, ROOMS[0]!).length;
    await holder.kill9();
    const pendingAtKill = Number((await p.xpending(stream, 'ws-edge'))[0]);
    const next = await waitFor('another node consuming', async () => {
      const flags = await Promise.all(others.map(consuming));
      return flags.includes(true) ? Date.now() : false;
    }, 15_000, 50);
    await appending;
    for (const c of members) for (const room of ROOMS) await waitFor(`${PER_ROOM} of ${room}`, () => numbered(c, room).length >= PER_ROOM || false, 30_000, 50);

    console.log(`killed ${holder.nodeId} after ${before} of ${PER_ROOM} per room had arrived, ${pendingAtKill} entries pending for it (20 of them published already); another node consuming ${next - killedAt} ms later (bound: lease 6 s + check 2 s)`);
    let lostTotal = 0;
    let dupTotal = 0;
    let orderTotal = 0;
    for (const [i, c] of members.entries()) {
      for (const room of ROOMS) {
        const got = numbered(c, room);
        const seen = new Set(got);
        const lost = PER_ROOM - seen.size;
        const duplicates = got.length - seen.size;
        const outOfOrder = got.filter((n, k) => k > 0 && n < got[k - 1]!).length;
        console.log(`member ${i} ${room}: sent ${PER_ROOM}, received ${got.length}, duplicates ${duplicates}, lost ${lost}, out of order ${outOfOrder}`);
        lostTotal += lost;
        dupTotal += duplicates;
        orderTotal += outOfOrder;
      }
    }
    expect({ lost: lostTotal, duplicates: dupTotal, outOfOrder: orderTotal }).toEqual({ lost: 0, duplicates: 0, outOfOrder: 0 });
    await waitFor('an empty stream', async () => (await p.xlen(stream)) === 0);
    expect((await p.xpending(stream, 'ws-edge'))[0]).toBe(0);
    expect(pendingAtKill).toBeGreaterThanOrEqual(40);
  });
});
