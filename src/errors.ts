/**
 * The catalogue of every refusal ws-edge gives, one entry each: error envelopes (machine code,
 * message), closes (close code, reason text, and what the client does next), HTTP refusals
 * (status, machine code, message). Error envelopes and HTTP refusals carry the same two fields,
 * `code` and `message`, next to the older names kept for the clients that read them
 * (`encodeError` in protocol.ts, `refusalBody` here; docs/WEBSOCKET_API.md, "Error fields").
 * Call sites name an entry; docs/WEBSOCKET_API.md and README.md tables are checked against these
 * tables (test/unit/catalogue.test.ts). The close codes and their reconnect policy live in
 * close-codes.ts (re-exported here), which the client library bundles. `{limit}` in a text is
 * filled in by the call site.
 */
import { CloseCode, type Reconnect } from './close-codes.js';
import { MAX_CLOSE_REASON_BYTES, MAX_TOKEN_LENGTH, PROTOCOL, type ErrorCode } from './messages.js';

export type { ErrorCode } from './messages.js';
export * from './close-codes.js';

/** The Reconnect column of docs/WEBSOCKET_API.md's close code table, per reconnect policy. */
export const RECONNECT_ADVICE: Readonly<Record<Reconnect, string>> = {
  none: 'Not needed.',
  backoff: 'Yes, with backoff.',
  backoff_no_resend: 'Yes, with backoff; do not resend that message.',
  restart: 'Yes: after a random 0-5 s delay, to any node; then backoff as usual.',
  new_token: 'Get a new token first, then reconnect with backoff. Do not retry with the same token.',
  long_backoff: 'Back off longer: at least 30 s, plus jitter; slow the client down if it was flooding.',
  manual: 'Fix the client; do not auto-retry in a loop (at most once, after a long delay or a user action).',
  never: 'Do not retry.',
};

// Error envelopes.

/** Whether a code counts towards WS_MAX_INVALID_MESSAGES (frames that were not a valid message). */
export const ERROR_CODES: { readonly [C in ErrorCode]: { readonly invalid: boolean } } = {
  invalid_json: { invalid: true },
  invalid_message: { invalid: true },
  unknown_type: { invalid: true },
  binary_not_supported: { invalid: true },
  invalid_room: { invalid: false },
  forbidden: { invalid: false },
  not_joined: { invalid: false },
  too_many_rooms: { invalid: false },
  rate_limited: { invalid: false },
  unavailable: { invalid: false },
  no_history: { invalid: false },
  no_presence: { invalid: false },
  unknown_signal: { invalid: false },
  rejected: { invalid: false },
  internal_error: { invalid: false },
};

/** A refused client message: answered with an error envelope, the socket stays open. */
export interface MessageError {
  readonly code: ErrorCode;
  readonly message: string;
  /** With `rejected`: the backend's own code for the refusal. */
  readonly detail?: string;
}

