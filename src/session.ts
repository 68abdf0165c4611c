/**
 * The state of one connection, kept as the uWS socket's UserData so it dies with the socket.
 * An upgrade that was refused still becomes a socket (so the browser can read the close code);
 * its UserData is a RejectedUpgrade and it is closed in `open`.
 */
import type { RoomPatterns } from './rooms.js';
import type { Close, MessageError, Rejection } from './errors.js';
import type { StreamPosition } from './messages.js';
import type { Bucket, Strikes } from './limits.js';
import type { WebSocket } from './uws.js';

/** The token bucket (`tokens`, `refilledAt`) lives inline: one object per connection, not two. */
/**
 * A session's state that most connections never make. Kept out of the session's own fields: uWS
 * copies those onto its socket object, and past 15 properties V8 keeps an object's properties in a
 * dictionary (about 830 B a connection instead of 140; issue 25). test/unit/session-shape.test.ts
 * holds the count.
 */
export interface Rare {
  rateStrikes?: Strikes;
  invalidStrikes?: Strikes;
  /** The signal rate limit (WS_SIGNAL_RATE). */
  signals?: Bucket;
  /** uWS reported a dropped (backpressure) send, so a slow consumer is counted once. */
  slow?: true;
}

export interface Session extends Bucket {
  /**
   * `pending` while the user seat waits for the Redis connection registry (admission.ts): the
   * socket is open but not admitted (no `connected`, not in the session index, its frames kept).
   * A state rather than a field of its own: two more fields per session cost more heap than they hold.
   */
  kind: 'session' | 'pending';
  readonly connectionId: string;
  readonly userId: string;
  readonly username: string;
  /** The token's compiled `rooms` claim; replaced by refresh_token. */
  claim: RoomPatterns | undefined;
  /** Epoch ms of the token's `exp`; replaced by refresh_token. */
  expiresAt: number;
  readonly remoteAddress: string;
  /** The connection's rooms, joined or being joined (a plain personal room is always joined and not listed); made on the first, dropped with the last; membership.ts alone changes them. */
  rooms: Map<string, Member> | undefined;
  /** Members of `rooms` but the personal room, bounded by WS_MAX_ROOMS_PER_CONNECTION; membership.ts alone writes it. */
  roomCount: number;
  /** What most connections never make (made on first use). */
  rare: Rare | undefined;
  /** Sends waiting for an idempotency record or the publish proxy, per room in send order (sends.ts); made on the first. */
  sends: Map<string, QueuedSend[]> | undefined;
  /** Calls to the backend and sends under way for this connection, bounded by WS_BACKEND_MAX_PER_CONNECTION. */
  pending: number;
  /** Set in `close`; nothing may touch the socket afterwards. */
  closed: boolean;
}

/**
 * A connection's place in one room, from the join request to its end (membership.ts owns it).
 * `deciding`: the authorization callback is asked; `joining`: a sequenced join waits for the room's
 * position (a rejoin has left the topic meanwhile); `confirming`: in the topic, answered once the
 * node's broker subscription is confirmed; `joined`. A settled member (joined, told, nobody waiting,
 * let in without a room grant) is one of a few frozen objects that every such member shares, so a
 * joined room costs a connection its `rooms` entry only; membership.ts copies one before changing it.
 */
export interface Member {
  phase: 'deciding' | 'joining' | 'confirming' | 'joined';
  /** The other members were told it came in (user_joined, when announced at all): its end is told too. */
  entered: boolean;
  /** How a room the token's claim does not cover was let in; undefined: the claim, open access or the personal room. */
  permit: Permit | undefined;
  /** Requests waiting for this join's outcome, each answered exactly once; undefined: none. */
  replies: JoinReply[] | undefined;
  /** Where a sequenced join recovers from: the latest request's `since`. */
  since: StreamPosition | undefined;
}

/** A join_room, a resume's room, a backend's subscribe or the personal room's own join, waiting for its answer. */
export interface JoinReply {
  readonly id: string | undefined;
  /** The room a resume's error names. */
  readonly about: string | undefined;
  /** Called once the request was answered, whatever the answer (a resume counts its rooms). */
  readonly settled: (() => void) | undefined;
}

/** A send_message waiting for its turn in its room (sends.ts): `outcome` is set once its idempotency record or the publish proxy answered. */
export interface QueuedSend {
  readonly room: string;
  readonly data: unknown;
  readonly key: string | undefined;
  readonly id: string | undefined;
  /** This send claimed its plain room's idempotency record: only then may it free it again. */
  claimed: boolean;
  outcome: SendOutcome | undefined;
  /** Queued behind a send refused `unavailable`: refused too, so the client's retries keep the send order. */
  behind?: true;
}

/** What a send does at its turn: publish (the backend may have replaced its type and data), answer a repeat with the first result, or refuse. */
export type SendOutcome =
  | { readonly kind: 'publish'; readonly type: string; readonly data: unknown; readonly replaced: boolean }
  | { readonly kind: 'duplicate'; readonly result: Record<string, unknown> }
  | { readonly kind: 'refuse'; readonly error: MessageError };

/** A membership that came from a room grant, as the grant expiry scheduler holds it. */
export interface GrantItem {
  readonly ws: SessionSocket;
  readonly session: Session;
  readonly room: string;
  readonly expiresAt: number;
}

/** How a room the token's claim does not cover was let in: a room grant (ends at its `exp`), the callback, or a backend's subscribe. */
export type Permit = { readonly source: 'grant'; readonly item: GrantItem } | { readonly source: 'callback' | 'server' };

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
