/**
 * The one owner of a connection's rooms (`session.rooms`, one Member per room). Every way in
 * (join_room, a resume's room, a backend's subscribe, the personal room) and every way out (leave,
 * a revocation, a grant's expiry, a cancelled join, the close) goes through here, and so does
 * everything that follows from them: the room count, the access decision's permit and grant timer,
 * presence entries, user_joined/user_left, the uWS topic, and the node's broker and stream interest.
 *
 * Two invariants, each with a test per way it was once broken:
 * - every join request is answered exactly once: with room_joined, an error, or `join_cancelled`
 *   when the room is left or taken away first; a later request for a room being joined waits for
 *   the same outcome (with `since`, the sequenced join starts again from the newer position);
 * - a member the others were told about (user_joined) leaves with a user_left, whatever ends it,
 *   also in the middle of a rejoin.
 *
 * room_joined means subscribed: a plain room's first local member is answered once the node's broker
 * subscription is confirmed (at most CONFIRM_TIMEOUT_MS; at once while the broker is down); a
 * sequenced join waits for the room's position (streams.ts), which needs the same confirmation.
 */
import { claimCovers, decide, type AccessContext, type Decision } from './access.js';
import type { Announcer } from './announcements.js';
import type { Broker } from './broker.js';
import type { Delivery } from './delivery.js';
import { messageError, type MessageError } from './errors.js';
import type { ExpiryScheduler } from './expiry.js';
import type { Lifecycle } from './lifecycle.js';
import type { RoomLeftReason, StreamPosition } from './messages.js';
import type { Metrics } from './metrics.js';
import type { PresenceTracker } from './presence-tracker.js';
import { encodeReply } from './protocol.js';
import { sendError } from './replies.js';
import { covers, userRoom } from './rooms.js';
import type { GrantItem, JoinReply, Member, Permit, Session, SessionSocket } from './session.js';
import type { JoinOutcome, Streams } from './streams.js';
import type { TemplatedApp } from './uws.js';

/** The personal room's automatic join is tried again this long after its history could not be read. */
const PERSONAL_RETRY_MS = 1000;
/** A first member's room_joined waits at most this long for the broker's confirmation. */
export const CONFIRM_TIMEOUT_MS = 5000;

export interface MembershipContext extends AccessContext {
  readonly metrics: Metrics;
  readonly broker: Broker;
  readonly delivery: Delivery;
  /** For `numSubscribers`: the local member count of a room, kept by uWS. */
  readonly app: TemplatedApp;
  readonly streams: Streams;
  readonly presence: PresenceTracker;
  /** Ends memberships that came from a room grant at its `exp`. */
  readonly grants: ExpiryScheduler<GrantItem>;
  /** Told of each room's first local member and its last (room.occupied, room.vacated). */
  readonly lifecycle: Lifecycle;
  /** user_joined/user_left within the cluster-wide cap. */
  readonly announcer: Announcer;
}

/** A join: a client's (with its id), a resume's room (`about`, `settled`), or a backend's (`server`). */
export interface JoinRequest {
  readonly room: string;
  readonly since?: StreamPosition | undefined;
  readonly grant?: string | undefined;
  readonly id?: string | undefined;
  readonly about?: string | undefined;
  readonly settled?: () => void;
  /** A backend's subscribe: let in without a decision, and kept across token refreshes. */
  readonly server?: boolean;
}

