/**
 * The wire format between nodes (and `ws-edge/publisher`): channel names, and the bytes put on a
 * channel: one short text header line, then the encoded envelope untouched. Receivers read the header and hand the rest to uWS without parsing it.
 *
 *   <origin node id> <origin epoch ms> <kind> <target>\n<payload>
 *   <origin node id> <origin epoch ms> r <room> <excluded connection id>\n<payload>
 *   <origin node id> <origin epoch ms> s <room> <stream epoch> <offset>[ <excluded connection id>]\n<payload>
 *
 * kind: `r` room event (target: room), `s` sequenced room event (written by lua/append-history.lua,
 * which adds the position), `c` one connection (target: connection id), `d` disconnect a user
 * (target: user id; payload: close code, space, reason), `a` access change (target: user id;
 * payload: op, room, optional connection id), `v` revocation (target: its expiry, epoch ms; payload:
 * redis/revocation.ts encodeRevocation), `f` a forwarded fallback POST (target: session id; payload:
 * fallback-posts.ts), `p` probe (target: nonce). A room event (`r` or `s`)
 * may name one connection that must not receive it (a publish's `exclude_connection`): only the node
 * that owns it (the id's node part) reads it, and publishes from that socket so uWS skips it.
 * Node ids, rooms, ids, epochs and nonces contain no space or newline, so the header splits cleanly.
 */
import type { AccessChange } from '../broker.js';
import { isValidId, isValidRoom } from '../rooms.js';

export type FrameKind = 'r' | 's' | 'c' | 'd' | 'a' | 'v' | 'p' | 'f';

export interface Frame {
  readonly origin: string;
  readonly sentAt: number;
  readonly kind: FrameKind;
  readonly target: string;
  /** Of an `s` frame: the stream's epoch and the event's offset; else '' and 0. */
  readonly epoch: string;
  readonly offset: number;
  /** Of an `r` or `s` frame: the connection that must not receive it; else ''. */
  readonly except: string;
  /** A view into the received buffer: no copy. */
  readonly payload: Buffer;
}

const NEWLINE = 0x0a;
const MAX_HEADER = 512;
const KINDS = new Set<string>(['r', 's', 'c', 'd', 'a', 'v', 'p', 'f']);

/** `except`: for an `r` frame, the connection id that must not receive it. */
export function encodeFrame(origin: string, kind: FrameKind, target: string, payload: string, except?: string): string {
  return except === undefined ? `${origin} ${Date.now()} ${kind} ${target}\n${payload}` : `${origin} ${Date.now()} ${kind} ${target} ${except}\n${payload}`;
}

/** The header of an `s` frame up to the room; the script that assigns the position appends it. */
export function sequencedHeader(origin: string, room: string): string {
  return `${origin} ${Date.now()} s ${room}`;
}

/** Parses a received frame; undefined for bytes that are not one (counted by the caller). */
export function decodeFrame(bytes: Buffer): Frame | undefined {
  const end = bytes.indexOf(NEWLINE);
  if (end < 0 || end > MAX_HEADER) return undefined;
  const [origin, sentAt, kind, target, epoch, offset, except, extra] = bytes.toString('latin1', 0, end).split(' ');
  if (origin === undefined || target === undefined || kind === undefined || !KINDS.has(kind) || extra !== undefined) return undefined;
  const time = Number(sentAt);
  if (!Number.isFinite(time)) return undefined;
  const payload = bytes.subarray(end + 1);
  if (kind === 'r' && epoch !== undefined) {
    // `r <room> <excluded connection id>`
    return offset === undefined && nodeOfConnection(epoch) !== '' ? { origin, sentAt: time, kind, target, epoch: '', offset: 0, except: epoch, payload } : undefined;
  }
  if (kind !== 's') return epoch === undefined ? { origin, sentAt: time, kind: kind as FrameKind, target, epoch: '', offset: 0, except: '', payload } : undefined;
  const position = Number(offset);
  if (epoch === undefined || epoch === '' || !Number.isSafeInteger(position) || position < 1) return undefined;
  if (except !== undefined && nodeOfConnection(except) === '') return undefined;
  return { origin, sentAt: time, kind, target, epoch, offset: position, except: except ?? '', payload };
}

/** The channels of one node (`nodeId`) under the nodes' REDIS_PREFIX. */
export function channelsOf(prefix: string, nodeId: string) {
  return {
    room: (room: string) => `${prefix}room:${room}`,
    node: (id: string) => `${prefix}node:${id}`,
    control: `${prefix}control`,
    own: `${prefix}node:${nodeId}`,
  };
}

/** The node that owns a connection id `<node id>.<sequence>`; empty for a malformed id. */
export function nodeOfConnection(connectionId: string): string {
  const dot = connectionId.indexOf('.');
  return dot < 0 ? '' : connectionId.slice(0, dot);
}

/** The payload of an `a` frame (target: user id): `unsubscribe` or `subscribe`, the room, and a connection id or nothing. */
export function encodeAccess(change: AccessChange): string {
  return change.connectionId === undefined ? `${change.op} ${change.room}` : `${change.op} ${change.room} ${change.connectionId}`;
}

/** undefined for a payload that is not one (counted by the caller). */
export function decodeAccess(userId: string, payload: Buffer): AccessChange | undefined {
  const [op, room, connectionId, extra] = payload.toString('utf8').split(' ');
  if ((op !== 'unsubscribe' && op !== 'subscribe') || !isValidId(userId) || extra !== undefined) return undefined;
  // Checked again here: anything that can write to Redis must not reach a personal room or a malformed id.
  if (!isValidRoom(room) || room.startsWith('user:') || (connectionId !== undefined && nodeOfConnection(connectionId) === '')) return undefined;
  return { op, userId, room, connectionId };
}

/** The payload of a `d` frame: close code, space, reason. */
export function encodeDisconnect(code: number, reason: string): string {
  return `${code} ${reason}`;
}

/** undefined for a payload that is not one (counted by the caller). */
export function decodeDisconnect(payload: Buffer): { code: number; reason: string } | undefined {
  const text = payload.toString('utf8');
  const space = text.indexOf(' ');
  const code = Number(space < 0 ? text : text.slice(0, space));
  if (!Number.isInteger(code)) return undefined;
  return { code, reason: space < 0 ? '' : text.slice(space + 1) };
}
