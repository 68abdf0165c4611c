/**
 * Room history in Redis: per sequenced room a stream (entry id = offset, MAXLEN = WS_HISTORY_SIZE)
 * and a metadata hash (epoch, offset, the run_id of the server that wrote it), both refreshed to
 * WS_HISTORY_TTL on every append. lua/append-history.lua appends and publishes the `s` frame in one
 * step, so every node sees one order per room. The keys carry the hash tag of the room channel's
 * slot: in a cluster the script may SPUBLISH only to a channel of its keys' slot.
 */
import { randomBytes } from 'node:crypto';
import type { HistoryConfig } from '../config.js';
import { epochSource, IDEMPOTENCY_WINDOW_S, type History, type HistoryEntry, type HistoryRead } from '../history.js';
import type { RedisClient } from './links.js';
import { runScript } from './scripts.js';
import { slotOf, tagFor } from './slots.js';
import { channelsOf, sequencedHeader } from './wire.js';

export interface RedisHistoryDeps {
  /** The command connection of a node (or of `ws-edge/publisher`). */
  readonly command: RedisClient;
  /** Redis Cluster: the script publishes with SPUBLISH. */
  readonly cluster: boolean;
  readonly prefix: string;
  readonly nodeId: string;
  readonly history: HistoryConfig;
}

export function createRedisHistory({ command, cluster, prefix, nodeId, history }: RedisHistoryDeps): History {
  const channels = channelsOf(prefix, nodeId);
  const publishCommand = cluster ? 'SPUBLISH' : 'PUBLISH';
  const nextEpoch = epochSource(randomBytes(4).toString('hex'));

  /** The room's channel and keys: stream, metadata, and the idempotency record of `key`. */
  const keysOf = (room: string, key = ''): { channel: string; keys: [string, string, string] } => {
    const channel = channels.room(room);
    const tag = `${prefix}{${tagFor(slotOf(channel))}}`;
    return { channel, keys: [`${tag}h:${room}`, `${tag}m:${room}`, `${tag}i:${room}:${key}`] };
  };
  const read = async (room: string, from: number, limit: number, direction: 'after' | 'before'): Promise<HistoryRead> => {
    const keys = keysOf(room).keys.slice(0, 2);
    const reply = (await runScript(command, 'read-history', keys, [from, limit, history.ttl, nextEpoch(), direction])) as Array<string | number>;
    const entries: HistoryEntry[] = [];
    for (let i = 2; i < reply.length; i += 2) entries.push({ offset: parseInt(reply[i] as string, 10), payload: reply[i + 1] as string });
    return { epoch: reply[0] as string, offset: reply[1] as number, entries };
  };

  return {
    async append(room, head, idempotencyKey = '', except = '') {
      const { channel, keys } = keysOf(room, idempotencyKey);
      const args = [channel, publishCommand, sequencedHeader(nodeId, room), head, history.size, history.ttl, nextEpoch(), idempotencyKey, IDEMPOTENCY_WINDOW_S, except];
      const [epoch, offset, duplicate] = (await runScript(command, 'append-history', keys, args)) as [string, number, number];
      return { epoch, offset, duplicate: duplicate === 1 };
    },
    read: (room, after, limit) => read(room, after, limit, 'after'),
    readBack: (room, before, limit) => read(room, before, limit, 'before'),
  };
}
