/**
 * How ws-edge connects to Redis, for every topology and for `ws-edge/publisher`: one set of options.
 * No connection queues while disconnected, so nothing stale is replayed after an outage; all
 * reconnect with bounded, jittered backoff, and a command waits at most COMMAND_TIMEOUT_MS.
 */
import { Cluster, Command, Redis, type ClusterOptions, type RedisOptions } from 'ioredis';
import type { RedisTopology } from '../config.js';
import type { RedisClient } from './links.js';

export type StandaloneTopology = Exclude<RedisTopology, { mode: 'cluster' }>;
export type ClusterTopology = Extract<RedisTopology, { mode: 'cluster' }>;

/** Reconnect delays grow 100 ms, 200 ms, ... up to 5 s, each with up to 50% jitter. */
export function reconnectDelay(attempt: number): number {
  const base = Math.min(100 * 2 ** Math.min(attempt - 1, 6), 5000);
  return Math.round(base * (0.5 + Math.random() / 2));
}

/** A command waits at most this long for Redis; a half-open link then fails fast. */
const COMMAND_TIMEOUT_MS = 2000;

/**
 * A command's timeout measures Redis, not this node's own stalls. ioredis arms a timer per command;
 * after an event-loop turn longer than the timeout (a reconnect storm's handshakes and replays),
 * the timers phase runs before the poll phase reads the replies that arrived meanwhile, so every
 * command in flight failed "Command timed out" with its reply waiting in the socket: subscribes
 * retried, registry refreshes failed, publishes were dropped for the other nodes (issue 25). The
 * rejection is moved to the check phase of that turn (setImmediate), after the poll phase has read
 * what arrived: only a reply still missing then fails.
 */
function timeoutAfterPoll(): void {
  const proto = Command.prototype as unknown as { setTimeout(ms: number): void; _commandTimeoutTimer?: NodeJS.Timeout; isResolved: boolean; reject(err: Error): void };
  proto.setTimeout = function setTimeout(this: typeof proto, ms: number) {
    this._commandTimeoutTimer ??= globalThis.setTimeout(() => {
      setImmediate(() => {
        if (!this.isResolved) this.reject(new Error('Command timed out'));
      });
    }, ms);
  };
}
timeoutAfterPoll();

/** Options of every plain connection: commands and subscribers, one server or one shard, publishers. */
export function connectionOptions(name: string): RedisOptions {
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

/** A connection to one server (REDIS_URL) or to the master Sentinel names (with the failover detector). */
export function standaloneOrSentinel(topology: StandaloneTopology, name: string, subscriber: boolean): Redis {
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

/** A plain connection to one `host:port` (a cluster master's subscriber link). */
export function nodeConnection(host: string, port: number, options: RedisOptions): Redis {
  return new Redis({ ...options, host, port, autoResubscribe: false });
}

/** The publish thread's Redis: one command connection, its PUBLISH (SPUBLISH in a cluster), and whether it can take commands now. */
export interface PublishingConnection {
  readonly command: RedisClient;
  publish(channel: string, message: string): Promise<unknown>;
  /** Every connection a command may need is ready (in a cluster, each master's). */
  ready(): boolean;
  /** Resolves once `ready()`, or after `timeoutMs` (the commands then fail as they would). */
  whenReady(timeoutMs: number): Promise<void>;
}

/** How often whenReady looks again. */
const READY_POLL_MS = 20;

/**
 * One command connection of the configured topology: all the publish thread (publish-worker.ts)
 * needs of Redis. `whenReady` lets a request that arrives while it connects (or a cluster master
 * still connects: commandCluster) wait for it instead of failing.
 */
export function publishingConnection(topology: RedisTopology, name: string): PublishingConnection {
  if (topology.mode !== 'cluster') {
    const command = standaloneOrSentinel(topology, name, false);
    const ready = (): boolean => command.status === 'ready';
    return { command, publish: (channel, message) => command.publish(channel, message), ready, whenReady: (ms) => waitUntil(ready, ms) };
  }
  const command = commandCluster(topology, name);
  const ready = (): boolean => command.status === 'ready' && command.nodes('master').every((master) => master.status === 'ready');
  return { command, publish: (channel, message) => command.spublish(channel, message), ready, whenReady: (ms) => waitUntil(ready, ms) };
}

function waitUntil(done: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  return new Promise((resolve) => {
    const look = (): void => void (done() || Date.now() >= deadline ? resolve() : setTimeout(look, READY_POLL_MS));
    look();
  });
}

/** `ws-edge/publisher`'s connection: the nodes' options, from a URL. */
export function publisherConnection(url: string, name: string): Redis {
  return new Redis(url, connectionOptions(name));
}

/** The command client of a cluster: routes SPUBLISH and registry commands, follows MOVED, keeps the slot map. */
export function commandCluster(topology: ClusterTopology, name: string): Cluster {
  const { connectionName, maxRetriesPerRequest, connectTimeout, keepAlive, commandTimeout } = connectionOptions(name);
  const options: ClusterOptions = {
    enableOfflineQueue: false,
    clusterRetryStrategy: reconnectDelay,
    // A command that met a failover is retried at once or fails: a delayed retry would land
    // after newer publishes (out of order, and late).
    retryDelayOnFailover: 0,
    slotsRefreshTimeout: 2000,
    // Finds moved slots without waiting for a MOVED reply: the shard subscribers follow this map.
    slotsRefreshInterval: 1000,
    redisOptions: { connectionName, maxRetriesPerRequest, connectTimeout, keepAlive, commandTimeout },
  };
  const cluster = new Cluster(
    topology.nodes.map(({ host, port }) => ({ host, port })),
    options,
  );
  // ioredis connects a master only when a command first goes there, and with no offline queue a
  // second command to a master still connecting fails ("Connection is closed"): a node's first
  // publishes after a start or a failover were dropped that way. Every master is connected as soon
  // as the slot map names it.
  const connectMasters = (): void => {
    for (const master of cluster.nodes('master')) if (master.status === 'wait') master.connect().catch(() => {});
  };
  cluster.on('ready', connectMasters);
  cluster.on('+node', () => queueMicrotask(connectMasters));
  return cluster;
}

/** Closes politely, or at once when Redis does not answer. */
export function quit(client: RedisClient): Promise<unknown> {
  return client.quit().catch(() => client.disconnect());
}

/**
 * Runs `fn` with the command connection's sockets corked (every master's in a cluster): the
 * commands it issues without awaiting (a publish to many targets) leave in one write per socket,
 * which Redis reads in a few reads instead of one per command. Replies and errors are unchanged.
 */
export function writesTogether(client: RedisClient): <T>(fn: () => T) => T {
  return (fn) => {
    const connections = client instanceof Cluster ? client.nodes('master') : [client];
    // A connection that has not connected yet has no socket: nothing to cork.
    const sockets = connections.flatMap((c) => ((c.stream as typeof c.stream | undefined) === undefined ? [] : [c.stream]));
    for (const socket of sockets) socket.cork();
    try {
      return fn();
    } finally {
      for (const socket of sockets) socket.uncork();
    }
  };
}

