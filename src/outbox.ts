/**
 * The PostgreSQL outbox consumer (WS_OUTBOX_URL): the product inserts a publish command into
 * `WS_OUTBOX_TABLE` inside its own transaction (sql/outbox.sql); the nodes publish committed rows
 * and delete them (outbox-batch.ts), so an event is published if and only if its transaction
 * committed. Sequenced targets get the row id as their idempotency key (exactly once within the
 * history's 300 s window), plain ones at least once across a crash between publish and commit.
 *
 * Order: the table has 16 partitions (from the first target). Each node holds a fair share of them
 * (16 / consuming nodes, rounded up) through session advisory locks on one dedicated connection,
 * so a node that dies (its connection dies with it) frees its partitions (at once on a crash, within
 * about 30 s when its host vanished: keepalives and tcp_user_timeout) and the others
 * take them at their next rebalance (every 2 s). A partition is published in id order, one batch at
 * a time; partitions run side by side on a pool of WS_OUTBOX_POOL connections.
 *
 * Wake-up: the table's insert trigger notifies the channel named like the table at commit; the
 * dedicated connection LISTENs, so a committed row is claimed at once; WS_OUTBOX_POLL bounds the
 * wait when a notification is lost (a reconnect, a node that was busy). A database that is down
 * turns wsedge_ingest_up{source="outbox"} to 0, keeps the lag gauge growing and is retried with a
 * backoff (250 ms doubling to 5 s); the sockets are not affected.
 */
import pg from 'pg';
import type { OutboxConfig } from './config.js';
import type { Ingest } from './ingest.js';
import type { Logger } from './log.js';
import type { Metrics } from './metrics.js';
import { publishBatch, schemaProblem, type BatchDeps, type BatchResult } from './outbox-batch.js';
import { createPause } from './pause.js';

/** Partitions of the table: `hashtext(first target) & 15` in sql/outbox.sql. */
export const OUTBOX_PARTITIONS = 16;
/** Second key of the shared advisory lock each consuming node holds, counted to size the fair share. */
const MEMBER_KEY = 1000;
const REBALANCE_MS = 2000;
const MEASURE_MS = 1000;
/** A partition gives way to the rebalance and the lag measure after this many full batches in a row. */
const BATCHES_PER_ROUND = 10;
const BACKOFF_MIN_MS = 250;
const BACKOFF_MAX_MS = 5000;
/** A query's client-side deadline is the server's statement_timeout plus this. */
const QUERY_GRACE_MS = 1000;
/** TCP keepalive on the node's side of every connection. */
const KEEPALIVE_MS = 10_000;
/** A claim whose transaction sits idle this long (its node gone mid-batch) is ended by the server, its rows freed. */
const IDLE_IN_TRANSACTION_MS = 60_000;

/** The tables are missing or their columns are wrong: the node refuses to start. */
export class OutboxSchemaError extends Error {
  readonly code = 'outbox_schema';
}

export interface Outbox {
  /** For /readyz details: whether the database answers. */
  state(): 'up' | 'down';
  /** Finishes the batches in flight, then closes the connections (freeing the partitions). */
  stop(): Promise<void>;
}

export interface OutboxDeps {
  readonly ingest: Ingest;
  readonly metrics: Metrics;
  readonly log: Logger;
  readonly nodeId: string;
}

/** The dedicated connection: it LISTENs and holds the member lock and the partitions' locks, which die with it. */
interface Session {
  readonly client: pg.Client;
  /** The partitions this node publishes. */
  readonly held: ReadonlySet<number>;
  /** Takes free partitions up to the fair share, gives back those above it. */
  rebalance(): Promise<void>;
  close(): void;
}

interface SessionHooks {
  readonly notified: () => void;
  readonly lost: (err?: Error) => void;
}

