/**
 * One outbox partition's batch, in one transaction: claim its oldest rows (`FOR UPDATE SKIP
 * LOCKED`), publish them in id order through ingest.ts, then delete the published ones, move the
 * dead ones to `<table>_dead` with their refusal, and commit. The claim is refused unless it starts
 * at the partition's oldest row, so rows of one room never overtake each other, even in the moment
 * a partition changes hands between nodes. Also the start-time check of the tables' columns.
 */
import type pg from 'pg';
import type { Ingest } from './ingest.js';
import type { Metrics } from './metrics.js';

/** The five target fields of a publish body, the only keys a row's `targets` may hold. */
const TARGET_KEYS = new Set(['room', 'user_id', 'connection_id', 'rooms', 'user_ids']);

/** `more`: a full batch was published; `done`: the partition is empty; `busy`: another transaction holds its head; `retry`: a row waits for its sequenced rooms. */
export type BatchResult = 'more' | 'done' | 'busy' | 'retry';

export interface OutboxRow {
  readonly id: string;
  readonly targets: unknown;
  readonly type: string;
  readonly data: unknown;
  readonly sender: string | null;
  readonly created_at: Date;
}

interface Dead {
  readonly id: string;
  readonly code: string;
  readonly reason: string;
}

/** A refusal found before the API sees the row, or the publish body as JSON (so ingest applies the size cap). */
export function bodyOf(row: OutboxRow): Dead | string {
  const { targets } = row;
  if (typeof targets !== 'object' || targets === null || Array.isArray(targets)) {
    return { id: row.id, code: 'invalid_target', reason: 'targets must be a JSON object such as {"room": "project:1"}' };
  }
  const unknown = Object.keys(targets).find((k) => !TARGET_KEYS.has(k));
  if (unknown !== undefined) return { id: row.id, code: 'invalid_target', reason: `targets: unknown field ${JSON.stringify(unknown)} (room, user_id, connection_id, rooms, user_ids)` };
  return JSON.stringify({ ...targets, type: row.type, ...(row.data !== null && { data: row.data }), ...(row.sender !== null && { sender: row.sender }) });
}

function targetsOf(body: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(body).filter(([k]) => TARGET_KEYS.has(k)));
}

export interface BatchDeps {
  readonly pool: pg.Pool;
  readonly table: string;
  readonly batch: number;
  readonly ingest: Ingest;
  readonly metrics: Metrics;
  /** Called with a row that threw something ingest does not answer (a bug): it is kept and tried again. */
  readonly failed: (err: unknown) => void;
}

export async function publishBatch(deps: BatchDeps, partition: number): Promise<BatchResult> {
  const { pool, table, batch } = deps;
  const client = await pool.connect();
  try {
    // Outside the transaction: an empty partition (the usual case at each poll) costs one query.
    const head = await client.query<{ id: string | null }>(`SELECT min(id)::text AS id FROM "${table}" WHERE partition = $1`, [partition]);
    if (head.rows[0]?.id == null) {
      client.release();
      return 'done';
    }
    await client.query('BEGIN');
    // Ordered by the bigint column (o.id), not by the text it is read as.
    const claimed = await client.query<OutboxRow>(`SELECT o.id::text AS id, o.targets, o.type, o.data, o.sender, o.created_at FROM "${table}" o WHERE o.partition = $1 ORDER BY o.id LIMIT $2 FOR UPDATE SKIP LOCKED`, [partition, batch]);
    if (claimed.rows[0]?.id !== head.rows[0].id) {
      await client.query('ROLLBACK');
      client.release();
      return 'busy';
    }
    const result = await publishRows(deps, client, claimed.rows);
    client.release();
    return result;
  } catch (err) {
    await client.query('ROLLBACK').catch(() => undefined);
    client.release(err as Error);
    throw err;
  }
}

