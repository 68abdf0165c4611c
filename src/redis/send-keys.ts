/** Idempotency records of client sends to plain rooms in Redis (send-keys.ts): one key each, a lease while the send is under way. */
import { IDEMPOTENCY_WINDOW_S } from '../history.js';
import { CLAIM_LEASE_MS, type SendKeys } from '../send-keys.js';
import type { RedisClient } from './links.js';

const PENDING = '';

export function createRedisSendKeys(redis: RedisClient, prefix: string): SendKeys {
  const keyOf = (userId: string, room: string, key: string): string => `${prefix}sent:${room}:${userId}:${key}`;
  return {
    async claim(userId, room, key) {
      const id = keyOf(userId, room, key);
      if ((await redis.set(id, PENDING, 'PX', CLAIM_LEASE_MS, 'NX')) === 'OK') return 'new';
      const found = await redis.get(id);
      if (found === null) return (await redis.set(id, PENDING, 'PX', CLAIM_LEASE_MS, 'NX')) === 'OK' ? 'new' : 'pending';
      return found === PENDING ? 'pending' : { result: JSON.parse(found) as Record<string, unknown> };
    },
    settle(userId, room, key, result) {
      void redis.set(keyOf(userId, room, key), JSON.stringify(result), 'PX', IDEMPOTENCY_WINDOW_S * 1000).catch(() => {});
    },
    release(userId, room, key) {
      void redis.del(keyOf(userId, room, key)).catch(() => {});
    },
  };
}
