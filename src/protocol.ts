/**
 * The wire protocol: parse and validate an inbound frame once, encode outbound envelopes once.
 * docs/WEBSOCKET_API.md is the prose form of this module.
 */
import { messageError, type ErrorCode, type MessageError } from './errors.js';
import { MAX_TOKEN_LENGTH } from './handshake.js';

/** `data` of send_message may nest at most this deep (an object or array is one level). */
export const MAX_DATA_DEPTH = 32;
/** `data` of send_message may hold at most this many values (array items and object members, counted recursively). */
export const MAX_DATA_VALUES = 10_000;
/** Client `id` strings are echoed back; keep them short. */
export const MAX_ID_LENGTH = 128;
/** A refresh token longer than this is not a JWT we issue. */

export type ClientMessage =
  | { readonly type: 'join_room'; readonly room: string; readonly id: string | undefined }
  | { readonly type: 'leave_room'; readonly room: string; readonly id: string | undefined }
  | { readonly type: 'send_message'; readonly room: string; readonly data: unknown; readonly id: string | undefined }
  | { readonly type: 'ping'; readonly id: string | undefined }
  | { readonly type: 'refresh_token'; readonly token: string; readonly id: string | undefined };

export type ClientMessageType = ClientMessage['type'];
export const CLIENT_MESSAGE_TYPES: readonly ClientMessageType[] = ['join_room', 'leave_room', 'send_message', 'ping', 'refresh_token'];

/** A frame that could not become a ClientMessage; `id` is echoed when the frame had a usable one. */
export interface ParseFailure {
  readonly error: MessageError;
  readonly id: string | undefined;
  /** The `type` field when it was a known type, for metrics. */
  readonly type: ClientMessageType | undefined;
}

export function isParseFailure(value: ClientMessage | ParseFailure): value is ParseFailure {
  return 'error' in value;
}

function fail(code: ErrorCode, message: string, id?: string, type?: ClientMessageType): ParseFailure {
  return { error: messageError(code, message), id, type };
}

/** Parses one text frame: exactly one JSON.parse, then shape checks. */
export function parseFrame(text: string): ClientMessage | ParseFailure {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return fail('invalid_json', 'message is not valid JSON');
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    return fail('invalid_message', 'message must be a JSON object');
  }
  const msg = value as Record<string, unknown>;
  const rawId = msg['id'];
  if (rawId !== undefined && (typeof rawId !== 'string' || rawId.length > MAX_ID_LENGTH)) {
    return fail('invalid_message', `"id" must be a string of at most ${MAX_ID_LENGTH} characters`);
  }
  const id = rawId;
  const type = msg['type'];
  if (typeof type !== 'string') return fail('invalid_message', '"type" must be a string', id);

  switch (type) {
    case 'join_room':
    case 'leave_room': {
      const room = msg['room'];
      if (typeof room !== 'string') return fail('invalid_message', '"room" must be a string', id, type);
      return type === 'join_room' ? { type, room, id } : { type, room, id };
    }
    case 'send_message': {
      const room = msg['room'];
      if (typeof room !== 'string') return fail('invalid_message', '"room" must be a string', id, type);
      const data = msg['data'];
      if (data === undefined) return fail('invalid_message', '"data" is required', id, type);
      const problem = checkDataBounds(data);
      if (problem !== undefined) return fail('invalid_message', problem, id, type);
      return { type, room, data, id };
    }
    case 'ping':
      return { type, id };
    case 'refresh_token': {
      const token = msg['token'];
      if (typeof token !== 'string' || token === '' || token.length > MAX_TOKEN_LENGTH) {
        return fail('invalid_message', '"token" must be a non-empty string', id, type);
      }
      return { type, token, id };
    }
    default:
      return fail('unknown_type', 'unknown message type', id);
  }
}

/** Iterative walk (no recursion, so no stack overflow on hostile input) bounding depth and size. */
function checkDataBounds(data: unknown): string | undefined {
  if (typeof data !== 'object' || data === null) return undefined;
  const stack: Array<[unknown, number]> = [[data, 1]];
  let values = 0;
  while (stack.length > 0) {
    const [node, depth] = stack.pop()!;
    if (depth > MAX_DATA_DEPTH) return `"data" nests deeper than ${MAX_DATA_DEPTH} levels`;
    const children = Array.isArray(node) ? node : Object.values(node as object);
    values += children.length;
    if (values > MAX_DATA_VALUES) return `"data" holds more than ${MAX_DATA_VALUES} values`;
    for (const child of children) {
      if (typeof child === 'object' && child !== null) stack.push([child, depth + 1]);
    }
  }
  return undefined;
}

let stampedAt = 0;
let stamp = '';

/** ISO 8601 UTC with milliseconds; formatted once per millisecond, however many envelopes share it. */
export function timestamp(): string {
  const now = Date.now();
  if (now !== stampedAt) {
    stampedAt = now;
    stamp = new Date(now).toISOString();
  }
  return stamp;
}

/** The event envelope every room member receives: encoded once, published as is. `room` is null for one-connection events. */
export function encodeEvent(type: string, room: string | null, data: unknown, sender: string | null): string {
  return JSON.stringify({ type, room, data, sender, timestamp: timestamp() });
}

/** A direct reply to one socket; `id` echoes the client's request id when it sent one. */
export function encodeReply(type: string, fields: Record<string, unknown>, id: string | undefined): string {
  return JSON.stringify(id === undefined ? { type, ...fields, timestamp: timestamp() } : { type, id, ...fields, timestamp: timestamp() });
}

export function encodeError(error: MessageError, id: string | undefined): string {
  return encodeReply('error', { data: { error: error.message, code: error.code } }, id);
}

/** Event types clients and backends may not publish: the server's own vocabulary. */
export const RESERVED_TYPES: ReadonlySet<string> = new Set([
  'connected',
  'error',
  'pong',
  'room_joined',
  'room_left',
  'user_joined',
  'user_left',
  'token_refreshed',
  'message_sent',
  ...CLIENT_MESSAGE_TYPES,
]);

/** Dotted lowercase names such as `task.created` or `notification.mentioned`. */
const EVENT_TYPE_PATTERN = /^[a-z][a-z0-9_]*(?:\.[a-z][a-z0-9_]*)*$/;
export const MAX_EVENT_TYPE_LENGTH = 64;

export function isPublishableType(type: unknown): type is string {
  return typeof type === 'string' && type.length <= MAX_EVENT_TYPE_LENGTH && EVENT_TYPE_PATTERN.test(type) && !RESERVED_TYPES.has(type);
}
