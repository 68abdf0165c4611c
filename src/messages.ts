/**
 * The protocol's messages as types, and the fixed limits a client must know: what flows in each
 * direction on `/api/v1/ws/connect`. One module, with no runtime dependencies, shared by the
 * server (protocol.ts parses and encodes), the CLI client, the tests and the client library, so
 * they cannot drift. docs/WEBSOCKET_API.md is its prose form.
 */

/** The public WebSocket endpoint of the product contract. */
export const WS_PATH = '/api/v1/ws/connect';

/** The subprotocol every client offers; the token rides in a second one, `wsedge.bearer.<jwt>`. */
export const PROTOCOL = 'wsedge.v1';
export const BEARER_PREFIX = 'wsedge.bearer.';

/** Client `id` strings are echoed back; keep them short. */
export const MAX_ID_LENGTH = 128;
/** `data` of send_message may nest at most this deep (an object or array is one level). */
export const MAX_DATA_DEPTH = 32;
/** `data` of send_message may hold at most this many values (array items and object members, counted recursively). */
export const MAX_DATA_VALUES = 10_000;
/** The longest token accepted, at the upgrade and in refresh_token: a JWT with a few hundred claims. */
export const MAX_TOKEN_LENGTH = 8192;
/** Event types such as `task.created`: dotted lowercase, at most this long. */
export const MAX_EVENT_TYPE_LENGTH = 64;
/** RFC 6455 caps a close reason at 123 bytes. */
export const MAX_CLOSE_REASON_BYTES = 123;

/** Machine codes of `{"type":"error","data":{"code","message","error"}}`; the socket stays open. */
export type ErrorCode =
  | 'invalid_json'
  | 'invalid_message'
  | 'unknown_type'
  | 'binary_not_supported'
  | 'invalid_room'
  | 'forbidden'
  | 'not_joined'
  | 'too_many_rooms'
  | 'rate_limited'
  | 'unavailable'
  | 'no_history'
  | 'no_presence'
  | 'unknown_signal'
  | 'rejected'
  | 'internal_error';

/** A `signal` frame may be at most this many bytes, `data` included. */
/** An `rpc` method: dotted lowercase, at most 64 characters. */
export const RPC_METHOD = /^[a-z][a-z0-9_.]{0,63}$/;
/** An `idempotency_key`: 1-128 printable ASCII characters, no space. */
export const IDEMPOTENCY_KEY_PATTERN = /^[\x21-\x7e]{1,128}$/;

export const MAX_SIGNAL_BYTES = 4096;
/** A `presence` reply lists at most this many users (`truncated` when the room has more). */
export const MAX_PRESENCE_USERS = 1000;

/** A position in a sequenced room's stream: the last event a client has. */
export interface StreamPosition {
  readonly epoch: string;
  readonly offset: number;
}

/** Epochs are short [A-Za-z0-9_-] strings; a longer `since.epoch` cannot be one. */
export const MAX_EPOCH_LENGTH = 64;
/** A `resume` names at most this many rooms before WS_MAX_ROOMS_PER_CONNECTION is even looked at. */
export const MAX_RESUME_ROOMS = 10_000;
/** `limit` of a `history` request: 1 to this (WS_HISTORY_SIZE's bound); more than the room keeps is no error. */
export const MAX_HISTORY_LIMIT = 10_000;

/** One room of a `resume`: joined again, recovering from `since` when given; `grant`: a room grant token for it. */
export interface ResumeRoom {
  readonly room: string;
  readonly since: StreamPosition | undefined;
  readonly grant?: string | undefined;
}

// Client -> server. `id` is the client's request id, echoed in the reply and in an error about it.
export type ClientMessage =
  /** `grant`: a room grant, a short JWT for this one room (docs/WEBSOCKET_API.md "Room grants"); sent again, it extends the membership. */
  | { readonly type: 'join_room'; readonly room: string; readonly since: StreamPosition | undefined; readonly grant: string | undefined; readonly id: string | undefined }
  | { readonly type: 'resume'; readonly rooms: readonly ResumeRoom[]; readonly id: string | undefined }
  | {
      readonly type: 'history';
      readonly room: string;
      /** Oldest first: the events after it; `reverse`: the events before it, newest first. */
      readonly since: StreamPosition | undefined;
      /** Undefined: as many as are kept. */
      readonly limit: number | undefined;
      readonly reverse: boolean;
      readonly id: string | undefined;
    }
  | { readonly type: 'leave_room'; readonly room: string; readonly id: string | undefined }
  | { readonly type: 'send_message'; readonly room: string; readonly data: unknown; readonly idempotency_key: string | undefined; readonly id: string | undefined }
  /** A call to the product backend over the socket (WS_RPC_URL); `method` matches RPC_METHOD. */
  | { readonly type: 'rpc'; readonly method: string; readonly data: unknown; readonly id: string }
  | { readonly type: 'presence'; readonly room: string; readonly id: string | undefined }
  | { readonly type: 'presence_stats'; readonly room: string; readonly id: string | undefined }
  /** An ephemeral event to the room's other members: `name` from WS_SIGNALS, delivered as `signal.<name>`. */
  | { readonly type: 'signal'; readonly room: string; readonly name: string; readonly data: unknown; readonly id: string | undefined }
  | { readonly type: 'ping'; readonly id: string | undefined }
  | { readonly type: 'refresh_token'; readonly token: string; readonly id: string | undefined };

