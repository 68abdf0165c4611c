/**
 * The wire protocol: parse and validate an inbound frame once, encode outbound envelopes once.
 * docs/WEBSOCKET_API.md is the prose form of this module.
 */
import type { Payload } from './broker.js';
import { messageError, type MessageError, type MessageErrorName } from './errors.js';
import {
  MAX_DATA_DEPTH,
  MAX_DATA_VALUES,
  MAX_EPOCH_LENGTH,
  MAX_EVENT_TYPE_LENGTH,
  MAX_HISTORY_LIMIT,
  MAX_ID_LENGTH,
  MAX_RESUME_ROOMS,
  MAX_TOKEN_LENGTH,
  MAX_SIGNAL_BYTES,
  IDEMPOTENCY_KEY_PATTERN,
  RPC_METHOD,
  isReservedType,
  type ClientMessage,
  type ClientMessageType,
  type ResumeRoom,
  type StreamPosition,
} from './messages.js';

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

function fail(name: MessageErrorName, id?: string, type?: ClientMessageType, limit?: number): ParseFailure {
  return { error: messageError(name, limit), id, type };
}

/** Parses one text frame: exactly one JSON.parse, then shape checks. */
export function parseFrame(text: string): ClientMessage | ParseFailure {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return fail('invalid_json');
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    return fail('not_an_object');
  }
  const msg = value as Record<string, unknown>;
  const rawId = msg['id'];
  if (rawId !== undefined && (typeof rawId !== 'string' || rawId.length > MAX_ID_LENGTH)) {
    return fail('bad_id', undefined, undefined, MAX_ID_LENGTH);
  }
  const id = rawId;
  const type = msg['type'];
  if (typeof type !== 'string') return fail('bad_type', id);

  switch (type) {
    case 'join_room': {
      const room = msg['room'];
      if (typeof room !== 'string') return fail('bad_room', id, type);
      const since = parseSince(msg['since']);
      if (since === null) return fail('bad_since', id, type);
      const grant = parseGrant(msg['grant']);
      if (grant === null) return fail('bad_grant', id, type, MAX_TOKEN_LENGTH);
      return { type, room, since, grant, id };
    }
    case 'resume': {
      const rooms = parseResumeRooms(msg['rooms']);
      if (typeof rooms === 'string') return fail(rooms, id, type);
      return { type, rooms, id };
    }
    case 'history': {
      const room = msg['room'];
      if (typeof room !== 'string') return fail('bad_room', id, type);
      const since = parseSince(msg['since']);
      if (since === null) return fail('bad_since', id, type);
      const limit = msg['limit'];
      if (limit !== undefined && (typeof limit !== 'number' || !Number.isInteger(limit) || limit < 1 || limit > MAX_HISTORY_LIMIT)) {
        return fail('bad_limit', id, type, MAX_HISTORY_LIMIT);
      }
      const reverse = msg['reverse'] ?? false;
      if (typeof reverse !== 'boolean') return fail('bad_reverse', id, type);
      return { type, room, since, limit, reverse, id };
    }
    case 'leave_room': {
      const room = msg['room'];
      if (typeof room !== 'string') return fail('bad_room', id, type);
      return { type, room, id };
    }
    case 'send_message': {
      const room = msg['room'];
      if (typeof room !== 'string') return fail('bad_room', id, type);
      const data = msg['data'];
      if (data === undefined) return fail('no_data', id, type);
      const problem = checkDataBounds(data);
      if (problem !== undefined) return fail(problem.name, id, type, problem.limit);
      const key = msg['idempotency_key'];
      if (key !== undefined && (typeof key !== 'string' || !IDEMPOTENCY_KEY_PATTERN.test(key))) return fail('bad_idempotency_key', id, type);
      return { type, room, data, idempotency_key: key, id };
    }
    case 'rpc': {
      if (id === undefined) return fail('rpc_needs_id', id, type);
      const method = msg['method'];
      if (typeof method !== 'string' || !RPC_METHOD.test(method)) return fail('bad_method', id, type);
      const data = msg['data'] ?? null;
      const problem = checkDataBounds(data);
      if (problem !== undefined) return fail(problem.name, id, type, problem.limit);
      return { type, method, data, id };
    }
    case 'presence':
    case 'presence_stats': {
      const room = msg['room'];
      if (typeof room !== 'string') return fail('bad_room', id, type);
      return { type, room, id } as ClientMessage;
    }
    case 'signal':
      return parseSignal(text, msg, id);
    case 'ping':
      return { type, id };
    case 'refresh_token': {
      const token = msg['token'];
      if (typeof token !== 'string' || token === '' || token.length > MAX_TOKEN_LENGTH) {
        return fail('bad_token', id, type);
      }
      return { type, token, id };
    }
    default:
      return fail('unknown_type', id);
  }
}

function parseSignal(text: string, msg: Record<string, unknown>, id: string | undefined): ClientMessage | ParseFailure {
  // Bytes are at least characters: the byte count is only taken when it could pass the cap.
  if (text.length > MAX_SIGNAL_BYTES || (text.length * 3 > MAX_SIGNAL_BYTES && Buffer.byteLength(text) > MAX_SIGNAL_BYTES)) {
    return fail('signal_too_big', id, 'signal', MAX_SIGNAL_BYTES);
  }
  const { room, name } = msg;
  if (typeof room !== 'string') return fail('bad_room', id, 'signal');
  if (typeof name !== 'string') return fail('bad_signal_name', id, 'signal');
  const data = msg['data'] ?? null;
  const problem = checkDataBounds(data);
  if (problem !== undefined) return fail(problem.name, id, 'signal', problem.limit);
  return { type: 'signal', room, name, data, id };
}