export interface Membership {
  /** The connection was admitted: its personal room is joined (room_joined without id when sequenced). */
  opened(ws: SessionSocket, session: Session): void;
  join(ws: SessionSocket, session: Session, request: JoinRequest): void;
  /** leave_room: answered room_left (or not_a_member). */
  leave(ws: SessionSocket, session: Session, room: string, id: string | undefined): void;
  /** Takes the room (or its join under way) away: room_left with `reason`; the connection stays. */
  revoke(ws: SessionSocket, session: Session, room: string, reason: RoomLeftReason, cause: 'unsubscribe' | 'token' | 'grant_expired'): void;
  /** A refreshed token: rooms its claim no longer covers are revoked, unless something else let them in. */
  refreshed(ws: SessionSocket, session: Session): void;
  /** A room grant's `exp` passed. */
  grantExpired(item: GrantItem): void;
  /** The socket is closing (its topics are freed by uWS right after). */
  closed(ws: SessionSocket, session: Session, code: number): void;
  /** From uWS: a topic's local member count changed. */
  topic(room: string, newCount: number, oldCount: number): void;
  /** From the broker: the node's subscription to `room` is confirmed (again). */
  confirmed(room: string): void;
  /** Whether the connection is a member of `room` (joined; in the topic). */
  isMember(ws: SessionSocket, room: string): boolean;
}

/** Whether `room` is sequenced (WS_HISTORY_ROOMS). */
export function isSequenced(ctx: { readonly config: AccessContext['config'] }, room: string): boolean {
  return covers(ctx.config.history.rooms, room);
}

/** Whether `room` keeps presence (WS_PRESENCE_ROOMS); personal rooms never do. */
export function isPresenceRoom(ctx: { readonly config: AccessContext['config'] }, room: string): boolean {
  return covers(ctx.config.presence.rooms, room) && !room.startsWith('user:');
}

/** The module's state: the context and the plain rooms whose first local member waits for the broker's confirmation. */
interface Core {
  readonly ctx: MembershipContext;
  readonly unconfirmed: Map<string, { readonly answers: Array<() => void>; readonly timer: NodeJS.Timeout }>;
}

/** One connection's member of one room, as every step below takes it. */
interface Place {
  readonly ws: SessionSocket;
  readonly session: Session;
  readonly room: string;
  readonly member: Member;
}

const isPersonal = (session: Session, room: string): boolean => room === userRoom(session.userId);

/** A connection's rooms are made on its first member and dropped with its last: an idle connection holds none. */
function keepMember(session: Session, room: string, member: Member): void {
  (session.rooms ??= new Map()).set(room, member);
}

function dropMember(session: Session, room: string): void {
  session.rooms?.delete(room);
  if (session.rooms?.size === 0) session.rooms = undefined;
}
const newMember = (phase: Member['phase'], replies: JoinReply[] | undefined, since?: StreamPosition): Member => ({ phase, entered: false, permit: undefined, replies, since });

/** The permits that hold nothing of their own, one object for every member let in that way. */
const BY_CALLBACK: Permit = Object.freeze({ source: 'callback' });
const BY_SERVER: Permit = Object.freeze({ source: 'server' });

/**
 * Settled members (joined, told, nobody waiting, let in by the claim, the callback or a backend)
 * differ only in their room, so each is one of these frozen objects, by permit: a joined room costs
 * a connection its `rooms` entry, not a Member of its own (issue 25). A room grant's member keeps
 * its own (the grant's expiry item is its own); a write to a shared one throws, so every change
 * takes a copy first (`own`).
 */
const SETTLED = new Map<Permit | undefined, Member>(
  [undefined, BY_CALLBACK, BY_SERVER].map((permit) => [permit, Object.freeze({ phase: 'joined', entered: true, permit, replies: undefined, since: undefined })]),
);

/** Swaps a member that has just settled for the shared one; the place's own copy is left to the garbage collector. */
function settle({ session, room, member }: Place): void {
  if (member.phase !== 'joined' || !member.entered || member.replies !== undefined) return;
  const shared = SETTLED.get(member.permit);
  if (shared !== undefined && session.rooms?.get(room) === member) session.rooms.set(room, shared);
}

/** The place with a member of its own, to be changed: a shared (settled) member is replaced by a copy. */
function own(place: Place): Place {
  const { session, room, member: shared } = place;
  if (SETTLED.get(shared.permit) !== shared) return place;
  const member: Member = { phase: shared.phase, entered: shared.entered, permit: shared.permit, replies: undefined, since: undefined };
  keepMember(session, room, member);
  return { ...place, member };
}
const presenceEntry = (session: Session) => ({ connectionId: session.connectionId, userId: session.userId, username: session.username });