export type ClientMessageType = ClientMessage['type'];

/** Every member of the union once: the compiler refuses a missing or an extra type. */
const CLIENT_TYPES: { readonly [T in ClientMessageType]: true } = {
  join_room: true,
  resume: true,
  history: true,
  leave_room: true,
  send_message: true,
  presence: true,
  presence_stats: true,
  signal: true,
  rpc: true,
  ping: true,
  refresh_token: true,
};
// Pure calls, so a bundle that does not use them (the client library) drops them and their tables.
export const CLIENT_MESSAGE_TYPES = /* @__PURE__ */ (() => Object.keys(CLIENT_TYPES) as readonly ClientMessageType[])();

// Server -> client.

/** An event published to a room (or to one connection: `room` null), encoded once for every member. */
export interface Envelope<T extends string = string, D = unknown> {
  readonly type: T;
  readonly room: string | null;
  readonly data: D;
  /** Display name of the user who caused it; null for the system. */
  readonly sender: string | null;
  /** The user id of a client who caused it (`message.new`, signals); absent on backend events. */
  readonly user_id?: string;
  /** ISO 8601 UTC with milliseconds. */
  readonly timestamp: string;
  /** In sequenced rooms only: the event's position in the room's stream. */
  readonly offset?: number;
  readonly epoch?: string;
}

/** Fields of every direct reply: `id` when the request had one. */
interface Reply<T extends string> {
  readonly type: T;
  readonly id?: string;
  readonly timestamp: string;
}

export interface ConnectedData {
  readonly connection_id: string;
  readonly user_id: string;
  readonly username: string;
  /** Seconds. */
  readonly heartbeat_interval: number;
  /** Bytes. */
  readonly max_message_size: number;
  readonly rooms: readonly string[];
}

export type Connected = Reply<'connected'> & { readonly data: ConnectedData };
/**
 * In a sequenced room with the position the member now has (every later event follows it with no
 * gap); `recovered` when the join carried `since`: true when every missed event was sent before
 * this reply, false when the client must reload the room's state.
 */
export type RoomJoined = Reply<'room_joined'> & { readonly room: string; readonly epoch?: string; readonly offset?: number; readonly recovered?: boolean };
/** Sent to a sequenced room's members when the stream lost events: reload the room, then go on from this position. */
export type RoomReset = Reply<'room_reset'> & { readonly room: string; readonly epoch: string; readonly offset: number };
/** The answer to `history`: the room's position now and the kept events asked for, as they were delivered. */
export type RoomHistory = Reply<'room_history'> & { readonly room: string; readonly epoch: string; readonly offset: number; readonly data: { readonly events: readonly Envelope[] } };
/** After every room of a `resume` was answered (`room_joined` or `error`, each naming its room). */
export type Resumed = Reply<'resumed'> & { readonly data: { readonly rooms: number } };
/**
 * Without `reason`: the answer to leave_room. `access_revoked`: a refreshed token no longer grants
 * the room, or a backend took it away; `grant_expired`: the room grant's `exp` passed.
 */