const EPOCH_PATTERN = /^[A-Za-z0-9_-]+$/;

/** A stream epoch as clients and backends may name one: 1 to MAX_EPOCH_LENGTH of [A-Za-z0-9_-]. */
export function isEpoch(value: unknown): value is string {
  return typeof value === 'string' && value.length <= MAX_EPOCH_LENGTH && EPOCH_PATTERN.test(value);
}

/** `since` of join_room and resume: absent (undefined), a position, or malformed (null). */
function parseSince(value: unknown): StreamPosition | undefined | null {
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'object' || Array.isArray(value)) return null;
  const { epoch, offset } = value as Record<string, unknown>;
  if (!isEpoch(epoch)) return null;
  if (typeof offset !== 'number' || !Number.isSafeInteger(offset) || offset < 0) return null;
  return { epoch, offset };
}

/** `grant` of join_room and resume: absent, a token, or malformed (null). */
function parseGrant(value: unknown): string | undefined | null {
  if (value === undefined || value === null) return undefined;
  return typeof value === 'string' && value !== '' && value.length <= MAX_TOKEN_LENGTH ? value : null;
}

/** The rooms of a resume, each named once; the name of the failure otherwise. */
function parseResumeRooms(value: unknown): ResumeRoom[] | 'bad_rooms' | 'bad_since' | 'bad_grant' | 'duplicate_room' {
  if (!Array.isArray(value) || value.length > MAX_RESUME_ROOMS) return 'bad_rooms';
  const rooms: ResumeRoom[] = [];
  const seen = new Set<string>();
  for (const entry of value) {
    if (typeof entry !== 'object' || entry === null || Array.isArray(entry)) return 'bad_rooms';
    const { room, since: rawSince, grant: rawGrant } = entry as Record<string, unknown>;
    if (typeof room !== 'string') return 'bad_rooms';
    const since = parseSince(rawSince);
    if (since === null) return 'bad_since';
    const grant = parseGrant(rawGrant);
    if (grant === null) return 'bad_grant';
    if (seen.has(room)) return 'duplicate_room';
    seen.add(room);
    rooms.push(grant === undefined ? { room, since } : { room, since, grant });
  }
  return rooms;
}

/** Iterative walk (no recursion, so no stack overflow on hostile input) bounding depth and size. */
function checkDataBounds(data: unknown): { name: 'data_too_deep' | 'data_too_large'; limit: number } | undefined {
  if (typeof data !== 'object' || data === null) return undefined;
  const stack: Array<[unknown, number]> = [[data, 1]];
  let values = 0;
  while (stack.length > 0) {
    const [node, depth] = stack.pop()!;
    if (depth > MAX_DATA_DEPTH) return { name: 'data_too_deep', limit: MAX_DATA_DEPTH };
    const children = Array.isArray(node) ? node : Object.values(node as object);
    values += children.length;
    if (values > MAX_DATA_VALUES) return { name: 'data_too_large', limit: MAX_DATA_VALUES };
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

/** An event a client caused (`message.new`): with the sender's user id beside its display name. */
export function encodeClientEvent(type: string, room: string, data: unknown, sender: string, userId: string): string {
  return JSON.stringify({ type, room, data, sender, user_id: userId, timestamp: timestamp() });
}

/** A client's signal as the room's other members get it: `signal.<name>`, with the sender's user id. */
export function encodeSignal(name: string, room: string, data: unknown, sender: string, userId: string): string {
  return JSON.stringify({ type: `signal.${name}`, room, data, sender, user_id: userId, timestamp: timestamp() });
}

/** A direct reply to one socket; `id` echoes the client's request id when it sent one. */
export function encodeReply(type: string, fields: Record<string, unknown>, id: string | undefined): string {
  return JSON.stringify(id === undefined ? { type, ...fields, timestamp: timestamp() } : { type, id, ...fields, timestamp: timestamp() });
}

/**
 * The answer to `history`: the kept events' bytes put in as they are stored (no parse, no
 * re-encoding), newest first when the request said `reverse`.
 */
export function encodeHistory(room: string, position: { epoch: string; offset: number }, payloads: readonly Payload[], id: string | undefined): string {
  const fields = { type: 'room_history', ...(id !== undefined && { id }), room, epoch: position.epoch, offset: position.offset };
  const events = payloads.map((p) => (typeof p === 'string' ? p : Buffer.from(p.buffer, p.byteOffset, p.byteLength).toString('utf8'))).join(',');
  return `${JSON.stringify(fields).slice(0, -1)},"data":{"events":[${events}]},"timestamp":"${timestamp()}"}`;
}

/** `room` names the room of a `resume` the error is about. */
/**
 * An error envelope: `data` carries `code` and `message`, as an HTTP refusal's body does, and
 * `error`, the message again under the name this envelope used first (read by clients written
 * before `message`, the Python SDK among them); `detail` with `rejected`.
 */
export function encodeError(error: MessageError, id: string | undefined, room?: string): string {
  const fields = { code: error.code, message: error.message, error: error.message };
  const data = error.detail === undefined ? fields : { ...fields, detail: error.detail };
  return encodeReply('error', room === undefined ? { data } : { room, data }, id);
}

/** Dotted lowercase names such as `task.created` or `notification.mentioned`. */
const EVENT_TYPE_PATTERN = /^[a-z][a-z0-9_]*(?:\.[a-z][a-z0-9_]*)*$/;

export function isPublishableType(type: unknown): type is string {
  return typeof type === 'string' && type.length <= MAX_EVENT_TYPE_LENGTH && EVENT_TYPE_PATTERN.test(type) && !isReservedType(type);
}
