/**
 * The rooms a client wants, kept across reconnects: each with its handlers and, in a sequenced
 * room, the position of the last event handed to the app. Events reach the app once and in offset
 * order (a duplicate by offset is dropped); a rejoin tells the app whether it missed nothing
 * (`recovered`) or must reload the room (`reset`). A room's join is answered only by the reply that
 * carries the id it went out under on this connection, so a stale reply or the server's own join of
 * the personal room is never mistaken for it.
 */
import type { Envelope, PresenceEvent, ResumeRoom, RoomJoined, RoomLeft, RoomReset, SignalEvent, StreamPosition } from '../messages.js';
import type { GrantSource } from './grants.js';
import { ClientError } from './requests.js';

/** Callbacks of one room; later features add optional members. */
export interface RoomHandlers {
  /** An event of the room: sequenced rooms in offset order, each once. */
  event?(event: Envelope): void;
  /** A rejoin after a reconnect replayed every missed event (they came through `event` first). */
  recovered?(position: StreamPosition): void;
  /**
   * Reload the room's state from the product API: events may have been missed. `position` is where
   * a sequenced room's stream goes on; null for a plain room, which is never recovered.
   */
  reset?(position: StreamPosition | null): void;
  /** The server took the room away (`access_revoked`) or refused to rejoin it (an error code): it is no longer joined. */
  left?(reason: string): void;
  /** presence.join / presence.leave of a presence room. */
  presence?(event: PresenceEvent): void;
  /** A signal of another member (`signal.<name>`). */
  signal?(signal: SignalEvent): void;
}

/** One room of a join frame; `retry`: it went out on this connection before (a resume takes over a join under way). */
export interface OutgoingRoom extends ResumeRoom {
  readonly retry: boolean;
}

interface Room {
  handlers: RoomHandlers;
  grant: GrantSource | undefined;
  epoch?: string | undefined;
  offset: number;
  /** The id its join went out under on this connection; undefined: not sent (yet, or again). */
  request?: string | undefined;
  retry: boolean;
  /** The reply to its join on this connection. */
  reply?: RoomJoined | undefined;
  /** Answered once before: the next answer is a rejoin after a reconnect. */
  answered: boolean;
  waiters: Array<{ resolve: (reply: RoomJoined) => void; reject: (err: ClientError) => void }>;
}

/** An app callback that throws must not break the client: the error is rethrown on its own. */
export function call<A>(fn: ((arg: A) => void) | undefined, arg: A): void {
  if (fn === undefined) return;
  try {
    fn(arg);
  } catch (err) {
    queueMicrotask(() => {
      throw err;
    });
  }
}

export type Rooms = ReturnType<typeof createRooms>;