export type RoomLeftReason = 'access_revoked' | 'grant_expired';
export type RoomLeft = Reply<'room_left'> & { readonly room: string; readonly reason?: RoomLeftReason };
/** In a sequenced room with the event's position. */
/** `data`: what the backend's publish proxy published instead of the client's; `duplicate`: an `idempotency_key` seen before, answered with the first result. */
export type MessageSent = Reply<'message_sent'> & { readonly room: string; readonly epoch?: string; readonly offset?: number; readonly data?: unknown; readonly duplicate?: true };
/** The backend's answer to an `rpc`. */
export type RpcResult = Reply<'rpc_result'> & { readonly data: unknown };
export type Pong = Reply<'pong'>;
export type TokenRefreshed = Reply<'token_refreshed'> & { readonly data: { readonly expires_at: string } };
/** `room` when the refusal is about one room of a `resume`. */
/** `detail`: with `rejected`, the backend's own code for the refusal. `error`: `message` again, its first name (docs/WEBSOCKET_API.md, "Error fields"). */
export type ErrorReply = Reply<'error'> & {
  readonly room?: string;
  readonly data: { readonly code: ErrorCode; readonly message: string; readonly error: string; readonly detail?: string };
};

export type MembershipEvent = Envelope<'user_joined' | 'user_left', { readonly user_id: string; readonly username: string }>;

/** One present user of a presence room. */
export interface PresentUser {
  readonly user_id: string;
  readonly username: string;
  /** Their connections in the room, on all nodes. */
  readonly connections: number;
}
/** The room's presence version: every join and leave of a user increments it; events at or below a snapshot's are older. */
export type PresenceReply = Reply<'presence'> & {
  readonly room: string;
  readonly data: { readonly users: readonly PresentUser[]; readonly count: number; readonly truncated: boolean; readonly version: number };
};
export type PresenceStatsReply = Reply<'presence_stats'> & { readonly room: string; readonly data: { readonly users: number; readonly connections: number; readonly version: number } };

/** Why a user left: `left` (leave_room, a normal close), `expired` (their node died or the grace after an abnormal close ran out), `revoked` (access taken away). */
export type PresenceLeaveReason = 'left' | 'expired' | 'revoked';
/** A user's first connection joined the room (cluster-wide), or their last one left; `users`: present users after it. */
export type PresenceEvent = Envelope<
  'presence.join' | 'presence.leave',
  { readonly user_id: string; readonly username: string; readonly version: number; readonly users: number; readonly reason?: PresenceLeaveReason }
>;
/** A client's signal as the other members get it: `signal.<name>`, with the sender's user id; never stored or sequenced. */
export type SignalEvent = Envelope<`signal.${string}`> & { readonly user_id: string };

/** Replies to one connection. */
export type ServerReply =
  | Connected
  | RoomJoined
  | RoomReset
  | Resumed
  | RoomHistory
  | RoomLeft
  | MessageSent
  | RpcResult
  | PresenceReply
  | PresenceStatsReply
  | Pong
  | TokenRefreshed
  | ErrorReply;
export type ServerReplyType = ServerReply['type'];

/** Everything a client receives: a reply, or an event (membership, `message.new`, domain events from backends). */
export type ServerMessage = ServerReply | Envelope;

/** Types the server owns: clients and backends may not publish them. */
const SERVER_TYPES: { readonly [T in ServerReplyType | MembershipEvent['type'] | PresenceEvent['type']]: true } = {
  connected: true,
  error: true,
  pong: true,
  room_joined: true,
  room_reset: true,
  resumed: true,
  room_history: true,
  room_left: true,
  user_joined: true,
  user_left: true,
  'presence.join': true,
  'presence.leave': true,
  token_refreshed: true,
  message_sent: true,
  rpc_result: true,
  presence: true,
  presence_stats: true,
};
export const RESERVED_TYPES: ReadonlySet<string> = /* @__PURE__ */ (() => new Set([...Object.keys(SERVER_TYPES), ...CLIENT_MESSAGE_TYPES]))();
/** Event types under this prefix are clients' signals: no backend or client may publish one. */
export const SIGNAL_PREFIX = 'signal.';

/** Whether an event type belongs to the server (a reply, membership, presence, signals). */
export function isReservedType(type: string): boolean {
  return RESERVED_TYPES.has(type) || type.startsWith(SIGNAL_PREFIX);
}

/**
 * Any server message read off the wire before narrowing on `type`: the fields the members of
 * ServerMessage carry, all optional but `type`. For consumers that match on fields (the CLI client,
 * tests, load scripts); `data` is whatever the event carries.
 */
export interface WireMessage {
  readonly type: ServerMessage['type'];
  readonly id?: string;
  readonly room?: string | null;
  readonly reason?: string;
  /** An event's data is the publisher's JSON. */
  readonly data?: any;
  readonly sender?: string | null;
  readonly timestamp?: string;
  readonly offset?: number;
  readonly epoch?: string;
  readonly recovered?: boolean;
  /** Client-caused events (`message.new`, signals): the sender's user id. */
  readonly user_id?: string;
  readonly duplicate?: boolean;
}