/** user_joined/user_left, unless disabled, a presence room (presence events instead) or a personal room; within the cap (announcements.ts). */
function announce({ ctx }: Core, session: Session, room: string, type: 'user_joined' | 'user_left'): void {
  if (!ctx.config.membershipEvents || isPresenceRoom(ctx, room) || isPersonal(session, room)) return;
  if (type === 'user_left') return ctx.announcer.left(room, session.connectionId);
  // Above the cap on this node alone: the room is full without asking.
  if (ctx.app.numSubscribers(room) >= ctx.config.membershipEventsMaxMembers) return ctx.metrics.announcement('full');
  ctx.announcer.joined(room, { connectionId: session.connectionId, userId: session.userId, username: session.username });
}

/** Answers every request waiting on the member, each once. */
function answerAll(member: Member, answer: (reply: JoinReply) => void): void {
  const replies = member.replies;
  if (replies === undefined) return;
  member.replies = undefined;
  for (const reply of replies) {
    answer(reply);
    reply.settled?.();
  }
}

function refuseAll({ ctx }: Core, { ws, room, member }: Place, error: MessageError): void {
  answerAll(member, (reply) => sendError(ctx, ws, error, reply.id, reply.about ?? (isPersonal(ws.getUserData(), room) ? room : undefined)));
}

/** room_joined to every waiting request, the member's position (sequenced rooms) in `fields`. */
function answerJoined({ ctx }: Core, place: Place, fields: Record<string, unknown>): void {
  const { ws, room, member } = place;
  member.phase = 'joined';
  member.since = undefined;
  answerAll(member, (reply) => ctx.delivery.send(ws, encodeReply('room_joined', { room, ...fields }, reply.id)));
  settle(place);
}

/** A room grant's scheduled end is dropped: the member leaves, or is let in some other way from now on. */
function dropGrant({ ctx }: Core, member: Member): void {
  if (member.permit?.source === 'grant') ctx.grants.remove(member.permit.item, member.permit.item.expiresAt);
}

/** The token's claim now covers the room: no grant's expiry ends the membership any more. */
function claimed(core: Core, place: Place): void {
  if (place.member.permit === undefined) return;
  const { member } = own(place);
  dropGrant(core, member);
  member.permit = undefined;
  settle({ ...place, member });
}

/** Keeps how a room outside the token's claim was let in; a grant's membership is scheduled to end at its `exp`. */
function permit(core: Core, { ws, session, room, member }: Place, decision: Decision & { ok: true }): void {
  // A backend's subscribe owns the membership: a grant sent later neither replaces it nor ends it.
  if (member.permit?.source === 'server') return;
  if (decision.grant !== undefined) {
    dropGrant(core, member);
    const item: GrantItem = { ws, session, room, expiresAt: decision.grant.expiresAt + core.ctx.config.jwt.clockToleranceSeconds * 1000 };
    core.ctx.grants.add(item, item.expiresAt);
    member.permit = { source: 'grant', item };
  } else if (decision.source === 'callback') {
    dropGrant(core, member);
    member.permit = BY_CALLBACK;
  }
}

/** Ends a membership or a join under way: out of the topic, the others told, the waiting requests answered with `error`. */
function end(core: Core, place: Place, reason: 'left' | 'revoked', error = messageError('join_cancelled')): void {
  const { ctx } = core;
  const { ws, session, room, member } = place;
  dropMember(session, room);
  if (!isPersonal(session, room)) session.roomCount -= 1;
  if (member.phase === 'joining') ctx.streams.cancel(ws, room);
  else if (member.phase !== 'deciding') {
    // What was published before the leave still reaches the leaver.
    ctx.delivery.flush();
    ws.unsubscribe(room);
  }
  if (member.entered) announce(core, session, room, 'user_left');
  if (isPresenceRoom(ctx, room)) ctx.presence.left(room, session.connectionId, reason);
  dropGrant(core, member);
  refuseAll(core, place, error);
}

