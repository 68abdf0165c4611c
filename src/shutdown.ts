/**
 * Ordered, idempotent, bounded drain: readiness 503 first (for up to 1 s), stop listening, close sockets with 1012
 * spread over 60% of WS_DRAIN_TIMEOUT (so clients do not reconnect all at once), then the broker,
 * then the internal port. Everything finishes before WS_DRAIN_TIMEOUT.
 */
import { CLOSES } from './errors.js';
import type { Logger } from './log.js';
import type { SessionIndex } from './sessions.js';
import { closeWith } from './session.js';

export interface DrainTarget {
  readonly log: Logger;
  readonly sessions: SessionIndex;
  readonly drainTimeoutMs: number;
  /** Readiness 503 and refuse upgrades. */
  readonly startDraining: () => void;
  readonly stopListening: () => void;
  readonly closeBroker: () => Promise<void>;
  readonly stopInternal: () => void;
}

/** Sockets are closed over this share of the timeout; the rest is margin for the broker and exit. */
const SPREAD_SHARE = 0.6;
/** How long /readyz answers 503 on the public port before the listener closes. */
const READINESS_GRACE_MS = 1000;
/** Batches are at least this far apart. */
const MIN_INTERVAL_MS = 20;

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

export function createShutdown(target: DrainTarget): () => Promise<void> {
  let running: Promise<void> | undefined;
  return () => (running ??= drain(target));
}

async function drain({ log, sessions, drainTimeoutMs, startDraining, stopListening, closeBroker, stopInternal }: DrainTarget): Promise<void> {
  const started = Date.now();
  startDraining();
  // Readiness answers 503 on both ports for a moment before the public listener goes away.
  await sleep(Math.min(READINESS_GRACE_MS, drainTimeoutMs * 0.1));
  stopListening();
  const total = sessions.size;
  log.info({ event: 'drain_start', connections: total, drain_timeout_ms: drainTimeoutMs }, 'draining');

  // Close a snapshot in even batches. uWS runs the close handler inside end(), so each socket has
  // left the index (slot released, user_left sent) when end() returns; the close frame is already written.
  const sockets = [...sessions.all()];
  const batches = Math.max(1, Math.min(sockets.length, Math.floor((drainTimeoutMs * SPREAD_SHARE) / MIN_INTERVAL_MS)));
  const perBatch = Math.ceil(sockets.length / batches);
  const intervalMs = (drainTimeoutMs * SPREAD_SHARE) / batches;
  for (let i = 0; i < sockets.length; i += perBatch) {
    if (i > 0) await sleep(intervalMs);
    for (const ws of sockets.slice(i, i + perBatch)) {
      if (!ws.getUserData().closed) closeWith(ws, CLOSES.service_restart);
    }
  }

  await closeBroker();
  stopInternal();
  log.info({ event: 'drain_done', connections: total, elapsed_ms: Date.now() - started }, 'drained');
}
