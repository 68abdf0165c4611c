/**
 * Ordered, idempotent, bounded drain: readiness 503 first, stop listening, close sockets with 1012
 * spread over most of WS_DRAIN_TIMEOUT (so clients do not reconnect all at once), then the broker,
 * then the internal port. Everything finishes before WS_DRAIN_TIMEOUT.
 */
import { CloseCode } from './errors.js';
import type { Logger } from './log.js';
import type { SessionSocket } from './session.js';

export interface DrainTarget {
  readonly log: Logger;
  readonly live: Set<SessionSocket>;
  readonly drainTimeoutMs: number;
  /** Readiness 503 and refuse upgrades. */
  readonly startDraining: () => void;
  readonly stopListening: () => void;
  readonly closeBroker: () => Promise<void>;
  readonly stopInternal: () => void;
}

/** Sockets are closed over this share of the timeout; the rest is margin for close handshakes. */
const SPREAD_SHARE = 0.6;
/** Stragglers that have not finished their close handshake are cut at this share. */
const FORCE_SHARE = 0.85;
const TICK_MS = 50;

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

export function createShutdown(target: DrainTarget): () => Promise<void> {
  let running: Promise<void> | undefined;
  return () => (running ??= drain(target));
}

async function drain({ log, live, drainTimeoutMs, startDraining, stopListening, closeBroker, stopInternal }: DrainTarget): Promise<void> {
  const started = Date.now();
  startDraining();
  stopListening();
  const total = live.size;
  log.info({ event: 'drain_start', connections: total, drain_timeout_ms: drainTimeoutMs }, 'draining');

  // Close a snapshot in even batches; each socket leaves `live` in its close handler.
  const sockets = [...live];
  const spreadMs = drainTimeoutMs * SPREAD_SHARE;
  const ticks = Math.max(1, Math.floor(spreadMs / TICK_MS));
  const perTick = Math.max(1, Math.ceil(sockets.length / ticks));
  for (let i = 0; i < sockets.length; i += perTick) {
    for (const ws of sockets.slice(i, i + perTick)) {
      if (!ws.getUserData().closed) ws.end(CloseCode.SERVICE_RESTART, 'service restart');
    }
    if (i + perTick < sockets.length) await sleep(TICK_MS);
  }

  const forceAt = started + drainTimeoutMs * FORCE_SHARE;
  while (live.size > 0 && Date.now() < forceAt) await sleep(TICK_MS);
  // Peers that never answered the close frame: cut them (they see 1006).
  for (const ws of [...live]) ws.close();
  await closeBroker();
  stopInternal();
  log.info({ event: 'drain_done', connections: total, elapsed_ms: Date.now() - started }, 'drained');
}
