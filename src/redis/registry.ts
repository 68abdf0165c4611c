/**
 * The cluster-wide per-user connection limit. Each user has a sorted set `<prefix>conns:{<user>}`
 * of connection ids scored by expiry (Redis time, ms). Acquire is one script (lua/acquire-seat.lua):
 * drop expired entries, check the count, add. Every node refreshes its own live entries every
 * third of the TTL (lua/refresh-seats.lua), so a node that dies (kill -9) leaks nothing past
 * REDIS_SLOT_TTL. While Redis is away the limit falls back to per-node counting; on reconnect the
 * refresh re-adds every live connection. The `{user}` hash tag keeps a user's key in one cluster slot.
 */
import { LAST_SEEN_KEPT_MS, userStatus, type ConnectionSeats } from '../limits.js';
import type { Logger } from '../log.js';
import type { RedisClient } from './links.js';
import { startRefreshLoop } from './refresh-loop.js';
import { runScript } from './scripts.js';

export interface RedisSeatsOptions {
  readonly redis: RedisClient;
  readonly prefix: string;
  readonly maxPerUser: number;
  readonly ttlSeconds: number;
  /** Per-node counting: always kept, used alone while Redis is away. */
  readonly local: ConnectionSeats;
  /** This node's live connections, grouped by user, for the refresh. */
  readonly liveByUser: () => Iterable<[userId: string, connectionIds: string[]]>;
  readonly log: Logger;
}

function userKey(prefix: string, userId: string): string {
  return `${prefix}conns:{${userId}}`;
}

/**
 * Each user's live connections on every node (entries not expired by this clock), `except` not
 * counted: one ZCOUNT per user (and a ZSCORE with `except`), all issued before any reply is
 * awaited, so ioredis writes them back to back (per shard in a cluster). Rejects when Redis does.
 */
export async function countConnections(redis: RedisClient, prefix: string, userIds: readonly string[], except: string | undefined): Promise<number[]> {
  const now = Date.now();
  const counts = userIds.map((userId) => redis.zcount(userKey(prefix, userId), `(${now}`, '+inf'));
  const excluded = except === undefined ? [] : userIds.map((userId) => redis.zscore(userKey(prefix, userId), except));
  const [all, scores] = await Promise.all([Promise.all(counts), Promise.all(excluded)]);
  return all.map((count, i) => count - (scores[i] != null && Number(scores[i]) > now ? 1 : 0));
}

/**
 * How many connections each user has, `except` not counted: every node's from the registry while
 * Redis is ready, this node's own (`local`) without Redis, while it is away, or when it fails.
 */
export function connectionCounter(redis: RedisClient | undefined, prefix: string, local: (userId: string) => readonly string[] | undefined) {
  const here = (userIds: readonly string[], except: string | undefined): number[] => userIds.map((userId) => (local(userId) ?? []).filter((id) => id !== except).length);
  return (userIds: readonly string[], except: string | undefined): Promise<number[]> => {
    if (redis === undefined || redis.status !== 'ready' || userIds.length === 0) return Promise.resolve(here(userIds, except));
    return countConnections(redis, prefix, userIds, except).catch(() => here(userIds, except));
  };
}

/** When the user was last seen (ms), in the same slot as their connections. */
function seenKey(prefix: string, userId: string): string {
  return `${prefix}seen:{${userId}}`;
}

export function createRedisSeats(opts: RedisSeatsOptions): ConnectionSeats & { stop(): void } {
  const { redis, prefix } = opts;
  const ttlMs = opts.ttlSeconds * 1000;
  // Issued together, so ioredis writes them in batches; one script per user key, since the keys of
  // different users live in different cluster slots.
  const refresh = () => Promise.all([...opts.liveByUser()].map(([userId, ids]) => runScript(redis, 'refresh-seats', [userKey(prefix, userId), seenKey(prefix, userId)], [ttlMs, LAST_SEEN_KEPT_MS, ...ids])));
  const loop = startRefreshLoop(redis, ttlMs / 3, 'connection registry', opts.log, refresh);

  return {
    async acquire(userId, connectionId) {
      if (redis.status !== 'ready') return opts.local.acquire(userId, connectionId);
      let granted: boolean;
      try {
        granted = (await runScript(redis, 'acquire-seat', [userKey(prefix, userId), seenKey(prefix, userId)], [connectionId, opts.maxPerUser, ttlMs, LAST_SEEN_KEPT_MS])) === 1;
      } catch {
        return opts.local.acquire(userId, connectionId);
      }
      // The local count is at most the cluster count, so this always succeeds; it keeps the fallback current.
      if (granted) await opts.local.acquire(userId, connectionId);
      return granted;
    },
    release(userId, connectionId) {
      opts.local.release(userId, connectionId);
      if (redis.status === 'ready') runScript(redis, 'release-seat', [userKey(prefix, userId), seenKey(prefix, userId)], [connectionId, LAST_SEEN_KEPT_MS]).catch(() => {});
    },
    // One script per user, issued together (pipelined; per shard in a Cluster). Rejects while Redis is away.
    status: (userIds) =>
      Promise.all(
        userIds.map(async (userId) => {
          const [count, seen] = (await runScript(redis, 'seat-status', [userKey(prefix, userId), seenKey(prefix, userId)], [])) as [number, number | null];
          return userStatus(userId, count, seen ?? undefined);
        }),
      ),
    stop: () => loop.stop(),
  };
}
