/**
 * One small function per client message type. A handler validates with `rooms`, changes uWS
 * subscriptions, publishes through the broker, and answers the socket directly. Refusals are error
 * envelopes (the socket stays open); only refresh_token with a bad token closes (4401).
 */
import type { Authenticator } from './auth.js';
import type { Broker } from './broker.js';
import type { Config } from './config.js';
import type { Delivery } from './delivery.js';
import { isRejection, messageError, REJECTIONS, type MessageError, type Rejection } from './errors.js';
import type { ExpiryScheduler } from './expiry.js';
import { connectionLog, type Logger } from './log.js';
import type { Metrics, PublishSource } from './metrics.js';
import type { ClientMessage } from './messages.js';
import { encodeError, encodeEvent, encodeReply } from './protocol.js';
import { canJoin, isValidRoom, userRoom } from './rooms.js';
import { closeWith, type Session, type SessionSocket } from './session.js';
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
}

type Handler<T extends ClientMessage['type']> = (
  ctx: HandlerContext,
  ws: SessionSocket,
  session: Session,
  msg: Extract<ClientMessage, { type: T }>,
) => void;

export function sendError(ctx: HandlerContext, ws: SessionSocket, error: MessageError, id: string | undefined): void {
  ctx.metrics.errorSent(error.code);
  ctx.delivery.send(ws, encodeError(error, id));
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

/** user_joined/user_left, unless disabled or the room is too large for per-member events. */
export function announceMembership(ctx: HandlerContext, session: Session, room: string, type: 'user_joined' | 'user_left'): void {
  const { membershipEvents, membershipEventsMaxMembers } = ctx.config;
  if (!membershipEvents || ctx.app.numSubscribers(room) > membershipEventsMaxMembers) return;
  const data = { user_id: session.userId, username: session.username };
  publish(ctx, room, encodeEvent(type, room, data, session.username), 'membership');
}

/** Room name and access checks shared by join and leave; undefined when the room may be used. */
function roomProblem(ctx: HandlerContext, session: Session, room: string): MessageError | undefined {
  if (!isValidRoom(room)) return messageError('invalid_room');
  if (!canJoin(session.userId, session.grant, room, ctx.config.roomAccess)) return messageError('not_granted');
  return undefined;
}

const joinRoom: Handler<'join_room'> = (ctx, ws, session, { room, id }) => {
  const problem = roomProblem(ctx, session, room);
  if (problem) return sendError(ctx, ws, problem, id);
  if (ws.isSubscribed(room)) {
    ctx.delivery.send(ws, encodeReply('room_joined', { room }, id));
    return;
  }
  if (session.roomCount >= ctx.config.maxRoomsPerConnection) {
    return sendError(ctx, ws, messageError('too_many_rooms', ctx.config.maxRoomsPerConnection), id);
  }
  // Announce before subscribing, so the joiner is not told about itself.
  announceMembership(ctx, session, room, 'user_joined');
  ctx.delivery.flush();
  ws.subscribe(room);
  session.roomCount += 1;
  ctx.delivery.send(ws, encodeReply('room_joined', { room }, id));
};

/** Unsubscribes a joined room; the subscription handler tells the others (user_left). */
function leave(ctx: HandlerContext, ws: SessionSocket, session: Session, room: string): void {
  // What was published before the leave still reaches the leaver.
  ctx.delivery.flush();
  ws.unsubscribe(room);
  session.roomCount -= 1;
}

const leaveRoom: Handler<'leave_room'> = (ctx, ws, session, { room, id }) => {
  if (!isValidRoom(room)) return sendError(ctx, ws, messageError('invalid_room'), id);
  if (room === userRoom(session.userId)) return sendError(ctx, ws, messageError('personal_room'), id);
  if (!ws.isSubscribed(room)) return sendError(ctx, ws, messageError('not_a_member'), id);
  leave(ctx, ws, session, room);
  ctx.delivery.send(ws, encodeReply('room_left', { room }, id));
};

/** The sender receives its own copy (it is a member); with an `id` it also gets `message_sent`. */
const sendMessage: Handler<'send_message'> = (ctx, ws, session, { room, data, id }) => {
  if (!isValidRoom(room)) return sendError(ctx, ws, messageError('invalid_room'), id);
  // Joined rooms and the personal room are the socket's topics.
  if (!ws.isSubscribed(room)) return sendError(ctx, ws, messageError('send_not_joined'), id);
  publish(ctx, room, encodeEvent('message.new', room, data, session.username), 'client');
  if (id !== undefined) ctx.delivery.send(ws, encodeReply('message_sent', { room }, id));
};

const ping: Handler<'ping'> = (ctx, ws, _session, { id }) => {
  ctx.delivery.send(ws, encodeReply('pong', {}, id));
};

/** A refused refresh closes the socket with 4401 and is logged once as a security event. */
function refuseRefresh(ctx: HandlerContext, ws: SessionSocket, session: Session, refusal: Rejection): void {
  ctx.metrics.connectionRejected(refusal.reason);
  connectionLog(ctx.log, session).warn({ event: 'token_refresh_rejected', reason: refusal.reason, remote: session.remoteAddress }, 'token refresh rejected');
  closeWith(ws, refusal);
}

/**
 * A newer token for the same user extends the connection. Its `rooms` claim replaces the old one:
 * rooms it no longer allows are left at once (`room_left` with `reason: "access_revoked"`).
 */
const refreshToken: Handler<'refresh_token'> = (ctx, ws, session, { token, id }) => {
  const result = ctx.auth.verify(token);
  if (isRejection(result)) return refuseRefresh(ctx, ws, session, result);
  if (result.userId !== session.userId) {
    return refuseRefresh(ctx, ws, session, REJECTIONS.refresh_other_user);
  }
  if (result.expiresAt < session.expiresAt) {
    return refuseRefresh(ctx, ws, session, REJECTIONS.refresh_earlier);
  }
  ctx.expiry.remove(ws, closesAt(ctx, session));
  session.expiresAt = result.expiresAt;
  session.grant = result.grant;
  ctx.expiry.add(ws, closesAt(ctx, session));
  for (const room of ws.getTopics()) {
    if (canJoin(session.userId, session.grant, room, ctx.config.roomAccess)) continue;
    leave(ctx, ws, session, room);
    ctx.delivery.send(ws, encodeReply('room_left', { room, reason: 'access_revoked' }, undefined));
  }
  ctx.delivery.send(ws, encodeReply('token_refreshed', { data: { expires_at: new Date(result.expiresAt).toISOString() } }, id));
};

const handlers: { [T in ClientMessage['type']]: Handler<T> } = {
  join_room: joinRoom,
  leave_room: leaveRoom,
  send_message: sendMessage,
  ping,
  refresh_token: refreshToken,
};

export function handle(ctx: HandlerContext, ws: SessionSocket, session: Session, msg: ClientMessage): void {
  (handlers[msg.type] as Handler<typeof msg.type>)(ctx, ws, session, msg);
}
