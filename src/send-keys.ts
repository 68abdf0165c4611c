/**
 * Idempotency records of client sends to plain rooms (`send_message` with `idempotency_key`; a
 * sequenced room's are kept atomically with its history). Scoped per user and room, kept for
 * IDEMPOTENCY_WINDOW_S. The publish and its record are one step (`publishOnce`), so a node that
 * dies mid-send leaves either both or neither: a repeat gets the first result, or is published.
 * A send that asks the publish proxy first `claim`s its key (a short lease), so a repeat does not
 * reach the backend while the first is under way; a node that dies holding a claim frees it when
 * the lease ends. In memory (bounded) on one node, in Redis in a cluster (redis/send-keys.ts).
 */
import { IDEMPOTENCY_WINDOW_S } from './history.js';

/** How long a claimed key waits for its result before another send may take it over. */
export const CLAIM_LEASE_MS = 30_000;
/** Records kept in memory at most; the oldest go first. */
const MAX_RECORDS = 100_000;

/** `new`: claimed or published now; `pending`: another send with this key is under way; else the first send's result. */
export type Claim = 'new' | 'pending' | { readonly result: Record<string, unknown> };

export interface KeyedSend {
  readonly userId: string;
  readonly room: string;
  readonly key: string;
  /** What `message_sent` carries, and a repeat gets. */
  readonly result: Record<string, unknown>;
  /** This send holds the key's claim. */
  readonly claimed: boolean;
  readonly envelope: string;
}

export interface SendKeys {
  claim(userId: string, room: string, key: string): Claim | Promise<Claim>;
  /** Publishes the send and records its result in one step, unless the key has a result or another send's claim. */
  publishOnce(send: KeyedSend): Claim | Promise<Claim>;
  /** A claimed send published nothing (refused, unavailable): the key may be sent again. */
  release(userId: string, room: string, key: string): void;
}

export const recordName = (userId: string, room: string, key: string): string => `sent:${room}:${userId}:${key}`;

/** `publish` hands a plain room's envelope to the broker. */
export function createMemorySendKeys(publish: (room: string, envelope: string) => void, now: () => number = Date.now): SendKeys {
  const records = new Map<string, { result: Record<string, unknown> | undefined; until: number }>();
  const found = (id: string) => {
    const record = records.get(id);
    if (record !== undefined && record.until > now()) return record;
    records.delete(id);
    return undefined;
  };
  const keep = (id: string, result: Record<string, unknown> | undefined, ms: number): void => {
    records.delete(id);
    if (records.size >= MAX_RECORDS) records.delete(records.keys().next().value!);
    records.set(id, { result, until: now() + ms });
  };
  return {
    claim(userId, room, key) {
      const id = recordName(userId, room, key);
      const record = found(id);
      if (record !== undefined) return record.result === undefined ? 'pending' : { result: record.result };
      keep(id, undefined, CLAIM_LEASE_MS);
      return 'new';
    },
    publishOnce({ userId, room, key, result, claimed, envelope }) {
      const id = recordName(userId, room, key);
      const record = found(id);
      if (record?.result !== undefined) return { result: record.result };
      if (record !== undefined && !claimed) return 'pending';
      publish(room, envelope);
      keep(id, result, IDEMPOTENCY_WINDOW_S * 1000);
      return 'new';
    },
    release(userId, room, key) {
      const id = recordName(userId, room, key);
      if (found(id)?.result === undefined) records.delete(id);
    },
  };
}
