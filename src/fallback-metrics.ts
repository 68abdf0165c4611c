/**
 * The HTTP fallback's metrics, on the node's private registry (metrics.ts owns the registry; these
 * live beside the transport they count). Labels come from fixed vocabularies.
 */
import { Counter, Gauge, type Registry } from 'prom-client';

export type FallbackFormat = 'sse' | 'ndjson';

/** What became of one POST, wherever it was decided (the node it reached, or the holder of a forwarded one). */
export type PostOutcome =
  | 'applied'
  | 'buffered'
  | 'duplicate'
  | 'forwarded'
  | 'unauthorized'
  | 'auth_failures'
  | 'bad_session'
  | 'unknown_session'
  | 'forbidden'
  | 'too_large'
  | 'rate_limited'
  | 'out_of_order'
  | 'gap_skipped'
  | 'busy';

/** Why a stream ended: its socket closed, its reader left, it read too slowly; or before it opened: refused, or left while opening. */
export type StreamEnd = 'closed' | 'aborted' | 'slow' | 'refused' | 'abandoned';

export interface FallbackMetrics {
  streamOpened(format: FallbackFormat): void;
  streamEnded(format: FallbackFormat, why: StreamEnd): void;
  post(outcome: PostOutcome): void;
  /** POSTs handed to another node through the broker. */
  forwardedOut(): void;
  /** Server frames written to streams. */
  relayed(count: number): void;
}

export function createFallbackMetrics(registry: Registry): FallbackMetrics {
  const registers = [registry];
  const sessions = new Gauge({ name: 'wsedge_fallback_sessions', help: 'Open HTTP fallback streams on this node, by format.', labelNames: ['format'], registers });
  const ended = new Counter({ name: 'wsedge_fallback_streams_ended_total', help: 'HTTP fallback streams ended, by format and why (closed, aborted, slow, refused, abandoned).', labelNames: ['format', 'why'], registers });
  const posts = new Counter({ name: 'wsedge_fallback_posts_total', help: 'Fallback POSTs by outcome, counted where decided.', labelNames: ['outcome'], registers });
  const forwarded = new Counter({ name: 'wsedge_fallback_forwarded_total', help: 'Fallback POSTs this node forwarded to the node holding the session.', registers });
  const slow = new Counter({ name: 'wsedge_fallback_slow_closes_total', help: 'Fallback streams closed because their reader fell WS_MAX_BACKPRESSURE bytes behind.', registers });
  const frames = new Counter({ name: 'wsedge_fallback_frames_total', help: 'Server frames written to fallback streams.', registers });
  return {
    streamOpened: (format) => sessions.inc({ format }),
    streamEnded(format, why) {
      if (why !== 'refused' && why !== 'abandoned') sessions.dec({ format });
      if (why === 'slow') slow.inc();
      ended.inc({ format, why });
    },
    post: (outcome) => posts.inc({ outcome }),
    forwardedOut: () => forwarded.inc(),
    relayed: (count) => frames.inc(count),
  };
}
