/**
 * The node's side of sequenced rooms. For each such room with local members (or joins under way)
 * it keeps the position delivered so far and hands events to the uWS topic in offset order, each
 * once: duplicates are dropped, and a gap (a lost pub/sub message, a resubscribe after an outage)
 * holds delivery back while history fills it. When history cannot, or the stream has a new epoch,
 * the members get `room_reset` with the new position and reload that room's state.
 *
 * A join waits until the room's position is known (the channel is subscribed and confirmed first,
 * then history is read: nothing published in between is missed). A join with `since` is then sent
 * the missed events from history and those delivered while it read them, merged by offset, before
 * the socket joins the topic: never a gap, never a duplicate, never a partial recovery. A join that
 * gets no position within JOIN_TIMEOUT_MS (Redis or the link down) is answered `unavailable`.
 */
import type { Broker, Payload } from './broker.js';
import type { Delivery } from './delivery.js';
import type { History, HistoryEntry, HistoryRead, Position } from './history.js';
import type { Logger } from './log.js';
import type { Metrics } from './metrics.js';
import { encodeReply } from './protocol.js';
import type { SessionSocket } from './session.js';

/** Bytes of events held per room while its position is read or a gap repaired; past this the rest is dropped and read again. */
const MAX_HELD_BYTES = 16 * 1024 * 1024;
/** A failed history read of a live room is tried again after this long (a resubscribe also retries). */
const RETRY_MS = 1000;
/** A join still without the room's position after this long is answered `unavailable`. */
export const JOIN_TIMEOUT_MS = 5000;

export type JoinOutcome =
  | { readonly kind: 'joined'; readonly position: Position; readonly recovered: boolean | undefined }
  | { readonly kind: 'unavailable' }
  /** A leave_room, a revoked grant, a close, or another join of the room by the same socket took it over. */
  | { readonly kind: 'cancelled' };

/** A socket to join to a sequenced room. */
export interface JoinRequest {
  readonly ws: SessionSocket;
  /** The position the client has; undefined for a plain join. */
  readonly since: Position | undefined;
  /** Right before the socket joins the topic (membership events go out here). */
  readonly entering: () => void;
  readonly done: (outcome: JoinOutcome) => void;
}

interface Join extends JoinRequest {
  /** Events delivered to the room while this join reads its history; undefined until then. */
  caught: HistoryEntry[] | undefined;
  /** The room's position when its recovery started: history covers up to here, `caught` the rest. */
  to: number;
  timer: NodeJS.Timeout | undefined;
}

interface Held {
  readonly epoch: string;
  readonly offset: number;
  readonly payload: Payload;
  /** A local socket that must not receive it (a publish's exclude_connection). */
  readonly except?: SessionSocket;
}

interface RoomStream {
  /** Undefined until the first read after the subscription was confirmed. */
  epoch: string | undefined;
  offset: number;
  held: Held[];
  heldBytes: number;
  /** Held events were dropped: read again once the current read is done. */
  overflowed: boolean;
  reading: boolean;
  /** A confirmation arrived during a read: read again after it. */
  again: boolean;
  retry: NodeJS.Timeout | undefined;
  readonly joins: Join[];
  /** Joins waiting for the next batch read of history (one read at a time per room). */
  readonly recovering: Join[];
  recoveryRead: boolean;
  /** message_sent replies waiting for their event to be delivered here first. */
  readonly waiters: Array<{ readonly position: Position; readonly fn: () => void }>;
}

export interface StreamsDeps {
  readonly history: History;
  readonly broker: Broker;
  readonly delivery: Delivery;
  readonly metrics: Metrics;
  readonly log: Logger;
  /** Local members of the room's uWS topic. */
  readonly members: (room: string) => number;
  readonly recoverMax: number;
}

export interface Streams {
  /**
   * From the broker: an event with its position. `except`: a local socket that must not receive
   * it live (an event that reaches this node only through a history read goes to every member).
   */
  deliver(room: string, epoch: string, offset: number, payload: Payload, except?: SessionSocket): void;
  /** From the broker: the room's subscription is confirmed (again): read its position. */
  subscribed(room: string): void;
  /**
   * Joins the socket to `room` once the position is known, recovering from `since` when given. A
   * member that rejoins with `since` leaves the topic first (no leave is announced) and is sent
   * everything after `since` again, in order.
   */
  join(room: string, request: JoinRequest): void;
  /** Drops a join under way (answered `cancelled`); true when there was one. */
  cancel(ws: SessionSocket, room: string): boolean;
  /** The room's last local member left (`members`: how many remain): forgets the room unless joins are under way. */
  release(room: string, members?: number): void;
  /** Runs `fn` once the event at `position` was delivered on this node (or can no longer be). */
  afterDelivered(room: string, position: Position, fn: () => void): void;
  /** The position delivered so far; undefined while unknown. */
  position(room: string): Position | undefined;
}

