/**
 * Sequenced rooms: every event published to one gets the next offset of the room's stream (1, 2,
 * 3, ... with no gap) under the stream's epoch, is kept in a bounded history, and reaches every
 * subscribed node, the origin included, in offset order. A new epoch starts whenever the stream's
 * data may have been lost (history expired or evicted, a Redis restart or master change), so a
 * position `{epoch, offset}` never names two different events.
 *
 * The envelope is encoded once, without its closing brace (the head); the history appends the
 * position to it, and the bytes it stores are the bytes every client receives.
 *
 * Implementations: history-memory.ts and redis/history.ts; server.ts picks one.
 */
import type { Payload, SequencedDelivery } from './broker.js';

export type { SequencedDelivery };

export interface Position {
  /** Names the generation of the room's stream: offsets of different epochs are unrelated. */
  readonly epoch: string;
  /** The last event's offset; 0 for a stream without events. */
  readonly offset: number;
}

export interface HistoryEntry {
  readonly offset: number;
  readonly payload: Payload;
}

/** The stream's position now and the kept events after the offset asked for, oldest first. */
export interface HistoryRead extends Position {
  /** Consecutive offsets only where nothing was trimmed: the caller checks `entries[0].offset`. */
  readonly entries: readonly HistoryEntry[];
}

export interface History {
  /**
   * Gives the event the room's next offset, keeps it, and hands it to every node that subscribes
   * the room (this one included) as `deliverSequenced`. Rejects when the store cannot be reached:
   * a sequenced event is never delivered without a position.
   */
  append(room: string, head: string): Promise<Position>;
  /** The position and at most `limit` kept events with an offset above `after`. */
  read(room: string, after: number, limit: number): Promise<HistoryRead>;
}

/** The envelope head without its closing brace, for `append`. */
export function headOf(envelope: string): string {
  return envelope.slice(0, -1);
}

/** The stored and delivered bytes: the head with the position appended (redis/lua/append-history.lua does the same). */
export function withPosition(head: string, epoch: string, offset: number): string {
  return `${head},"offset":${offset},"epoch":"${epoch}"}`;
}

/**
 * A source of epochs unique across nodes and restarts: a random prefix per process and a counter,
 * base 36, about 10 characters.
 */
export function epochSource(random: string): () => string {
  let next = 0;
  return () => `${random}${(next++).toString(36)}`;
}
