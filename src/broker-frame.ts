/**
 * The bytes the Redis broker puts on a channel: one short text header line, then the encoded
 * envelope untouched. Receivers read the header and hand the rest to uWS without parsing it.
 *
 *   <origin node id> <origin epoch ms> <kind> <target>\n<payload>
 *
 * kind: `r` room event (target: room), `c` one connection (target: connection id),
 * `d` disconnect a user (target: user id; payload: close code, space, reason), `p` probe (target: nonce).
 * Node ids, rooms, ids and nonces contain no space or newline, so the header splits cleanly.
 */
export type FrameKind = 'r' | 'c' | 'd' | 'p';

export interface Frame {
  readonly origin: string;
  readonly sentAt: number;
  readonly kind: FrameKind;
  readonly target: string;
  /** A view into the received buffer: no copy. */
  readonly payload: Buffer;
}

const NEWLINE = 0x0a;
const MAX_HEADER = 512;
const KINDS = new Set<string>(['r', 'c', 'd', 'p']);

export function encodeFrame(origin: string, kind: FrameKind, target: string, payload: string): string {
  return `${origin} ${Date.now()} ${kind} ${target}\n${payload}`;
}

/** Parses a received frame; undefined for bytes that are not one (counted by the caller). */
export function decodeFrame(bytes: Buffer): Frame | undefined {
  const end = bytes.indexOf(NEWLINE);
  if (end < 0 || end > MAX_HEADER) return undefined;
  const [origin, sentAt, kind, target, extra] = bytes.toString('latin1', 0, end).split(' ');
  if (origin === undefined || target === undefined || extra !== undefined || kind === undefined || !KINDS.has(kind)) return undefined;
  const time = Number(sentAt);
  if (!Number.isFinite(time)) return undefined;
  return { origin, sentAt: time, kind: kind as FrameKind, target, payload: bytes.subarray(end + 1) };
}