/** Publishes the claimed rows in order (stopping at the first that must wait), then commits their fate. */
async function publishRows(deps: BatchDeps, client: pg.PoolClient, rows: readonly OutboxRow[]): Promise<BatchResult> {
  const { table, ingest, metrics } = deps;
  const published: OutboxRow[] = [];
  const dead: Dead[] = [];
  let waiting: { id: string; targets: Record<string, unknown>; changed: boolean } | undefined;
  for (const row of rows) {
    const body = bodyOf(row);
    if (typeof body !== 'string') {
      dead.push(body);
      continue;
    }
    const outcome = await ingest(body, row.id).catch((err: unknown) => {
      deps.failed(err);
      return { status: 'retry' as const, body: JSON.parse(body) as Record<string, unknown> };
    });
    if (outcome.status === 'published') published.push(row);
    else if (outcome.status === 'dead') dead.push({ id: row.id, code: outcome.code, reason: outcome.message });
    else {
      // Only the targets that failed stay: a plain room already published is not published again.
      const targets = targetsOf(outcome.body);
      waiting = { id: row.id, targets, changed: JSON.stringify(targets) !== JSON.stringify(row.targets) };
      break;
    }
  }
  if (dead.length > 0) {
    await client.query(
      `INSERT INTO "${table}_dead" (id, targets, type, data, sender, created_at, code, reason)
       SELECT o.id, o.targets, o.type, o.data, o.sender, o.created_at, d.code, d.reason
       FROM "${table}" o JOIN unnest($1::bigint[], $2::text[], $3::text[]) AS d(id, code, reason) ON o.id = d.id
       ON CONFLICT (id) DO NOTHING`,
      [dead.map((d) => d.id), dead.map((d) => d.code), dead.map((d) => d.reason)],
    );
  }
  const gone = [...published.map((r) => r.id), ...dead.map((d) => d.id)];
  if (gone.length > 0) await client.query(`DELETE FROM "${table}" WHERE id = ANY($1::bigint[])`, [gone]);
  // Only when a list lost targets that were published: an unchanged row is not rewritten.
  if (waiting !== undefined && waiting.changed) await client.query(`UPDATE "${table}" SET targets = $2 WHERE id = $1`, [waiting.id, JSON.stringify(waiting.targets)]);
  await client.query('COMMIT');
  const now = Date.now();
  metrics.ingested('outbox', 'published', published.length);
  for (const row of published) metrics.ingestLatency('outbox', Math.max(0, now - row.created_at.getTime()) / 1000);
  metrics.ingested('outbox', 'dead', dead.length);
  for (const d of dead) metrics.ingestDead('outbox', d.code);
  if (waiting !== undefined) {
    metrics.ingested('outbox', 'retried');
    return 'retry';
  }
  return rows.length === deps.batch ? 'more' : 'done';
}

/** Column name and `information_schema` data type, per table suffix ('' the outbox, '_dead' its dead letter). */
const COLUMNS: Record<string, Record<string, string>> = {
  '': { id: 'bigint', targets: 'jsonb', type: 'text', data: 'jsonb', sender: 'text', created_at: 'timestamp with time zone', partition: 'integer' },
  _dead: { id: 'bigint', targets: 'jsonb', type: 'text', data: 'jsonb', sender: 'text', created_at: 'timestamp with time zone', code: 'text', reason: 'text' },
};

/** The first problem with the tables' columns (one line naming it), or undefined when they fit. */
export async function schemaProblem(client: pg.ClientBase, table: string): Promise<string | undefined> {
  const { rows } = await client.query<{ table_name: string; column_name: string; data_type: string }>(
    'SELECT table_name, column_name, data_type FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = ANY($1)',
    [[table, `${table}_dead`]],
  );
  for (const [suffix, columns] of Object.entries(COLUMNS)) {
    const name = `${table}${suffix}`;
    const found = new Map(rows.filter((r) => r.table_name === name).map((r) => [r.column_name, r.data_type]));
    if (found.size === 0) return `table ${name} not found (in the connection's current schema): apply sql/outbox.sql`;
    for (const [column, type] of Object.entries(columns)) {
      if (found.get(column) !== type) return `column ${name}.${column} must be ${type}, found ${found.get(column) ?? 'none'}: apply sql/outbox.sql`;
    }
  }
  return undefined;
}
