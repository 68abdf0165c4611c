/**
 * What every message handler works with: the node's parts (HandlerContext), the handler type, and
 * the token-expiry instant shared by the connection and refresh_token.
 */
import type { Authenticator } from './auth.js';
import type { BackendCaller } from './backend.js';
import type { Broker } from './broker.js';
import type { Config } from './config.js';
import type { Delivery } from './delivery.js';
import type { ExpiryScheduler } from './expiry.js';
import type { History } from './history.js';
import type { Lifecycle } from './lifecycle.js';
import type { Logger } from './log.js';
import type { Membership } from './membership.js';
import type { Metrics } from './metrics.js';
import type { ClientMessage } from './messages.js';
import type { RoomPublish } from './publish.js';
import type { Sends } from './sends.js';
import type { Session, SessionSocket } from './session.js';
import type { PresenceTracker } from './presence-tracker.js';
import type { RoomAuthorizer } from './room-auth.js';
import type { Streams } from './streams.js';
import type { TemplatedApp } from './uws.js';

export interface HandlerContext {
  readonly config: Config;
  readonly log: Logger;
  readonly auth: Authenticator;
  readonly metrics: Metrics;
  readonly broker: Broker;
  /** Every write to a client goes through it, so a socket sees events and replies in order. */
  readonly delivery: Delivery;
  readonly app: TemplatedApp;
  readonly expiry: ExpiryScheduler<SessionSocket>;
  /** Appends to sequenced rooms (WS_HISTORY_ROOMS) and reads their history. */
  readonly history: History;
  /** The node's side of sequenced rooms: their positions, joins and recoveries. */
  readonly streams: Streams;
  /** This node's members of presence rooms (WS_PRESENCE_ROOMS). */
  readonly presence: PresenceTracker;
  /** WS_ROOM_ACCESS=callback: asks the backend about rooms the token does not cover. */
  readonly roomAuth: RoomAuthorizer | undefined;
  /** The one owner of every connection's rooms. */
  readonly membership: Membership;
  /** The one way an event enters a room, plain or sequenced. */
  readonly publish: RoomPublish;
  /** Client sends: idempotency, the publish proxy, order per connection and room. */
  readonly sends: Sends;
  /** WS_RPC_URL's caller; undefined when RPC is off. */
  readonly rpc: BackendCaller | undefined;
  /** What the backend hears: lifecycle events and WS_SIGNALS_TO_BACKEND's signals. */
  readonly lifecycle: Lifecycle;
}

export type Handler<T extends ClientMessage['type']> = (
  ctx: HandlerContext,
  ws: SessionSocket,
  session: Session,
  msg: Extract<ClientMessage, { type: T }>,
) => void;

/**
 * When the expiry timer closes a session: `exp` plus the clock tolerance, the same instant the
 * verifier stops accepting the token.
 */
export function closesAt(ctx: { readonly config: Config }, session: Session): number {
  return session.expiresAt + ctx.config.jwt.clockToleranceSeconds * 1000;
}