const MESSAGE_ERRORS = {
  invalid_json: { code: 'invalid_json', message: 'message is not valid JSON' },
  not_an_object: { code: 'invalid_message', message: 'message must be a JSON object' },
  bad_id: { code: 'invalid_message', message: '"id" must be a string of at most {limit} characters' },
  bad_type: { code: 'invalid_message', message: '"type" must be a string' },
  bad_room: { code: 'invalid_message', message: '"room" must be a string' },
  no_data: { code: 'invalid_message', message: '"data" is required' },
  data_too_deep: { code: 'invalid_message', message: '"data" nests deeper than {limit} levels' },
  data_too_large: { code: 'invalid_message', message: '"data" holds more than {limit} values' },
  bad_token: { code: 'invalid_message', message: '"token" must be a non-empty string' },
  bad_since: { code: 'invalid_message', message: '"since" must be {"epoch": string, "offset": non-negative integer}' },
  bad_rooms: { code: 'invalid_message', message: '"rooms" must be an array of {"room", "since"} objects' },
  duplicate_room: { code: 'invalid_message', message: '"rooms" names a room twice' },
  bad_idempotency_key: { code: 'invalid_message', message: '"idempotency_key" must be 1-128 printable ASCII characters' },
  bad_method: { code: 'invalid_message', message: '"method" must be dotted lowercase of at most 64 characters ([a-z][a-z0-9_.]*)' },
  rpc_needs_id: { code: 'invalid_message', message: 'an rpc needs an "id" for its reply' },
  bad_limit: { code: 'invalid_message', message: '"limit" must be an integer of 1 to {limit}' },
  bad_reverse: { code: 'invalid_message', message: '"reverse" must be a boolean' },
  unknown_type: { code: 'unknown_type', message: 'unknown message type' },
  binary: { code: 'binary_not_supported', message: 'only JSON text frames are supported' },
  invalid_room: { code: 'invalid_room', message: 'room must be project:, channel:, task: or user: followed by 1-64 of [A-Za-z0-9_-]' },
  not_granted: { code: 'forbidden', message: 'not allowed to join this room' },
  bad_grant: { code: 'invalid_message', message: `"grant" must be a non-empty string of at most ${MAX_TOKEN_LENGTH} characters` },
  grant_invalid: { code: 'forbidden', message: 'room grant invalid' },
  grant_expired: { code: 'forbidden', message: 'room grant expired' },
  grant_revoked: { code: 'forbidden', message: 'room grant revoked' },
  grant_other_user: { code: 'forbidden', message: 'room grant is for another user' },
  grant_other_room: { code: 'forbidden', message: 'room grant is for another room' },
  auth_denied: { code: 'forbidden', message: 'the room authorization service denied this room' },
  auth_unavailable: { code: 'unavailable', message: 'room authorization is unreachable; try again' },
  personal_room: { code: 'forbidden', message: 'the personal room cannot be left' },
  not_a_member: { code: 'not_joined', message: 'not a member of this room' },
  join_cancelled: { code: 'not_joined', message: 'the room was left or taken away before this join completed' },
  send_not_joined: { code: 'not_joined', message: 'join the room before sending to it' },
  too_many_rooms: { code: 'too_many_rooms', message: 'at most {limit} rooms per connection' },
  rate_limited: { code: 'rate_limited', message: 'at most {limit} messages per second' },
  unavailable: { code: 'unavailable', message: 'room history is unreachable; try again' },
  no_history: { code: 'no_history', message: 'this room keeps no history (not in WS_HISTORY_ROOMS)' },
  history_not_joined: { code: 'not_joined', message: 'join the room before reading its history' },
  no_presence: { code: 'no_presence', message: 'this room keeps no presence (not in WS_PRESENCE_ROOMS)' },
  presence_not_joined: { code: 'not_joined', message: 'join the room before asking who is in it' },
  presence_unavailable: { code: 'unavailable', message: 'presence is unreachable; try again' },
  signal_not_joined: { code: 'not_joined', message: 'join the room before signalling to it' },
  unknown_signal: { code: 'unknown_signal', message: 'signal name not allowed (WS_SIGNALS)' },
  bad_signal_name: { code: 'invalid_message', message: '"name" must be a string' },
  signal_too_big: { code: 'invalid_message', message: 'a signal frame may be at most {limit} bytes' },
  signal_rate_limited: { code: 'rate_limited', message: 'at most {limit} signals per second' },
  send_pending: { code: 'unavailable', message: 'a send with this idempotency_key is still under way; try again' },
  backend_unavailable: { code: 'unavailable', message: 'the backend is unreachable; try again' },
  unavailable_behind: { code: 'unavailable', message: 'an earlier send to this room was refused unavailable; send again after it' },
  backend_busy: { code: 'rate_limited', message: 'at most {limit} backend calls in flight per connection' },
  no_rpc: { code: 'unknown_type', message: 'rpc is not enabled on this node (WS_RPC_URL)' },
  internal_error: { code: 'internal_error', message: 'internal error' },
} as const satisfies Record<string, MessageError>;
export type MessageErrorName = keyof typeof MESSAGE_ERRORS;
export const MESSAGE_ERROR_ENTRIES: Readonly<Record<MessageErrorName, MessageError>> = MESSAGE_ERRORS;

