/**
 * Room history in Redis: per sequenced room a stream (entry id = offset, MAXLEN = WS_HISTORY_SIZE)
 * and a metadata hash (epoch, offset, the run_id of the server that wrote it), both refreshed to
 * WS_HISTORY_TTL on every append. lua/append-history.lua appends and publishes the `s` frame in one
 * step, so every node sees one order per room. The keys carry the hash tag of the room channel's
 * slot: in a cluster the script may SPUBLISH only to a channel of its keys' slot.
 */
import { randomBytes } from 'node:crypto';
import type { HistoryConfig } from '../config.js';
import { epochSource, type History, type HistoryEntry } from '../history.js';
import type { RedisClients } from './links.js';
import { runScript } from './scripts.js';
import { slotOf, tagFor } from './slots.js';
import { channelsOf, sequencedHeader } from './wire.js';

export interface RedisHistoryDeps {
  readonly redis: RedisClients;
  readonly prefix: string;
  readonly nodeId: string;
  readonly history: HistoryConfig;
}

export function createRedisHistory({ redis, prefix, nodeId, history }: RedisHistoryDeps): History {
  const channels = channelsOf(prefix, nodeId);
  const publishCommand = redis.mode === 'cluster' ? 'SPUBLISH' : 'PUBLISH';
  const nextEpoch = epochSource(randomBytes(4).toString('hex'));

  const keysOf = (room: string): { channel: string; keys: [string, string] } => {
    const channel = channels.room(room);
    const tag = `{${tagFor(slotOf(channel))}}`;
    return { channel, keys: [`${prefix}${tag}h:${room}`, `${prefix}${tag}m:${room}`] };
  };

  return {
    async append(room, head) {
      const { channel, keys } = keysOf(room);
      const args = [channel, publishCommand, sequencedHeader(nodeId, room), head, history.size, history.ttl, nextEpoch()];
      const [epoch, offset] = (await runScript(redis.command, 'append-history', keys, args)) as [string, number];
      return { epoch, offset };
    },
    async read(room, after, limit) {
      const reply = (await runScript(redis.command, 'read-history', keysOf(room).keys, [after, limit, history.ttl, nextEpoch()])) as Array<string | number>;
      const entries: HistoryEntry[] = [];
      for (let i = 2; i < reply.length; i += 2) entries.push({ offset: parseInt(reply[i] as string, 10), payload: reply[i + 1] as string });
      return { epoch: reply[0] as string, offset: reply[1] as number, entries };
    },
  };
}
