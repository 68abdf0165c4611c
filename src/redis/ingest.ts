/**
 * Stream ingestion: publish commands that the product appends to WS_STREAM (one field `command`,
 * the publish API's body) are published by one node at a time, the lease holder, in stream order.
 * A round reads up to WS_STREAM_BATCH entries and issues all their publishes at once (they leave
 * in order on one connection per shard, and a room lives on one shard), then settles them in
 * stream order:
 * - published: acknowledged and deleted;
 * - dead (the API refuses the body, or the entry has no `command`): moved to the dead letter with
 *   the refusal's code and message, acknowledged and deleted;
 * - retry (a sequenced room's history unreachable, or the broker down): the entry stays pending
 *   with only its failed targets, and while any entry is pending this node reads nothing new: it tries its pending
 *   entries again, in stream order, after a backoff, so no later entry of their rooms overtakes
 *   them (every room waits meanwhile: the history is usually unreachable because its Redis is).
 *   Entries of the same round that were published are acknowledged, not published again; the one
 *   order a retry cannot keep is a later entry of the failing room published in that same round
 *   (its room's commands failed, then one passed, within one pipelined round).
 * Standby nodes check the lease every LEASE_RENEW_MS; a dead holder's entries are taken over within
 * LEASE_MS + LEASE_RENEW_MS (8 s) of its last renewal.
 */
import type { StreamConfig } from '../config.js';
import type { Ingest, Ingested } from '../ingest.js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import type { WritesTogether } from '../publish.js';
import { entryTime, LEASE_MS, LEASE_RENEW_MS, type IngestQueue, type StreamEntry } from './ingest-stream.js';
import { createPause } from '../pause.js';

/** An empty stream is read again after this (the command connection is shared: no blocking read). */
const IDLE_MS = 50;
/** The lag gauge is refreshed this often by the holder. */
const MEASURE_MS = 1000;
/** After a retry or an unreachable stream: 200 ms doubling to 5 s. */
const BACKOFF_MIN_MS = 200;
const BACKOFF_MAX_MS = 5000;
const NO_COMMAND = { status: 'dead', code: 'invalid_body', message: 'the entry has no "command" field' } as const;

export interface StreamIngestOptions {
  readonly config: StreamConfig;
  readonly queue: IngestQueue;
  readonly ingest: Ingest;
  readonly together: WritesTogether;
  readonly metrics: Metrics;
  readonly log: Logger;
}

/** For /readyz: whether the stream answers, and whether this node is the one consuming it. */
export interface StreamHealth {
  readonly stream: 'ok' | 'unreachable';
  readonly stream_consuming: boolean;
}

export interface StreamIngest {
  health(): StreamHealth;
  /** Finishes the round in flight, then frees the lease. */
  stop(): Promise<void>;
}

type Outcome = Ingested | { readonly status: 'failed' };

