/**
 * What every message handler works with: the node's parts (HandlerContext) and the steps shared by
 * handlers.ts and sequenced.ts: answering with an error, publishing, membership events, room checks.
 */
import type { Authenticator } from './auth.js';
import type { Broker } from './broker.js';
import type { Config } from './config.js';
import type { Delivery } from './delivery.js';
import type { MessageError } from './errors.js';
import type { ExpiryScheduler } from './expiry.js';
import type { History } from './history.js';
import type { Logger } from './log.js';
import type { Metrics, PublishSource } from './metrics.js';
import type { ClientMessage } from './messages.js';
import { encodeError, encodeEvent } from './protocol.js';
import { covers } from './rooms.js';
import type { GrantItem, Session, SessionSocket } from './session.js';
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
  /** For `numSubscribers`: the local member count of a room, kept by uWS. */
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
  /** Ends memberships that came from a room grant at its `exp`. */
  readonly grants: ExpiryScheduler<GrantItem>;
}

/** Whether `room` keeps presence (WS_PRESENCE_ROOMS); personal rooms never do. */
export function isPresenceRoom(ctx: HandlerContext, room: string): boolean {
  return covers(ctx.config.presence.rooms, room) && !room.startsWith('user:');
}

/** A joined room: in a presence room the connection's entry is made. */
export function entered(ctx: HandlerContext, session: Session, room: string): void {
  if (isPresenceRoom(ctx, room)) ctx.presence.entered(room, { connectionId: session.connectionId, userId: session.userId, username: session.username });
}

/** Whether `room` is sequenced (WS_HISTORY_ROOMS). */
export function isSequenced(ctx: HandlerContext, room: string): boolean {
  return covers(ctx.config.history.rooms, room);
}

export type Handler<T extends ClientMessage['type']> = (
  ctx: HandlerContext,
  ws: SessionSocket,
  session: Session,
  msg: Extract<ClientMessage, { type: T }>,
) => void;

/** `room`: the room of a `resume` the error is about. */
export function sendError(ctx: HandlerContext, ws: SessionSocket, error: MessageError, id: string | undefined, room?: string): void {
  ctx.metrics.errorSent(error.code);
  ctx.delivery.send(ws, encodeError(error, id, room));
}

/**
 * When the expiry timer closes a session: `exp` plus the clock tolerance, the same instant the
 * verifier stops accepting the token.
 */
export function closesAt(ctx: HandlerContext, session: Session): number {
  return session.expiresAt + ctx.config.jwt.clockToleranceSeconds * 1000;
}

export function publish(ctx: HandlerContext, room: string, payload: string, source: PublishSource): void {
  ctx.broker.publish(room, payload);
  ctx.metrics.published(source);
}

/**
 * user_joined/user_left, unless disabled or the room is too large for per-member events. Presence
 * rooms get presence.join/presence.leave instead (presence-tracker.ts).
 */
export function announceMembership(ctx: HandlerContext, session: Session, room: string, type: 'user_joined' | 'user_left'): void {
  const { membershipEvents, membershipEventsMaxMembers } = ctx.config;
  if (!membershipEvents || isPresenceRoom(ctx, room) || ctx.app.numSubscribers(room) > membershipEventsMaxMembers) return;
  const data = { user_id: session.userId, username: session.username };
  publish(ctx, room, encodeEvent(type, room, data, session.username), 'membership');
}

/** Unsubscribes a joined room; the subscription handler tells the others (user_left), the presence tracker a presence room's. */
export function leaveRoom(ctx: HandlerContext, ws: SessionSocket, session: Session, room: string, reason: 'left' | 'revoked'): void {
  // What was published before the leave still reaches the leaver.
  ctx.delivery.flush();
  ws.unsubscribe(room);
  session.roomCount -= 1;
  if (isPresenceRoom(ctx, room)) ctx.presence.left(room, session.connectionId, reason);
}

