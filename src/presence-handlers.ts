/**
 * Client messages about who is in a room and what they do right now: `presence` (the present
 * users, capped), `presence_stats` (counts, for any size), and `signal` (an ephemeral event to the
 * room's other members: not echoed, not sequenced, not stored, not recovered).
 */
import { messageError } from './errors.js';
import type { Handler, HandlerContext } from './handler-context.js';
import { isPresenceRoom } from './membership.js';
import { sendError } from './replies.js';
import { newBucket, takeToken } from './limits.js';
import { MAX_PRESENCE_USERS } from './messages.js';
import type { SignalOutcome } from './metrics.js';
import { encodeReply, encodeSignal } from './protocol.js';
import { isValidRoom } from './rooms.js';
import type { Session, SessionSocket } from './session.js';

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

function refuseSignal(ctx: HandlerContext, ws: SessionSocket, outcome: SignalOutcome, name: Parameters<typeof messageError>[0], id: string | undefined, limit?: number): void {
  ctx.metrics.signal(outcome);
  sendError(ctx, ws, messageError(name, limit), id);
}

/** A signal bucket is made on a connection's first signal: most connections never send one. */
function takeSignal(ctx: HandlerContext, session: Session): boolean {
  const { rate } = ctx.config.signals;
  const now = Date.now();
  return takeToken((session.signals ??= newBucket(rate, now)), now, rate, rate);
}

/** Not to the sender (uWS's ws.publish skips it), to the other members here and on the other nodes. */
export const signal: Handler<'signal'> = (ctx, ws, session, { room, name, data, id }) => {
  if (!isValidRoom(room)) return refuseSignal(ctx, ws, 'invalid', 'invalid_room', id);
  if (!ctx.config.signals.names.has(name)) return refuseSignal(ctx, ws, 'unknown_name', 'unknown_signal', id);
  if (!ctx.membership.isMember(ws, room)) return refuseSignal(ctx, ws, 'not_joined', 'signal_not_joined', id);
  if (!takeSignal(ctx, session)) return refuseSignal(ctx, ws, 'rate_limited', 'signal_rate_limited', id, ctx.config.signals.rate);
  const payload = encodeSignal(name, room, data, session.username, session.userId);
  ctx.delivery.publishExcept(ws, room, payload);
  ctx.broker.relay(room, payload);
  ctx.metrics.signal('delivered');
};
