/**
 * The catalogue of every refusal ws-edge gives: WebSocket close codes, the machine codes of error
 * envelopes, and the reasons counted in metrics. Tests and docs refer to these names.
 */

/** Close codes sent to clients. docs/WEBSOCKET_API.md says, for each, whether and how to reconnect. */
export const CloseCode = {
  /** Client-initiated normal close. */
  NORMAL: 1000,
  /** Repeated invalid messages (WS_MAX_INVALID_MESSAGES within the window). */
  POLICY_VIOLATION: 1008,
  /** A frame above WS_MESSAGE_MAX_SIZE. */
  MESSAGE_TOO_BIG: 1009,
  /** The node is draining (deploy, restart); reconnect with jitter to any node. */
  SERVICE_RESTART: 1012,
  /** Missing, invalid or expired token; get a new token before reconnecting. */
  UNAUTHORIZED: 4401,
  /** Origin not allowed; do not retry. */
  FORBIDDEN: 4403,
  /** Too many connections for this user, or a client that keeps flooding. */
  TOO_MANY: 4429,
  /** Internal error while accepting the connection. */
  INTERNAL: 4500,
} as const;
export type CloseCode = (typeof CloseCode)[keyof typeof CloseCode];

/** Machine codes carried in `{"type":"error","data":{"error","code"}}`. The socket stays open. */
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
  | 'internal_error';

/** A refused client message: answered with an error envelope, the socket stays open. */
export interface MessageError {
  readonly code: ErrorCode;
  readonly message: string;
}

export function messageError(code: ErrorCode, message: string): MessageError {
  return { code, message };
}

/** Why a connection was refused; the label of `wsedge_auth_failures_total`. A fixed vocabulary. */
export type RejectReason =
  | 'token_missing'
  | 'token_ambiguous'
  | 'token_invalid'
  | 'token_expired'
  | 'subprotocol'
  | 'origin'
  | 'user_limit'
  | 'ip_limit'
  | 'internal';

/** A refused connection: accepted, then closed at once with `code` so browsers can read it. */
export interface Rejection {
  readonly reason: RejectReason;
  readonly code: CloseCode;
  /** Close reason text sent to the client (at most 123 bytes by RFC 6455). */
  readonly message: string;
}

export function rejection(reason: RejectReason, code: CloseCode, message: string): Rejection {
  return { reason, code, message };
}

/** Codes an operator may close connections with (default 4403): the application range. */
export function isApplicationCloseCode(code: unknown): code is number {
  return typeof code === 'number' && Number.isInteger(code) && code >= 4000 && code <= 4999;
}

/** RFC 6455 caps a close reason at 123 bytes; one line keeps logs and frames clean. */
export const MAX_CLOSE_REASON_BYTES = 123;

export function isCloseReason(reason: unknown): reason is string {
  return typeof reason === 'string' && Buffer.byteLength(reason) <= MAX_CLOSE_REASON_BYTES && !/[\r\n]/.test(reason);
}

export function isRejection<T extends object>(value: T | Rejection): value is Rejection {
  return 'reason' in value && 'code' in value;
}
