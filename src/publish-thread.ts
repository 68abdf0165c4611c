/**
 * PUBLISH_PORT: the publish API off the socket loop. The node's event loop serves every socket,
 * join, replay and the internal port; under a reconnect storm a publish on INTERNAL_PORT waits for
 * that loop (issue 25: p99 of seconds). This starts publish-worker.ts in a worker thread, whose own
 * loop and Redis connection serve POST /api/v1/publish and /api/v1/publish/batch on PUBLISH_PORT
 * (same host, checks, answers and key as INTERNAL_PORT), and applies its counts to the node's metrics.
 */
import { Worker } from 'node:worker_threads';
import type { Config } from './config.js';
import type { Logger } from './log.js';
import type { Metrics, PublishSource } from './metrics.js';
import type { PublishThreadData, PublishThreadMessage } from './publish-worker.js';

type Endpoint = Parameters<Metrics['apiRequest']>[0];

export interface PublishThread {
  /** The port it listens on (PUBLISH_PORT, or the one picked for 0). */
  readonly port: number;
  /** False once the thread has died (it is not restarted: /readyz says so). */
  alive(): boolean;
  stop(): Promise<void>;
}

/** A stop waits this long for the thread to end; then the node goes on without it (it is never terminated: see publish-worker.ts close). */
const STOP_TIMEOUT_MS = 2000;

/** Applies one batch of the thread's counts (`published api`, `duplicate`, `request publish 200`). */
function apply(metrics: Metrics, counts: ReadonlyArray<readonly [string, number]>): void {
  for (const [key, n] of counts) {
    const [what, a, b] = key.split(' ');
    for (let i = 0; i < n; i++) {
      if (what === 'published') metrics.published(a as PublishSource);
      else if (what === 'duplicate') metrics.duplicatePublish();
      else if (what === 'request') metrics.apiRequest(a as Endpoint, Number(b));
    }
  }
}

/**
 * The node's configuration less what the thread has no use for: JWT secrets, the backend's, room
 * callback's and webhooks' keys, the outbox URL (its password). It keeps the API key and Redis.
 */
function threadConfig(config: Config): Config {
  return { ...config, jwt: { ...config.jwt, secret: undefined, secrets: [] }, roomAuth: undefined, backend: undefined, stream: undefined, outbox: undefined, events: { ...config.events, webhook: undefined } };
}

/** Starts the thread; resolves once it listens, rejects when it cannot (the port taken: the node does not start). */
export function startPublishThread(config: Config, metrics: Metrics, log: Logger): Promise<PublishThread> {
  const data: PublishThreadData = { config: threadConfig(config) };
  // `env: {}`: the node's environment (JWT_SECRET and the rest) is not copied into the thread.
  const worker = new Worker(new URL('./publish-worker.js', import.meta.url), { workerData: data, env: {} });
  let alive = true;
  const exited = new Promise<void>((resolve) => worker.once('exit', () => resolve()));
  return new Promise((resolve, reject) => {
    worker.on('message', (message: PublishThreadMessage) => {
      if (message.kind === 'counts') return apply(metrics, message.counts);
      if (message.kind === 'failed') return reject(new Error(`PUBLISH_PORT: ${message.error}`));
      log.info({ event: 'publish_thread', port: message.port }, 'publish API also served by its own thread');
      resolve({
        port: message.port,
        alive: () => alive,
        async stop() {
          if (!alive) return;
          worker.postMessage('stop');
          let timer: NodeJS.Timeout | undefined;
          const late = new Promise<void>((resolveLate) => (timer = setTimeout(resolveLate, STOP_TIMEOUT_MS)));
          await Promise.race([exited, late]);
          clearTimeout(timer);
          if (alive) {
            log.warn({ event: 'publish_thread_stop_timeout' }, 'the publish thread did not stop in time; going on without it');
            worker.unref();
          }
        },
      });
    });
    worker.on('error', (err) => {
      log.error({ event: 'publish_thread_failed', err }, 'the publish thread failed: PUBLISH_PORT no longer answers');
      reject(err);
    });
    worker.once('exit', () => {
      alive = false;
      reject(new Error('PUBLISH_PORT: the publish thread exited before it listened'));
    });
  });
}