/** Whether `entries` are exactly the `count` events after offset `after`. */
function consecutive(entries: readonly HistoryEntry[], after: number, count: number): boolean {
  return entries.length === count && entries.every((entry, i) => entry.offset === after + 1 + i);
}

const sizeOf = (payload: Payload): number => (typeof payload === 'string' ? payload.length : payload.byteLength);

/** The module's state: what every step below works on. */
interface Core {
  readonly deps: StreamsDeps;
  readonly rooms: Map<string, RoomStream>;
}

/** Runs the waiters whose event was delivered, and (`stale`) those of an epoch the stream left. */
function settleWaiters(stream: RoomStream, stale: boolean): void {
  for (let i = stream.waiters.length - 1; i >= 0; i--) {
    const { position, fn } = stream.waiters[i]!;
    const delivered = position.epoch === stream.epoch && position.offset <= stream.offset;
    if (!delivered && !(stale && position.epoch !== stream.epoch)) continue;
    stream.waiters.splice(i, 1);
    fn();
  }
}

function publish(core: Core, room: string, stream: RoomStream, offset: number, payload: Payload, except?: SessionSocket): void {
  stream.offset = offset;
  if (except === undefined) core.deps.delivery.publish(room, payload);
  else core.deps.delivery.publishExcept(except, room, payload);
  for (const join of stream.joins) join.caught?.push({ offset, payload });
  if (stream.waiters.length > 0) settleWaiters(stream, false);
}

function hold(stream: RoomStream, event: Held): void {
  const size = sizeOf(event.payload);
  if (stream.heldBytes + size > MAX_HELD_BYTES) {
    stream.overflowed = true;
    return;
  }
  stream.held.push(event);
  stream.heldBytes += size;
}

/** Delivers the next event in order, drops a duplicate, or holds it and reads history to fill the gap. */
function accept(core: Core, room: string, stream: RoomStream, event: Held): void {
  if (event.epoch === stream.epoch) {
    if (event.offset <= stream.offset) return core.deps.metrics.duplicateEvent();
    if (event.offset === stream.offset + 1) return publish(core, room, stream, event.offset, event.payload, event.except);
  }
  hold(stream, event);
  read(core, room, stream);
}

/** The members reload the room; events after `offset` of `epoch` follow. */
function reset(core: Core, room: string, stream: RoomStream, epoch: string, offset: number, reason: 'epoch' | 'gap'): void {
  stream.epoch = epoch;
  stream.offset = offset;
  core.deps.metrics.roomReset(reason);
  core.deps.log.info({ event: 'room_reset', room, reason, epoch, offset }, 'room stream reset');
  core.deps.delivery.publish(room, encodeReply('room_reset', { room, epoch, offset }, undefined));
  settleWaiters(stream, true);
}

/**
 * Applies a read: the first position silently, the missing events in order, or a reset. A new
 * epoch resets to its start (offset 0), so its first events are still delivered: from what is
 * held, or from history once the next gap is seen. Events held before the read was sent and of
 * another epoch than the read's are stale (the read is newer than them) and dropped.
 */
function applyRead(core: Core, room: string, stream: RoomStream, got: HistoryRead, heldBefore: number): void {
  if (stream.epoch === undefined) {
    stream.epoch = got.epoch;
    stream.offset = got.offset;
  } else if (got.epoch !== stream.epoch) {
    reset(core, room, stream, got.epoch, 0, 'epoch');
  } else if (got.offset >= stream.offset && consecutive(got.entries, stream.offset, got.offset - stream.offset)) {
    if (got.entries.length > 0) core.deps.metrics.gapRepaired();
    for (const entry of got.entries) publish(core, room, stream, entry.offset, entry.payload);
  } else {
    reset(core, room, stream, got.epoch, got.offset, 'gap');
  }
  const held = stream.held;
  stream.held = [];
  stream.heldBytes = 0;
  held.forEach((event, i) => {
    if (i < heldBefore && event.epoch !== got.epoch) return;
    if (stream.reading) hold(stream, event);
    else accept(core, room, stream, event);
  });
}

/** Reads the room's position (and what this node missed) from history; one read at a time. */
function read(core: Core, room: string, stream: RoomStream): void {
  if (stream.reading) return;
  stream.reading = true;
  stream.again = false;
  stream.overflowed = false;
  const known = stream.epoch !== undefined;
  const heldBefore = stream.held.length;
  core.deps.history.read(room, known ? stream.offset : 0, known ? core.deps.recoverMax : 0).then(
    (got) => {
      stream.reading = false;
      if (core.rooms.get(room) !== stream) return;
      applyRead(core, room, stream, got, heldBefore);
      if (stream.again || stream.overflowed) return read(core, room, stream);
      if (!stream.reading) startJoins(core, room, stream);
    },
    (err: unknown) => {
      stream.reading = false;
      if (core.rooms.get(room) !== stream) return;
      core.deps.log.warn({ err, room }, 'history read failed');
      stream.retry ??= setTimeout(() => {
        stream.retry = undefined;
        if (core.rooms.get(room) === stream) read(core, room, stream);
      }, RETRY_MS).unref();
    },
  );
}

