/**
 * The cluster-wide per-user connection limit. Each user has a sorted set `<prefix>conns:{<user>}`
 * of connection ids scored by expiry (Redis time, ms). Acquire is one Lua script: drop expired
 * entries, check the count, add. Every node refreshes its own live entries every third of the TTL,
 * so a node that dies (kill -9) leaks nothing past REDIS_SLOT_TTL. While Redis is away the limit
 * falls back to per-node counting; on reconnect the refresh re-adds every live connection.
 * The `{user}` hash tag keeps a user's key in one cluster slot.
 */
import type { RedisClient } from './redis.js';
import type { ConnectionSlots } from './limits.js';
import type { Logger } from './log.js';

const ACQUIRE = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  return 0
end
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
redis.call('PEXPIRE', KEYS[1], ttl)
return 1
`;

/** ARGV: ttl, then connection ids. Re-adds (or extends) this node's live connections of one user. */
const REFRESH = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[1])
for i = 2, #ARGV do redis.call('ZADD', KEYS[1], now + ttl, ARGV[i]) end
redis.call('PEXPIRE', KEYS[1], ttl)
return #ARGV - 1
`;

type ScriptedRedis = RedisClient & {
  wsedgeAcquire(key: string, connectionId: string, max: number, ttlMs: number): Promise<number>;
  wsedgeRefresh(key: string, ttlMs: number, ...connectionIds: string[]): Promise<number>;
};

export interface RedisSlotsOptions {
  readonly redis: RedisClient;
  readonly prefix: string;
  readonly maxPerUser: number;
  readonly ttlSeconds: number;
  /** Per-node counting: always kept, used alone while Redis is away. */
  readonly local: ConnectionSlots;
  /** This node's live connections, grouped by user, for the refresh. */
  readonly liveByUser: () => Iterable<[userId: string, connectionIds: string[]]>;
  readonly log: Logger;
}

function userKey(prefix: string, userId: string): string {
  return `${prefix}conns:{${userId}}`;
}

export function createRedisSlots(opts: RedisSlotsOptions): ConnectionSlots & { stop(): void } {
  const redis = opts.redis as ScriptedRedis;
  if (typeof redis.wsedgeAcquire !== 'function') {
    redis.defineCommand('wsedgeAcquire', { numberOfKeys: 1, lua: ACQUIRE });
    redis.defineCommand('wsedgeRefresh', { numberOfKeys: 1, lua: REFRESH });
  }
  const ttlMs = opts.ttlSeconds * 1000;
  let refreshing = false;

  const refresh = async (): Promise<void> => {
    if (refreshing || redis.status !== 'ready') return;
    refreshing = true;
    try {
      // Issued together, so ioredis writes them in batches; one script per user key, since the
      // keys of different users live in different cluster slots.
      const calls: Array<Promise<number>> = [];
      for (const [userId, ids] of opts.liveByUser()) calls.push(redis.wsedgeRefresh(userKey(opts.prefix, userId), ttlMs, ...ids));
      await Promise.all(calls);
    } catch (err) {
      opts.log.warn({ err }, 'connection registry refresh failed');
    } finally {
      refreshing = false;
    }
  };
  const timer = setInterval(() => void refresh(), ttlMs / 3);
  timer.unref();
  // The registry is rebuilt from live sockets whenever the link comes back.
  redis.on('ready', () => void refresh());

  return {
    async acquire(userId, connectionId) {
      if (redis.status !== 'ready') return opts.local.acquire(userId, connectionId);
      let granted: boolean;
      try {
        granted = (await redis.wsedgeAcquire(userKey(opts.prefix, userId), connectionId, opts.maxPerUser, ttlMs)) === 1;
      } catch {
        return opts.local.acquire(userId, connectionId);
      }
      // The local count is at most the cluster count, so this always succeeds; it keeps the fallback current.
      if (granted) await opts.local.acquire(userId, connectionId);
      return granted;
    },
    release(userId, connectionId) {
      opts.local.release(userId, connectionId);
      if (redis.status === 'ready') redis.zrem(userKey(opts.prefix, userId), connectionId).catch(() => {});
    },
    stop: () => clearInterval(timer),
  };
}