const fill = (text: string, limit: number | undefined): string => (limit === undefined ? text : text.replace('{limit}', String(limit)));

/** The catalogue's entry `name`, with `limit` in its text where it has one. */
export function messageError(name: MessageErrorName, limit?: number): MessageError {
  const entry = MESSAGE_ERRORS[name];
  return limit === undefined ? entry : { code: entry.code, message: fill(entry.message, limit) };
}

// Closes.

/** Why a connection was refused; the label of `wsedge_auth_failures_total`. A fixed vocabulary. */
export type RejectReason =
  | 'token_missing'
  | 'token_ambiguous'
  | 'token_invalid'
  | 'token_expired'
  | 'token_revoked'
  | 'subprotocol'
  | 'origin'
  | 'user_limit'
  | 'ip_limit'
  | 'internal';

/** A close the server sends, with its reason text (at most 123 bytes by RFC 6455). */
export interface Close {
  readonly code: CloseCode;
  readonly message: string;
}

/** A refused connection (at the upgrade, or a refused token refresh): closed at once with `code`, counted by `reason`. */
export interface Rejection extends Close {
  readonly reason: RejectReason;
}

const UNAUTHORIZED = CloseCode.UNAUTHORIZED;

/** Refusals of a connection, in the order the upgrade checks them; then those of refresh_token. */
export const REJECTIONS = {
  origin: { reason: 'origin', code: CloseCode.FORBIDDEN, message: 'origin not allowed' },
  token_ambiguous: { reason: 'token_ambiguous', code: UNAUTHORIZED, message: 'more than one token in the request' },
  token_missing: { reason: 'token_missing', code: UNAUTHORIZED, message: 'missing token' },
  token_too_long: { reason: 'token_invalid', code: UNAUTHORIZED, message: `token longer than ${MAX_TOKEN_LENGTH} characters` },
  subprotocol: { reason: 'subprotocol', code: UNAUTHORIZED, message: `offer ${PROTOCOL} with the bearer subprotocol` },
  /** Not a JWT: three base64url parts, a JSON header and payload. Each failed check is named after the colon. */
  token_format: { reason: 'token_invalid', code: UNAUTHORIZED, message: 'invalid token: format' },
  token_algorithm: { reason: 'token_invalid', code: UNAUTHORIZED, message: 'invalid token: algorithm' },
  /** The header's `kid` names no key of the set (a JWKS is refetched, at most once per interval). */
  token_kid: { reason: 'token_invalid', code: UNAUTHORIZED, message: 'invalid token: kid' },
  token_signature: { reason: 'token_invalid', code: UNAUTHORIZED, message: 'invalid token: signature' },
  /** A `crit` header: ws-edge understands no critical extension (RFC 7515 4.1.11). */
  token_crit: { reason: 'token_invalid', code: UNAUTHORIZED, message: 'invalid token: crit' },
  token_no_exp: { reason: 'token_invalid', code: UNAUTHORIZED, message: 'invalid token: missing exp' },
  token_no_sub: { reason: 'token_invalid', code: UNAUTHORIZED, message: 'invalid token: missing sub' },
  token_no_iss: { reason: 'token_invalid', code: UNAUTHORIZED, message: 'invalid token: missing iss' },
  token_no_aud: { reason: 'token_invalid', code: UNAUTHORIZED, message: 'invalid token: missing aud' },
  token_nbf: { reason: 'token_invalid', code: UNAUTHORIZED, message: 'invalid token: nbf' },
  token_exp: { reason: 'token_invalid', code: UNAUTHORIZED, message: 'invalid token: exp must be a number' },
  token_expired: { reason: 'token_expired', code: UNAUTHORIZED, message: 'token expired' },
  token_aud: { reason: 'token_invalid', code: UNAUTHORIZED, message: 'invalid token: aud' },
  token_iss: { reason: 'token_invalid', code: UNAUTHORIZED, message: 'invalid token: iss' },
  token_sub: { reason: 'token_invalid', code: UNAUTHORIZED, message: 'invalid token: sub must be a string of 1-64 [A-Za-z0-9_-]' },
  token_exp_too_far: { reason: 'token_invalid', code: UNAUTHORIZED, message: 'invalid token: exp after year 9999' },
  token_username: { reason: 'token_invalid', code: UNAUTHORIZED, message: 'invalid token: username' },
  token_rooms: { reason: 'token_invalid', code: UNAUTHORIZED, message: 'invalid token: rooms' },
  /** `exp` further ahead than JWT_MAX_LIFETIME (from `iat`, or from now without one). */
  token_lifetime: { reason: 'token_invalid', code: UNAUTHORIZED, message: 'invalid token: lifetime longer than JWT_MAX_LIFETIME' },
  /** POST /api/v1/revoke covers the token: at the upgrade, at refresh_token, and for live connections. */
  token_revoked: { reason: 'token_revoked', code: UNAUTHORIZED, message: 'token revoked' },
  ip_limit: { reason: 'ip_limit', code: CloseCode.TOO_MANY, message: 'too many connections from this address' },
  user_limit: { reason: 'user_limit', code: CloseCode.TOO_MANY, message: 'too many connections for this user' },
  internal: { reason: 'internal', code: CloseCode.INTERNAL, message: 'internal error' },
  refresh_other_user: { reason: 'token_invalid', code: UNAUTHORIZED, message: 'token is for another user' },
  refresh_earlier: { reason: 'token_invalid', code: UNAUTHORIZED, message: 'token expires before the current one' },
} as const satisfies Record<string, Rejection>;

