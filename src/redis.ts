/**
 * Redis connections for one node, for each topology: one server (REDIS_URL), a Redis Cluster
 * (REDIS_CLUSTER_NODES, sharded pub/sub), or a Sentinel-managed master (REDIS_SENTINELS, with the
 * failover detector). A command connection carries publishes and the connection registry, a
 * subscriber connection the room channels. Neither queues while disconnected, so nothing stale is
 * replayed after an outage; both reconnect with bounded, jittered backoff.
 */
import calculateSlot from 'cluster-key-slot';
import { Cluster, Redis, type ClusterOptions, type RedisOptions } from 'ioredis';
import type { RedisConfig, RedisTopology } from './config.js';

export type RedisClient = Redis | Cluster;

export interface RedisClients {
  readonly mode: RedisTopology['mode'];
  readonly command: RedisClient;
  readonly subscriber: RedisClient;
  /** Subscriber event carrying (channel, message) buffers. */
  readonly messageEvent: 'messageBuffer' | 'smessageBuffer';
  publish(channel: string, message: string): Promise<unknown>;
  /** Subscribes; resolves once Redis has confirmed every channel. */
  subscribe(channels: readonly string[]): Promise<void>;
  unsubscribe(channels: readonly string[]): Promise<void>;
  /**
   * Channels a liveness probe must travel so it crosses every subscriber connection: the base
   * channel alone for one server, one per slot range for a cluster (see PROBE_SLOTS).
   */
  probeChannels(base: string): string[];
  close(): Promise<void>;
}

/** Reconnect delays grow 100 ms, 200 ms, ... up to 5 s, each with up to 50% jitter. */
export function reconnectDelay(attempt: number): number {
  const base = Math.min(100 * 2 ** Math.min(attempt - 1, 6), 5000);
  return Math.round(base * (0.5 + Math.random() / 2));
}

/** A command waits at most this long for Redis; a half-open link then fails fast. */
const COMMAND_TIMEOUT_MS = 2000;
/** Channels per SUBSCRIBE command (one server). */
const SUBSCRIBE_CHUNK = 1000;
/**
 * A cluster probe goes to one channel in each sixteenth of the slot space, so it crosses the
 * subscriber connection of every shard that owns at least 1024 contiguous slots (any layout of up
 * to 16 equal masters).
 */
const PROBE_SLOTS = 16;

function connectionOptions(name: string): RedisOptions {
  return {
    connectionName: name,
    // Commands issued while disconnected fail at once instead of being replayed minutes later.
    enableOfflineQueue: false,
    // Commands in flight when the link drops fail instead of being retried after reconnect.
    maxRetriesPerRequest: 0,
    retryStrategy: reconnectDelay,
    connectTimeout: 5000,
    keepAlive: 10_000,
    // Also frees a subscriber whose (re)connect hangs on a dead link.
    commandTimeout: COMMAND_TIMEOUT_MS,
  };
}

/** Hash tags, one per sixteenth of the slot space, found once by search. */
const probeTags: string[] = (() => {
  const tags = new Map<number, string>();
  for (let i = 0; tags.size < PROBE_SLOTS; i++) {
    const bucket = Math.floor(calculateSlot(`p${i}`) / (16384 / PROBE_SLOTS));
    if (!tags.has(bucket)) tags.set(bucket, `p${i}`);
  }
  return [...tags.values()];
})();

function standaloneOrSentinel(topology: Exclude<RedisTopology, { mode: 'cluster' }>, name: string, subscriber: boolean): Redis {
  const options: RedisOptions = { ...connectionOptions(name), ...(subscriber && { autoResubscribe: false }) };
  if (topology.mode === 'standalone') return new Redis(topology.url, options);
  return new Redis({
    ...options,
    sentinels: topology.sentinels.map(({ host, port }) => ({ host, port })),
    name: topology.name,
    // Without it a hung old master goes unnoticed until TCP gives up.
    failoverDetector: true,
    sentinelRetryStrategy: reconnectDelay,
  });
}

