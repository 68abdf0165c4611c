/**
 * Membership events bounded cluster-wide (issue 25): a room announces a member's join (user_joined)
 * only while fewer than WS_MEMBERSHIP_EVENTS_MAX_MEMBERS of its members, on every node together,
 * were announced and are still in it; the leave of an announced member is always announced
 * (user_left), and no one else's. So a mass connect into a big room costs at most `cap` announced
 * joins, whatever the number of nodes, where comparing each node's own count cost up to cap × nodes,
 * each to every member.
 *
 * The places are kept by a store (one contract suite runs against both): this node's memory without
 * Redis, where the node is the cluster; or a Redis sorted set per room of announced members scored
 * by expiry, which each node refreshes for its own, so a killed node's members lapse and the node
 * that next refreshes or takes a place in the room announces their leave.
 */
import type { Broker } from './broker.js';
import type { Logger } from './log.js';
import type { Metrics } from './metrics.js';
import { encodeEvent } from './protocol.js';

export interface Announced {
  readonly connectionId: string;
  readonly userId: string;
  readonly username: string;
}

export interface Taken {
  /** Whether a place was free: then the join is announced. */
  readonly taken: boolean;
  /** Members whose places lapsed (their node stopped refreshing them): their leave is announced. */
  readonly lapsed: readonly Announced[];
}

export interface AnnouncementStore {
  /** Takes one of the room's `cap` places for `member` if one is free. Rejects when the store cannot be reached. */
  take(room: string, member: Announced, cap: number): Promise<Taken>;
  /** Gives the member's place back (best effort: a lost give lapses like a killed node's). */
  give(room: string, member: Announced): void;
}

/** A room found full is not asked again for this long: a mass connect costs a room one question per node per second. */
export const FULL_FOR_MS = 1000;
/** Rooms remembered as full at most; the expired go first when it is reached. */
const MAX_FULL_ROOMS = 10_000;

export interface Announcer {
  /** A member entered `room` (not personal, not a presence room): announced if a place is free. */
  joined(room: string, member: Announced): void;
  /** The member left: its leave is announced if its join was. */
  left(room: string, connectionId: string): void;
  /** This node's announced members by room, for a store that refreshes them. */
  held(): Iterable<[room: string, members: Announced[]]>;
  /** Members whose places lapsed (found by a refresh): their leave is announced. */
  lapsed(room: string, members: readonly Announced[]): void;
}

interface Place {
  readonly member: Announced;
  /** `asked`: the store has not answered yet; `gone`: it left meanwhile, so a place it gets is given back. */
  state: 'asked' | 'gone' | 'announced';
}

export function createAnnouncer(deps: { readonly store: AnnouncementStore; readonly broker: Broker; readonly metrics: Metrics; readonly cap: number; readonly log: Logger }): Announcer {
  const { store, broker, metrics, cap } = deps;
  const rooms = new Map<string, Map<string, Place>>();
  const full = new Map<string, number>();

  const announce = (room: string, type: 'user_joined' | 'user_left', { connectionId, userId, username }: Announced): void => {
    // The joiner is in the topic already: it is not told about itself.
    broker.publish(room, encodeEvent(type, room, { user_id: userId, username }, username), type === 'user_joined' ? connectionId : undefined);
    metrics.published('membership');
  };
  const forget = (room: string, connectionId: string): void => {
    const places = rooms.get(room);
    places?.delete(connectionId);
    if (places?.size === 0) rooms.delete(room);
  };
  const isFull = (room: string): boolean => {
    const until = full.get(room);
    if (until === undefined) return false;
    if (until > Date.now()) return true;
    full.delete(room);
    return false;
  };
  const markFull = (room: string): void => {
    if (full.size >= MAX_FULL_ROOMS) for (const [name, until] of full) if (until <= Date.now()) full.delete(name);
    if (full.size < MAX_FULL_ROOMS) full.set(room, Date.now() + FULL_FOR_MS);
  };
  const leave = (room: string, members: readonly Announced[]): void => {
    for (const gone of members) announce(room, 'user_left', gone);
  };
  const answered = (room: string, place: Place, { taken, lapsed }: Taken): void => {
    leave(room, lapsed);
    if (!taken) {
      markFull(room);
      metrics.announcement('full');
      return forget(room, place.member.connectionId);
    }
    if (place.state === 'gone') {
      store.give(room, place.member);
      return forget(room, place.member.connectionId);
    }
    place.state = 'announced';
    metrics.announcement('announced');
    announce(room, 'user_joined', place.member);
  };

  return {
    joined(room, member) {
      let places = rooms.get(room);
      const known = places?.get(member.connectionId);
      if (known !== undefined) {
        if (known.state === 'gone') known.state = 'asked';
        return;
      }
      if (isFull(room)) return metrics.announcement('full');
      if (places === undefined) rooms.set(room, (places = new Map()));
      const place: Place = { member, state: 'asked' };
      places.set(member.connectionId, place);
      store.take(room, member, cap).then(
        (result) => answered(room, place, result),
        (err: unknown) => {
          forget(room, member.connectionId);
          metrics.announcement('unavailable');
          deps.log.debug({ err, room }, 'membership event not announced: its store is unreachable');
        },
      );
    },
    left(room, connectionId) {
      const place = rooms.get(room)?.get(connectionId);
      if (place === undefined) return;
      if (place.state !== 'announced') {
        place.state = 'gone';
        return;
      }
      forget(room, connectionId);
      store.give(room, place.member);
      // The place it frees is this node's to give: its next join here asks again at once.
      full.delete(room);
      announce(room, 'user_left', place.member);
    },
    lapsed: leave,
    *held() {
      for (const [room, places] of rooms) {
        const members = [...places.values()].filter((p) => p.state === 'announced').map((p) => p.member);
        if (members.length > 0) yield [room, members];
      }
    },
  };
}

/** Without Redis: the node is the cluster, its memory the places. */
export function createMemoryAnnouncements(): AnnouncementStore {
  const rooms = new Map<string, Set<string>>();
  return {
    take(room, member, cap) {
      let places = rooms.get(room);
      if (places === undefined) rooms.set(room, (places = new Set()));
      const taken = places.has(member.connectionId) || places.size < cap;
      if (taken) places.add(member.connectionId);
      else if (places.size === 0) rooms.delete(room);
      return Promise.resolve({ taken, lapsed: [] });
    },
    give(room, member) {
      const places = rooms.get(room);
      places?.delete(member.connectionId);
      if (places?.size === 0) rooms.delete(room);
    },
  };
}
