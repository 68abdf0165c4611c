/**
 * Redis connections for one node: a command connection (publishes, the connection registry) and a
 * subscriber connection. Both refuse to queue while disconnected, so nothing stale is replayed
 * after an outage, and reconnect with bounded, jittered backoff.
 */
import { Redis, type RedisOptions } from 'ioredis';
import type { RedisConfig } from './config.js';

export type { Redis } from 'ioredis';

export interface RedisClients {
  readonly command: Redis;
  readonly subscriber: Redis;
  close(): Promise<void>;
}

/** Reconnect delays grow 100 ms, 200 ms, ... up to 5 s, each with up to 50% jitter. */
export function reconnectDelay(attempt: number): number {
  const base = Math.min(100 * 2 ** Math.min(attempt - 1, 6), 5000);
  return Math.round(base * (0.5 + Math.random() / 2));
}

/** A command waits at most this long for Redis; a half-open link then fails fast. */
const COMMAND_TIMEOUT_MS = 2000;

function options(name: string): RedisOptions {
  return {
    connectionName: name,
    // Commands issued while disconnected fail at once instead of being replayed minutes later.
    enableOfflineQueue: false,
    // Commands in flight when the link drops fail instead of being retried after reconnect.
    maxRetriesPerRequest: 0,
    retryStrategy: reconnectDelay,
    connectTimeout: 5000,
    keepAlive: 10_000,
    lazyConnect: false,
  };
}

export function createRedisClients(config: RedisConfig, nodeId: string): RedisClients {
  const command = new Redis(config.url, { ...options(`${config.prefix}${nodeId}:cmd`), commandTimeout: COMMAND_TIMEOUT_MS });
  // The broker resubscribes itself on `ready` and waits for Redis to confirm before it reports up.
  // The command timeout also frees a subscriber whose (re)connect hangs on a dead link.
  const subscriber = new Redis(config.url, { ...options(`${config.prefix}${nodeId}:sub`), autoResubscribe: false, commandTimeout: COMMAND_TIMEOUT_MS });
  for (const client of [command, subscriber]) client.on('error', () => {}); // state changes are logged by the broker
  return {
    command,
    subscriber,
    async close() {
      await Promise.all([command, subscriber].map((c) => c.quit().catch(() => c.disconnect())));
    },
  };
}
