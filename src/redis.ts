/**
 * Redis connections for one node, for each topology: one server (REDIS_URL), a Redis Cluster
 * (REDIS_CLUSTER_NODES, sharded pub/sub), or a Sentinel-managed master (REDIS_SENTINELS, with the
 * failover detector). A command connection carries publishes and the connection registry,
 * subscriber links the room channels: one for one server, one per master in a cluster
 * (redis-shards.ts). Neither queues while disconnected, so nothing stale is
 * replayed after an outage; both reconnect with bounded, jittered backoff.
 */
import { Cluster, Redis, type ClusterOptions, type RedisOptions } from 'ioredis';
import type { RedisConfig, RedisTopology } from './config.js';
import { createShardLinks } from './redis-shards.js';

export type RedisClient = Redis | Cluster;

/**
 * One subscriber connection and the channels it carries: the only one for one server or a
 * Sentinel-managed master, one per master in a cluster. Each link is resubscribed and probed on its
 * own, so a failing shard costs only the rooms whose channels it carries.
 */
export interface SubscriberLink {
  /** `main` for one server or Sentinel; the master's `host:port` in a cluster (logged, never a metric label). */
  readonly name: string;
  readonly client: Redis;
  /** Subscriber event carrying (channel, message) buffers. */
  readonly messageEvent: 'messageBuffer' | 'smessageBuffer';
  /** A channel under `base` that this link carries now, for its liveness probe. */
  probeChannel(base: string): string;
  /** Subscribes; resolves once Redis has confirmed every channel. */
  subscribe(channels: readonly string[]): Promise<void>;
  unsubscribe(channels: readonly string[]): Promise<void>;
  /**
   * Drops this link's subscriber connection and the command connection to the same server, and
   * lets both reconnect: after a failed probe, nothing written to a stalled link is delivered late.
   */
  rebuild(): void;
}

export interface LinkChange {
  readonly added: readonly SubscriberLink[];
  /** Links whose master is gone: already out of `all()`, disconnected right after the listeners ran. */
  readonly removed: readonly SubscriberLink[];
}

/** The subscriber side of a topology: which link carries which channel, and when that changes. */
export interface SubscriberLinks {
  all(): readonly SubscriberLink[];
  /** The link that must carry `channel` now; undefined while no master is known for its slot. */
  linkFor(channel: string): SubscriberLink | undefined;
  /**
   * Called after links were added or removed or slots changed owner (never for one server). Links
   * that lost slots reconnect right after the listeners ran, and resubscribe what they carry now.
   */
  onChange(listener: (change: LinkChange) => void): void;
}

export interface RedisClients {
  readonly mode: RedisTopology['mode'];
  readonly command: RedisClient;
  readonly subscribers: SubscriberLinks;
  publish(channel: string, message: string): Promise<unknown>;
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

/** Options of every plain connection: commands and subscribers, one server or one shard. */
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

/** The command client of a cluster: routes SPUBLISH and registry commands, follows MOVED, keeps the slot map. */
function commandCluster(topology: Extract<RedisTopology, { mode: 'cluster' }>, name: string): Cluster {
  const options: ClusterOptions = {
    enableOfflineQueue: false,
    clusterRetryStrategy: reconnectDelay,
    // A command that met a failover is retried at once or fails: a delayed retry would land
    // after newer publishes (out of order, and late).
    retryDelayOnFailover: 0,
    slotsRefreshTimeout: 2000,
    // Finds moved slots without waiting for a MOVED reply: the shard subscribers follow this map.
    slotsRefreshInterval: 1000,
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

function quit(client: RedisClient): Promise<unknown> {
  return client.quit().catch(() => client.disconnect());
}

function clusterClients(topology: Extract<RedisTopology, { mode: 'cluster' }>, names: { command: string; subscriber: string }): RedisClients {
  const command = commandCluster(topology, names.command);
  command.on('error', () => {}); // state changes are logged by the broker
  // ioredis opens a node's connection on its first command; with no offline queue that command
  // fails ("Connection is closed"). Connect every node as soon as the cluster learns of it.
  command.on('+node', (node: Redis) => void node.connect().catch(() => {}));
  const shards = createShardLinks(command, connectionOptions(names.subscriber));
  return {
    mode: 'cluster',
    command,
    subscribers: shards,
    publish: (channel, message) => command.spublish(channel, message),
    async close() {
      await Promise.all([quit(command), shards.close()]);
    },
  };
}

function singleClients(topology: Exclude<RedisTopology, { mode: 'cluster' }>, names: { command: string; subscriber: string }): RedisClients {
  const command = standaloneOrSentinel(topology, names.command, false);
  const subscriber = standaloneOrSentinel(topology, names.subscriber, true);
  for (const client of [command, subscriber]) client.on('error', () => {}); // state changes are logged by the broker
  const link: SubscriberLink = {
    name: 'main',
    client: subscriber,
    messageEvent: 'messageBuffer',
    probeChannel: (base) => base,
    async subscribe(channels) {
      for (let i = 0; i < channels.length; i += SUBSCRIBE_CHUNK) await subscriber.subscribe(...channels.slice(i, i + SUBSCRIBE_CHUNK));
    },
    async unsubscribe(channels) {
      for (let i = 0; i < channels.length; i += SUBSCRIBE_CHUNK) await subscriber.unsubscribe(...channels.slice(i, i + SUBSCRIBE_CHUNK));
    },
    rebuild() {
      subscriber.disconnect(true);
      command.disconnect(true);
    },
  };
  return {
    mode: topology.mode,
    command,
    subscribers: { all: () => [link], linkFor: () => link, onChange() {} },
    publish: (channel, message) => command.publish(channel, message),
    async close() {
      await Promise.all([quit(command), quit(subscriber)]);
    },
  };
}
