/**
 * The PostgreSQL outbox across real node processes (dist/, `ws-edge serve`) on one redis-server and
 * one PostgreSQL: three consuming nodes share the partitions and one is killed with SIGKILL
 * mid-way; the only consumer stopped while the product keeps committing, then started again; and
 * a database without the table (or with other columns) refused at start in one line. Counted per
 * member: every committed row once, in order per room.
 */
import { execFile } from 'node:child_process';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import pg from 'pg';
import { join, open, token, type TestClient } from '../helpers/client.js';
import { TEST_SECRET } from '../helpers/node.js';
import { startNodeProcess, stopAllProcesses, type NodeProcess } from '../helpers/processes.js';
import { startPostgres, stopAllPostgres, type Postgres } from '../helpers/postgres.js';
import { startRedis, stopAllRedis, uniquePrefix, type RedisServer } from '../helpers/redis.js';
import { waitFor } from '../helpers/wait.js';

let db: Postgres;
let redis: RedisServer;
const clients: TestClient[] = [];

beforeAll(async () => {
  [db, redis] = await Promise.all([startPostgres(), startRedis()]);
  await db.migrate();
}, 60_000);

// Each test's nodes consume the one outbox table: none may outlive its test.
afterEach(async () => {
  for (const c of clients.splice(0)) c.close();
  await stopAllProcesses();
});

afterAll(async () => {
  await Promise.all([stopAllPostgres(), stopAllRedis()]);
});

interface Delivered {
  readonly room: string;
  readonly n: number;
}

/** A member of `rooms` on `node`, and every `task.updated` event its socket carries, in order. */
async function memberOf(node: NodeProcess, rooms: readonly string[]): Promise<Delivered[]> {
  const client = open(node.url, token('alice'));
  clients.push(client);
  const got: Delivered[] = [];
  client.ws.on('message', (raw) => {
    const event = JSON.parse(String(raw)) as { type?: string; room?: string; data?: { n?: number } };
    if (event.type === 'task.updated') got.push({ room: event.room!, n: event.data!.n! });
  });
  await client.next((e) => e.type === 'connected', 5000);
  for (const room of rooms) await join(client, room);
  return got;
}

function tally(got: readonly Delivered[], expected: number) {
  const seen = new Set<string>();
  const last = new Map<string, number>();
  let duplicated = 0;
  let outOfOrder = 0;
  for (const { room, n } of got) {
    const key = `${room}#${n}`;
    if (seen.has(key)) duplicated += 1;
    seen.add(key);
    if ((last.get(room) ?? 0) >= n) outOfOrder += 1;
    last.set(room, n);
  }
  return { expected, received: got.length, distinct: seen.size, lost: expected - seen.size, duplicated, outOfOrder };
}

/** The product: one writer per room committing rows n = 1, 2, ... until `done()`; resolves with the rows committed. */
function writeUntil(rooms: readonly string[], done: () => boolean, gapMs = 0): Promise<number> {
  return Promise.all(
    rooms.map(async (room) => {
      const client = new pg.Client({ connectionString: db.url });
      await client.connect();
      let n = 0;
      try {
        while (!done()) {
          await client.query('INSERT INTO ws_edge_outbox (targets, type, data) VALUES ($1, $2, $3)', [{ room }, 'task.updated', { n: n + 1 }]);
          n += 1;
          if (gapMs > 0) await new Promise((r) => setTimeout(r, gapMs));
        }
      } finally {
        await client.end();
      }
      return n;
    }),
  ).then((counts) => counts.reduce((a, b) => a + b, 0));
}

const waiting = async (): Promise<number> => Number((await db.sql('SELECT count(*)::int AS n FROM ws_edge_outbox')).rows[0].n);
const heldBy = (node: NodeProcess): number[] => (node.logs.filter((l) => l['event'] === 'outbox_partitions').at(-1)?.['partitions'] as number[] | undefined) ?? [];

/** A password in the URL (trust authentication ignores it), which no log line may show. */
const withPassword = (url: string): string => url.replace('postgres@', 'postgres:s3cret-pw@');

function nodeEnv(prefix: string, extra: Record<string, string> = {}): Record<string, string> {
  return { REDIS_URL: redis.url, REDIS_PREFIX: prefix, WS_HISTORY_ROOMS: 'task:*', WS_HISTORY_SIZE: '2000', WS_ROOM_ACCESS: 'open', WS_OUTBOX_URL: withPassword(db.url), WS_OUTBOX_BATCH: '20', WS_OUTBOX_POLL: '200', ...extra };
}