export function startStreamIngest(opts: StreamIngestOptions): StreamIngest {
  const { config, queue, metrics, log } = opts;
  let stopped = false;
  const { pause, wake } = createPause();

  // Renewed on a timer of its own, so a long round or a backoff keeps the lease. A round reads only
  // while the lease was confirmed less than half its life ago: a holder cut off from Redis stops
  // before the lease can pass to another node, so two nodes never read at once.
  let held = false;
  let confirmed = 0;
  const renew = async (): Promise<boolean> => {
    held = await queue.hold();
    if (held) confirmed = Date.now();
    return held;
  };
  const renewal = setInterval(() => void (held && renew().catch(() => undefined)), LEASE_RENEW_MS).unref();
  const sure = (): boolean => held && Date.now() - confirmed < LEASE_MS / 2;

  // Everything appended before `since` (ms) was published, as this node last saw the stream.
  let since = Date.now();
  let measured = 0;
  const measure = async (): Promise<void> => {
    if (Date.now() - measured < MEASURE_MS) return;
    measured = Date.now();
    const oldest = await queue.oldest();
    since = oldest === undefined ? measured : entryTime(oldest);
    metrics.ingestLag('stream', Math.max(0, measured - since) / 1000);
  };

  // What is left to publish of an entry that asked for a retry (a list body's failed targets).
  const retries = new Map<string, Record<string, unknown>>();
  const settle = (entry: StreamEntry): Promise<Outcome> => {
    if (entry.command === undefined) return Promise.resolve(NO_COMMAND);
    return opts.ingest(retries.get(entry.id) ?? entry.command, entry.id).catch((err: unknown) => {
      log.error({ err, event: 'stream_publish_failed', id: entry.id }, 'stream entry publish failed; retrying');
      return { status: 'failed' } as const;
    });
  };

  /** Moves refused entries to the dead letter; one that cannot be written stays pending (true), alone. */
  const bury = async (dead: ReadonlyArray<{ entry: StreamEntry; code: string; message: string }>): Promise<number> => {
    let kept = 0;
    for (const item of dead) {
      try {
        await queue.dead(item);
      } catch (err) {
        kept += 1;
        metrics.ingested('stream', 'retried');
        log.warn({ err, event: 'stream_dead_letter_failed', id: item.entry.id }, 'a refused stream entry could not be written to the dead letter; it stays pending');
        continue;
      }
      retries.delete(item.entry.id);
      metrics.ingested('stream', 'dead');
      metrics.ingestDead('stream', item.code);
      log.debug({ event: 'stream_entry_dead', id: item.entry.id, code: item.code }, 'stream entry moved to the dead letter');
    }
    return kept;
  };

  /** Publishes one batch; true when an entry is kept for a retry. */
  const publishBatch = async (entries: readonly StreamEntry[]): Promise<boolean> => {
    const outcomes = opts.together(() => entries.map(settle));
    const published: string[] = [];
    const dead: Array<{ entry: StreamEntry; code: string; message: string }> = [];
    let kept = 0;
    for (let i = 0; i < entries.length; i += 1) {
      const entry = entries[i]!;
      const outcome = await outcomes[i]!;
      if (outcome.status === 'published') published.push(entry.id);
      else if (outcome.status === 'dead') dead.push({ entry, code: outcome.code, message: outcome.message });
      else {
        if (outcome.status === 'retry') retries.set(entry.id, outcome.body);
        metrics.ingested('stream', 'retried');
        kept += 1;
      }
    }
    // Acknowledged first: a dead letter that cannot be written must not bring them round again.
    await queue.done(published);
    const now = Date.now();
    for (const id of published) {
      retries.delete(id);
      metrics.ingestLatency('stream', (now - entryTime(id)) / 1000);
    }
    metrics.ingested('stream', 'published', published.length);
    kept += await bury(dead);
    return kept > 0;
  };

  let unreachable = false;
  const markReachable = (): void => {
    if (unreachable) log.info({ event: 'stream_recovered' }, 'ingestion stream reachable again');
    unreachable = false;
    metrics.ingestUp('stream', true);
  };

  let backoff = BACKOFF_MIN_MS;
  const round = async (): Promise<void> => {
    if (!sure() && !(await renew())) {
      // Another node consumes: this one's last figures would be stale (and could keep an alert firing).
      retries.clear();
      metrics.ingestLag('stream', 0);
      markReachable();
      await pause(LEASE_RENEW_MS);
      return;
    }
    const entries = await queue.read(config.batch);
    markReachable();
    await measure();
    if (entries.length === 0) return pause(IDLE_MS);
    if (!(await publishBatch(entries))) {
      if (backoff > BACKOFF_MIN_MS) log.info({ event: 'stream_retries_over' }, 'stream entries kept for a retry are published');
      backoff = BACKOFF_MIN_MS;
      return;
    }
    // Once per streak: a history or broker down for minutes must not write a line a round.
    if (backoff === BACKOFF_MIN_MS) log.warn({ event: 'stream_retrying' }, 'stream entries kept for a retry (a sequenced room\'s history or the broker unreachable); nothing new is read meanwhile');
    await pause(backoff);
    backoff = Math.min(BACKOFF_MAX_MS, backoff * 2);
  };

  const run = async (): Promise<void> => {
    while (!stopped) {
      try {
        await round();
      } catch (err) {
        // Once per streak: Redis down for minutes must not write a line a second.
        if (!unreachable) log.warn({ err, event: 'stream_unreachable' }, 'ingestion stream unreachable; retrying every second');
        unreachable = true;
        metrics.ingestUp('stream', false);
        // Nothing appended since the last look can be published: the lag grows while it lasts.
        if (held) metrics.ingestLag('stream', (Date.now() - since) / 1000);
        await pause(1000);
      }
    }
  };
  const running = run();

  return {
    health: () => ({ stream: unreachable ? 'unreachable' : 'ok', stream_consuming: held }),
    async stop() {
      stopped = true;
      clearInterval(renewal);
      wake();
      await running;
      await queue.release().catch(() => undefined);
      held = false;
      metrics.ingestLag('stream', 0);
    },
  };
}
