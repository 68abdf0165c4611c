/**
 * The one way an event enters a room: a plain room's envelope goes to the broker (every node's
 * members), a sequenced room's to its history, which gives it the room's next position and delivers
 * it in order. Client sends, the backend API, in-process events and the publisher library all
 * publish through a RoomPublish; only what carries the envelope differs.
 */
import { headOf, type Appended, type History } from './history.js';

export interface RoomRoute<R> {
  /** Whether the room is sequenced (WS_HISTORY_ROOMS). */
  readonly sequenced: (room: string) => boolean;
  /** Hands a plain room's envelope to every node. */
  readonly broadcast: (room: string, envelope: string) => R;
  readonly append: History['append'];
}

/**
 * Publishes one encoded envelope: what `broadcast` returns for a plain room, the position for a
 * sequenced one. `key`, an idempotency key, is for sequenced rooms only (callers check).
 */
export type RoomPublish<R = void> = (room: string, envelope: string, key?: string) => R | Promise<Appended>;

export function createRoomPublish<R>(route: RoomRoute<R>): RoomPublish<R> {
  return (room, envelope, key) => (route.sequenced(room) ? route.append(room, headOf(envelope), key) : route.broadcast(room, envelope));
}