/** In the topic: answered now, or once the node's broker subscription of the room is confirmed. */
function answerSubscribed(core: Core, place: Place, fields: Record<string, unknown>): void {
  const waiting = core.unconfirmed.get(place.room);
  if (waiting === undefined || !core.ctx.broker.isUp()) return answerJoined(core, place, fields);
  const { session, room, member } = place;
  member.phase = 'confirming';
  waiting.answers.push(() => {
    if (!session.closed && session.rooms?.get(room) === member && member.phase === 'confirming') answerJoined(core, place, fields);
  });
}

function joinPlain(core: Core, place: Place): void {
  const { ctx } = core;
  const { ws, session, room, member } = place;
  if (!member.entered) announce(core, session, room, 'user_joined');
  member.entered = true;
  ctx.delivery.flush();
  ws.subscribe(room);
  if (isPresenceRoom(ctx, room)) ctx.presence.entered(room, presenceEntry(session));
  answerSubscribed(core, place, member.since === undefined ? {} : { recovered: false });
}

function streamDone(core: Core, place: Place, outcome: JoinOutcome): void {
  const { session, room, member } = place;
  // Cancelled: whoever cancelled (a leave, a revocation, a close, a newer `since`) has answered.
  if (outcome.kind === 'cancelled' || session.closed || session.rooms?.get(room) !== member) return;
  if (outcome.kind === 'joined') {
    if (isPresenceRoom(core.ctx, room)) core.ctx.presence.entered(room, presenceEntry(session));
    return answerJoined(core, place, { ...outcome.position, ...(outcome.recovered === undefined ? {} : { recovered: outcome.recovered }) });
  }
  if (!isPersonal(session, room)) return end(core, place, 'left', messageError('unavailable'));
  dropMember(session, room);
  refuseAll(core, place, messageError('unavailable'));
  retryPersonal(core, place.ws, session);
}

/** A sequenced join (or rejoin): answered once the room's position is known and, with `since`, the missed events were sent. */
function joinStream(core: Core, place: Place): void {
  const { ws, session, room, member } = place;
  member.phase = 'joining';
  core.ctx.streams.join(room, {
    ws,
    since: member.since,
    entering: () => {
      if (!member.entered) announce(core, session, room, 'user_joined');
      member.entered = !isPersonal(session, room);
    },
    done: (outcome) => streamDone(core, place, outcome),
  });
}

function proceed(core: Core, place: Place): void {
  if (isSequenced(core.ctx, place.room)) joinStream(core, place);
  else joinPlain(core, place);
}

/** A member asking again: room_joined with the room's position, nothing else changes. */
function answerMember(core: Core, place: Place): void {
  const sequenced = isSequenced(core.ctx, place.room);
  answerJoined(core, place, sequenced ? { ...core.ctx.streams.position(place.room) } : place.member.since === undefined ? {} : { recovered: false });
}

function decided(core: Core, place: Place, decision: Decision): void {
  const { session, room, member } = place;
  core.ctx.metrics.roomAuthorization(decision.source, decision.ok ? 'allow' : decision.result);
  if (!decision.ok) {
    if (member.phase === 'deciding') {
      dropMember(session, room);
      if (!isPersonal(session, room)) session.roomCount -= 1;
    }
    refuseAll(core, place, decision.error);
    // A member refused a room grant stays as it was.
    return settle(place);
  }
  permit(core, place, decision);
  if (member.phase === 'deciding') proceed(core, place);
  else answerMember(core, place);
}

