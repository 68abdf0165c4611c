/**
 * Presence in the node's memory, for a node without Redis: the same entries, expiries and versions
 * as redis/presence.ts. A room's state goes when its last entry does (sweepIdle takes rooms no
 * member is left to refresh); versions come from one clock of at least the time in ms, so a room
 * that comes back never reuses a version a client has seen.
 */
import type { PresenceLeaveReason } from './messages.js';
import type { PresenceChange, PresenceMember, PresenceStore } from './presence.js';

interface RoomState {
  version: number;
  readonly entries: Map<string, { readonly userId: string; expires: number }>;
  readonly users: Map<string, { readonly username: string; connections: number }>;
  /** No entry expires before this: sweeps skip the scan until then. */
  nextExpiry: number;
}

export function createMemoryPresence(now: () => number = Date.now): PresenceStore {
  const rooms = new Map<string, RoomState>();
  /** One clock for every room: a room that empties and comes back goes on above its old versions. */
  let lastVersion = 0;

  const stateOf = (room: string): RoomState => {
    let state = rooms.get(room);
    if (state === undefined) {
      state = { version: 0, entries: new Map(), users: new Map(), nextExpiry: Infinity };
      rooms.set(room, state);
    }
    return state;
  };
  const bump = (state: RoomState): number => (state.version = lastVersion = Math.max(lastVersion + 1, now()));

  function drop(state: RoomState, connectionId: string, reason: PresenceLeaveReason, changes: PresenceChange[]): void {
    const entry = state.entries.get(connectionId);
    if (entry === undefined) return;
    state.entries.delete(connectionId);
    const user = state.users.get(entry.userId)!;
    if (--user.connections > 0) return;
    state.users.delete(entry.userId);
    changes.push({ kind: 'leave', userId: entry.userId, username: user.username, version: bump(state), users: state.users.size, reason });
  }

  /** Adds the entry, or moves its expiry; the user's first entry is their join. */
  function add(state: RoomState, member: PresenceMember, expires: number, changes: PresenceChange[]): void {
    const entry = state.entries.get(member.connectionId);
    if (entry !== undefined) entry.expires = expires;
    else {
      state.entries.set(member.connectionId, { userId: member.userId, expires });
      const user = state.users.get(member.userId);
      if (user !== undefined) user.connections += 1;
      else {
        state.users.set(member.userId, { username: member.username, connections: 1 });
        changes.push({ kind: 'join', userId: member.userId, username: member.username, version: bump(state), users: state.users.size });
      }
    }
    state.nextExpiry = Math.min(state.nextExpiry, expires);
  }

  function sweep(room: string, state: RoomState): PresenceChange[] {
    const changes: PresenceChange[] = [];
    const t = now();
    if (t >= state.nextExpiry) {
      state.nextExpiry = Infinity;
      for (const [id, entry] of state.entries) {
        if (entry.expires <= t) drop(state, id, 'expired', changes);
        else state.nextExpiry = Math.min(state.nextExpiry, entry.expires);
      }
    }
    if (state.entries.size === 0) rooms.delete(room);
    return changes;
  }

  const settle = (room: string, state: RoomState, changes: PresenceChange[]): PresenceChange[] => {
    const swept = sweep(room, state);
    return swept.length === 0 ? changes : [...swept, ...changes];
  };

  return {
    async add(room, member, ttlMs) {
      const state = stateOf(room);
      const changes: PresenceChange[] = [];
      add(state, member, now() + ttlMs, changes);
      return settle(room, state, changes);
    },
    async remove(room, member, graceMs, reason) {
      const state = rooms.get(room);
      if (state === undefined) return [];
      const changes: PresenceChange[] = [];
      const entry = state.entries.get(member.connectionId);
      if (graceMs <= 0) drop(state, member.connectionId, reason, changes);
      else if (entry !== undefined) {
        entry.expires = now() + graceMs;
        state.nextExpiry = Math.min(state.nextExpiry, entry.expires);
      }
      return settle(room, state, changes);
    },
    async refresh(room, members, ttlMs) {
      const state = stateOf(room);
      const changes: PresenceChange[] = [];
      const expires = now() + ttlMs;
      for (const member of members) add(state, member, expires, changes);
      return settle(room, state, changes);
    },
    async snapshot(room, max) {
      const state = rooms.get(room);
      const changes = state === undefined ? [] : sweep(room, state);
      const users = [...(state?.users ?? [])].slice(0, max).map(([user_id, u]) => ({ user_id, username: u.username, connections: u.connections }));
      return { snapshot: { version: state?.version ?? 0, users, count: state?.users.size ?? 0 }, changes };
    },
    async sweepIdle() {
      const swept: Array<[string, PresenceChange[]]> = [];
      for (const [room, state] of rooms) if (now() >= state.nextExpiry) swept.push([room, sweep(room, state)]);
      return swept;
    },
    async stats(room) {
      const state = rooms.get(room);
      const changes = state === undefined ? [] : sweep(room, state);
      return { stats: { version: state?.version ?? 0, users: state?.users.size ?? 0, connections: state?.entries.size ?? 0 }, changes };
    },
  };
}
