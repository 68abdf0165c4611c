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

/** The stream's position now and the kept events asked for. */
export interface HistoryRead extends Position {
  /** Oldest first from `read`, newest first from `readBack`; the caller checks the offsets (trimmed history has gaps at its start). */
  readonly entries: readonly HistoryEntry[];
}

/** The position an append got; `duplicate` when its idempotency key was seen within the window (nothing was published). */
export interface Appended extends Position {
  readonly duplicate: boolean;
}

/** How long a publish's idempotency key is remembered, per room. */
export const IDEMPOTENCY_WINDOW_S = 300;
/** Idempotency keys: 1-128 printable ASCII characters without spaces. */
export { IDEMPOTENCY_KEY_PATTERN as IDEMPOTENCY_KEY } from './messages.js';

export interface History {
  /**
   * Gives the event the room's next offset, keeps it, and hands it to every node that subscribes
   * the room (this one included) as `deliverSequenced`. Rejects when the store cannot be reached:
   * a sequenced event is never delivered without a position. `except`: a connection id that must
   * not receive it live (delivered with the event; the kept event is the same for everyone).
   */
  append(room: string, head: string, idempotencyKey?: string, except?: string): Promise<Appended>;
  /** The position and at most `limit` kept events with an offset above `after`, oldest first. */
  read(room: string, after: number, limit: number): Promise<HistoryRead>;
  /** The position and at most `limit` kept events with an offset below `before` (0: from the newest), newest first. */
  readBack(room: string, before: number, limit: number): Promise<HistoryRead>;
}

/**
 * A page of a room's history as `history` requests and the internal API ask for it: after `since`
 * oldest first, or (`reverse`) before it newest first, at most `limit`. A `since` of another epoch
 * than the room's reads nothing: its offsets are unrelated.
 */
export async function readPage(history: History, room: string, since: Position | undefined, limit: number, reverse: boolean): Promise<HistoryRead> {
  const got = reverse ? await history.readBack(room, since?.offset ?? 0, limit) : await history.read(room, since?.offset ?? 0, limit);
  return since !== undefined && since.epoch !== got.epoch ? { epoch: got.epoch, offset: got.offset, entries: [] } : got;
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
