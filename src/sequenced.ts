/**
 * Client messages on sequenced rooms (WS_HISTORY_ROOMS): joins that wait for the room's position and
 * may recover from `since`, `resume` (every room of a reconnecting client in one frame), and
 * send_message through the history, answered with the event's position once it was delivered here.
 */
import { messageError } from './errors.js';
import { withAccess } from './access.js';
import { announceMembership, entered, isPresenceRoom, isSequenced, sendError, type Handler, type HandlerContext } from './handler-context.js';
import { headOf, readPage } from './history.js';
import type { StreamPosition } from './messages.js';
import { encodeHistory, encodeReply } from './protocol.js';
import { isValidRoom, userRoom } from './rooms.js';
import type { Session, SessionSocket } from './session.js';

/** The personal room's automatic join is tried again this long after its history could not be read. */
const PERSONAL_RETRY_MS = 1000;

/** A plain room's join: at once, as always; with `since` it answers `recovered: false` (nothing is kept). */
export function joinPlain(ctx: HandlerContext, ws: SessionSocket, session: Session, room: string, id: string | undefined, since: StreamPosition | undefined, about?: string): void {
  const reply = since === undefined ? { room } : { room, recovered: false };
  if (ws.isSubscribed(room)) return ctx.delivery.send(ws, encodeReply('room_joined', reply, id));
  if (session.roomCount >= ctx.config.maxRoomsPerConnection) {
    return sendError(ctx, ws, messageError('too_many_rooms', ctx.config.maxRoomsPerConnection), id, about);
  }
  // Announce before subscribing, so the joiner is not told about itself.
  announceMembership(ctx, session, room, 'user_joined');
  ctx.delivery.flush();
  ws.subscribe(room);
  session.roomCount += 1;
  entered(ctx, session, room);
  ctx.delivery.send(ws, encodeReply('room_joined', reply, id));
}

/**
 * A sequenced room's join; `done(joined)` once answered. `about` names the room in an error (a
 * resume's rooms); a resume also takes over a join of the same room under way (the personal room's).
 */
export function joinSequenced(
  ctx: HandlerContext,
  ws: SessionSocket,
  session: Session,
  room: string,
  since: StreamPosition | undefined,
  id: string | undefined,
  done: (joined: boolean) => void,
  about?: string,
): void {
  const personal = room === userRoom(session.userId);
  if (ctx.streams.isJoining(ws, room)) {
    if (about === undefined) {
      sendError(ctx, ws, messageError('join_pending'), id);
      return done(false);
    }
    ctx.streams.cancel(ws, room);
    if (!personal) session.roomCount -= 1;
  }
  const rejoin = ws.isSubscribed(room);
  const position = rejoin && since === undefined ? ctx.streams.position(room) : undefined;
  // A member without a position to recover from: nothing changes, as for a plain room.
  if (position !== undefined) {
    ctx.delivery.send(ws, encodeReply('room_joined', { room, ...position }, id));
    return done(true);
  }
  const counted = !personal && !rejoin;
  if (counted && session.roomCount >= ctx.config.maxRoomsPerConnection) {
    sendError(ctx, ws, messageError('too_many_rooms', ctx.config.maxRoomsPerConnection), id, about);
    return done(false);
  }
  if (counted) session.roomCount += 1;
  ctx.streams.join(room, {
    ws,
    since,
    entering: () => {
      if (counted) announceMembership(ctx, session, room, 'user_joined');
    },
    done: (outcome) => {
      // Cancelled: whoever cancelled (leave_room, a refresh, a close, a takeover) has counted and answered.
      if (session.closed || outcome.kind === 'cancelled') return done(false);
      if (outcome.kind === 'unavailable') {
        sendError(ctx, ws, messageError('unavailable'), id, about ?? (personal ? room : undefined));
        if (personal) retryPersonal(ctx, ws, session);
        else {
          session.roomCount -= 1;
          // A rejoin has left the topic already: the room is gone, and the others are told.
          if (rejoin) announceMembership(ctx, session, room, 'user_left');
          // A rejoin (or one taken over from a pending rejoin) may still hold a presence entry.
          if (isPresenceRoom(ctx, room)) ctx.presence.left(room, session.connectionId, 'left');
        }
        return done(false);
      }
      const recovered = outcome.recovered === undefined ? {} : { recovered: outcome.recovered };
      if (!personal) entered(ctx, session, room);
      ctx.delivery.send(ws, encodeReply('room_joined', { room, ...outcome.position, ...recovered }, id));
      done(true);
    },
  });
}

/** The personal room of a new connection, when sequenced: its `room_joined` (no id) carries the position to resume from. */
export function joinPersonal(ctx: HandlerContext, ws: SessionSocket, session: Session): void {
  joinSequenced(ctx, ws, session, userRoom(session.userId), undefined, undefined, () => {});
}

/** The personal room could not be joined (its history unreachable): tried again until it is, or the socket closes. */
function retryPersonal(ctx: HandlerContext, ws: SessionSocket, session: Session): void {
  const room = userRoom(session.userId);
  setTimeout(() => {
    if (!session.closed && !ws.isSubscribed(room) && !ctx.streams.isJoining(ws, room)) joinPersonal(ctx, ws, session);
  }, PERSONAL_RETRY_MS).unref();
}

/** send_message to a sequenced room: `message_sent` carries the position, after the event reached this node's members. */
export function sendSequenced(ctx: HandlerContext, ws: SessionSocket, session: Session, room: string, envelope: string, id: string | undefined): void {
  ctx.history.append(room, headOf(envelope)).then(
    (position) => {
      ctx.metrics.published('client');
      if (id === undefined) return;
      ctx.streams.afterDelivered(room, position, () => {
        if (!session.closed) ctx.delivery.send(ws, encodeReply('message_sent', { room, epoch: position.epoch, offset: position.offset }, id));
      });
    },
    () => {
      ctx.metrics.brokerPublishError('down');
      if (!session.closed) sendError(ctx, ws, messageError('unavailable'), id);
    },
  );
}

/**
 * Every room of a reconnecting client in one frame (one frame for the rate limit): each is joined
 * (and recovered from its `since`) and answered on its own, then `resumed` follows.
 */
export const resume: Handler<'resume'> = (ctx, ws, session, { rooms, id }) => {
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
      continue;
    }
    const join = (): void => {
      if (isSequenced(ctx, room)) return joinSequenced(ctx, ws, session, room, since, id, settled, room);
      joinPlain(ctx, ws, session, room, id, since, room);
      settled();
    };
    withAccess(ctx, ws, session, room, grant, id, room, join, settled);
  }
  settled();
};

/** `history`: a joined sequenced room's kept events, as they were delivered; at most WS_HISTORY_SIZE. */
export const history: Handler<'history'> = (ctx, ws, session, { room, since, limit, reverse, id }) => {
  if (!isValidRoom(room)) return sendError(ctx, ws, messageError('invalid_room'), id);
  if (!isSequenced(ctx, room)) return sendError(ctx, ws, messageError('no_history'), id);
  if (!ws.isSubscribed(room)) return sendError(ctx, ws, messageError('history_not_joined'), id);
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
