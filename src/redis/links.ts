/**
 * The contract between a Redis topology and the code that uses it: a command connection, and the
 * subscriber links that carry room channels (one for one server or a Sentinel-managed master, one
 * per master in a cluster). Types only: single.ts and cluster.ts implement it, clients.ts picks one.
 */
import type { Cluster, Redis } from 'ioredis';
import type { RedisTopology } from '../config.js';

export type RedisClient = Redis | Cluster;

/**
 * One subscriber connection and the channels it carries. Each link is resubscribed and probed on
 * its own, so a failing shard costs only the rooms whose channels it carries.
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
  /** PUBLISH (SPUBLISH in a cluster): resolves with how many subscribers Redis handed it to. */
  publish(channel: string, message: string): Promise<number>;
  close(): Promise<void>;
}