async function openSession(connection: pg.ClientConfig, table: string, deps: OutboxDeps, hooks: SessionHooks): Promise<Session> {
  const client = new pg.Client(connection);
  client.on('error', (err) => hooks.lost(err));
  let lockClass: number;
  try {
    await client.connect();
    const problem = await schemaProblem(client, table);
    if (problem !== undefined) throw new OutboxSchemaError(`WS_OUTBOX_TABLE: ${problem}`);
    const { rows } = await client.query<{ key: number }>('SELECT hashtext($1) & 2147483647 AS key', [table]);
    lockClass = rows[0]!.key;
    await client.query('SELECT pg_advisory_lock_shared($1, $2)', [lockClass, MEMBER_KEY]);
    await client.query(`LISTEN "${table}"`);
  } catch (err) {
    await client.end().catch(() => undefined);
    throw err;
  }
  client.on('notification', hooks.notified);
  client.on('end', () => hooks.lost());
  const held = new Set<number>();
  let first = 0;
  for (const ch of deps.nodeId) first = (first * 31 + ch.charCodeAt(0)) % OUTBOX_PARTITIONS;
  const rebalance = async (): Promise<void> => {
    const { rows } = await client.query<{ n: number }>(
      `SELECT count(*)::int AS n FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 2 AND classid = $1::oid AND objid = $2::oid
       AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`,
      [lockClass, MEMBER_KEY],
    );
    const nodes = Math.max(1, rows[0]!.n);
    const share = Math.ceil(OUTBOX_PARTITIONS / nodes);
    const before = [...held].join();
    for (const partition of [...held].slice(share)) {
      await client.query('SELECT pg_advisory_unlock($1, $2)', [lockClass, partition]);
      held.delete(partition);
    }
    // Each node starts looking at its own place, so nodes that start together rarely collide.
    for (let i = 0; i < OUTBOX_PARTITIONS && held.size < share; i += 1) {
      const partition = (first + i) % OUTBOX_PARTITIONS;
      if (held.has(partition)) continue;
      const taken = await client.query<{ ok: boolean }>('SELECT pg_try_advisory_lock($1, $2) AS ok', [lockClass, partition]);
      if (taken.rows[0]!.ok) held.add(partition);
    }
    if ([...held].join() !== before) deps.log.info({ event: 'outbox_partitions', partitions: [...held].sort((a, b) => a - b), nodes }, 'outbox partitions held by this node changed');
  };
  return { client, held, rebalance, close: () => void client.end().catch(() => undefined) };
}

/**
 * `fn` over `items`, at most `limit` at a time, every outcome kept. The claims run this way so none
 * waits for a pool connection (that wait would time out under a long round and read as an outage).
 */
