/**
 * Revocations in Redis: one sorted set `<prefix>revocations` (one key, so one cluster slot), each
 * member a revocation (`u <user id> <issued_before ms>` or `j <jti>`) scored by its expiry (epoch
 * ms). Written by lua/revoke.lua (expired members dropped, WS_REVOCATIONS_MAX enforced, the key's
 * own expiry moved to its last member's); read whole at start and by each node's periodic reload.
 */
import type { KeptRevocation, Revocation, RevocationStore } from '../revocation.js';
import { isTokenId } from '../revocation.js';
import { isValidId } from '../rooms.js';
import type { RedisClient } from './links.js';
import { runScript } from './scripts.js';

export function revocationKey(prefix: string): string {
  return `${prefix}revocations`;
}

/** The member naming a revocation; also the payload of its broker frame. */
export function encodeRevocation(rule: Revocation): string {
  return rule.kind === 'user' ? `u ${rule.userId} ${rule.issuedBefore}` : `j ${rule.tokenId}`;
}

/** undefined for text that is not one (counted by the caller). */
export function decodeRevocation(text: string): Revocation | undefined {
  const [kind, id, before, extra] = text.split(' ');
  if (extra !== undefined) return undefined;
  if (kind === 'j' && before === undefined && isTokenId(id)) return { kind: 'jti', tokenId: id };
  const issuedBefore = Number(before);
  if (kind === 'u' && isValidId(id) && Number.isSafeInteger(issuedBefore) && issuedBefore > 0) return { kind: 'user', userId: id, issuedBefore };
  return undefined;
}

export function createRedisRevocationStore(redis: RedisClient, prefix: string, max: number): RevocationStore {
  const key = revocationKey(prefix);
  return {
    async save({ rule, expiresAt }) {
      return (await runScript(redis, 'revoke', [key], [encodeRevocation(rule), expiresAt, Date.now(), max])) === 1;
    },
    async load() {
      const flat = (await redis.zrangebyscore(key, Date.now(), '+inf', 'WITHSCORES')) as string[];
      const kept: KeptRevocation[] = [];
      for (let i = 0; i + 1 < flat.length; i += 2) {
        const rule = decodeRevocation(flat[i]!);
        if (rule !== undefined) kept.push({ rule, expiresAt: Number(flat[i + 1]) });
      }
      return kept;
    },
  };
}
