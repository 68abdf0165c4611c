/**
 * One small function per client message type. A handler validates with `rooms`, changes uWS
 * subscriptions, publishes through the broker, and answers the socket directly. Refusals are error
 * envelopes (the socket stays open); only refresh_token with a bad token closes (4401). Sequenced
 * rooms take the paths of sequenced.ts.
 */
import { isRejection, messageError, REJECTIONS, type Rejection } from './errors.js';
import { cancelledJoin, cancelPendingAuth, claimBound, forgetAdmission, revoke, withAccess } from './access.js';
import { closesAt, isSequenced, leaveRoom, publish, sendError, type Handler, type HandlerContext } from './handler-context.js';
import { connectionLog } from './log.js';
import type { ClientMessage } from './messages.js';
import { encodeEvent, encodeReply } from './protocol.js';
import { canJoin, isValidRoom, userRoom } from './rooms.js';
import { presence, presenceStats, signal } from './presence-handlers.js';
import { history, joinPlain, joinSequenced, resume, sendSequenced } from './sequenced.js';
import { closeWith, type Session, type SessionSocket } from './session.js';

const joinRoom: Handler<'join_room'> = (ctx, ws, session, { room, since, grant, id }) => {
  if (!isValidRoom(room)) return sendError(ctx, ws, messageError('invalid_room'), id);
  withAccess(ctx, ws, session, room, grant, id, undefined, () => {
    if (isSequenced(ctx, room)) joinSequenced(ctx, ws, session, room, since, id, () => {});
    else joinPlain(ctx, ws, session, room, id, since);
  });
};

const leave: Handler<'leave_room'> = (ctx, ws, session, { room, id }) => {
  if (!isValidRoom(room)) return sendError(ctx, ws, messageError('invalid_room'), id);
  if (room === userRoom(session.userId)) return sendError(ctx, ws, messageError('personal_room'), id);
  // A join still waiting for the room's position (it counted as joined) or for the callback is dropped.
  if (ctx.streams.cancel(ws, room)) cancelledJoin(ctx, session, room, 'left');
  else if (!cancelPendingAuth(session, room)) {
    if (!ws.isSubscribed(room)) return sendError(ctx, ws, messageError('not_a_member'), id);
    leaveRoom(ctx, ws, session, room, 'left');
  }
  forgetAdmission(ctx, session, room);
  ctx.delivery.send(ws, encodeReply('room_left', { room }, id));
};

/** The sender receives its own copy (it is a member); with an `id` it also gets `message_sent`. */
const sendMessage: Handler<'send_message'> = (ctx, ws, session, { room, data, id }) => {
  if (!isValidRoom(room)) return sendError(ctx, ws, messageError('invalid_room'), id);
  // Joined rooms and the personal room are the socket's topics.
  if (!ws.isSubscribed(room)) return sendError(ctx, ws, messageError('send_not_joined'), id);
  const envelope = encodeEvent('message.new', room, data, session.username);
  if (isSequenced(ctx, room)) return sendSequenced(ctx, ws, session, room, envelope, id);
  publish(ctx, room, envelope, 'client');
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
  // Rooms the claim let in and no longer does, joined or still waiting for their position; not those a grant, the callback or a backend let in.
  for (const room of [...ws.getTopics(), ...ctx.streams.joinsOf(ws)]) {
    const covered = canJoin(session.userId, session.grant, room, ctx.config.roomAccess);
    // A room the claim now covers is the claim's: a grant's expiry no longer ends it.
    if (covered) forgetAdmission(ctx, session, room);
    else if (claimBound(session, room)) revoke(ctx, ws, session, room, 'access_revoked', 'token');
  }
  ctx.delivery.send(ws, encodeReply('token_refreshed', { data: { expires_at: new Date(result.expiresAt).toISOString() } }, id));
};

const handlers: { [T in ClientMessage['type']]: Handler<T> } = {
  join_room: joinRoom,
  resume,
  history,
  leave_room: leave,
  send_message: sendMessage,
  presence,
  presence_stats: presenceStats,
  signal,
  ping,
  refresh_token: refreshToken,
};

export function handle(ctx: HandlerContext, ws: SessionSocket, session: Session, msg: ClientMessage): void {
  (handlers[msg.type] as Handler<typeof msg.type>)(ctx, ws, session, msg);
}