export function createRooms() {
  const rooms = new Map<string, Room>();
  const position = (room: Room): StreamPosition => ({ epoch: room.epoch!, offset: room.offset });

  function settle(room: Room, outcome: { reply: RoomJoined } | { err: ClientError }): void {
    for (const w of room.waiters.splice(0)) 'reply' in outcome ? w.resolve(outcome.reply) : w.reject(outcome.err);
  }

  function drop(name: string, room: Room, reason: string, err: ClientError): void {
    rooms.delete(name);
    settle(room, { err });
    if (room.answered) call(room.handlers.left, reason);
  }

  return {
    has: (name: string) => rooms.has(name),
    position: (name: string): StreamPosition | undefined => {
      const room = rooms.get(name);
      return room?.epoch === undefined ? undefined : position(room);
    },
    /** Wanted rooms not answered on this connection yet. */
    pending: (): number => [...rooms.values()].filter((r) => r.reply === undefined).length,

    grantOf: (name: string): GrantSource | undefined => rooms.get(name)?.grant,
    /** Whether the room's join still stands as sent under `id` (not reset by a lost connection meanwhile). */
    sentUnder: (name: string, id: string): boolean => rooms.get(name)?.request === id,

    /** Wants a room (or updates its handlers and grant); resolves with the reply to its join. */
    add(name: string, handlers: RoomHandlers, grant: GrantSource | undefined): Promise<RoomJoined> {
      let room = rooms.get(name);
      if (room === undefined) {
        room = { handlers, grant, offset: 0, retry: false, answered: false, waiters: [] };
        rooms.set(name, room);
      }
      room.handlers = handlers;
      room.grant = grant;
      if (room.reply !== undefined) return Promise.resolve(room.reply);
      const waiting = room;
      return new Promise((resolve, reject) => waiting.waiters.push({ resolve, reject }));
    },

    /** Stops wanting a room; true when its join had gone out on this connection. */
    remove(name: string, err: ClientError): boolean {
      const room = rooms.get(name);
      if (room === undefined) return false;
      rooms.delete(name);
      settle(room, { err });
      return room.request !== undefined;
    },

    /** The rooms whose join has not gone out on this connection, now marked as going out under `id`. */
    unsent(id: string): OutgoingRoom[] {
      const out: OutgoingRoom[] = [];
      for (const [name, room] of rooms) {
        if (room.request !== undefined || room.reply !== undefined) continue;
        room.request = id;
        out.push({ room: name, since: room.epoch === undefined ? undefined : position(room), retry: room.retry });
      }
      return out;
    },

    /** The connection is gone: every room is joined again on the next one; `err` (a close for good) fails the waiting joins. */
    disconnected(err?: ClientError): void {
      for (const room of rooms.values()) {
        room.request = undefined;
        room.retry = false;
        room.reply = undefined;
        if (err !== undefined) settle(room, { err });
      }
    },

    /** True when the reply answers a wanted room's join on this connection. */
    joined(reply: RoomJoined): boolean {
      const room = rooms.get(reply.room);
      if (room === undefined || room.request === undefined || reply.id !== room.request || room.reply !== undefined) return false;
      const rejoin = room.answered;
      room.answered = true;
      room.reply = reply;
      if (reply.epoch !== undefined) {
        room.epoch = reply.epoch;
        room.offset = reply.offset!;
        if (reply.recovered === true) call(room.handlers.recovered, position(room));
        else if (reply.recovered === false || rejoin) call(room.handlers.reset, position(room));
      } else if (rejoin) {
        call(room.handlers.reset, null);
      }
      settle(room, { reply });
      return true;
    },

    /**
     * A join refused (`id`: of the frame it went out in). False when the room is to be tried again:
     * `unavailable` or a timeout, not yet answered. A lost connection keeps it for the next one.
     */
    refused(name: string, err: ClientError, id: string | undefined): boolean {
      const room = rooms.get(name);
      if (room === undefined || room.reply !== undefined || (id !== undefined && id !== room.request)) return true;
      if (err.code === 'disconnected' || err.code === 'closed') return true;
      if (err.code === 'unavailable' || err.code === 'timeout') {
        room.request = undefined;
        room.retry = true;
        return false;
      }
      drop(name, room, err.code, err);
      return true;
    },

    /** Hands an event to its room's handler (`kind`: a presence event or a signal); false when no wanted room has it. */
    event(event: Envelope, kind: 'presence' | 'signal' | undefined): boolean {
      const room = event.room === null ? undefined : rooms.get(event.room);
      if (room === undefined) return false;
      // `kind` names its handler: presence or signal.
      if (kind) call(room.handlers[kind] as ((e: Envelope) => void) | undefined, event);
      else if (event.offset === undefined) call(room.handlers.event, event);
      else if (event.epoch !== room.epoch || event.offset > room.offset) {
        room.epoch = event.epoch;
        room.offset = event.offset;
        call(room.handlers.event, event);
      }
      return true;
    },

    reset(reply: RoomReset): void {
      const room = rooms.get(reply.room);
      if (room === undefined) return;
      room.epoch = reply.epoch;
      room.offset = reply.offset;
      call(room.handlers.reset, position(room));
    },

    /** A `room_left` with a reason: the server removed the room (a join under way included). */
    left(reply: RoomLeft): void {
      const room = rooms.get(reply.room);
      if (room === undefined || reply.reason === undefined) return;
      drop(reply.room, room, reply.reason, new ClientError('forbidden', `${reply.room}: ${reply.reason}`));
      // drop() calls `left` only for rooms answered before; a revoked join under way is told too.
      if (!room.answered) call(room.handlers.left, reply.reason);
    },
  };
}