async function settleLimited<T, R>(items: readonly T[], limit: number, fn: (item: T) => Promise<R>): Promise<Array<PromiseSettledResult<R>>> {
  const results: Array<PromiseSettledResult<R>> = [];
  let next = 0;
  const worker = async (): Promise<void> => {
    for (let i = next++; i < items.length; i = next++) {
      results[i] = await fn(items[i]!).then(
        (value) => ({ status: 'fulfilled' as const, value }),
        (reason: unknown) => ({ status: 'rejected' as const, reason }),
      );
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return results;
}

/**
 * wsedge_ingest_up and the lag gauge. While the database cannot be read the lag keeps growing
 * from the oldest row last seen, or from the last contact when none was waiting.
 */
function createHealth(metrics: Metrics, log: Logger, table: string) {
  let up: boolean | undefined;
  let lastContact = Date.now();
  /** Local time the oldest waiting row was written, as last measured; undefined when none waited. */
  let oldest: number | undefined;
  const timer = setInterval(() => {
    const since = oldest ?? (up === true ? undefined : lastContact);
    metrics.ingestLag('outbox', since === undefined ? 0 : Math.max(0, Date.now() - since) / 1000);
  }, MEASURE_MS).unref();
  return {
    state: (): 'up' | 'down' => (up === true ? 'up' : 'down'),
    oldest(ageMs: number | undefined): void {
      oldest = ageMs === undefined ? undefined : Date.now() - ageMs;
    },
    set(reachable: boolean, err?: unknown): void {
      if (reachable) lastContact = Date.now();
      if (reachable === up) return;
      up = reachable;
      metrics.ingestUp('outbox', reachable);
      if (reachable) log.info({ event: 'outbox_up', table }, 'outbox database reachable');
      else log.warn({ event: 'outbox_down', reason: (err as Error | undefined)?.message }, 'outbox database unreachable; retrying with backoff');
    },
    stop: () => clearInterval(timer),
  };
}

/** Connects and checks the tables; throws OutboxSchemaError when they do not fit (the node does not start). */
export async function startOutbox(config: OutboxConfig, deps: OutboxDeps): Promise<Outbox> {
  const { metrics, log } = deps;
  const connection: pg.ClientConfig = {
    connectionString: config.url,
    connectionTimeoutMillis: config.timeoutMs,
    statement_timeout: config.timeoutMs,
    // The server's timeout cannot end a wait on a half-open link or in a pooler's queue: this one can.
    query_timeout: config.timeoutMs + QUERY_GRACE_MS,
    keepAlive: true,
    keepAliveInitialDelayMillis: KEEPALIVE_MS,
    // A node whose host vanished (no RST) holds its partitions' locks until the server sees the link
    // dead: keepalives and the user timeout bound that to about 30 s; a claim left open idle is ended.
    options: `-c tcp_keepalives_idle=10 -c tcp_keepalives_interval=5 -c tcp_keepalives_count=3 -c tcp_user_timeout=30000 -c idle_in_transaction_session_timeout=${IDLE_IN_TRANSACTION_MS}`,
    application_name: `ws-edge ${deps.nodeId}`,
  };
  const pool = new pg.Pool({ ...connection, max: config.pool });
  // A pooled connection that dies (idle or in a claim) is replaced by the next claim; the claim in
  // flight fails with the outage, which the loop reports.
  pool.on('error', () => undefined);
  pool.on('connect', (client) => client.on('error', () => undefined));
  const batchDeps: BatchDeps = { pool, table: config.table, batch: config.batch, ingest: deps.ingest, metrics, failed: (err) => log.error({ event: 'outbox_row_failed', err }, 'an outbox row could not be published; it is kept and tried again') };
  const health = createHealth(metrics, log, config.table);
  let session: Session | undefined;
  let stopped = false;
  let notified = false;
  const { pause, wake } = createPause();

  const drop = (): void => {
    session?.close();
    session = undefined;
  };
  const connect = async (): Promise<Session> => {
    // Unset while the session opens: a connection lost then fails the open itself (openSession ends it).
    let opened: Session | undefined;
    opened = await openSession(connection, config.table, deps, {
      notified: () => {
        notified = true;
        wake();
      },
      lost: (err) => {
        if (opened === undefined || session !== opened) return;
        drop();
        if (err !== undefined) health.set(false, err);
      },
    });
    session = opened;
    return opened;
  };

  const drain = async (partition: number): Promise<BatchResult> => {
    for (let i = 0; i < BATCHES_PER_ROUND; i += 1) {
      const result = await publishBatch(batchDeps, partition);
      if (result !== 'more' || stopped) return result;
    }
    return 'more';
  };

  let measured = 0;
  const measure = async (): Promise<void> => {
    if (Date.now() - measured < MEASURE_MS) return;
    const { rows } = await pool.query<{ age: number }>(`SELECT extract(epoch FROM clock_timestamp() - created_at)::float8 * 1000 AS age FROM "${config.table}" ORDER BY id LIMIT 1`);
    measured = Date.now();
    health.oldest(rows[0]?.age);
  };

  /** One round: rebalance when due, the held partitions drained WS_OUTBOX_POOL at a time, the lag measured. */
  let rebalanced = 0;
  const round = async (): Promise<'more' | 'idle' | 'retry'> => {
    // A fresh session holds nothing yet: it takes its share at once.
    const fresh = session === undefined;
    const current = session ?? (await connect());
    if (fresh || Date.now() - rebalanced >= REBALANCE_MS) {
      await current.rebalance();
      rebalanced = Date.now();
    }
    notified = false;
    const settled = await settleLimited([...current.held], config.pool, drain);
    const failure = settled.find((s) => s.status === 'rejected');
    if (failure !== undefined) throw failure.reason;
    await measure();
    health.set(true);
    const results = settled.map((s) => (s as PromiseFulfilledResult<BatchResult>).value);
    return results.includes('retry') ? 'retry' : results.includes('more') ? 'more' : 'idle';
  };

  const run = async (): Promise<void> => {
    let backoff = BACKOFF_MIN_MS;
    let retryBackoff = BACKOFF_MIN_MS;
    while (!stopped) {
      try {
        const next = await round();
        backoff = BACKOFF_MIN_MS;
        // A partition waiting on Redis (history or broker down) is claimed again after a growing
        // pause, notifications or not: each claim locks and rewrites rows in the product's database.
        if (next === 'retry' && !stopped) await pause(retryBackoff);
        retryBackoff = next === 'retry' ? Math.min(retryBackoff * 2, BACKOFF_MAX_MS) : BACKOFF_MIN_MS;
        if (next === 'idle' && !notified && !stopped) await pause(config.pollMs);
      } catch (err) {
        // Whatever failed (a claim, the session), start over on a fresh session: the partitions
        // are given back so a node that can reach the database takes them meanwhile.
        drop();
        health.set(false, err);
        if (!stopped) await pause(backoff);
        backoff = Math.min(backoff * 2, BACKOFF_MAX_MS);
      }
    }
  };

  try {
    await connect();
    health.set(true);
  } catch (err) {
    if (err instanceof OutboxSchemaError) {
      health.stop();
      await pool.end();
      throw err;
    }
    health.set(false, err);
  }
  log.info({ event: 'outbox_started', table: config.table, partitions: OUTBOX_PARTITIONS, batch: config.batch, poll_ms: config.pollMs, pool: config.pool, timeout_ms: config.timeoutMs }, 'outbox consumer started');
  const running = run();
  let stopping: Promise<void> | undefined;
  return {
    state: health.state,
    stop: () =>
      (stopping ??= (async () => {
        stopped = true;
        wake();
        await running;
        health.stop();
        drop();
        await pool.end().catch(() => undefined);
      })()),
  };
}
