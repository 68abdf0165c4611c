/** Client messages about who is in a room: `presence` (the present users, capped) and `presence_stats` (counts, for any size). */
import { messageError } from './errors.js';
import type { Handler, HandlerContext } from './handler-context.js';
import { isPresenceRoom } from './membership.js';
import { sendError } from './replies.js';
import { MAX_PRESENCE_USERS } from './messages.js';
import { encodeReply } from './protocol.js';
import { isValidRoom } from './rooms.js';
import type { SessionSocket } from './session.js';

/** The room a presence question may be asked about; answers the refusal otherwise. */
function presenceRoom(ctx: HandlerContext, ws: SessionSocket, room: string, id: string | undefined): boolean {
  if (!isValidRoom(room)) sendError(ctx, ws, messageError('invalid_room'), id);
  else if (!isPresenceRoom(ctx, room)) sendError(ctx, ws, messageError('no_presence'), id);
  else if (!ctx.membership.isMember(ws, room)) sendError(ctx, ws, messageError('presence_not_joined'), id);
  else return true;
  return false;
}

export const presence: Handler<'presence'> = (ctx, ws, session, { room, id }) => {
  if (!presenceRoom(ctx, ws, room, id)) return;
  ctx.presence.snapshot(room, MAX_PRESENCE_USERS).then(
    ({ version, users, count }) => {
      if (!session.closed) ctx.delivery.send(ws, encodeReply('presence', { room, data: { users, count, truncated: count > users.length, version } }, id));
    },
    () => !session.closed && sendError(ctx, ws, messageError('presence_unavailable'), id),
  );
};

export const presenceStats: Handler<'presence_stats'> = (ctx, ws, session, { room, id }) => {
  if (!presenceRoom(ctx, ws, room, id)) return;
  ctx.presence.stats(room).then(
    (stats) => {
      if (!session.closed) ctx.delivery.send(ws, encodeReply('presence_stats', { room, data: stats }, id));
    },
    () => !session.closed && sendError(ctx, ws, messageError('presence_unavailable'), id),
  );
};