describe('PostgreSQL outbox across node processes', () => {
  it('three nodes share the partitions; kill -9 of one mid-way: every committed row delivered once, in order per room', { timeout: 60_000 }, async () => {
    const prefix = uniquePrefix();
    const nodes = await Promise.all([0, 1, 2].map(() => startNodeProcess(nodeEnv(prefix))));
    // A fair share is at most ceil(16 / 3) = 6 each: 6/6/4 or 6/5/5 (rebalancing every 2 s).
    await waitFor('the 16 partitions spread over the three nodes', () => nodes.every((n) => heldBy(n).length >= 4 && heldBy(n).length <= 6) && nodes.reduce((sum, n) => sum + heldBy(n).length, 0) === 16, 15_000, 50);
    const spread = nodes.map((n) => heldBy(n).length);
    const rooms = Array.from({ length: 16 }, (_, i) => `task:k${i}`);
    const got = await memberOf(nodes[0]!, rooms);
    const victim = nodes[2]!;
    let stop = false;
    const writing = writeUntil(rooms, () => stop, 2);
    await waitFor('400 delivered', () => got.length >= 400, 20_000, 10);
    const atKill = got.length;
    await victim.kill9();
    const killedAt = Date.now();
    // The victim's partitions are taken over by the survivors (their next rebalance, every 2 s).
    await waitFor('the survivors hold all 16 partitions', () => heldBy(nodes[0]!).length + heldBy(nodes[1]!).length === 16, 15_000, 20);
    const takeoverMs = Date.now() - killedAt;
    await waitFor('400 more delivered', () => got.length >= atKill + 400, 20_000, 10);
    stop = true;
    const committed = await writing;
    await waitFor(`all ${committed} delivered and the outbox empty`, async () => got.length >= committed && (await waiting()) === 0, 20_000, 50);
    const counts = tally(got, committed);
    const published = await Promise.all(nodes.slice(0, 2).map((n) => n.metric('wsedge_ingest_entries_total', { source: 'outbox', outcome: 'published' })));
    console.log(`outbox three nodes: partitions ${spread.join('/')}; ${JSON.stringify(counts)}; killed ${victim.nodeId} after ${atKill} delivered; survivors held all 16 partitions ${takeoverMs} ms later; published by the survivors ${published.join(' + ')}`);
    expect(spread.every((s) => s >= 4 && s <= 6)).toBe(true);
    expect(nodes.flatMap((n) => n.logs).filter((l) => JSON.stringify(l).includes('s3cret-pw'))).toEqual([]);
    expect(counts).toMatchObject({ received: committed, distinct: committed, lost: 0, duplicated: 0, outOfOrder: 0 });
  });

  it('the only consumer stopped while the product keeps committing, then started again: everything delivered once, in order', { timeout: 60_000 }, async () => {
    const prefix = uniquePrefix();
    // The member is on a node that does not consume: it stays connected through the consumer's restart.
    const [consumer, edge] = await Promise.all([startNodeProcess(nodeEnv(prefix, { WS_OUTBOX_BATCH: '100' })), startNodeProcess(nodeEnv(prefix, { WS_OUTBOX_URL: '' }))]);
    const rooms = Array.from({ length: 8 }, (_, i) => `task:r${i}`);
    const got = await memberOf(edge!, rooms);
    let stop = false;
    const writing = writeUntil(rooms, () => stop, 20);
    await waitFor('200 delivered', () => got.length >= 200, 20_000, 10);
    await consumer!.stop();
    const stoppedAt = got.length;
    const waitingAtStop = await waiting();
    // The product commits for 8 s with no consumer (bench/outbox.mjs holds it for the 30 s).
    await new Promise((r) => setTimeout(r, 8000));
    const backlog = await waiting();
    const restarted = await startNodeProcess(nodeEnv(prefix, { WS_OUTBOX_BATCH: '100' }));
    await waitFor('200 more delivered after the restart', () => got.length >= stoppedAt + backlog + 200, 20_000, 10);
    stop = true;
    const committed = await writing;
    await waitFor(`all ${committed} delivered and the outbox empty`, async () => got.length >= committed && (await waiting()) === 0, 20_000, 50);
    const counts = tally(got, committed);
    console.log(`outbox consumer restart: ${stoppedAt} delivered at the stop (${waitingAtStop} waiting), ${backlog} rows waiting after 8 s without a consumer, ${JSON.stringify(counts)}; published after the restart ${await restarted.metric('wsedge_ingest_entries_total', { source: 'outbox', outcome: 'published' })}`);
    expect(backlog).toBeGreaterThan(100);
    expect(counts).toMatchObject({ received: committed, distinct: committed, lost: 0, duplicated: 0, outOfOrder: 0 });
  });

  it('refuses to start, in one line, without the outbox table or with other columns', { timeout: 30_000 }, async () => {
    await db.sql('CREATE DATABASE bare');
    await db.sql('CREATE DATABASE wrong');
    const wrong = withPassword(db.url).replace(/\/postgres$/, '/wrong');
    const client = new pg.Client({ connectionString: wrong });
    await client.connect();
    await client.query('CREATE TABLE ws_edge_outbox (id bigserial PRIMARY KEY, targets text NOT NULL, type text NOT NULL, data jsonb, sender text, created_at timestamptz NOT NULL DEFAULT now(), partition int NOT NULL DEFAULT 0)');
    await client.end();
    /** `ws-edge serve` run to its exit: the status, stderr, and stdout (the JSON log). */
    const refusal = (url: string) =>
      new Promise<{ code: number | null; stderr: string; stdout: string }>((resolve) => {
        const env = { PATH: process.env['PATH'] ?? '', HOST: '127.0.0.1', PORT: '0', INTERNAL_HOST: '127.0.0.1', INTERNAL_PORT: '0', JWT_SECRET: TEST_SECRET, WS_OUTBOX_URL: url };
        execFile(process.execPath, ['dist/cli.js', 'serve'], { env, timeout: 15_000 }, (err, stdout, stderr) => resolve({ code: err === null ? 0 : ((err as { code?: number }).code ?? null), stderr, stdout }));
      });
    const [bare, other] = await Promise.all([refusal(db.url.replace(/\/postgres$/, '/bare')), refusal(wrong)]);
    console.log(`outbox schema refusals (exit ${bare.code}, ${other.code}):\n  ${bare.stderr.trim()}\n  ${other.stderr.trim()}`);
    expect(bare).toMatchObject({ code: 1, stderr: 'ws-edge: WS_OUTBOX_TABLE: table ws_edge_outbox not found (in the connection\'s current schema): apply sql/outbox.sql\n' });
    expect(other).toMatchObject({ code: 1, stderr: 'ws-edge: WS_OUTBOX_TABLE: column ws_edge_outbox.targets must be jsonb, found text: apply sql/outbox.sql\n' });
    expect(other.stdout + other.stderr).not.toContain('s3cret-pw');
  });
});
