/**
 * The state of one connection, kept as the uWS socket's UserData so it dies with the socket.
 * An upgrade that was refused still becomes a socket (so the browser can read the close code);
 * its UserData is a RejectedUpgrade and it is closed in `open`.
 */
import type { Grant } from './rooms.js';
import type { Close, Rejection } from './errors.js';
import type { Bucket, Strikes } from './limits.js';
import type { WebSocket } from './uws.js';

/** The token bucket (`tokens`, `refilledAt`) lives inline: one object per connection, not two. */
export interface Session extends Bucket {
  /**
   * `pending` while the user slot waits for the Redis connection registry (admission.ts): the
   * socket is open but not admitted (no `connected`, not in the session index, its frames kept).
   * A state rather than a field of its own: two more fields per session cost more heap than they hold.
   */
  kind: 'session' | 'pending';
  readonly connectionId: string;
  readonly userId: string;
  readonly username: string;
  /** Replaced by refresh_token. */
  grant: Grant | undefined;
  /** Epoch ms of the token's `exp`; replaced by refresh_token. */
  expiresAt: number;
  readonly remoteAddress: string;
  /**
   * Rooms joined with join_room, bounded by WS_MAX_ROOMS_PER_CONNECTION; the personal `user:` room
   * is not counted. The rooms themselves are the socket's uWS topics (`isSubscribed`, `getTopics`).
   */
  roomCount: number;
  /** Created on the first strike: most connections never get one. */
  rateStrikes: Strikes | undefined;
  invalidStrikes: Strikes | undefined;
  /** The signal rate limit (WS_SIGNAL_RATE), made on the first signal. */
  signals: Bucket | undefined;
  /** Rooms let in by a grant, the callback or a backend, not by the token's claim (access.ts); made on the first. */
  admissions: Map<string, Admission> | undefined;
  /** Joins waiting for the authorization callback, by room, each with its ticket; made on the first. */
  authPending: Map<string, object> | undefined;
  /** Set when uWS first reports a dropped (backpressure) send, so a slow consumer is counted once. */
  slow: boolean;
  /** Set in `close`; nothing may touch the socket afterwards. */
  closed: boolean;
}

/** A membership that came from a room grant, as the grant expiry scheduler holds it (access.ts). */
export interface GrantItem {
  readonly ws: SessionSocket;
  readonly session: Session;
  readonly room: string;
  readonly expiresAt: number;
}

/** How a room not covered by the token's claim was let in: kept per connection and room. */
export type Admission = { readonly source: 'grant'; readonly item: GrantItem } | { readonly source: 'callback' | 'server' };

export interface RejectedUpgrade {
  readonly kind: 'rejected';
  readonly rejection: Rejection;
}

export type UserData = Session | RejectedUpgrade;
export type Socket = WebSocket<UserData>;
export type SessionSocket = WebSocket<Session>;

/** Closes a socket with a catalogue entry's code and reason. */
export function closeWith(ws: WebSocket<unknown>, close: Close): void {
  ws.end(close.code, close.message);
}