/** Takes a join out of its room (its timer too); false when it was not there any more. */
function remove(core: Core, room: string, stream: RoomStream, join: Join): boolean {
  const at = stream.joins.indexOf(join);
  if (at < 0) return false;
  stream.joins.splice(at, 1);
  if (join.timer) clearTimeout(join.timer);
  return true;
}

/** Ends a join without joining: `unavailable` or `cancelled`. */
function drop(core: Core, room: string, stream: RoomStream, join: Join, kind: 'unavailable' | 'cancelled'): void {
  if (!remove(core, room, stream, join)) return;
  join.done({ kind });
  release(core, room);
}

/** Subscribes the socket and answers: everything up to the room's position has reached it. */
function finish(core: Core, room: string, stream: RoomStream, join: Join, recovered: boolean | undefined, replayed = 0): void {
  if (!remove(core, room, stream, join)) return;
  if (join.ws.getUserData().closed) return release(core, room);
  if (recovered !== undefined) core.deps.metrics.recovery(recovered ? 'recovered' : 'reset', replayed);
  join.entering();
  // What was published before the join must not reach the topic after the socket is in it.
  core.deps.delivery.flush();
  join.ws.subscribe(room);
  join.done({ kind: 'joined', position: { epoch: stream.epoch!, offset: stream.offset }, recovered });
}

/** A join that cannot be recovered (`recovered: false`), counted by why: a history too short for the outage shows as `trimmed` or `too_far`. */
function lost(core: Core, room: string, stream: RoomStream, join: Join, reason: 'epoch' | 'too_far' | 'trimmed'): void {
  core.deps.metrics.recoveryLost(reason);
  finish(core, room, stream, join, false);
}

/** Sends a join the events after its position, or decides that it cannot be recovered. */
function startJoin(core: Core, room: string, stream: RoomStream, join: Join): void {
  const { since } = join;
  const { epoch, offset } = stream;
  if (since === undefined) return finish(core, room, stream, join, undefined);
  if (since.epoch !== epoch || since.offset > offset) return lost(core, room, stream, join, 'epoch');
  if (offset - since.offset > core.deps.recoverMax) return lost(core, room, stream, join, 'too_far');
  if (since.offset === offset) return finish(core, room, stream, join, true);
  join.caught = [];
  join.to = offset;
  stream.recovering.push(join);
  if (!stream.recoveryRead) recoverBatch(core, room, stream);
}

/**
 * Events replayed per event-loop turn, at least one join's: a node loss's thousands of resumes of
 * one room replay in slices (2,000 joins × 300 events took one turn of seconds), so pings, the
 * internal port and Redis replies are served between them. Joins waiting for their slice keep
 * catching live events, as during the read.
 */
const REPLAY_PER_TURN = 20_000;

/** Recovers the batch's joins from `start`, about REPLAY_PER_TURN events per turn; then the next batch. */
function recoverSlice(core: Core, room: string, stream: RoomStream, batch: readonly Join[], got: HistoryRead, start: number): void {
  let sent = 0;
  let next = start;
  while (next < batch.length && (next === start || sent < REPLAY_PER_TURN)) {
    const join = batch[next++]!;
    sent += join.to - join.since!.offset;
    recover(core, room, stream, join, got);
  }
  if (next < batch.length) return void setImmediate(() => recoverSlice(core, room, stream, batch, got, next));
  stream.recoveryRead = false;
  recoverBatch(core, room, stream);
}

/**
 * One history read for every join of the room waiting to recover, from the oldest position to the
 * newest: a thousand clients resuming a room after a node loss cost one read, not a thousand.
 */
function recoverBatch(core: Core, room: string, stream: RoomStream): void {
  const batch = stream.recovering.splice(0).filter((join) => stream.joins.includes(join));
  if (batch.length === 0) return;
  stream.recoveryRead = true;
  const from = Math.min(...batch.map((join) => join.since!.offset));
  const to = Math.max(...batch.map((join) => join.to));
  core.deps.history.read(room, from, to - from).then(
    (got) => recoverSlice(core, room, stream, batch, got, 0),
    () => {
      stream.recoveryRead = false;
      for (const join of batch) {
        join.caught = undefined;
        drop(core, room, stream, join, 'unavailable');
      }
      recoverBatch(core, room, stream);
    },
  );
}

