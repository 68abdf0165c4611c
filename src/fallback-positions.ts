/**
 * The SSE event id of a fallback stream: every followed sequenced room's position, so a plain
 * `EventSource` that reconnects with `Last-Event-ID` recovers all of its rooms at once.
 *
 *   id: channel:a=Xk3f:41,task:7=Qp0a:9
 *
 * `room=epoch:offset` per room, comma-separated. Rooms hold no `=` or `,`, epochs no `:`
 * (rooms.ts, messages.ts), so it splits cleanly. At most MAX_ID_ROOMS rooms are encoded (the
 * first followed); a room past that recovers nothing after a reconnect (documented).
 */
import type { StreamPosition } from './messages.js';
import { isValidRoom } from './rooms.js';

/** Rooms one event id names at most: bounds the id (about 32 × 140 bytes). */
export const MAX_ID_ROOMS = 32;
/** A Last-Event-ID longer than this is ignored whole. */
export const MAX_ID_LENGTH = 8192;

const EPOCH = /^[A-Za-z0-9_-]{1,64}$/;

export type Positions = Map<string, StreamPosition>;

export function encodePositions(positions: Positions): string {
  const parts: string[] = [];
  for (const [room, { epoch, offset }] of positions) parts.push(`${room}=${epoch}:${offset}`);
  return parts.join(',');
}

/** Reads a Last-Event-ID; entries that are not a valid room and position are skipped, never guessed. */
export function parsePositions(id: string): Positions {
  const positions: Positions = new Map();
  if (id.length > MAX_ID_LENGTH) return positions;
  for (const part of id.split(',')) {
    const eq = part.indexOf('=');
    const colon = part.lastIndexOf(':');
    if (eq < 0 || colon < eq) continue;
    const room = part.slice(0, eq);
    const epoch = part.slice(eq + 1, colon);
    const offset = Number(part.slice(colon + 1));
    if (!isValidRoom(room) || !EPOCH.test(epoch) || !Number.isSafeInteger(offset) || offset < 0 || positions.size >= MAX_ID_ROOMS) continue;
    positions.set(room, { epoch, offset });
  }
  return positions;
}

interface Positioned {
  readonly type?: unknown;
  readonly room?: unknown;
  readonly epoch?: unknown;
  readonly offset?: unknown;
}

/**
 * Follows a server frame: a sequenced room's event, `room_joined` or `room_reset` moves its room's
 * position, `room_left` drops the room. True when the positions changed (the frame gets an id).
 * Only frames that mention an offset or a leave are parsed: the rest pass untouched.
 */
export function follow(positions: Positions, frame: string): boolean {
  const left = frame.startsWith('{"type":"room_left"');
  if (!left && !frame.includes('"offset":')) return false;
  const message = JSON.parse(frame) as Positioned;
  if (typeof message.room !== 'string') return false;
  if (left) return positions.delete(message.room);
  if (message.type === 'message_sent' || message.type === 'room_history') return false;
  if (typeof message.epoch !== 'string' || typeof message.offset !== 'number') return false;
  if (!positions.has(message.room) && positions.size >= MAX_ID_ROOMS) return false;
  positions.set(message.room, { epoch: message.epoch, offset: message.offset });
  return true;
}