function cluster(topology: Extract<RedisTopology, { mode: 'cluster' }>, name: string, subscriber: boolean): Cluster {
  const options: ClusterOptions = {
    enableOfflineQueue: false,
    clusterRetryStrategy: reconnectDelay,
    // A command that met a failover is retried at once or fails: a delayed retry would land
    // after newer publishes (out of order, and late).
    retryDelayOnFailover: 0,
    slotsRefreshTimeout: 2000,
    // Finds moved slots without waiting for a MOVED reply: sharded subscribers follow a failover.
    slotsRefreshInterval: 1000,
    // SSUBSCRIBE goes to the shard that owns each channel: traffic spreads over the shards.
    shardedSubscribers: subscriber,
    redisOptions: { connectionName: name, maxRetriesPerRequest: 0, connectTimeout: 5000, keepAlive: 10_000, commandTimeout: COMMAND_TIMEOUT_MS },
  };
  return new Cluster(
    topology.nodes.map(({ host, port }) => ({ host, port })),
    options,
  );
}

export function createRedisClients(config: RedisConfig, nodeId: string): RedisClients {
  const { topology, prefix } = config;
  const names = { command: `${prefix}${nodeId}:cmd`, subscriber: `${prefix}${nodeId}:sub` };
  return topology.mode === 'cluster' ? clusterClients(topology, names) : singleClients(topology, names);
}

function closer(clients: RedisClient[]): () => Promise<void> {
  for (const client of clients) client.on('error', () => {}); // state changes are logged by the broker
  return async () => {
    await Promise.all(clients.map((c) => c.quit().catch(() => c.disconnect())));
  };
}

function clusterClients(topology: Extract<RedisTopology, { mode: 'cluster' }>, names: { command: string; subscriber: string }): RedisClients {
  const command = cluster(topology, names.command, false);
  const subscriber = cluster(topology, names.subscriber, true);
  // ioredis opens a node's connection on its first command; with no offline queue that command
  // fails ("Connection is closed"). Connect every node as soon as the cluster learns of it.
  command.on('+node', (node: Redis) => void node.connect().catch(() => {}));
  return {
    mode: 'cluster',
    command,
    subscriber,
    messageEvent: 'smessageBuffer',
    publish: (channel, message) => command.spublish(channel, message),
    // One SSUBSCRIBE per channel (a cluster refuses channels of several slots in one), all issued
    // at once: ioredis writes them together to each shard, one round trip per shard.
    async subscribe(channels) {
      await Promise.all(channels.map((c) => subscriber.ssubscribe(c)));
    },
    async unsubscribe(channels) {
      await Promise.all(channels.map((c) => subscriber.sunsubscribe(c)));
    },
    probeChannels: (base) => probeTags.map((tag) => `${base}{${tag}}`),
    close: closer([command, subscriber]),
  };
}

function singleClients(topology: Exclude<RedisTopology, { mode: 'cluster' }>, names: { command: string; subscriber: string }): RedisClients {
  const command = standaloneOrSentinel(topology, names.command, false);
  const subscriber = standaloneOrSentinel(topology, names.subscriber, true);
  return {
    mode: topology.mode,
    command,
    subscriber,
    messageEvent: 'messageBuffer',
    publish: (channel, message) => command.publish(channel, message),
    async subscribe(channels) {
      for (let i = 0; i < channels.length; i += SUBSCRIBE_CHUNK) await subscriber.subscribe(...channels.slice(i, i + SUBSCRIBE_CHUNK));
    },
    async unsubscribe(channels) {
      for (let i = 0; i < channels.length; i += SUBSCRIBE_CHUNK) await subscriber.unsubscribe(...channels.slice(i, i + SUBSCRIBE_CHUNK));
    },
    probeChannels: (base) => [base],
    close: closer([command, subscriber]),
  };
}
