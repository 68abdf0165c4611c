/**
 * A backend's unsubscribe or subscribe (POST /api/v1/unsubscribe, /api/v1/subscribe, or
 * ws-edge/publisher), carried to every node by the broker and applied here to the node's sessions
 * of the user: an unsubscribe takes the room away at once (room_left `access_revoked`) and drops
 * the callback's cached answer; a subscribe joins the room server-side (room_joined without id) and
 * owns it from then on, also a room a grant let in.
 */
import type { AccessChange } from './broker.js';
import type { HandlerContext } from './handler-context.js';
import type { SessionIndex } from './sessions.js';

/** A backend's unsubscribe or subscribe, on this node's sessions of the user (or the one connection). */
export function applyAccessChange(ctx: HandlerContext, sessions: SessionIndex, change: AccessChange): void {
  const { op, userId, room, connectionId } = change;
  if (op === 'unsubscribe') ctx.roomAuth?.forget(userId, room);
  for (const ws of sessions.byUser(userId)) {
    const session = ws.getUserData();
    if (connectionId !== undefined && session.connectionId !== connectionId) continue;
    if (op === 'unsubscribe') ctx.membership.revoke(ws, session, room, 'access_revoked', 'unsubscribe');
    else ctx.membership.join(ws, session, { room, server: true });
  }
}
