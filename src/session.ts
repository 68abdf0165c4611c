/**
 * The state of one connection, kept as the uWS socket's UserData so it dies with the socket.
 * An upgrade that was refused still becomes a socket (so the browser can read the close code);
 * its UserData is a RejectedUpgrade and it is closed in `open`.
 */
import type { Grant } from './rooms.js';
import type { Rejection } from './errors.js';
import type { Bucket, Strikes } from './limits.js';
import type { WebSocket } from './uws.js';

export interface Session {
  readonly kind: 'session';
  readonly connectionId: string;
  readonly userId: string;
  readonly username: string;
  /** Replaced by refresh_token. */
  grant: Grant | undefined;
  /** Epoch ms of the token's `exp`; replaced by refresh_token. */
  expiresAt: number;
  readonly remoteAddress: string;
  /** Rooms joined with join_room; the personal `user:` room is not counted. Bounded by WS_MAX_ROOMS_PER_CONNECTION. */
  readonly rooms: Set<string>;
  readonly bucket: Bucket;
  readonly rateStrikes: Strikes;
  readonly invalidStrikes: Strikes;
  /** Set when uWS first reports a dropped (backpressure) send, so a slow consumer is counted once. */
  slow: boolean;
  /** Set in `close`; nothing may touch the socket afterwards. */
  closed: boolean;
}

export interface RejectedUpgrade {
  readonly kind: 'rejected';
  readonly rejection: Rejection;
}

export type UserData = Session | RejectedUpgrade;
export type Socket = WebSocket<UserData>;
export type SessionSocket = WebSocket<Session>;