/** A join's share of a batch read: the events after its position, then what was delivered since, or `recovered: false`. */
function recover(core: Core, room: string, stream: RoomStream, join: Join, got: HistoryRead): void {
  const since = join.since!;
  const caught = join.caught ?? [];
  join.caught = undefined;
  if (!stream.joins.includes(join)) return;
  const missed = join.to - since.offset;
  const mine = got.entries.filter((entry) => entry.offset > since.offset && entry.offset <= join.to);
  if (got.epoch !== since.epoch || stream.epoch !== since.epoch) return lost(core, room, stream, join, 'epoch');
  if (!consecutive(mine, since.offset, missed)) return lost(core, room, stream, join, 'trimmed');
  // History up to the position at the start, then what was delivered since, each offset once;
  // all of it up to the room's position now, or nothing (a reset meanwhile skipped offsets).
  const merged: HistoryEntry[] = [];
  for (const entry of [...mine, ...caught]) if (entry.offset === since.offset + merged.length + 1) merged.push(entry);
  if (since.offset + merged.length !== stream.offset) return lost(core, room, stream, join, 'epoch');
  for (const entry of merged) core.deps.delivery.send(join.ws, entry.payload);
  finish(core, room, stream, join, true, missed);
}

function startJoins(core: Core, room: string, stream: RoomStream): void {
  for (const join of [...stream.joins]) if (join.caught === undefined) startJoin(core, room, stream, join);
}

function release(core: Core, room: string, members = core.deps.members(room)): void {
  const stream = core.rooms.get(room);
  if (stream === undefined || stream.joins.length > 0 || members > 0) return;
  core.rooms.delete(room);
  if (stream.retry) clearTimeout(stream.retry);
  stream.epoch = undefined;
  settleWaiters(stream, true);
  core.deps.broker.unsubscribe(room);
}

function newStream(): RoomStream {
  return {
    epoch: undefined,
    offset: 0,
    held: [],
    heldBytes: 0,
    overflowed: false,
    reading: false,
    again: false,
    retry: undefined,
    joins: [],
    recovering: [],
    recoveryRead: false,
    waiters: [],
  };
}

/** Adds a join; one without the room's position by JOIN_TIMEOUT_MS is answered `unavailable`. */
function addJoin(core: Core, room: string, stream: RoomStream, request: JoinRequest): Join {
  const join: Join = { ...request, caught: undefined, to: 0, timer: undefined };
  join.timer = setTimeout(() => {
    if (join.caught === undefined) drop(core, room, stream, join, 'unavailable');
  }, JOIN_TIMEOUT_MS).unref();
  stream.joins.push(join);
  return join;
}

export function createStreams(deps: StreamsDeps): Streams {
  const core: Core = { deps, rooms: new Map() };
  const { rooms } = core;
  const joinOf = (ws: SessionSocket, room: string): { stream: RoomStream; join: Join } | undefined => {
    const stream = rooms.get(room);
    const join = stream?.joins.find((j) => j.ws === ws);
    return stream === undefined || join === undefined ? undefined : { stream, join };
  };
  return {
    deliver(room, epoch, offset, payload, except) {
      const stream = rooms.get(room);
      if (stream === undefined) return; // no local interest (a lingering subscription)
      const event = except === undefined ? { epoch, offset, payload } : { epoch, offset, payload, except };
      if (stream.reading || stream.epoch === undefined) return hold(stream, event);
      accept(core, room, stream, event);
    },
    subscribed(room) {
      const stream = rooms.get(room);
      if (stream === undefined) return;
      if (stream.reading) stream.again = true;
      else read(core, room, stream);
    },
    join(room, request) {
      let stream = rooms.get(room);
      if (stream === undefined) {
        stream = newStream();
        rooms.set(room, stream);
        deps.broker.subscribe(room);
      }
      const join = addJoin(core, room, stream, request);
      if (join.ws.isSubscribed(room)) {
        // Everything published so far reaches it; from here on it is caught up from history.
        deps.delivery.flush();
        join.ws.unsubscribe(room);
      }
      if (stream.epoch !== undefined && !stream.reading) startJoin(core, room, stream, join);
    },
    cancel(ws, room) {
      const found = joinOf(ws, room);
      if (found === undefined) return false;
      drop(core, room, found.stream, found.join, 'cancelled');
      return true;
    },
    release: (room, members) => release(core, room, members),
    afterDelivered(room, position, fn) {
      const stream = rooms.get(room);
      if (stream === undefined || (stream.epoch === position.epoch && stream.offset >= position.offset)) return fn();
      stream.waiters.push({ position, fn });
    },
    position(room) {
      const stream = rooms.get(room);
      return stream?.epoch === undefined ? undefined : { epoch: stream.epoch, offset: stream.offset };
    },
  };
}
