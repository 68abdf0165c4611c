/**
 * Idempotency records of client sends to plain rooms in Redis (send-keys.ts): one key each in the
 * room channel's slot, so the publish and its record are one script (publish-recorded.lua); a claim
 * is the same key holding '' for a lease.
 */
import { IDEMPOTENCY_WINDOW_S } from '../history.js';
import { CLAIM_LEASE_MS, recordName, type Claim, type SendKeys } from '../send-keys.js';
import type { RedisBroker } from './broker.js';
import type { RedisClient } from './links.js';
import { runScript } from './scripts.js';

const PENDING = '';

const claimOf = (found: string | undefined): Claim => (found === undefined ? 'new' : found === PENDING ? 'pending' : { result: JSON.parse(found) as Record<string, unknown> });

export function createRedisSendKeys(redis: RedisClient, broker: RedisBroker): SendKeys {
  const keyOf = (userId: string, room: string, key: string): string => broker.recordKey(room, recordName(userId, room, key));
  return {
    async claim(userId, room, key) {
      const id = keyOf(userId, room, key);
      if ((await redis.set(id, PENDING, 'PX', CLAIM_LEASE_MS, 'NX')) === 'OK') return 'new';
      const found = await redis.get(id);
      if (found === null) return (await redis.set(id, PENDING, 'PX', CLAIM_LEASE_MS, 'NX')) === 'OK' ? 'new' : 'pending';
      return claimOf(found);
    },
    async publishOnce({ userId, room, key, result, claimed, envelope }) {
      const record = { name: recordName(userId, room, key), value: JSON.stringify(result), ttlMs: IDEMPOTENCY_WINDOW_S * 1000, claimed };
      return claimOf(await broker.publishRecorded(room, envelope, record));
    },
    release(userId, room, key) {
      void runScript(redis, 'release-claim', [keyOf(userId, room, key)], []).catch(() => {});
    },
  };
}
