/**
 * The rooms a client wants, kept across reconnects: each with its handlers and, in a sequenced
 * room, the position of the last event handed to the app. Events reach the app once and in offset
 * order (a duplicate by offset is dropped); a rejoin tells the app whether it missed nothing
 * (`recovered`) or must reload the room (`reset`).
 */
import type { Envelope, ResumeRoom, RoomJoined, RoomLeft, RoomReset, StreamPosition } from '../messages.js';
import type { ClientError } from './requests.js';

/** Callbacks of one room; more (presence, signals) will be added as optional members. */
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
}

interface Room {
  handlers: RoomHandlers;
  epoch: string | undefined;
  offset: number;
  /** Its join went out on this connection. */
  sent: boolean;
  /** The reply to its join on this connection. */
  reply: RoomJoined | undefined;
  /** Answered once before: the next answer is a rejoin after a reconnect. */
  answered: boolean;
  waiters: Array<{ resolve: (reply: RoomJoined) => void; reject: (err: ClientError) => void }>;
}

export type Rooms = ReturnType<typeof createRooms>;

export function createRooms() {
  const rooms = new Map<string, Room>();
  const position = (room: Room): StreamPosition => ({ epoch: room.epoch!, offset: room.offset });

  function settle(room: Room, outcome: { reply: RoomJoined } | { err: ClientError }): void {
    for (const w of room.waiters.splice(0)) 'reply' in outcome ? w.resolve(outcome.reply) : w.reject(outcome.err);
  }

  return {
    has: (name: string) => rooms.has(name),
    position: (name: string): StreamPosition | undefined => {
      const room = rooms.get(name);
      return room?.epoch === undefined ? undefined : position(room);
    },

    /** Wants a room (or updates its handlers); resolves with the reply to its join. */
    add(name: string, handlers: RoomHandlers): Promise<RoomJoined> {
      let room = rooms.get(name);
      if (room === undefined) {
        room = { handlers, epoch: undefined, offset: 0, sent: false, reply: undefined, answered: false, waiters: [] };
        rooms.set(name, room);
      }
      room.handlers = handlers;
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
      return room.sent;
    },

    /** The rooms whose join has not gone out on this connection, now marked sent, with their positions. */
    unsent(): ResumeRoom[] {
      const out: ResumeRoom[] = [];
      for (const [name, room] of rooms) {
        if (room.sent) continue;
        room.sent = true;
        out.push({ room: name, since: room.epoch === undefined ? undefined : position(room) });
      }
      return out;
    },

    /** The connection is gone: every room is joined again on the next one. */
    disconnected(err?: ClientError): void {
      for (const room of rooms.values()) {
        room.sent = false;
        room.reply = undefined;
        if (err !== undefined) settle(room, { err });
      }
    },

    joined(reply: RoomJoined): void {
      const room = rooms.get(reply.room);
      if (room === undefined) return;
      const rejoin = room.answered;
      room.answered = true;
      room.reply = reply;
      if (reply.epoch !== undefined) {
        room.epoch = reply.epoch;
        room.offset = reply.offset!;
        if (reply.recovered === true) room.handlers.recovered?.(position(room));
        else if (reply.recovered === false || rejoin) room.handlers.reset?.(position(room));
      } else if (rejoin) {
        room.handlers.reset?.(null);
      }
      settle(room, { reply });
    },

    /** A join refused: false when the room is kept to be tried again (`unavailable`, a timeout). */
    refused(name: string, err: ClientError): boolean {
      const room = rooms.get(name);
      if (room === undefined || err.code === 'disconnected') return true;
      if (err.code === 'unavailable' || err.code === 'timeout') {
        room.sent = false;
        return false;
      }
      rooms.delete(name);
      settle(room, { err });
      if (room.answered) room.handlers.left?.(err.code);
      return true;
    },

    /** Hands an event to its room's handler; false when no wanted room has it. */
    event(event: Envelope): boolean {
      const room = event.room === null ? undefined : rooms.get(event.room);
      if (room === undefined) return false;
      if (event.offset !== undefined) {
        if (event.epoch === room.epoch && event.offset <= room.offset) return true;
        room.epoch = event.epoch;
        room.offset = event.offset;
      }
      room.handlers.event?.(event);
      return true;
    },

    reset(reply: RoomReset): void {
      const room = rooms.get(reply.room);
      if (room === undefined) return;
      room.epoch = reply.epoch;
      room.offset = reply.offset;
      room.handlers.reset?.(position(room));
    },

    /** A `room_left` with a reason: the server removed the room. */
    left(reply: RoomLeft): void {
      const room = rooms.get(reply.room);
      if (room === undefined || reply.reason === undefined) return;
      rooms.delete(reply.room);
      room.handlers.left?.(reply.reason);
    },
  };
}
