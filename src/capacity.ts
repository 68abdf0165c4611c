/**
 * How many WebSockets a node may hold: each takes a file descriptor, and a process at its
 * open-files limit cannot accept (uSockets retries the accept on every loop turn: a node that
 * spins, silent, with its internal port unanswered). So unless WS_MAX_CONNECTIONS says otherwise,
 * a node holds the limit less a margin for what else needs descriptors (Redis links, the backend's
 * and the webhook's keep-alive sockets, listeners, logs, epoll) and refuses the rest with HTTP 503
 * (`max_connections`), which a load balancer retries elsewhere.
 */
import { readFileSync } from 'node:fs';

/** Descriptors kept for everything but WebSockets: 10% of the limit, at least 256. */
export function fileMargin(limit: number): number {
  return Math.max(256, Math.ceil(limit * 0.1));
}

/** The soft open-files limit (Linux: /proc/self/limits); undefined where it cannot be read or is unlimited. */
export function openFilesLimit(read: () => string = () => readFileSync('/proc/self/limits', 'utf8')): number | undefined {
  try {
    const soft = /^Max open files\s+(\d+)/m.exec(read())?.[1];
    return soft === undefined ? undefined : Number(soft);
  } catch {
    return undefined;
  }
}

export interface Capacity {
  /** WS_MAX_CONNECTIONS in effect; 0: no limit. */
  readonly max: number;
  /** Why the configured value cannot be held, for a warning at start. */
  readonly warning: string | undefined;
}

/** `configured`: WS_MAX_CONNECTIONS, undefined when unset (then the limit less the margin). */
export function connectionCapacity(configured: number | undefined, limit: number | undefined): Capacity {
  if (limit === undefined) return { max: configured ?? 0, warning: undefined };
  const fits = Math.max(1, limit - fileMargin(limit));
  if (configured === undefined) return { max: fits, warning: undefined };
  const what = configured === 0 ? 'WS_MAX_CONNECTIONS=0 (no limit)' : `WS_MAX_CONNECTIONS=${configured}`;
  const warning =
    configured === 0 || configured > fits
      ? `${what} does not fit the open-files limit of ${limit} (${fits} after ${fileMargin(limit)} kept for Redis, backend calls and the node): past it the node cannot accept and spins; unset it or set at most ${fits}, or raise the limit (ulimit -n, LimitNOFILE)`
      : undefined;
  return { max: configured, warning };
}
