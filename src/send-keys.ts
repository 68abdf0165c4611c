/**
 * Idempotency records of client sends to plain rooms (`send_message` with `idempotency_key`; a
 * sequenced room's are kept atomically with its history). A key is claimed before the send is
 * published (a short lease, so a node that dies mid-send does not block the key for the whole
 * window), then settled with the result for IDEMPOTENCY_WINDOW_S, or released when nothing was
 * published. Scoped per user and room. In memory (bounded) on one node, in Redis in a cluster
 * (redis/send-keys.ts).
 */
import { IDEMPOTENCY_WINDOW_S } from './history.js';

/** How long a claimed key waits for its result before another send may take it over. */
export const CLAIM_LEASE_MS = 30_000;
/** Records kept in memory at most; the oldest go first. */
const MAX_RECORDS = 100_000;

/** `new`: claimed, publish it; `pending`: a send with this key is under way; else the first send's result. */
export type Claim = 'new' | 'pending' | { readonly result: Record<string, unknown> };

export interface SendKeys {
  claim(userId: string, room: string, key: string): Claim | Promise<Claim>;
  /** The send was published: repeats get `result` for the window. */
  settle(userId: string, room: string, key: string, result: Record<string, unknown>): void;
  /** Nothing was published (refused, unavailable): the key may be sent again. */
  release(userId: string, room: string, key: string): void;
}

export const recordKey = (userId: string, room: string, key: string): string => `${userId}\n${room}\n${key}`;

export function createMemorySendKeys(now: () => number = Date.now): SendKeys {
  const records = new Map<string, { result: Record<string, unknown> | undefined; until: number }>();
  return {
    claim(userId, room, key) {
      const id = recordKey(userId, room, key);
      const found = records.get(id);
      if (found !== undefined && found.until > now()) return found.result === undefined ? 'pending' : { result: found.result };
      records.delete(id);
      if (records.size >= MAX_RECORDS) records.delete(records.keys().next().value!);
      records.set(id, { result: undefined, until: now() + CLAIM_LEASE_MS });
      return 'new';
    },
    settle(userId, room, key, result) {
      const id = recordKey(userId, room, key);
      records.delete(id);
      records.set(id, { result, until: now() + IDEMPOTENCY_WINDOW_S * 1000 });
    },
    release(userId, room, key) {
      records.delete(recordKey(userId, room, key));
    },
  };
}
