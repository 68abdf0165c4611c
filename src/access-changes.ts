/**
 * A backend's unsubscribe or subscribe (POST /api/v1/unsubscribe, /api/v1/subscribe, or
 * ws-edge/publisher), carried to every node by the broker and applied here to the node's sessions
 * of the user: an unsubscribe takes the room away at once (room_left `access_revoked`) and drops
 * the callback's cached answer; a subscribe joins the room server-side (room_joined without id) and
 * owns it from then on, also a room a grant let in. A revocation (POST /api/v1/revoke) closes the
 * sessions whose token it covers with 4401 `token revoked`.
 */
import type { AccessChange } from './broker.js';
import { REJECTIONS } from './errors.js';
import type { HandlerContext } from './handler-context.js';
import { sessionRevoked, type Revocation } from './revocation.js';
import { closeWith, type SessionSocket } from './session.js';
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

/** Closes this node's sessions whose token `rule` covers: the user's (by issue time), or any user's (by `jti`). */
export function applyRevocation(ctx: Pick<HandlerContext, 'metrics' | 'delivery'>, sessions: SessionIndex, rule: Revocation): void {
  const candidates: SessionSocket[] = rule.kind === 'user' ? sessions.byUser(rule.userId) : [...sessions.all()];
  const covered = candidates.filter((ws) => sessionRevoked(ws.getUserData(), rule));
  if (covered.length === 0) return;
  // What was published before the revocation still reaches the user.
  ctx.delivery.flush();
  for (const ws of covered) {
    if (ws.getUserData().closed) continue;
    ctx.metrics.revokedClose();
    closeWith(ws, REJECTIONS.token_revoked);
  }
}
