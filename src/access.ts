/**
 * Who may be in a room, decided in one order: the own personal room; WS_ROOM_ACCESS=open; the
 * connection token's `rooms` claim; a room grant sent with the join; the authorization callback
 * (WS_ROOM_ACCESS=callback). A membership that came from a grant, the callback or a backend's
 * subscribe is remembered per connection, so a refreshed token does not drop it; a grant's ends at
 * its `exp`. Memberships are taken away (room_left with a reason, the connection stays) by a
 * refreshed token, an expired grant, or a backend's unsubscribe on any node.
 */
import type { RoomGrant } from './auth.js';
import { messageError, type MessageError, type MessageErrorName } from './errors.js';
import { isPresenceRoom, leaveRoom, sendError, type HandlerContext } from './handler-context.js';
import type { RoomLeftReason } from './messages.js';
import type { AccessSource } from './metrics.js';
import { encodeReply } from './protocol.js';
import { covers, userRoom } from './rooms.js';
import type { GrantItem, Session, SessionSocket } from './session.js';

type Decision = { readonly ok: true; readonly source: AccessSource; readonly grant?: RoomGrant } | { readonly ok: false; readonly source: AccessSource; readonly result: 'deny' | 'error'; readonly error: MessageError };

const allow = (source: AccessSource, grant?: RoomGrant): Decision => (grant === undefined ? { ok: true, source } : { ok: true, source, grant });
const refuse = (source: AccessSource, name: MessageErrorName, result: 'deny' | 'error' = 'deny'): Decision => ({ ok: false, source, result, error: messageError(name) });

function checkGrant(ctx: HandlerContext, session: Session, room: string, token: string): Decision {
  const grant = ctx.auth.verifyGrant(token);
  if (grant === 'invalid') return refuse('grant', 'grant_invalid');
  if (grant === 'expired') return refuse('grant', 'grant_expired');
  if (grant.userId !== session.userId) return refuse('grant', 'grant_other_user');
  if (grant.room !== room) return refuse('grant', 'grant_other_room');
  return allow('grant', grant);
}

/** The decision for a valid room name; a promise only when the callback is asked. */
function authorize(ctx: HandlerContext, session: Session, room: string, grant: string | undefined): Decision | Promise<Decision> {
  if (room.startsWith('user:')) return room === userRoom(session.userId) ? allow('personal') : refuse('personal', 'not_granted');
  if (ctx.config.roomAccess === 'open') return allow('open');
  if (session.grant !== undefined && covers(session.grant, room)) return allow('claim');
  if (grant !== undefined) return checkGrant(ctx, session, room, grant);
  if (ctx.roomAuth === undefined) return refuse('claim', 'not_granted');
  return ctx.roomAuth.ask({ userId: session.userId, username: session.username, room, connectionId: session.connectionId }).then(
    (yes) => (yes ? allow('callback') : refuse('callback', 'auth_denied')),
    () => refuse('callback', 'auth_unavailable', 'error'),
  );
}

/** Remembers how the room was let in; a grant's membership is scheduled to end at its `exp`. */
function admit(ctx: HandlerContext, ws: SessionSocket, session: Session, room: string, decision: Decision & { ok: true }): void {
  forgetAdmission(ctx, session, room);
  if (decision.grant !== undefined) {
    const item: GrantItem = { ws, session, room, expiresAt: decision.grant.expiresAt + ctx.config.jwt.clockToleranceSeconds * 1000 };
    ctx.grants.add(item, item.expiresAt);
    (session.admissions ??= new Map()).set(room, { source: 'grant', item });
  } else if (decision.source === 'callback') {
    (session.admissions ??= new Map()).set(room, { source: 'callback' });
  }
}

/** Drops what a room's admission holds (a leave, a revocation, a new admission). */
export function forgetAdmission(ctx: HandlerContext, session: Session, room: string): void {
  const admission = session.admissions?.get(room);
  if (admission === undefined) return;
  if (admission.source === 'grant') ctx.grants.remove(admission.item, admission.item.expiresAt);
  session.admissions!.delete(room);
}

