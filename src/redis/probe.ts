/**
 * Liveness of the subscriber links: an idle link is asked to carry a probe from this node to
 * itself. Probes travel on the command connection too, so a stalled command link to that server
 * fails them as well. A probe not back within REDIS_PROBE_TIMEOUT rebuilds that link's
 * connections (one shard's, in a cluster), so nothing written to a stalled link arrives late.
 */
import { randomBytes } from 'node:crypto';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import type { LinkState } from './link-states.js';

const PROBE_TICK_MS = 250;

export interface ProbeDeps {
  readonly links: () => Iterable<LinkState>;
  /** Seconds of silence on a link before it is probed, and seconds a probe may take. */
  readonly interval: number;
  readonly timeout: number;
  readonly commandReady: () => boolean;
  /** Sends the probe frame with `nonce` to `channel`, from this node. */
  readonly send: (channel: string, nonce: string) => void;
  /** The probe was lost: the link is down and rebuilt. */
  readonly lost: (state: LinkState) => void;
  readonly cluster: boolean;
  readonly metrics: Metrics;
  readonly log: Logger;
}

/** This node's own probe came back on `state`'s link. */
export function probeReturned(state: LinkState, nonce: string): void {
  if (state.probe?.nonce === nonce) state.probe = undefined;
}

export function startProbe(deps: ProbeDeps): { stop(): void } {
  const what = deps.cluster ? "rebuilding this shard's connections" : 'rebuilding Redis connections';
  const timer = setInterval(() => {
    const now = Date.now();
    for (const state of deps.links()) {
      if (state.probe !== undefined && now - state.probe.sentAt > deps.timeout * 1000) {
        state.probe = undefined;
        deps.metrics.probeFailure();
        deps.log.warn({ event: 'broker_probe_failed', timeout_s: deps.timeout, ...(deps.cluster && { shard: state.link.name }) }, `subscriber probe lost: ${what}`);
        deps.lost(state);
        state.link.rebuild();
        continue;
      }
      if (!state.up || state.probe !== undefined || !deps.commandReady()) continue;
      if (now - state.lastReceived < deps.interval * 1000) continue;
      state.probe = { nonce: randomBytes(6).toString('hex'), sentAt: now };
      deps.send(state.probeChannel, state.probe.nonce);
    }
  }, PROBE_TICK_MS);
  timer.unref();
  return { stop: () => clearInterval(timer) };
}
