/**
 * A room's announced members in Redis (announcements.ts): one sorted set `<prefix>announced:{<room>}`
 * per room (the hash tag keeps it in one cluster slot) of members `[connection id, user id,
 * username]` as JSON, scored by expiry (Redis time). Taking a place is one script
 * (lua/announce-take.lua: lapsed members out and returned, the cap checked, the member in); each
 * node rewrites its own announced members every third of REDIS_SLOT_TTL, and at once when Redis is
 * back, so a killed node's lapse within REDIS_SLOT_TTL.
 */
import type { Announced, AnnouncementStore, Announcer } from '../announcements.js';
import type { Logger } from '../log.js';
import type { RedisClient } from './links.js';
import { startRefreshLoop, type RefreshLoop } from './refresh-loop.js';
import { runScript } from './scripts.js';

const keyOf = (prefix: string, room: string): string => `${prefix}announced:{${room}}`;
const encode = ({ connectionId, userId, username }: Announced): string => JSON.stringify([connectionId, userId, username]);

function decode(text: string): Announced | undefined {
  try {
    const [connectionId, userId, username] = JSON.parse(text) as unknown[];
    if (typeof connectionId === 'string' && typeof userId === 'string' && typeof username === 'string') return { connectionId, userId, username };
  } catch {
    // Not one of ours: dropped without a leave.
  }
  return undefined;
}

const decodeAll = (texts: readonly string[]): Announced[] => texts.map(decode).filter((m): m is Announced => m !== undefined);

export function createRedisAnnouncements(redis: RedisClient, prefix: string, ttlSeconds: number): AnnouncementStore {
  const ttl = ttlSeconds * 1000;
  return {
    async take(room, member, cap) {
      const [taken, ...lapsed] = (await runScript(redis, 'announce-take', [keyOf(prefix, room)], [encode(member), ttl, cap])) as [number, ...string[]];
      return { taken: taken === 1, lapsed: decodeAll(lapsed) };
    },
    give(room, member) {
      redis.zrem(keyOf(prefix, room), encode(member)).catch(() => undefined);
    },
  };
}

/**
 * Rewrites this node's announced members, one script per room (issued together: one write per
 * shard); the lapsed members a room's script finds (a killed node's) have their leave announced.
 */
export function refreshAnnouncements(redis: RedisClient, prefix: string, ttlSeconds: number, announcer: Announcer, log: Logger): RefreshLoop {
  const ttl = ttlSeconds * 1000;
  const refresh = async ([room, members]: [string, Announced[]]): Promise<void> => {
    const lapsed = (await runScript(redis, 'announce-refresh', [keyOf(prefix, room)], [ttl, ...members.map(encode)])) as string[];
    announcer.lapsed(room, decodeAll(lapsed));
  };
  return startRefreshLoop(redis, ttl / 3, 'announced members', log, () => Promise.all([...announcer.held()].map(refresh)));
}
