/**
 * Who may be in a room, decided in one order: the own personal room; WS_ROOM_ACCESS=open; the
 * connection token's `rooms` claim; a room grant sent with the join; the authorization callback
 * (WS_ROOM_ACCESS=callback). Only the decision lives here: what a membership keeps of it (a
 * grant's expiry, a callback's admission) is membership.ts's.
 */
import type { Authenticator, RoomGrant } from './auth.js';
import type { Config } from './config.js';
import { messageError, type MessageError, type MessageErrorName } from './errors.js';
import type { AccessSource } from './metrics.js';
import type { RoomAuthorizer } from './room-auth.js';
import { canJoin, covers, userRoom } from './rooms.js';
import type { Session } from './session.js';

export interface AccessContext {
  readonly config: Config;
  readonly auth: Authenticator;
  /** WS_ROOM_ACCESS=callback: asks the backend about rooms the token does not cover. */
  readonly roomAuth: RoomAuthorizer | undefined;
}

export type Decision =
  | { readonly ok: true; readonly source: AccessSource; readonly grant?: RoomGrant }
  | { readonly ok: false; readonly source: AccessSource; readonly result: 'deny' | 'error'; readonly error: MessageError };

const allow = (source: AccessSource, grant?: RoomGrant): Decision => (grant === undefined ? { ok: true, source } : { ok: true, source, grant });
const refuse = (source: AccessSource, name: MessageErrorName, result: 'deny' | 'error' = 'deny'): Decision => ({ ok: false, source, result, error: messageError(name) });

function checkGrant(ctx: AccessContext, session: Session, room: string, token: string): Decision {
  const grant = ctx.auth.verifyGrant(token);
  if (grant === 'invalid') return refuse('grant', 'grant_invalid');
  if (grant === 'expired') return refuse('grant', 'grant_expired');
  if (grant === 'revoked') return refuse('grant', 'grant_revoked');
  if (grant.userId !== session.userId) return refuse('grant', 'grant_other_user');
  if (grant.room !== room) return refuse('grant', 'grant_other_room');
  return allow('grant', grant);
}

/** Whether the token alone lets the connection in (its own personal room, open access, or the `rooms` claim). */
export function claimCovers(ctx: AccessContext, session: Session, room: string): boolean {
  return canJoin(session.userId, session.claim, room, ctx.config.roomAccess);
}

/** The decision for a valid room name; a promise only when the callback is asked. */
export function decide(ctx: AccessContext, session: Session, room: string, grant: string | undefined): Decision | Promise<Decision> {
  if (room.startsWith('user:')) return room === userRoom(session.userId) ? allow('personal') : refuse('personal', 'not_granted');
  if (ctx.config.roomAccess === 'open') return allow('open');
  if (session.claim !== undefined && covers(session.claim, room)) return allow('claim');
  if (grant !== undefined) return checkGrant(ctx, session, room, grant);
  if (ctx.roomAuth === undefined) return refuse('claim', 'not_granted');
  return ctx.roomAuth.ask({ userId: session.userId, username: session.username, room, connectionId: session.connectionId }).then(
    (yes) => (yes ? allow('callback') : refuse('callback', 'auth_denied')),
    () => refuse('callback', 'auth_unavailable', 'error'),
  );
}
