/**
 * Room history in memory (the single-node broker): a ring of WS_HISTORY_SIZE events per room. Rooms
 * are kept in order of their last publish, so those idle past WS_HISTORY_TTL are dropped from the
 * front on every append, and at most MAX_ROOMS are kept. A room's stream that is dropped and
 * written again gets a new epoch, as does every room after a restart.
 */
import { randomBytes } from 'node:crypto';
import type { HistoryConfig } from './config.js';
import { epochSource, withPosition, type History, type HistoryEntry, type SequencedDelivery } from './history.js';

/** Bounds memory whatever the number of rooms published to within the TTL: the least recently written go first. */
export const MAX_ROOMS = 100_000;

interface Stream {
  readonly epoch: string;
  offset: number;
  /** The last `size` payloads; offset `o` is at `(o - 1) % size`. */
  readonly ring: string[];
  writtenAt: number;
}

export function createMemoryHistory(config: HistoryConfig, deliver: SequencedDelivery, now: () => number = Date.now): History {
  const streams = new Map<string, Stream>();
  const nextEpoch = epochSource(randomBytes(4).toString('hex'));
  const ttlMs = config.ttl * 1000;

  const live = (room: string): Stream | undefined => {
    const stream = streams.get(room);
    if (stream !== undefined && now() - stream.writtenAt > ttlMs) {
      streams.delete(room);
      return undefined;
    }
    return stream;
  };
  /** Drops the rooms idle past the TTL (the oldest writes are first in the map), and any past MAX_ROOMS. */
  const sweep = (at: number): void => {
    for (const [room, stream] of streams) {
      if (at - stream.writtenAt <= ttlMs && streams.size <= MAX_ROOMS) return;
      streams.delete(room);
    }
  };
  const streamOf = (room: string): Stream => live(room) ?? { epoch: nextEpoch(), offset: 0, ring: [], writtenAt: 0 };

  return {
    append(room, head) {
      const stream = streamOf(room);
      const at = now();
      stream.offset += 1;
      stream.writtenAt = at;
      const payload = withPosition(head, stream.epoch, stream.offset);
      stream.ring[(stream.offset - 1) % config.size] = payload;
      // Re-inserted: the map stays in order of last write.
      streams.delete(room);
      streams.set(room, stream);
      sweep(at);
      deliver(room, stream.epoch, stream.offset, payload);
      return Promise.resolve({ epoch: stream.epoch, offset: stream.offset });
    },
    read(room, after, limit) {
      let stream = live(room);
      if (stream === undefined) {
        // A position for a room never written: kept, so the first append continues this epoch.
        stream = streamOf(room);
        stream.writtenAt = now();
        streams.set(room, stream);
        sweep(stream.writtenAt);
      }
      const entries: HistoryEntry[] = [];
      const oldest = Math.max(1, stream.offset - config.size + 1);
      for (let o = Math.max(after + 1, oldest); o <= stream.offset && entries.length < limit; o++) {
        entries.push({ offset: o, payload: stream.ring[(o - 1) % config.size]! });
      }
      return Promise.resolve({ epoch: stream.epoch, offset: stream.offset, entries });
    },
  };
}
