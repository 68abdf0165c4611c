/**
 * Room history in memory (the single-node broker): a ring of WS_HISTORY_SIZE events per room. Rooms
 * are kept in order of their last publish, so those idle past WS_HISTORY_TTL are dropped from the
 * front on every append, and at most MAX_ROOMS are kept. A room's stream that is dropped and
 * written again gets a new epoch, as does every room after a restart. Idempotency keys are kept
 * for IDEMPOTENCY_WINDOW_S, at most MAX_KEYS of them.
 */
import { randomBytes } from 'node:crypto';
import type { HistoryConfig } from './config.js';
import { epochSource, IDEMPOTENCY_WINDOW_S, withPosition, type History, type HistoryEntry, type Position, type SequencedDelivery } from './history.js';

/** Bounds memory whatever the number of rooms published to within the TTL: the least recently written go first. */
export const MAX_ROOMS = 100_000;
/** Idempotency keys remembered at most; the oldest go first. */
export const MAX_KEYS = 100_000;

interface Stream {
  readonly epoch: string;
  offset: number;
  /** The last `size` payloads; offset `o` is at `(o - 1) % size`. */
  readonly ring: string[];
  writtenAt: number;
}

/** Entries of `map` in insertion order are dropped from the front while `stale` says so. */
function sweep<V>(map: Map<string, V>, stale: (value: V) => boolean): void {
  for (const [key, value] of map) {
    if (!stale(value)) return;
    map.delete(key);
  }
}

export function createMemoryHistory(config: HistoryConfig, deliver: SequencedDelivery, now: () => number = Date.now): History {
  const streams = new Map<string, Stream>();
  const seen = new Map<string, { readonly position: Position; readonly at: number }>();
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
  /** The room's stream, created (kept, in order of last write) when it has none. */
  const streamOf = (room: string, at: number): Stream => {
    let stream = live(room);
    if (stream === undefined) stream = { epoch: nextEpoch(), offset: 0, ring: [], writtenAt: at };
    streams.delete(room);
    streams.set(room, stream);
    sweep(streams, (s) => at - s.writtenAt > ttlMs || streams.size > MAX_ROOMS);
    return stream;
  };
  const entry = (stream: Stream, offset: number): HistoryEntry => ({ offset, payload: stream.ring[(offset - 1) % config.size]! });
  const oldest = (stream: Stream): number => Math.max(1, stream.offset - config.size + 1);
  const positionOf = (stream: Stream, entries: HistoryEntry[]) => Promise.resolve({ epoch: stream.epoch, offset: stream.offset, entries });

  return {
    append(room, head, idempotencyKey, except) {
      const at = now();
      const key = idempotencyKey === undefined ? undefined : `${room}\n${idempotencyKey}`;
      const first = key === undefined ? undefined : seen.get(key);
      if (first !== undefined && at - first.at <= IDEMPOTENCY_WINDOW_S * 1000) return Promise.resolve({ ...first.position, duplicate: true });
      const stream = streamOf(room, at);
      stream.offset += 1;
      stream.writtenAt = at;
      const payload = withPosition(head, stream.epoch, stream.offset);
      stream.ring[(stream.offset - 1) % config.size] = payload;
      const position = { epoch: stream.epoch, offset: stream.offset };
      if (key !== undefined) {
        seen.delete(key);
        seen.set(key, { position, at });
        sweep(seen, (s) => at - s.at > IDEMPOTENCY_WINDOW_S * 1000 || seen.size > MAX_KEYS);
      }
      deliver(room, stream.epoch, stream.offset, payload, except);
      return Promise.resolve({ ...position, duplicate: false });
    },
    read(room, after, limit) {
      // A room never written gets its position now, so the first append continues this epoch.
      const stream = live(room) ?? streamOf(room, now());
      const entries: HistoryEntry[] = [];
      for (let o = Math.max(after + 1, oldest(stream)); o <= stream.offset && entries.length < limit; o++) entries.push(entry(stream, o));
      return positionOf(stream, entries);
    },
    readBack(room, before, limit) {
      const stream = live(room) ?? streamOf(room, now());
      const entries: HistoryEntry[] = [];
      for (let o = before === 0 ? stream.offset : Math.min(before - 1, stream.offset); o >= oldest(stream) && entries.length < limit; o--) entries.push(entry(stream, o));
      return positionOf(stream, entries);
    },
  };
}
