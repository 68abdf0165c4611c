/**
 * The PostgreSQL outbox on one in-process node, against a real PostgreSQL (test/helpers/postgres.ts)
 * and a real redis-server: committed rows delivered once each and rolled-back ones never, malformed
 * rows dead-lettered with their reason without stalling their partition, and a database stopped
 * and started again under the node (up gauge, lag, readiness detail, nothing lost or twice).
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import pg from 'pg';
import { closeMembers, logsOnFailure, member } from '../helpers/broker-nodes.js';
import type { TestClient } from '../helpers/client.js';
import { loadConfig, type ConfigError } from '../../src/config.js';
import { startTestNode, stopAllNodes, TEST_SECRET, type TestNode } from '../helpers/node.js';
import { startPostgres, stopAllPostgres, type Postgres } from '../helpers/postgres.js';
import { startRedis, stopAllRedis, uniquePrefix, type RedisServer } from '../helpers/redis.js';
import { waitFor } from '../helpers/wait.js';

let db: Postgres;
let redis: RedisServer;

beforeAll(async () => {
  [db, redis] = await Promise.all([startPostgres(), startRedis()]);
  await db.migrate();
}, 60_000);

afterEach(async () => {
  closeMembers();
  await stopAllNodes();
});

afterAll(async () => {
  await Promise.all([stopAllPostgres(), stopAllRedis()]);
});

interface Delivered {
  readonly room: string;
  readonly n: number;
}

/** Every `task.updated` event the client's socket carries, in arrival order. */
function collect(client: TestClient): Delivered[] {
  const got: Delivered[] = [];
  client.ws.on('message', (raw) => {
    const event = JSON.parse(String(raw)) as { type?: string; room?: string; data?: { n?: number } };
    if (event.type === 'task.updated') got.push({ room: event.room!, n: event.data!.n! });
  });
  return got;
}

function outboxNode(extra: Record<string, string> = {}): Promise<TestNode> {
  return startTestNode({
    REDIS_URL: redis.url,
    REDIS_PREFIX: uniquePrefix(),
    WS_HISTORY_ROOMS: 'task:*',
    WS_HISTORY_SIZE: '2000',
    WS_OUTBOX_URL: db.url,
    ...extra,
  });
}

/** Per room: how many arrived, how many distinct, and whether each room's numbers only grew. */
function tally(got: readonly Delivered[]) {
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
  return { received: got.length, distinct: seen.size, duplicated, outOfOrder, keys: seen };
}

/** One product writer per room: transactions n = first..first+count-1 in turn, each inserting row n; `rollback(n)` ones roll back. */
async function writeRooms(rooms: readonly string[], count: number, rollback: (n: number) => boolean, first = 1): Promise<number> {
  const committed = await Promise.all(
    rooms.map(async (room) => {
      const client = new pg.Client({ connectionString: db.url });
      await client.connect();
      let done = 0;
      try {
        for (let n = first; n < first + count; n++) {
          await client.query('BEGIN');
          await client.query('INSERT INTO ws_edge_outbox (targets, type, data) VALUES ($1, $2, $3)', [{ room }, 'task.updated', { n }]);
          if (rollback(n)) await client.query('ROLLBACK');
          else {
            await client.query('COMMIT');
            done += 1;
          }
        }
      } finally {
        await client.end();
      }
      return done;
    }),
  );
  return committed.reduce((a, b) => a + b, 0);
}

const published = (node: TestNode) => node.metric('wsedge_ingest_entries_total', { source: 'outbox', outcome: 'published' });
const waiting = async (): Promise<number> => Number((await db.sql('SELECT count(*)::int AS n FROM ws_edge_outbox')).rows[0].n);

