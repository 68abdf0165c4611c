/**
 * The ingestion stream (WS_STREAM) as a queue for one consumer at a time: the consumer group
 * `ws-edge` and the lease `<stream>:lease` name the node that reads (redis/group.ts: a new holder
 * claims what its predecessor left pending, and reads pending entries before new ones, so the
 * order stays the stream's). Done entries are acknowledged
 * and deleted in one MULTI (XACK + XDEL on the stream's own key): what stays in the stream is what
 * is not published yet, so its first entry's id gives the lag. Malformed entries are appended to
 * the dead letter with the reason, then acknowledged and deleted the same way.
 *
 * Every command names one key, so under Cluster the stream, its lease and its dead letter may sit
 * in different slots; a hash tag in WS_STREAM (`{orders}:ws`) keeps them on one shard.
 */
import type { StreamConfig } from '../config.js';
import { createLeasedGroup, LEASE_MS, type GroupEntry } from './group.js';
import type { RedisClient } from './links.js';

export const GROUP = 'ws-edge';
/** A holder renews its lease this often; one that stops loses it after LEASE_MS. */
export const LEASE_RENEW_MS = 2000;
export { LEASE_MS };
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

function entryOf([id, fields]: GroupEntry): StreamEntry {
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
  // Pending ids whose entries were deleted by hand: nothing left to publish.
  const group = createLeasedGroup(redis, { stream, group: GROUP, lease: `${stream}:lease`, nodeId, gone: () => undefined });
  const finish = async (ids: readonly string[]): Promise<void> => {
    if (ids.length > 0) await redis.multi().xack(stream, GROUP, ...ids).xdel(stream, ...ids).exec();
  };
  return {
    hold: group.hold,
    release: group.release,
    read: async (max) => (await group.read(max)).map(entryOf),
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
