/**
 * The node's side of sequenced rooms. For each such room with local members (or joins under way)
 * it keeps the position delivered so far and hands events to the uWS topic in offset order, each
 * once: duplicates are dropped, and a gap (a lost pub/sub message, a resubscribe after an outage,
 * a new epoch) holds delivery back while history fills it. When history cannot, the members get
 * `room_reset` with the new position and reload that room's state.
 *
 * A join waits until the room's position is known (the channel is subscribed and confirmed first,
 * then history is read: nothing published in between is missed). A join with `since` is then sent
 * the missed events from history and those delivered while it read them, merged by offset, before
 * the socket joins the topic: never a gap, never a duplicate, never a partial recovery.
 */
import type { Broker, Payload } from './broker.js';
import type { Delivery } from './delivery.js';
import type { History, HistoryEntry, HistoryRead, Position } from './history.js';
import type { Logger } from './log.js';
import type { Metrics } from './metrics.js';
import { encodeReply } from './protocol.js';
import type { SessionSocket } from './session.js';

/** Events held per room while its position is read or a gap repaired; past this the rest is dropped and read again. */
const MAX_HELD = 10_000;
/** A failed history read of a live room is tried again after this long (a resubscribe also retries). */
const RETRY_MS = 1000;

export type JoinOutcome =
  | { readonly kind: 'joined'; readonly position: Position; readonly recovered: boolean | undefined }
  | { readonly kind: 'unavailable' };

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
}

interface Held {
  readonly epoch: string;
  readonly offset: number;
  readonly payload: Payload;
}

interface RoomStream {
  /** Undefined until the first read after the subscription was confirmed. */
  epoch: string | undefined;
  offset: number;
  held: Held[];
  /** Held events were dropped: read again once the current read is done. */
  overflowed: boolean;
  reading: boolean;
  /** A confirmation arrived during a read: read again after it. */
  again: boolean;
  retry: NodeJS.Timeout | undefined;
  readonly joins: Join[];
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
  /** From the broker: an event with its position. */
  deliver(room: string, epoch: string, offset: number, payload: Payload): void;
  /** From the broker: the room's subscription is confirmed (again): read its position. */
  subscribed(room: string): void;
  /**
   * Joins the socket to `room` once the position is known, recovering from `since` when given. A
   * socket that is a member already leaves the topic first (a rejoin: no leave is announced).
   */
  join(room: string, request: JoinRequest): void;
  /** Whether `ws` has a join of `room` under way (its unsubscribe before a rejoin is no leave). */
  isJoining(ws: SessionSocket, room: string): boolean;
  /** Drops a join under way; true when there was one. */
  cancel(ws: SessionSocket, room: string): boolean;
  /** The room's last local member left (`members`: how many remain): forgets the room unless joins are under way. */
  release(room: string, members?: number): void;
  /** Runs `fn` once the event at `position` was delivered on this node (or can no longer be). */
  afterDelivered(room: string, position: Position, fn: () => void): void;
}

/** Whether `entries` are exactly the `count` events after offset `after`. */
function consecutive(entries: readonly HistoryEntry[], after: number, count: number): boolean {
  return entries.length === count && entries.every((entry, i) => entry.offset === after + 1 + i);
}

/** The module's state: what every step below works on. */
interface Core {
  readonly deps: StreamsDeps;
  readonly rooms: Map<string, RoomStream>;
}

function settleWaiters(stream: RoomStream, all: boolean): void {
  for (let i = stream.waiters.length - 1; i >= 0; i--) {
    const { position, fn } = stream.waiters[i]!;
    if (!all && position.epoch === stream.epoch && position.offset > stream.offset) continue;
    stream.waiters.splice(i, 1);
    fn();
  }
}

function publish(core: Core, room: string, stream: RoomStream, offset: number, payload: Payload): void {
  stream.offset = offset;
  core.deps.delivery.publish(room, payload);
  for (const join of stream.joins) join.caught?.push({ offset, payload });
  if (stream.waiters.length > 0) settleWaiters(stream, false);
}