describe('PostgreSQL outbox', () => {
  it('1,000 transactions of which 10% roll back: exactly the 900 committed are delivered, each once, in order per room', { timeout: 60_000 }, async () => {
    const node = await outboxNode();
    logsOnFailure([node]);
    const rooms = Array.from({ length: 10 }, (_, i) => `task:tx${i}`);
    const client = await member(node, 'alice', rooms);
    const got = collect(client);
    const committed = await writeRooms(rooms, 100, (n) => n % 10 === 0);
    await waitFor('900 events delivered and the outbox empty', async () => got.length >= committed && (await waiting()) === 0 && (await published(node)) >= committed, 30_000, 50);

    const counts = tally(got);
    const rolledBack = [...counts.keys].filter((k) => Number(k.split('#')[1]) % 10 === 0).length;
    console.log(`outbox transactions: 1000 written, ${committed} committed, ${1000 - committed} rolled back; received ${counts.received}, distinct ${counts.distinct}, duplicated ${counts.duplicated}, rolled-back delivered ${rolledBack}, out of order ${counts.outOfOrder}; published metric ${await published(node)}`);
    expect(committed).toBe(900);
    expect(counts).toMatchObject({ received: 900, distinct: 900, duplicated: 0, outOfOrder: 0 });
    expect(rolledBack).toBe(0);
    expect(await published(node)).toBe(900);
  });

  it('moves malformed rows to the dead letter with their reason, counted, and publishes the rows behind them', { timeout: 30_000 }, async () => {
    const node = await outboxNode({ WS_MESSAGE_MAX_SIZE: '2048' });
    logsOnFailure([node]);
    const client = await member(node, 'alice', ['task:bad']);
    const got = collect(client);
    const bad: Array<[unknown, string, unknown, string]> = [
      [{ room: 'nowhere:1' }, 'task.updated', { n: 0 }, 'invalid_room'],
      [{ room: 'task:bad' }, 'connected', { n: 0 }, 'invalid_type'],
      [{ room: 'task:bad' }, 'task.updated', { n: 0, blob: 'x'.repeat(4096) }, 'too_large'],
      [{ channel: 'task:bad' }, 'task.updated', { n: 0 }, 'invalid_target'],
      [['task:bad'], 'task.updated', { n: 0 }, 'invalid_target'],
      [{ room: 'task:bad', user_id: 'bob' }, 'task.updated', { n: 0 }, 'invalid_target'],
    ];
    // Each bad row is followed by a good one of the same room (same partition): none waits behind a bad one.
    const rows = bad.flatMap(([targets, type, data], i) => [[JSON.stringify(targets), type, data], [JSON.stringify({ room: 'task:bad' }), 'task.updated', { n: i + 1 }]]);
    for (const row of rows) await db.sql('INSERT INTO ws_edge_outbox (targets, type, data) VALUES ($1::jsonb, $2, $3)', row);
    await waitFor('6 good rows delivered, 6 bad ones dead', async () => got.length >= 6 && (await waiting()) === 0 && Number((await db.sql('SELECT count(*)::int AS n FROM ws_edge_outbox_dead')).rows[0].n) >= 6, 20_000, 50);
    const dead = (await db.sql('SELECT code, reason FROM ws_edge_outbox_dead ORDER BY id')).rows as Array<{ code: string; reason: string }>;
    const counted = await Promise.all(['invalid_room', 'invalid_type', 'too_large', 'invalid_target'].map(async (code) => [code, await node.metric('wsedge_ingest_dead_total', { source: 'outbox', code })] as const));
    console.log(`outbox dead letters: ${dead.map((d) => `${d.code} (${d.reason})`).join('; ')}; counted ${JSON.stringify(Object.fromEntries(counted))}; good rows delivered ${got.map((g) => g.n).join(',')}`);
    expect(dead.map((d) => d.code)).toEqual(bad.map((b) => b[3]));
    expect(dead.every((d) => d.reason.length > 0)).toBe(true);
    expect(got.map((g) => g.n)).toEqual([1, 2, 3, 4, 5, 6]);
    expect(Object.fromEntries(counted)).toEqual({ invalid_room: 1, invalid_type: 1, too_large: 1, invalid_target: 3 });
    expect(await node.metric('wsedge_ingest_entries_total', { source: 'outbox', outcome: 'dead' })).toBe(6);
  });

  it('a database stopped and started again: up 0, lag growing and readiness saying so while sockets stay; then everything delivered once', { timeout: 60_000 }, async () => {
    const node = await outboxNode({ WS_OUTBOX_POLL: '200', WS_OUTBOX_BATCH: '20' });
    logsOnFailure([node]);
    const rooms = ['task:db0', 'task:db1', 'task:db2', 'task:db3'];
    const client = await member(node, 'alice', rooms);
    const got = collect(client);
    await waitFor('outbox up', async () => (await node.metric('wsedge_ingest_up', { source: 'outbox' })) === 1, 10_000);
    // 2,000 rows committed at once, the database stopped while the node is publishing them.
    const before = 2000;
    await db.sql(`INSERT INTO ws_edge_outbox (targets, type, data) SELECT jsonb_build_object('room', 'task:db' || (i % 4)), 'task.updated', jsonb_build_object('n', i / 4 + 1) FROM generate_series(0, ${before - 1}) i`);
    await waitFor('200 delivered', () => got.length >= 200, 10_000, 2);
    await db.stop();
    const deliveredAtStop = got.length;
    await waitFor('outbox down', async () => (await node.metric('wsedge_ingest_up', { source: 'outbox' })) === 0, 10_000, 50);
    const lag = await waitFor('the lag gauge past 1 s', async () => {
      const seconds = await node.metric('wsedge_ingest_lag_seconds', { source: 'outbox' });
      return seconds >= 1 ? seconds : false;
    }, 10_000, 100);
    const ready = await fetch(`${node.http}/readyz`);
    const detail = (await ready.json()) as Record<string, unknown>;
    const late = await member(node, 'bob', ['task:db0']);
    await db.start();
    const after = await writeRooms(rooms, 25, () => false, before / 4 + 1);
    const total = before + after;
    await waitFor(`${total} events delivered`, async () => got.length >= total && (await waiting()) === 0, 30_000, 50);
    const counts = tally(got);
    console.log(`outbox database restart: ${before} committed before the stop (${deliveredAtStop} delivered by then), ${after} after the restart; received ${counts.received}, distinct ${counts.distinct}, duplicated ${counts.duplicated}, out of order ${counts.outOfOrder}; published metric ${await published(node)}; while down: lag ${lag.toFixed(1)} s, /readyz ${ready.status} ${JSON.stringify(detail)}`);
    expect(ready.status).toBe(200);
    expect(detail['outbox']).toBe('down');
    expect(await late.next((e) => e.type === 'task.updated', 10_000)).toBeDefined();
    expect(counts).toMatchObject({ received: total, distinct: total, duplicated: 0, outOfOrder: 0 });
    expect(await node.metric('wsedge_ingest_up', { source: 'outbox' })).toBe(1);
  });
  it('a database that refuses the claim (privilege revoked): up 0, lag growing, /readyz says so; granted again, every row once, in order', { timeout: 40_000 }, async () => {
    await db.sql('CREATE ROLE wsedge_node LOGIN');
    // The privileges README documents for the node, and no more.
    await db.sql('GRANT SELECT, UPDATE, DELETE ON ws_edge_outbox TO wsedge_node');
    await db.sql('GRANT SELECT, INSERT ON ws_edge_outbox_dead TO wsedge_node');
    const node = await outboxNode({ WS_OUTBOX_URL: db.url.replace('postgres@', 'wsedge_node@'), WS_OUTBOX_POLL: '200' });
    logsOnFailure([node]);
    const client = await member(node, 'alice', ['task:perm']);
    const got = collect(client);
    const write = (from: number, count: number) => db.sql(`INSERT INTO ws_edge_outbox (targets, type, data) SELECT '{"room": "task:perm"}', 'task.updated', jsonb_build_object('n', n) FROM generate_series(${from}, ${from + count - 1}) n`);
    await write(1, 10);
    await db.sql(`INSERT INTO ws_edge_outbox (targets, type) VALUES ('{"room": "task:perm"}', 'pong')`);
    await waitFor('10 delivered and a reserved type dead-lettered', async () => got.length >= 10 && (await node.metric('wsedge_ingest_dead_total', { source: 'outbox', code: 'invalid_type' })) === 1, 10_000);
    // FOR UPDATE and DELETE need these: every claim is refused from now on.
    await db.sql('REVOKE UPDATE, DELETE ON ws_edge_outbox FROM wsedge_node');
    await write(11, 20);
    await waitFor('outbox down', async () => (await node.metric('wsedge_ingest_up', { source: 'outbox' })) === 0, 10_000, 50);
    const lag = await waitFor('the lag gauge past 1 s', async () => {
      const seconds = await node.metric('wsedge_ingest_lag_seconds', { source: 'outbox' });
      return seconds >= 1 ? seconds : false;
    }, 10_000, 100);
    const detail = (await (await fetch(`${node.http}/readyz`)).json()) as Record<string, unknown>;
    const reason = node.logs.find((l) => l['event'] === 'outbox_down')?.['reason'];
    const waitingWhileRefused = await waiting();
    await db.sql('GRANT UPDATE, DELETE ON ws_edge_outbox TO wsedge_node');
    await waitFor('30 delivered and the outbox empty', async () => got.length >= 30 && (await waiting()) === 0, 20_000, 50);
    const counts = tally(got);
    console.log(`outbox claim refused: ${waitingWhileRefused} rows waiting, lag ${lag.toFixed(1)} s, /readyz ${JSON.stringify(detail)}, logged reason "${String(reason)}"; granted again: ${JSON.stringify({ received: counts.received, distinct: counts.distinct, duplicated: counts.duplicated, outOfOrder: counts.outOfOrder })}`);
    expect(waitingWhileRefused).toBe(20);
    expect(detail).toMatchObject({ status: 'ready', outbox: 'down' });
    expect(String(reason)).toMatch(/permission denied/);
    expect(counts).toMatchObject({ received: 30, distinct: 30, duplicated: 0, outOfOrder: 0 });
    expect(await node.metric('wsedge_ingest_up', { source: 'outbox' })).toBe(1);
  });
  it('a slow database (the table locked past WS_OUTBOX_TIMEOUT): up 0 and readiness say so; released, the rows committed meanwhile arrive once, in order', { timeout: 30_000 }, async () => {
    const node = await outboxNode({ WS_OUTBOX_TIMEOUT: '300', WS_OUTBOX_POLL: '200' });
    logsOnFailure([node]);
    const client = await member(node, 'alice', ['task:slow']);
    const got = collect(client);
    await waitFor('outbox up', async () => (await node.metric('wsedge_ingest_up', { source: 'outbox' })) === 1, 10_000);
    // The product's transaction takes the whole table and writes 20 rows: every claim waits past its statement_timeout.
    const product = new pg.Client({ connectionString: db.url });
    await product.connect();
    try {
      await product.query('BEGIN');
      await product.query('LOCK TABLE ws_edge_outbox IN ACCESS EXCLUSIVE MODE');
      await product.query(`INSERT INTO ws_edge_outbox (targets, type, data) SELECT '{"room": "task:slow"}', 'task.updated', jsonb_build_object('n', n) FROM generate_series(1, 20) n`);
      await waitFor('outbox down', async () => (await node.metric('wsedge_ingest_up', { source: 'outbox' })) === 0, 10_000, 50);
      const detail = (await (await fetch(`${node.http}/readyz`)).json()) as Record<string, unknown>;
      const reason = node.logs.find((l) => l['event'] === 'outbox_down')?.['reason'];
      console.log(`outbox slow database: /readyz ${JSON.stringify(detail)}, logged reason "${String(reason)}", ${got.length} delivered while locked`);
      expect(detail).toMatchObject({ status: 'ready', outbox: 'down' });
      expect(String(reason)).toMatch(/statement timeout/);
      await product.query('COMMIT');
    } finally {
      await product.end();
    }
    await waitFor('20 delivered and the outbox up', async () => got.length >= 20 && (await node.metric('wsedge_ingest_up', { source: 'outbox' })) === 1, 15_000, 50);
    expect(tally(got)).toMatchObject({ received: 20, distinct: 20, duplicated: 0, outOfOrder: 0 });
  });

  it('Redis down: rows wait (retried) rather than reach this node\'s members only; Redis back: every row once, in order', { timeout: 30_000 }, async () => {
    const node = await outboxNode({ WS_OUTBOX_POLL: '200', REDIS_PROBE_INTERVAL: '1', REDIS_PROBE_TIMEOUT: '1' });
    logsOnFailure([node]);
    const client = await member(node, 'alice', ['channel:rd']);
    const got = collect(client);
    const write = (from: number, count: number) => db.sql(`INSERT INTO ws_edge_outbox (targets, type, data) SELECT '{"room": "channel:rd"}', 'task.updated', jsonb_build_object('n', n) FROM generate_series(${from}, ${from + count - 1}) n`);
    await write(1, 5);
    await waitFor('5 delivered', () => got.length >= 5, 10_000);
    await redis.stop();
    await waitFor('broker down', async () => (await node.metric('wsedge_broker_up')) === 0, 10_000, 50);
    const retriedBefore = await node.metric('wsedge_ingest_entries_total', { source: 'outbox', outcome: 'retried' });
    await write(6, 20);
    await waitFor('a row retried', async () => (await node.metric('wsedge_ingest_entries_total', { source: 'outbox', outcome: 'retried' })) > retriedBefore, 10_000, 50);
    const waitingWhileDown = await waiting();
    const deliveredWhileDown = got.length;
    await redis.restart();
    await waitFor('broker up', async () => (await node.metric('wsedge_broker_up')) === 1, 15_000, 50);
    await waitFor('25 delivered and the outbox empty', async () => got.length >= 25 && (await waiting()) === 0, 15_000, 50);
    const counts = tally(got);
    console.log(`outbox with Redis down: ${waitingWhileDown} rows waiting, ${deliveredWhileDown} delivered while down; Redis back: ${JSON.stringify({ received: counts.received, distinct: counts.distinct, duplicated: counts.duplicated, outOfOrder: counts.outOfOrder })}`);
    expect(waitingWhileDown).toBe(20);
    expect(deliveredWhileDown).toBe(5);
    expect(counts).toMatchObject({ received: 25, distinct: 25, duplicated: 0, outOfOrder: 0 });
  });

  it('refuses bad outbox settings at start, one line each, never echoing the URL', () => {
    const problems = (env: Record<string, string>): string[] => {
      try {
        loadConfig({ JWT_SECRET: TEST_SECRET, ...env });
        return [];
      } catch (err) {
        return [...(err as ConfigError).problems];
      }
    };
    expect(problems({ WS_OUTBOX_URL: 'mysql://root:hunter2@db/app' })).toEqual(['WS_OUTBOX_URL: must be a postgres:// or postgresql:// URL']);
    expect(problems({ WS_OUTBOX_URL: db.url, WS_OUTBOX_TABLE: 'Outbox; DROP TABLE task' })).toEqual(['WS_OUTBOX_TABLE: a lower-case table name (letters, digits, _), at most 58 characters']);
    expect(problems({ WS_OUTBOX_URL: db.url, WS_OUTBOX_BATCH: '0', WS_OUTBOX_POLL: '10', WS_OUTBOX_POOL: '65', WS_OUTBOX_TIMEOUT: '99' })).toHaveLength(4);
    expect(loadConfig({ JWT_SECRET: TEST_SECRET, WS_OUTBOX_URL: db.url }).outbox).toEqual({ url: db.url, table: 'ws_edge_outbox', batch: 100, pollMs: 1000, pool: 4, timeoutMs: 5000 });
    expect(loadConfig({ JWT_SECRET: TEST_SECRET }).outbox).toBeUndefined();
  });
});
