/**
 * One small function per client message type. A handler validates, hands room changes to the
 * membership (membership.ts), publishes through the room-publish seam, and answers the socket.
 * Refusals are error envelopes (the socket stays open); only refresh_token with a bad token closes (4401).
 */
import { rememberToken } from './revocation.js';
import { backendRefusal } from './backend.js';
import { isRejection, messageError, REJECTIONS, type MessageError, type Rejection } from './errors.js';
import { closesAt, type Handler, type HandlerContext } from './handler-context.js';
import { readPage } from './history.js';
import { connectionLog } from './log.js';
import { isSequenced } from './membership.js';
import type { ClientMessage } from './messages.js';
import { encodeHistory, encodeReply } from './protocol.js';
import { presence, presenceStats } from './presence-handlers.js';
import { signal } from './signals.js';
import { sendError } from './replies.js';
import { isValidRoom, userRoom } from './rooms.js';
import { closeWith, type Session, type SessionSocket } from './session.js';

const joinRoom: Handler<'join_room'> = (ctx, ws, session, { room, since, grant, id }) => {
  if (!isValidRoom(room)) return sendError(ctx, ws, messageError('invalid_room'), id);
  ctx.membership.join(ws, session, { room, since, grant, id });
};

/**
 * Every room of a reconnecting client in one frame (one frame for the rate limit): each is joined
 * (and recovered from its `since`) and answered on its own, then `resumed` follows.
 */
const resume: Handler<'resume'> = (ctx, ws, session, { rooms, id }) => {
  // The personal room may be named on top of WS_MAX_ROOMS_PER_CONNECTION.
  const personal = userRoom(session.userId);
  if (rooms.filter((r) => r.room !== personal).length > ctx.config.maxRoomsPerConnection) {
    return sendError(ctx, ws, messageError('too_many_rooms', ctx.config.maxRoomsPerConnection), id);
  }
  let pending = rooms.length + 1;
  const settled = (): void => {
    pending -= 1;
    if (pending === 0 && !session.closed) ctx.delivery.send(ws, encodeReply('resumed', { data: { rooms: rooms.length } }, id));
  };
  for (const { room, since, grant } of rooms) {
    if (!isValidRoom(room)) {
      sendError(ctx, ws, messageError('invalid_room'), id, room);
      settled();
    } else ctx.membership.join(ws, session, { room, since, grant, id, about: room, settled });
  }
  settled();
};

const leave: Handler<'leave_room'> = (ctx, ws, session, { room, id }) => {
  if (!isValidRoom(room)) return sendError(ctx, ws, messageError('invalid_room'), id);
  ctx.membership.leave(ws, session, room, id);
};

/** `history`: a joined sequenced room's kept events, as they were delivered; at most WS_HISTORY_SIZE. */
const history: Handler<'history'> = (ctx, ws, session, { room, since, limit, reverse, id }) => {
  if (!isValidRoom(room)) return sendError(ctx, ws, messageError('invalid_room'), id);
  if (!isSequenced(ctx, room)) return sendError(ctx, ws, messageError('no_history'), id);
  if (!ctx.membership.isMember(ws, room)) return sendError(ctx, ws, messageError('history_not_joined'), id);
  const size = ctx.config.history.size;
  readPage(ctx.history, room, since, Math.min(limit ?? size, size), reverse).then(
    (page) => {
      if (!session.closed) ctx.delivery.send(ws, encodeHistory(room, page, page.entries.map((e) => e.payload), id));
    },
    () => {
      if (!session.closed) sendError(ctx, ws, messageError('unavailable'), id);
    },
  );
};

/**
 * The sender receives its own copy (it is a member); with an `id` it also gets `message_sent`, in a
 * sequenced room with the event's position once the event reached this node's members (sends.ts).
 */
const sendMessage: Handler<'send_message'> = (ctx, ws, session, { room, data, idempotency_key: key, id }) => {
  if (!isValidRoom(room)) return sendError(ctx, ws, messageError('invalid_room'), id);
  // Joined rooms and the personal room are the socket's topics.
  if (!ctx.membership.isMember(ws, room)) return sendError(ctx, ws, messageError('send_not_joined'), id);
  ctx.sends.send(ws, session, { room, data, key, id });
};

/** The backend's answer to an rpc: its data, or its refusal; undefined for an answer of another shape. */
function rpcAnswer(answer: Record<string, unknown>): { data: unknown } | { error: MessageError } | undefined {
  const { error } = answer;
  // A null `error` is an absent one (response models write them).
  if (error == null) return { data: answer['data'] ?? null };
  if (typeof error !== 'object' || error === null) return undefined;
  const { code, message } = error as Record<string, unknown>;
  const refusal = backendRefusal(code, message);
  return refusal === undefined ? undefined : { error: refusal };
}

/** `rpc`: the method and data to WS_RPC_URL with the caller's identity; the backend's data comes back as `rpc_result`. */
const rpc: Handler<'rpc'> = (ctx, ws, session, { method, data, id }) => {
  if (ctx.rpc === undefined) return sendError(ctx, ws, messageError('no_rpc'), id);
  const max = ctx.config.backend!.perConnection;
  if (session.pending >= max) return sendError(ctx, ws, messageError('backend_busy', max), id);
  session.pending += 1;
  const body = { user_id: session.userId, username: session.username, connection_id: session.connectionId, method, data };
  const answered = (reply: { data: unknown } | { error: MessageError }): void => {
    if (session.closed) return;
    if ('data' in reply) ctx.delivery.send(ws, encodeReply('rpc_result', { data: reply.data }, id));
    else sendError(ctx, ws, reply.error, id);
  };
  ctx.rpc.call(body).then(
    (answer) => {
      const reply = rpcAnswer(answer);
      if (reply === undefined) ctx.metrics.backendCall('rpc', 'bad_answer', 0);
      else if ('error' in reply) ctx.metrics.backendRefusal('rpc');
      answered(reply ?? { error: messageError('backend_unavailable') });
    },
    () => answered({ error: messageError('backend_unavailable') }),
  ).finally(() => (session.pending -= 1));
};

const ping: Handler<'ping'> = (ctx, ws, _session, { id }) => {
  ctx.delivery.send(ws, encodeReply('pong', {}, id));
};

/** A refused refresh closes the socket with 4401 and is logged once as a security event. */
function refuseRefresh(ctx: HandlerContext, ws: SessionSocket, session: Session, refusal: Rejection): void {
  ctx.metrics.connectionRejected(refusal.reason);
  connectionLog(ctx.log, session).warn({ event: 'token_refresh_rejected', reason: refusal.reason, close_reason: refusal.message, remote: session.remoteAddress }, 'token refresh rejected');
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
  session.claim = result.claim;
  rememberToken(session, result);
  ctx.expiry.add(ws, closesAt(ctx, session));
  ctx.membership.refreshed(ws, session);
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
  rpc,
  ping,
  refresh_token: refreshToken,
};

export function handle(ctx: HandlerContext, ws: SessionSocket, session: Session, msg: ClientMessage): void {
  (handlers[msg.type] as Handler<typeof msg.type>)(ctx, ws, session, msg);
}