function hold(stream: RoomStream, event: Held): void {
  if (stream.held.length < MAX_HELD) stream.held.push(event);
  else stream.overflowed = true;
}

/** Delivers the next event in order, drops a duplicate, or holds it and reads history to fill the gap. */
function accept(core: Core, room: string, stream: RoomStream, event: Held): void {
  if (event.epoch === stream.epoch) {
    if (event.offset <= stream.offset) return core.deps.metrics.duplicateEvent();
    if (event.offset === stream.offset + 1) return publish(core, room, stream, event.offset, event.payload);
  }
  hold(stream, event);
  read(core, room, stream);
}

function reset(core: Core, room: string, stream: RoomStream, to: HistoryRead, reason: 'epoch' | 'gap'): void {
  stream.epoch = to.epoch;
  stream.offset = to.offset;
  core.deps.metrics.roomReset(reason);
  core.deps.log.info({ event: 'room_reset', room, reason, epoch: to.epoch, offset: to.offset }, 'room stream reset');
  core.deps.delivery.publish(room, encodeReply('room_reset', { room, epoch: to.epoch, offset: to.offset }, undefined));
  settleWaiters(stream, true);
}

/** Applies a read: the first position silently, the missing events in order, or a reset; then what was held. */
function applyRead(core: Core, room: string, stream: RoomStream, got: HistoryRead): void {
  if (stream.epoch === undefined) {
    stream.epoch = got.epoch;
    stream.offset = got.offset;
  } else if (got.epoch === stream.epoch && got.offset >= stream.offset && consecutive(got.entries, stream.offset, got.offset - stream.offset)) {
    if (got.entries.length > 0) core.deps.metrics.gapRepaired();
    for (const entry of got.entries) publish(core, room, stream, entry.offset, entry.payload);
  } else {
    reset(core, room, stream, got, got.epoch === stream.epoch ? 'gap' : 'epoch');
  }
  const held = stream.held;
  stream.held = [];
  for (const event of held) {
    if (stream.reading) hold(stream, event);
    else accept(core, room, stream, event);
  }
}

/** Reads the room's position (and what this node missed) from history; one read at a time. */
function read(core: Core, room: string, stream: RoomStream): void {
  if (stream.reading) return;
  stream.reading = true;
  stream.again = false;
  stream.overflowed = false;
  const known = stream.epoch !== undefined;
  core.deps.history.read(room, known ? stream.offset : 0, known ? core.deps.recoverMax : 0).then(
    (got) => {
      stream.reading = false;
      if (core.rooms.get(room) !== stream) return;
      applyRead(core, room, stream, got);
      if (stream.again || stream.overflowed) return read(core, room, stream);
      if (!stream.reading) startJoins(core, room, stream);
    },
    (err: unknown) => {
      stream.reading = false;
      if (core.rooms.get(room) !== stream) return;
      core.deps.log.warn({ err, room }, 'history read failed');
      if (stream.epoch === undefined) failJoins(core, room, stream);
      stream.retry ??= setTimeout(() => {
        stream.retry = undefined;
        if (core.rooms.get(room) === stream) read(core, room, stream);
      }, RETRY_MS).unref();
    },
  );
}

function failJoins(core: Core, room: string, stream: RoomStream): void {
  for (const join of stream.joins.splice(0)) join.done({ kind: 'unavailable' });
  release(core, room);
}

/** Subscribes the socket and answers: everything up to the room's position has reached it. */
function finish(core: Core, room: string, stream: RoomStream, join: Join, recovered: boolean | undefined, replayed = 0): void {
  const at = stream.joins.indexOf(join);
  if (at < 0) return; // cancelled
  stream.joins.splice(at, 1);
  if (join.ws.getUserData().closed) return release(core, room);
  if (recovered !== undefined) core.deps.metrics.recovery(recovered ? 'recovered' : 'reset', replayed);
  join.entering();
  // What was published before the join must not reach the topic after the socket is in it.
  core.deps.delivery.flush();
  join.ws.subscribe(room);
  join.done({ kind: 'joined', position: { epoch: stream.epoch!, offset: stream.offset }, recovered });
}

