/**
 * The ingestion stream (WS_STREAM) as a queue for one consumer at a time: the consumer group
 * `ws-edge` and the lease `<stream>:lease` name the node that reads. A node that takes the lease
 * over first claims everything its predecessor left pending (XAUTOCLAIM), then reads its own
 * pending entries before new ones, so the order stays the stream's. Done entries are acknowledged
 * and deleted in one MULTI (XACK + XDEL on the stream's own key): what stays in the stream is what
 * is not published yet, so its first entry's id gives the lag. Malformed entries are appended to
 * the dead letter with the reason, then acknowledged and deleted the same way.
 *
 * Every command names one key, so under Cluster the stream, its lease and its dead letter may sit
 * in different slots; a hash tag in WS_STREAM (`{orders}:ws`) keeps them on one shard.
 */
import type { StreamConfig } from '../config.js';
import type { RedisClient } from './links.js';
import { runScript } from './scripts.js';

export const GROUP = 'ws-edge';
/** A holder that stops renewing (every LEASE_RENEW_MS) loses the lease after this long. */
export const LEASE_MS = 6000;
export const LEASE_RENEW_MS = 2000;
/** A dead letter keeps at most this much of a command (a field `truncated` says it was cut). */
const DEAD_COMMAND_MAX = 64 * 1024;

/** `command` is undefined when the entry has no such field. */
export interface StreamEntry {
  readonly id: string;
  readonly command: string | undefined;
}

export interface DeadEntry {
  readonly entry: StreamEntry;
  readonly code: string;
  readonly message: string;
}

export interface IngestQueue {
  /** Takes or renews the lease; true while this node holds it. Claims the pending entries on taking it over. */
  hold(): Promise<boolean>;
  /** Frees the lease when this node holds it (a stopping node hands over at once). */
  release(): Promise<void>;
  /** At most `max` entries: this node's pending ones first, else new ones. */
  read(max: number): Promise<StreamEntry[]>;
  /** Acknowledges and deletes published entries. */
  done(ids: readonly string[]): Promise<void>;
  /** Appends an entry to the dead letter with its reason, then acknowledges and deletes it. */
  dead(dead: DeadEntry): Promise<void>;
  /** The id of the stream's first entry (the oldest not published), undefined when it is empty. */
  oldest(): Promise<string | undefined>;
}

/** The millisecond time in a stream id (`<ms>-<seq>`). */
export function entryTime(id: string): number {
  return Number(id.slice(0, id.indexOf('-')));
}

type StreamEntries = Array<[id: string, fields: string[] | null]>;

function entryOf([id, fields]: [string, string[]]): StreamEntry {
  for (let i = 0; i < fields.length; i += 2) if (fields[i] === 'command') return { id, command: fields[i + 1] };
  return { id, command: undefined };
}

function deadFields({ entry, code, message }: DeadEntry): string[] {
  const fields = ['id', entry.id, 'code', code, 'message', message];
  if (entry.command === undefined) return fields;
  const cut = Buffer.byteLength(entry.command) > DEAD_COMMAND_MAX;
  return [...fields, 'command', cut ? Buffer.from(entry.command).subarray(0, DEAD_COMMAND_MAX).toString() : entry.command, ...(cut ? ['truncated', '1'] : [])];
}

export function createIngestQueue(redis: RedisClient, config: StreamConfig, nodeId: string): IngestQueue {
  const stream = config.key;
  const lease = `${stream}:lease`;
  let held = false;
  const finish = async (ids: readonly string[]): Promise<void> => {
    if (ids.length > 0) await redis.multi().xack(stream, GROUP, ...ids).xdel(stream, ...ids).exec();
  };
  // Made at 0: what the product appended before any node ran is read too. MKSTREAM: it may not exist yet.
  const ensureGroup = (): Promise<unknown> => redis.xgroup('CREATE', stream, GROUP, '0', 'MKSTREAM').catch((err: Error) => (err.message.includes('BUSYGROUP') ? undefined : Promise.reject(err)));
  const claim = async (): Promise<void> => {
    let cursor = '0-0';
    do {
      const [next, , deleted] = (await redis.xautoclaim(stream, GROUP, nodeId, 0, cursor, 'COUNT', 1000, 'JUSTID')) as [string, string[], string[]];
      // Pending ids whose entries were deleted by hand: nothing left to publish.
      if (deleted.length > 0) await redis.xack(stream, GROUP, ...deleted);
      cursor = next;
    } while (cursor !== '0-0');
  };
  const readFrom = async (id: string, max: number): Promise<StreamEntry[]> => {
    const reply = (await redis.xreadgroup('GROUP', GROUP, nodeId, 'COUNT', max, 'STREAMS', stream, id)) as Array<[string, StreamEntries]> | null;
    const entries = reply?.[0]?.[1] ?? [];
    const gone = entries.filter(([, fields]) => fields === null || fields.length === 0).map(([gid]) => gid);
    if (gone.length > 0) await redis.xack(stream, GROUP, ...gone);
    return entries.filter((e): e is [string, string[]] => e[1] !== null && e[1].length > 0).map(entryOf);
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
        // The group is gone (Redis restarted empty, the stream deleted): made again, read next round.
        if (!(err as Error).message.includes('NOGROUP')) throw err;
        await ensureGroup();
        return [];
      }
    },
    done: finish,
    async dead(dead) {
      await redis.xadd(config.dead, 'MAXLEN', '~', config.deadMaxlen, '*', ...deadFields(dead));
      await finish([dead.entry.id]);
    },
    async oldest() {
      const first = (await redis.xrange(stream, '-', '+', 'COUNT', 1)) as Array<[string, string[]]>;
      return first[0]?.[0];
    },
  };
}
