/**
 * The one way an event enters a room: a plain room's envelope goes to the broker (every node's
 * members), a sequenced room's to its history, which gives it the room's next position and delivers
 * it in order. Client sends, the backend API, in-process events and the publisher library all
 * publish through a RoomPublish; only what carries the envelope differs.
 *
 * One event to many targets (the API's `rooms`/`user_ids` and batch, the publisher's publishMany and
 * publishBatch) goes through `publishTargets`: the envelope is encoded once per target room (`data`
 * once for all), every PUBLISH and history append is issued before any reply is awaited, and the
 * users' connection counts with them.
 */
import { headOf, type Appended, type History } from './history.js';
import { timestamp } from './protocol.js';
import { isValidId, isValidRoom, userRoom } from './rooms.js';

export interface RoomRoute<R> {
  /** Whether the room is sequenced (WS_HISTORY_ROOMS). */
  readonly sequenced: (room: string) => boolean;
  /** Hands a plain room's envelope to every node; `except`: a connection that must not receive it. */
  readonly broadcast: (room: string, envelope: string, except?: string) => R;
  readonly append: History['append'];
}

/**
 * Publishes one encoded envelope: what `broadcast` returns for a plain room, the position for a
 * sequenced one. `key`, an idempotency key, is for sequenced rooms only (callers check). `except`:
 * one connection id, on whichever node, that must not receive it live (its node publishes from that
 * socket, which uWS skips; every other node delivers as usual).
 */
export type RoomPublish<R = void> = (room: string, envelope: string, key?: string, except?: string) => R | Promise<Appended>;

export function createRoomPublish<R>(route: RoomRoute<R>): RoomPublish<R> {
  return (room, envelope, key, except) => (route.sequenced(room) ? route.append(room, headOf(envelope), key, except) : route.broadcast(room, envelope, except));
}

/** At most this many targets in one request: one publish, or a batch's publications together. */
export const MAX_TARGETS = 1000;
/** At most this many publications in one batch. */
export const MAX_PUBLICATIONS = 100;

/** A connection id as nodes hand them out (`connected`): `<node id>.<base36 counter>`. */
const CONNECTION_ID = /^[A-Za-z0-9_-]{1,32}\.[0-9a-z]{1,16}$/;

export function isConnectionId(value: unknown): value is string {
  return typeof value === 'string' && CONNECTION_ID.test(value);
}

/** One target of a publication: a room, or a user (`room` is then the personal room `user:<id>`). */
export interface Target {
  readonly room: string;
  readonly userId?: string;
}

/** Why a list of targets was refused: the API's refusal names. */
export type TargetProblem = 'invalid_target' | 'too_many_targets' | 'invalid_room' | 'invalid_user_id' | 'duplicate_target';

/**
 * The targets of `rooms` and `userIds` (either may be missing, not both; together 1 to `max`):
 * rooms first, each list in its order. Every room and id is checked before duplicates are looked
 * for; a user id names its personal room, so `user:a` in `rooms` and `a` in `userIds` are one target.
 */
export function listTargets(rooms: unknown, userIds: unknown, max = MAX_TARGETS): Target[] | TargetProblem {
  if ((rooms !== undefined && !Array.isArray(rooms)) || (userIds !== undefined && !Array.isArray(userIds))) return 'invalid_target';
  const roomList = (rooms ?? []) as unknown[];
  const userList = (userIds ?? []) as unknown[];
  const count = roomList.length + userList.length;
  if (count === 0) return 'invalid_target';
  if (count > max) return 'too_many_targets';
  if (!roomList.every(isValidRoom)) return 'invalid_room';
  if (!userList.every(isValidId)) return 'invalid_user_id';
  const targets: Target[] = [...roomList.map((room) => ({ room })), ...userList.map((userId) => ({ room: userRoom(userId), userId }))];
  return new Set(targets.map((t) => t.room)).size === count ? targets : 'duplicate_target';
}

/**
 * The envelope of one event for each room it goes to, the bytes `encodeEvent` gives: `data` is
 * encoded once, and every target's copy has the same timestamp (it is one event).
 */
export function eventEncoder(type: string, data: unknown, sender: string | null): (room: string | null) => string {
  const head = `{"type":${JSON.stringify(type)},"room":`;
  const tail = `,"data":${JSON.stringify(data ?? null) ?? 'null'},"sender":${JSON.stringify(sender)},"timestamp":"${timestamp()}"}`;
  return (room) => head + JSON.stringify(room) + tail;
}

/** Each user's live connections (every node's), `except` not counted; undefined where unknown. */
export type ConnectionCount = (userIds: readonly string[], except: string | undefined) => Promise<ReadonlyArray<number | undefined>>;

/**
 * Runs `fn`, handing the Redis commands it issues to the socket in one write (redis/connections.ts
 * `writesTogether`); the identity without Redis.
 */
export type WritesTogether = <T>(fn: () => T) => T;

/** One event to its targets, checked already. */
export interface Publication {
  readonly targets: readonly Target[];
  readonly encode: (room: string) => string;
  /** For sequenced targets only (the caller checks). */
  readonly key: string | undefined;
  readonly except: string | undefined;
}

/** What one target got: its position when sequenced, its user's connection count, or why it failed. */
export type TargetOutcome =
  | { readonly target: Target; readonly ok: true; readonly appended: Appended | undefined; readonly connections: number | undefined }
  | { readonly target: Target; readonly ok: false; readonly error: unknown };

/**
 * Publishes to every target at once: each PUBLISH (or SPUBLISH) and history append is issued before
 * any reply is awaited, inside `together` (one write per Redis socket), so they cost one round
 * trip, not one each (in a cluster, per shard); the users' ZCOUNTs go out with them. Resolves with one outcome per
 * target, in order; a target's failure (a sequenced room whose history Redis cannot reach, or a
 * publish Redis refused) is its own.
 */
export async function publishTargets<R>(publish: RoomPublish<R>, count: ConnectionCount, publication: Publication, together: WritesTogether = (fn) => fn()): Promise<TargetOutcome[]> {
  const { targets, encode, key, except } = publication;
  const userIds = targets.flatMap((t) => (t.userId === undefined ? [] : [t.userId]));
  const [sent, counted] = together(() => [
    targets.map((target) => {
      try {
        return Promise.resolve(publish(target.room, encode(target.room), key, except));
      } catch (err) {
        return Promise.reject(err);
      }
    }),
    userIds.length === 0 ? Promise.resolve([]) : count(userIds, except).catch(() => []),
  ] as const);
  const [settled, counts] = await Promise.all([Promise.allSettled(sent), counted]);
  let user = 0;
  return settled.map((result, i) => {
    const target = targets[i]!;
    const connections = target.userId === undefined ? undefined : counts[user++];
    if (result.status === 'rejected') return { target, ok: false, error: result.reason as unknown };
    const appended = result.value === undefined || result.value === null ? undefined : (result.value as Appended);
    return { target, ok: true, appended, connections };
  });
}
