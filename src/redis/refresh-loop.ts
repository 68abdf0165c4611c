/**
 * A node's periodic rewrite of what it owns in Redis (its connections in the seat registry): every `intervalMs`, and at once whenever the command connection is ready again,
 * so state lost with a restarted Redis comes back from the live sockets. Runs never overlap.
 */
import type { Logger } from '../log.js';
import type { RedisClient } from './links.js';

export interface RefreshLoop {
  stop(): void;
}

export function startRefreshLoop(redis: RedisClient, intervalMs: number, what: string, log: Logger, run: () => Promise<unknown>): RefreshLoop {
  let running = false;
  const tick = async (): Promise<void> => {
    if (running || redis.status !== 'ready') return;
    running = true;
    try {
      await run();
    } catch (err) {
      log.warn({ err }, `${what} refresh failed`);
    } finally {
      running = false;
    }
  };
  const timer = setInterval(() => void tick(), intervalMs);
  timer.unref();
  const onReady = (): void => void tick();
  redis.on('ready', onReady);
  return {
    stop() {
      clearInterval(timer);
      redis.off('ready', onReady);
    },
  };
}
