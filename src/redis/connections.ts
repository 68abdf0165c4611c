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

/** The publish thread's Redis: one command connection, its PUBLISH (SPUBLISH in a cluster), and a gate for requests that find it not ready. */
export interface PublishingConnection {
  readonly command: RedisClient;
  publish(channel: string, message: string): Promise<unknown>;
  readonly gate: Gate;
}

/**
 * Requests that found Redis not ready wait here, in arrival order, each at most its own time: one
 * timer looks every READY_POLL_MS and lets them go, oldest first, once it is ready (or their time is
 * up: they then fail as they would have).
 */
export interface Gate {
  /** Ready, and nobody waiting (a request arriving now must not overtake older ones). */
  open(): boolean;
  wait(timeoutMs: number): Promise<void>;
  waiting(): number;
  /** Lets every waiting request go at once (the thread is stopping). */
  release(): void;
}

const READY_POLL_MS = 20;
/** A cluster's masters are waited for only until all were ready once, or this long after its first `ready`: later, one master's outage fails its own commands only. */
const CLUSTER_WARM_UP_MS = 5000;

function createGate(ready: () => boolean): Gate {
  const waiting: Array<{ resolve: () => void; deadline: number }> = [];
  let timer: NodeJS.Timeout | undefined;
  const look = (): void => {
    timer = undefined;
    const now = Date.now();
    const go = ready();
    while (waiting.length > 0 && (go || waiting[0]!.deadline <= now)) waiting.shift()!.resolve();
    if (waiting.length > 0) timer = setTimeout(look, READY_POLL_MS);
  };
  return {
    open: () => waiting.length === 0 && ready(),
    wait: (timeoutMs) =>
      new Promise((resolve) => {
        waiting.push({ resolve, deadline: Date.now() + timeoutMs });
        timer ??= setTimeout(look, READY_POLL_MS);
      }),
    waiting: () => waiting.length,
    release() {
      clearTimeout(timer);
      timer = undefined;
      for (const each of waiting.splice(0)) each.resolve();
    },
  };
}

/**
 * One command connection of the configured topology: all the publish thread (publish-worker.ts)
 * needs of Redis. Its gate holds a request that arrives while the connection is not ready (at the
 * start, during a reconnect; in a cluster also while its masters connect after the start, since a
 * second command to a master still connecting fails: commandCluster).
 */
export function publishingConnection(topology: RedisTopology, name: string): PublishingConnection {
  if (topology.mode !== 'cluster') {
    const command = standaloneOrSentinel(topology, name, false);
    return { command, publish: (channel, message) => command.publish(channel, message), gate: createGate(() => command.status === 'ready') };
  }
  const command = commandCluster(topology, name);
  let warm = false;
  let readySince: number | undefined;
  const ready = (): boolean => {
    if (command.status !== 'ready') return false;
    readySince ??= Date.now();
    warm ||= Date.now() - readySince >= CLUSTER_WARM_UP_MS || command.nodes('master').every((master) => master.status === 'ready');
    return warm;
  };
  return { command, publish: (channel, message) => command.spublish(channel, message), gate: createGate(ready) };
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
  // ioredis opens a node's connection on its first command; with no offline queue a second command
  // while it connects fails ("Connection is closed"). Connect every node as soon as the cluster learns of it.
  cluster.on('+node', (node: Redis) => void node.connect().catch(() => {}));
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