/** A request for a room the connection is in or joining. */
function again(core: Core, found: Place, request: JoinRequest, reply: JoinReply): void {
  const { ctx } = core;
  const place = own(found);
  const { ws, session, room, member } = place;
  // A backend's subscribe of a room the connection is in or joining: the backend owns it from now on.
  if (request.server === true) {
    dropGrant(core, member);
    member.permit = BY_SERVER;
    if (member.phase === 'deciding') proceed(core, place);
    // Answered without a reply of its own: settled as it stands.
    else settle(place);
    return;
  }
  (member.replies ??= []).push(reply);
  if (request.since !== undefined) member.since = request.since;
  // Waiting already: answered with the same outcome; a newer `since` starts a sequenced join again from there.
  if (member.phase === 'deciding' || member.phase === 'confirming') return;
  if (member.phase === 'joining') {
    if (request.since === undefined) return;
    ctx.streams.cancel(ws, room);
    return joinStream(core, place);
  }
  if (request.grant !== undefined) {
    const decision = decide(ctx, session, room, request.grant);
    if (!(decision instanceof Promise)) return decided(core, place, decision);
  }
  // A sequenced member recovering from `since`, or whose position is not known here: rejoined through its stream.
  if (isSequenced(ctx, room) && (request.since !== undefined || ctx.streams.position(room) === undefined)) return joinStream(core, place);
  answerMember(core, place);
}

function join(core: Core, ws: SessionSocket, session: Session, request: JoinRequest): void {
  const { ctx } = core;
  const { room } = request;
  const reply: JoinReply = { id: request.id, about: request.about, settled: request.settled };
  const existing = session.rooms?.get(room);
  if (existing !== undefined) return again(core, { ws, session, room, member: existing }, request, reply);
  const personal = isPersonal(session, room);
  if (personal && !isSequenced(ctx, room) && request.server !== true) {
    ctx.delivery.send(ws, encodeReply('room_joined', request.since === undefined ? { room } : { room, recovered: false }, reply.id));
    return reply.settled?.();
  }
  if (!personal && session.roomCount >= ctx.config.maxRoomsPerConnection) {
    sendError(ctx, ws, messageError('too_many_rooms', ctx.config.maxRoomsPerConnection), reply.id, reply.about);
    return reply.settled?.();
  }
  const place: Place = { ws, session, room, member: newMember('deciding', [reply], request.since) };
  keepMember(session, room, place.member);
  if (!personal) session.roomCount += 1;
  if (request.server === true) {
    place.member.permit = BY_SERVER;
    return proceed(core, place);
  }
  const decision = decide(ctx, session, room, request.grant);
  if (!(decision instanceof Promise)) return decided(core, place, decision);
  // A slow callback delays this join only; its answer counts only while the join still waits for it.
  void decision.then((d) => {
    if (!session.closed && session.rooms?.get(room) === place.member && place.member.phase === 'deciding') decided(core, place, d);
  });
}

/** The personal room, no decision needed: sequenced, answered by a room_joined without id; plain, in the topic before `connected` lists it. */
function joinPersonal(core: Core, ws: SessionSocket, session: Session): void {
  const room = userRoom(session.userId);
  if (isSequenced(core.ctx, room)) {
    const member = newMember('joining', [{ id: undefined, about: undefined, settled: undefined }]);
    keepMember(session, room, member);
    return joinStream(core, { ws, session, room, member });
  }
  // A plain personal room is joined for the connection's whole life: it keeps no Member.
  core.ctx.delivery.flush();
  ws.subscribe(room);
}

/** The personal room could not be joined (its history unreachable): tried again until it is, or the socket closes. */
function retryPersonal(core: Core, ws: SessionSocket, session: Session): void {
  setTimeout(() => {
    if (!session.closed && !(session.rooms?.has(userRoom(session.userId)) ?? false)) joinPersonal(core, ws, session);
  }, PERSONAL_RETRY_MS).unref();
}

function revoke(core: Core, place: Place, reason: RoomLeftReason, cause: 'unsubscribe' | 'token' | 'grant_expired'): void {
  end(core, place, 'revoked');
  core.ctx.metrics.revocation(cause);
  core.ctx.delivery.send(place.ws, encodeReply('room_left', { room: place.room, reason }, undefined));
}