/** Closes of an admitted connection. */
export const CLOSES = {
  invalid_messages: { code: CloseCode.POLICY_VIOLATION, message: 'too many invalid messages' },
  too_big: { code: CloseCode.MESSAGE_TOO_BIG, message: 'message too big' },
  service_restart: { code: CloseCode.SERVICE_RESTART, message: 'service restart' },
  token_lapsed: { code: UNAUTHORIZED, message: 'token expired' },
  flooding: { code: CloseCode.TOO_MANY, message: 'rate limit exceeded' },
  /** An operator's disconnect without a code or reason of its own. */
  disconnected: { code: CloseCode.FORBIDDEN, message: 'disconnected' },
} as const satisfies Record<string, Close>;

export function isRejection<T extends object>(value: T | Rejection): value is Rejection {
  return 'reason' in value && 'code' in value;
}

const utf8 = new TextEncoder();

/** One line of at most 123 bytes keeps logs and close frames clean. */
export function isCloseReason(reason: unknown): reason is string {
  return typeof reason === 'string' && utf8.encode(reason).length <= MAX_CLOSE_REASON_BYTES && !/[\r\n]/.test(reason);
}

// HTTP refusals.

export interface HttpRefusal {
  readonly status: number;
  /** The machine code: `code` of the JSON body (and `error`, its older name). Match on it. */
  readonly code: string;
  /** Human text: `message` of the body (and `reason`, its older name). It may change. */
  readonly message: string;
  /** Seconds, sent as `Retry-After`. */
  readonly retryAfter?: number;
}

/**
 * The JSON body of an HTTP refusal: `code` and `message`, the fields of an error envelope's `data`
 * too; `error` and `reason` are the same two values under the names the HTTP side used first, kept
 * for the clients that read them (the Python SDK's publisher, backends written against them).
 */
export type RefusalBody = {
  readonly code: string;
  readonly message: string;
  /** = `code`. */
  readonly error: string;
  /** = `message`. */
  readonly reason: string;
};

export const HTTP_STATUS_TEXT: Readonly<Record<number, string>> = {
  400: 'Bad Request',
  401: 'Unauthorized',
  403: 'Forbidden',
  404: 'Not Found',
  409: 'Conflict',
  413: 'Payload Too Large',
  426: 'Upgrade Required',
  429: 'Too Many Requests',
  500: 'Internal Server Error',
  503: 'Service Unavailable',
};

/** Upgrades refused before any socket exists; the name is the `wsedge_upgrades_refused_total` label. */
export const UPGRADE_REFUSALS = {
  draining: { status: 503, code: 'unavailable', message: 'draining', retryAfter: 1 },
  max_connections: { status: 503, code: 'unavailable', message: 'max_connections', retryAfter: 1 },
  auth_failures: { status: 429, code: 'too_many_requests', message: 'too many failed authentications from this address', retryAfter: 60 },
} as const satisfies Record<string, HttpRefusal>;

