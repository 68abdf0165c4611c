/**
 * `signal`: an ephemeral event to the room's other members (typing, read): not echoed, not
 * sequenced, not stored, not recovered; names from WS_SIGNALS, rate limited per connection.
 */
import { messageError } from './errors.js';
import type { Handler, HandlerContext } from './handler-context.js';
import { newBucket, takeToken } from './limits.js';
import type { SignalOutcome } from './metrics.js';
import { encodeSignal } from './protocol.js';
import { sendError } from './replies.js';
import { isValidRoom } from './rooms.js';
import type { Session, SessionSocket } from './session.js';

function refuseSignal(ctx: HandlerContext, ws: SessionSocket, outcome: SignalOutcome, name: Parameters<typeof messageError>[0], id: string | undefined, limit?: number): void {
  ctx.metrics.signal(outcome);
  sendError(ctx, ws, messageError(name, limit), id);
}

/** A signal bucket is made on a connection's first signal: most connections never send one. */
function takeSignal(ctx: HandlerContext, session: Session): boolean {
  const { rate } = ctx.config.signals;
  const now = Date.now();
  const rare = (session.rare ??= {});
  return takeToken((rare.signals ??= newBucket(rate, now)), now, rate, rate);
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
  if (ctx.config.events.signals.has(name)) ctx.lifecycle.signal({ name, room, user_id: session.userId, username: session.username, connection_id: session.connectionId, data });
};

