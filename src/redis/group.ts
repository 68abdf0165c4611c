/**
 * A Redis Stream read by one node at a time, the holder of a lease, as a consumer group: the
 * webhook deliverer's event log (redis/lifecycle.ts) and stream ingestion (redis/ingest-stream.ts).
 * A node that takes the lease over first claims everything its predecessor left pending
 * (XAUTOCLAIM), then reads its own pending entries before new ones, so the order stays the
 * stream's. A group lost with a restarted Redis (NOGROUP) is made again and read the next round.
 * Pending ids whose entries are gone (trimmed, deleted by hand) are acknowledged and counted.
 */
import type { RedisClient } from './links.js';
import { runScript } from './scripts.js';

/** A holder that stops renewing loses the lease after this long. */
export const LEASE_MS = 6000;

export type GroupEntry = [id: string, fields: string[]];

export interface GroupOptions {
  readonly stream: string;
  readonly group: string;
  readonly lease: string;
  readonly nodeId: string;
  /** Pending ids found without their entry: acknowledged, and counted by the caller. */
  readonly gone: (count: number) => void;
}

export interface LeasedGroup {
  /** Takes or renews the lease; true while this node holds it. Claims the pending entries on taking it over. */
  hold(): Promise<boolean>;
  /** Frees the lease when this node holds it (a stopping node hands over at once). */
  release(): Promise<void>;
  /** At most `max` entries: this node's pending ones first, else new ones. */
  read(max: number): Promise<GroupEntry[]>;
}

type Read = Array<[id: string, fields: string[] | null]>;

export function createLeasedGroup(redis: RedisClient, opts: GroupOptions): LeasedGroup {
  const { stream, group, lease, nodeId } = opts;
  let held = false;
  const acknowledgeGone = async (ids: readonly string[]): Promise<void> => {
    if (ids.length === 0) return;
    opts.gone(ids.length);
    await redis.xack(stream, group, ...ids);
  };
  // Made at 0: what was appended before any node ran is read too. MKSTREAM: it may not exist yet.
  const ensureGroup = (): Promise<unknown> => redis.xgroup('CREATE', stream, group, '0', 'MKSTREAM').catch((err: Error) => (err.message.includes('BUSYGROUP') ? undefined : Promise.reject(err)));
  const claim = async (): Promise<void> => {
    let cursor = '0-0';
    do {
      const [next, , deleted] = (await redis.xautoclaim(stream, group, nodeId, 0, cursor, 'COUNT', 1000, 'JUSTID')) as [string, string[], string[]];
      await acknowledgeGone(deleted);
      cursor = next;
    } while (cursor !== '0-0');
  };
  const readFrom = async (id: string, max: number): Promise<GroupEntry[]> => {
    const reply = (await redis.xreadgroup('GROUP', group, nodeId, 'COUNT', max, 'STREAMS', stream, id)) as Array<[string, Read]> | null;
    const entries = reply?.[0]?.[1] ?? [];
    // A pending entry trimmed or deleted from the stream reads as an id without fields.
    await acknowledgeGone(entries.filter(([, fields]) => fields === null || fields.length === 0).map(([gid]) => gid));
    return entries.filter((e): e is GroupEntry => e[1] !== null && e[1].length > 0);
  };
  return {
    async hold() {
      const now = (await runScript(redis, 'lease', [lease], [nodeId, LEASE_MS])) === 1;
      if (now && !held) {
        await ensureGroup();
        await claim();
      }
      held = now;
      return held;
    },
    async release() {
      if (held) await runScript(redis, 'lease-release', [lease], [nodeId]);
      held = false;
    },
    async read(max) {
      try {
        const pending = await readFrom('0', max);
        return pending.length > 0 ? pending : await readFrom('>', max);
      } catch (err) {
        if (!(err as Error).message.includes('NOGROUP')) throw err;
        await ensureGroup();
        return [];
      }
    },
  };
}