/** Plain HTTP routes: a request to the WebSocket path without an upgrade, unknown paths, a failed scrape. */
export const ROUTE_REFUSALS = {
  upgrade_required: { status: 426, code: 'upgrade_required', message: 'this path takes a WebSocket upgrade' },
  not_found: { status: 404, code: 'not_found', message: 'no such path' },
  /** Sent with the collection's error as its message. */
  metrics_failed: { status: 500, code: 'metrics_failed', message: 'metrics collection failed' },
} as const satisfies Record<string, HttpRefusal>;

/** The backend API (README "HTTP API"), in the order its checks run. */
export const API_REFUSALS = {
  api_disabled: { status: 404, code: 'api_disabled', message: 'the API is off: PUBLISH_API_KEY is not set' },
  unauthorized: { status: 401, code: 'unauthorized', message: 'missing or wrong bearer key' },
  too_large: { status: 413, code: 'too_large', message: 'body larger than {limit} bytes' },
  invalid_json: { status: 400, code: 'invalid_json', message: 'body is not valid JSON' },
  invalid_body: { status: 400, code: 'invalid_body', message: 'body must be a JSON object' },
  invalid_batch: { status: 400, code: 'invalid_batch', message: '"publications" must be an array of 1 to {limit} publish bodies' },
  invalid_target: { status: 400, code: 'invalid_target', message: 'give exactly one of "room", "user_id", "connection_id", or "rooms" and/or "user_ids" as arrays naming at least one target' },
  too_many_targets: { status: 400, code: 'too_many_targets', message: 'more than {limit} targets in one request' },
  duplicate_target: { status: 400, code: 'duplicate_target', message: 'a room or user is named twice among the targets ("user_ids": ["a"] is the room user:a)' },
  invalid_exclude_connection: { status: 400, code: 'invalid_exclude_connection', message: '"exclude_connection" must be a connection id (<node id>.<base36 counter>), with a room or user target' },
  invalid_type: { status: 400, code: 'invalid_type', message: '"type" must be a dotted lowercase name such as task.created, and not a reserved type' },
  invalid_sender: { status: 400, code: 'invalid_sender', message: '"sender" must be a string of at most {limit} characters' },
  invalid_room: { status: 400, code: 'invalid_room', message: '"room" must be project:, channel:, task: or user: followed by 1-64 of [A-Za-z0-9_-]' },
  invalid_user_id: { status: 400, code: 'invalid_user_id', message: '"user_id" must be 1-64 of [A-Za-z0-9_-]' },
  invalid_connection_id: { status: 400, code: 'invalid_connection_id', message: '"connection_id" is malformed' },
  invalid_code: { status: 400, code: 'invalid_code', message: '"code" must be an application close code, 4000-4999' },
  invalid_reason: { status: 400, code: 'invalid_reason', message: '"reason" must be one line of at most {limit} bytes' },
  internal_error: { status: 500, code: 'internal_error', message: 'internal error' },
  history_unavailable: { status: 503, code: 'unavailable', message: 'the room is sequenced and its history is unreachable; retry' },
  publish_unavailable: { status: 503, code: 'unavailable', message: 'Redis did not take the event (the publish thread has no other way to the nodes); retry' },
  invalid_idempotency_key: { status: 400, code: 'invalid_idempotency_key', message: '"idempotency_key" must be 1-128 printable ASCII characters without spaces, for a sequenced room' },
  no_history: { status: 400, code: 'no_history', message: 'this room keeps no history (not in WS_HISTORY_ROOMS)' },
  invalid_access_room: { status: 400, code: 'invalid_room', message: '"room" must be a project:, channel: or task: room' },
  broker_unavailable: { status: 503, code: 'unavailable', message: 'Redis is unreachable: the change would reach this node only; retry' },
  invalid_user_ids: { status: 400, code: 'invalid_user_ids', message: '"user_ids" must be an array of 1 to {limit} user ids (1-64 of [A-Za-z0-9_-]), none twice' },
  status_unavailable: { status: 503, code: 'unavailable', message: 'Redis is unreachable: the cluster-wide status cannot be read; retry' },
  no_presence: { status: 400, code: 'no_presence', message: 'this room keeps no presence (not in WS_PRESENCE_ROOMS)' },
  presence_unavailable: { status: 503, code: 'unavailable', message: 'presence is unreachable; retry' },
  invalid_revocation: { status: 400, code: 'invalid_revocation', message: 'give either "user_id" with "issued_before", or "jti"' },
  invalid_issued_before: { status: 400, code: 'invalid_issued_before', message: '"issued_before" must be epoch seconds or an RFC 3339 time, not more than 60 s ahead' },
  invalid_jti: { status: 400, code: 'invalid_jti', message: '"jti" must be 1-128 printable ASCII characters without spaces' },
  revocations_full: { status: 503, code: 'revocations_full', message: 'WS_REVOCATIONS_MAX revocations are kept already; retry once older ones expire, or revoke by user' },
  revocations_unavailable: { status: 503, code: 'unavailable', message: 'Redis is unreachable: the revocation cannot be kept; retry' },
  invalid_query: { status: 400, code: 'invalid_query', message: 'since_offset needs since_epoch; since_offset a non-negative integer, limit 1-10000, reverse true or false' },
} as const satisfies Record<string, HttpRefusal>;
export type ApiRefusalName = keyof typeof API_REFUSALS;