/** Sends a join the events after its position, or decides that it cannot be recovered. */
function startJoin(core: Core, room: string, stream: RoomStream, join: Join): void {
  const { since } = join;
  const { epoch, offset } = stream;
  if (since === undefined) return finish(core, room, stream, join, undefined);
  if (since.epoch !== epoch || since.offset > offset || offset - since.offset > core.deps.recoverMax) return finish(core, room, stream, join, false);
  if (since.offset === offset) return finish(core, room, stream, join, true);
  const missed = offset - since.offset;
  join.caught = [];
  core.deps.history.read(room, since.offset, missed).then(
    (got) => {
      const caught = join.caught ?? [];
      join.caught = undefined;
      if (!stream.joins.includes(join)) return;
      if (got.epoch !== since.epoch || stream.epoch !== since.epoch || !consecutive(got.entries, since.offset, missed)) {
        return finish(core, room, stream, join, false);
      }
      // History up to the position at the start, then what was delivered since, each offset once.
      let last = since.offset;
      for (const entry of [...got.entries, ...caught]) {
        if (entry.offset !== last + 1) continue;
        core.deps.delivery.send(join.ws, entry.payload);
        last = entry.offset;
      }
      finish(core, room, stream, join, true, missed);
    },
    () => {
      join.caught = undefined;
      const at = stream.joins.indexOf(join);
      if (at >= 0) stream.joins.splice(at, 1);
      join.done({ kind: 'unavailable' });
      release(core, room);
    },
  );
}

function startJoins(core: Core, room: string, stream: RoomStream): void {
  for (const join of [...stream.joins]) if (join.caught === undefined) startJoin(core, room, stream, join);
}

function release(core: Core, room: string, members = core.deps.members(room)): void {
  const stream = core.rooms.get(room);
  if (stream === undefined || stream.joins.length > 0 || members > 0) return;
  core.rooms.delete(room);
  if (stream.retry) clearTimeout(stream.retry);
  settleWaiters(stream, true);
  core.deps.broker.unsubscribe(room);
}

function newStream(): RoomStream {
  return { epoch: undefined, offset: 0, held: [], overflowed: false, reading: false, again: false, retry: undefined, joins: [], waiters: [] };
}

export function createStreams(deps: StreamsDeps): Streams {
  const core: Core = { deps, rooms: new Map() };
  const { rooms } = core;
  return {
    deliver(room, epoch, offset, payload) {
      const stream = rooms.get(room);
      if (stream === undefined) return; // no local interest (a lingering subscription)
      if (stream.reading || stream.epoch === undefined) return hold(stream, { epoch, offset, payload });
      accept(core, room, stream, { epoch, offset, payload });
    },
    subscribed(room) {
      const stream = rooms.get(room);
      if (stream === undefined) return;
      if (stream.reading) stream.again = true;
      else read(core, room, stream);
    },
    join(room, request) {
      const join: Join = { ...request, caught: undefined };
      let stream = rooms.get(room);
      if (stream === undefined) {
        stream = newStream();
        rooms.set(room, stream);
        deps.broker.subscribe(room);
      }
      stream.joins.push(join);
      if (join.ws.isSubscribed(room)) {
        // Everything published so far reaches it; from here on it is caught up from history.
        deps.delivery.flush();
        join.ws.unsubscribe(room);
      }
      if (stream.epoch !== undefined && !stream.reading) startJoin(core, room, stream, join);
    },
    isJoining: (ws, room) => rooms.get(room)?.joins.some((j) => j.ws === ws) ?? false,
    cancel(ws, room) {
      const stream = rooms.get(room);
      const at = stream?.joins.findIndex((j) => j.ws === ws) ?? -1;
      if (stream === undefined || at < 0) return false;
      stream.joins.splice(at, 1);
      release(core, room);
      return true;
    },
    release: (room, members) => release(core, room, members),
    afterDelivered(room, position, fn) {
      const stream = rooms.get(room);
      if (stream === undefined || stream.epoch !== position.epoch || stream.offset >= position.offset) return fn();
      stream.waiters.push({ position, fn });
    },
  };
}