/**
 * Decides, then runs `proceed` (the join) or answers the refusal (`about`: the room of a resume).
 * A slow callback delays this join only: the connection's other messages go on meanwhile.
 */
export function withAccess(
  ctx: HandlerContext,
  ws: SessionSocket,
  session: Session,
  room: string,
  grant: string | undefined,
  id: string | undefined,
  about: string | undefined,
  proceed: () => void,
  refused: () => void = () => {},
): void {
  const finish = (decision: Decision): void => {
    ctx.metrics.roomAuthorization(decision.source, decision.ok ? 'allow' : decision.result);
    if (session.closed) return refused();
    if (!decision.ok) {
      sendError(ctx, ws, decision.error, id, about);
      return refused();
    }
    admit(ctx, ws, session, room, decision);
    proceed();
  };
  // A member asking again without a grant is answered as a member (nothing changes).
  if (ws.isSubscribed(room) && grant === undefined) return proceed();
  const decision = authorize(ctx, session, room, grant);
  if (!(decision instanceof Promise)) return finish(decision);
  // The answer is used only if nothing cancelled the join meanwhile (a leave, a revocation, a newer join).
  const pending = (session.authPending ??= new Map());
  if (pending.size >= ctx.config.maxRoomsPerConnection) {
    sendError(ctx, ws, messageError('auth_unavailable'), id, about);
    return refused();
  }
  const ticket = {};
  pending.set(room, ticket);
  void decision.then((d) => {
    if (pending.get(room) !== ticket) return refused();
    pending.delete(room);
    finish(d);
  });
}

/** Cancels a join waiting for the callback; true when there was one. */
export function cancelPendingAuth(session: Session, room: string): boolean {
  return session.authPending?.delete(room) === true;
}

/** A closed connection: its presence entries leave (after the grace where `code` allows), its admissions and grant timers go. */
export function sessionClosed(ctx: HandlerContext, session: Session, code: number): void {
  ctx.presence.closed(session.connectionId, code);
  for (const room of [...(session.admissions?.keys() ?? [])]) forgetAdmission(ctx, session, room);
}

/** Whether a refreshed token's claim must still cover the room (false: a grant, the callback or a backend let it in). */
export function claimBound(session: Session, room: string): boolean {
  return session.admissions?.has(room) !== true;
}

/** Takes the room away (or a join of it under way): `room_left` with `reason`; the connection stays. */
export function revoke(ctx: HandlerContext, ws: SessionSocket, session: Session, room: string, reason: RoomLeftReason, cause: 'unsubscribe' | 'token' | 'grant_expired'): void {
  if (ws.isSubscribed(room)) leaveRoom(ctx, ws, session, room, 'revoked');
  else if (ctx.streams.cancel(ws, room)) cancelledJoin(ctx, session, room, 'revoked');
  else if (!cancelPendingAuth(session, room)) return;
  forgetAdmission(ctx, session, room);
  ctx.metrics.revocation(cause);
  ctx.delivery.send(ws, encodeReply('room_left', { room, reason }, undefined));
}

/** A sequenced join under way was cancelled: it counted as joined, and a rejoin kept its presence entry. */
export function cancelledJoin(ctx: HandlerContext, session: Session, room: string, reason: 'left' | 'revoked'): void {
  session.roomCount -= 1;
  if (isPresenceRoom(ctx, room)) ctx.presence.left(room, session.connectionId, reason);
}

/** The grant's `exp` passed: the membership ends, unless a newer grant (or a leave) replaced it. */
export function grantExpired(ctx: HandlerContext, item: GrantItem): void {
  const admission = item.session.admissions?.get(item.room);
  if (item.session.closed || admission?.source !== 'grant' || admission.item !== item) return;
  revoke(ctx, item.ws, item.session, item.room, 'grant_expired', 'grant_expired');
}