/**
 * The HTTP fallback's answers (fallback.ts; docs/WEBSOCKET_API.md "HTTP fallback"): a stream the
 * loopback socket refused before `connected` (its close code picks the entry, its reason is the
 * message), and POSTs; the name is the `wsedge_fallback_posts_total` outcome where one applies.
 */
export const FALLBACK_REFUSALS = {
  stream_unauthorized: { status: 401, code: 'unauthorized', message: 'the token was refused' },
  stream_forbidden: { status: 403, code: 'forbidden', message: 'the origin or the token was refused' },
  stream_limited: { status: 429, code: 'too_many_requests', message: 'a connection limit was reached', retryAfter: 5 },
  stream_refused: { status: 503, code: 'unavailable', message: 'the node cannot open the session now', retryAfter: 1 },
  unauthorized: { status: 401, code: 'unauthorized', message: 'missing or refused token (Authorization: Bearer, or the wsedge_token cookie)' },
  auth_failures: { status: 429, code: 'too_many_requests', message: 'too many failed authentications from this address', retryAfter: 60 },
  bad_session: { status: 400, code: 'invalid_session', message: 'X-WsEdge-Session must be a session id and X-WsEdge-Seq an integer of 1 or more' },
  unknown_session: { status: 404, code: 'unknown_session', message: 'no open session with this id: open a new stream' },
  forbidden: { status: 403, code: 'forbidden', message: "the session belongs to another user" },
  too_large: { status: 413, code: 'too_large', message: 'body larger than {limit} bytes (WS_MESSAGE_MAX_SIZE)' },
  rate_limited: { status: 429, code: 'rate_limited', message: 'more POSTs than WS_RATE_LIMIT per second for this session', retryAfter: 1 },
  out_of_order: { status: 409, code: 'out_of_order', message: 'X-WsEdge-Seq is more than {limit} ahead of the next expected one' },
  busy: { status: 503, code: 'unavailable', message: 'the POST cannot reach the node holding the session now; retry', retryAfter: 1 },
} as const satisfies Record<string, HttpRefusal>;

/** The status line of a refusal, e.g. `503 Service Unavailable`. */
export function statusLine(refusal: HttpRefusal): string {
  return `${refusal.status} ${HTTP_STATUS_TEXT[refusal.status]}`;
}

/** The JSON body of a refusal, `{limit}` filled in; `message` replaces the entry's own (a failed scrape's error). */
export function refusalBody(refusal: HttpRefusal, limit?: number, message?: string): RefusalBody {
  const text = fill(message ?? refusal.message, limit);
  return { code: refusal.code, message: text, error: refusal.code, reason: text };
}