/** Ends every membership of a closing socket; the others are told once uWS has freed its topics. */
function closed(core: Core, ws: SessionSocket, session: Session): void {
  const left: string[] = [];
  for (const [room, member] of session.rooms ?? []) {
    if (member.phase === 'joining') core.ctx.streams.cancel(ws, room);
    if (member.entered) left.push(room);
    dropGrant(core, member);
  }
  // Whether uWS frees the topics before or after `close` differs by build: told a turn later, the closer is not counted.
  if (left.length > 0) setImmediate(() => left.forEach((room) => announce(core, session, room, 'user_left')));
  session.rooms = undefined;
  session.roomCount = 0;
}

/** A topic's first local member came or its last went: the node's broker interest (a sequenced room's is its stream's). */
function topic(core: Core, room: string, occupied: boolean): void {
  const { ctx, unconfirmed } = core;
  if (occupied) ctx.metrics.roomAdded();
  else ctx.metrics.roomRemoved();
  ctx.lifecycle.room(room, occupied);
  if (isSequenced(ctx, room)) {
    if (!occupied) ctx.streams.release(room, 0);
    return;
  }
  const waiting = unconfirmed.get(room);
  if (waiting !== undefined) clearTimeout(waiting.timer);
  unconfirmed.delete(room);
  if (!occupied) return ctx.broker.unsubscribe(room);
  // Personal rooms are joined by `connected`, which waits for nothing: no answer to hold back.
  if (!room.startsWith('user:')) unconfirmed.set(room, { answers: [], timer: setTimeout(() => confirmed(core, room), CONFIRM_TIMEOUT_MS).unref() });
  ctx.broker.subscribe(room);
}

function confirmed(core: Core, room: string): void {
  const waiting = core.unconfirmed.get(room);
  if (waiting !== undefined) {
    core.unconfirmed.delete(room);
    clearTimeout(waiting.timer);
    for (const answer of waiting.answers) answer();
  }
  core.ctx.streams.subscribed(room);
}

export function createMembership(ctx: MembershipContext): Membership {
  const core: Core = { ctx, unconfirmed: new Map() };
  const placeOf = (ws: SessionSocket, session: Session, room: string): Place | undefined => {
    const member = session.rooms?.get(room);
    return member === undefined ? undefined : { ws, session, room, member };
  };
  return {
    opened: (ws, session) => joinPersonal(core, ws, session),
    join: (ws, session, request) => join(core, ws, session, request),
    leave(ws, session, room, id) {
      if (isPersonal(session, room)) return sendError(ctx, ws, messageError('personal_room'), id);
      const place = placeOf(ws, session, room);
      if (place === undefined) return sendError(ctx, ws, messageError('not_a_member'), id);
      end(core, place, 'left');
      ctx.delivery.send(ws, encodeReply('room_left', { room }, id));
    },
    revoke(ws, session, room, reason, cause) {
      const place = placeOf(ws, session, room);
      if (place !== undefined && !isPersonal(session, room)) revoke(core, place, reason, cause);
    },
    refreshed(ws, session) {
      for (const [room, member] of [...(session.rooms ?? [])]) {
        if (member.phase === 'deciding') continue;
        // A room the claim now covers is the claim's: a grant's expiry no longer ends it.
        if (claimCovers(ctx, session, room)) claimed(core, { ws, session, room, member });
        else if (member.permit === undefined) revoke(core, { ws, session, room, member }, 'access_revoked', 'token');
      }
    },
    grantExpired(item) {
      const place = placeOf(item.ws, item.session, item.room);
      // Only the grant that let the member in: a newer grant, a leave or a backend's subscribe replaced it otherwise.
      if (item.session.closed || place?.member.permit?.source !== 'grant' || place.member.permit.item !== item) return;
      revoke(core, place, 'grant_expired', 'grant_expired');
    },
    closed(ws, session, code) {
      closed(core, ws, session);
      ctx.presence.closed(session.connectionId, code);
    },
    topic: (room, newCount, oldCount) => topic(core, room, newCount > oldCount),
    confirmed: (room) => confirmed(core, room),
    isMember: (ws, room) => ws.isSubscribed(room),
  };
}
