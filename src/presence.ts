/**
 * Presence rooms (WS_PRESENCE_ROOMS): which users are in a room, cluster-wide. The store keeps one
 * entry per connection with an expiry; its node refreshes it, so the entries of a node that dies
 * expire. A user is present while one of their entries lives; the store's answer to each change
 * says whether a user joined or left (exactly once: the store decides atomically, so of all the
 * nodes that sweep a room, only one sees a given entry expire). Every user join or leave bumps the
 * room's version, which orders snapshots and events. presence-memory.ts keeps it in the node,
 * redis/presence.ts in Redis (lua/presence-*.lua).
 */
import type { PresenceLeaveReason, PresentUser } from './messages.js';

export interface PresenceMember {
  readonly connectionId: string;
  readonly userId: string;
  readonly username: string;
}

/** A user's first entry appeared, or their last one went. */
export interface PresenceChange {
  readonly kind: 'join' | 'leave';
  readonly userId: string;
  readonly username: string;
  readonly version: number;
  /** Present users right after the change. */
  readonly users: number;
  readonly reason?: PresenceLeaveReason;
}

export interface PresenceSnapshot {
  readonly version: number;
  /** At most the `max` asked for. */
  readonly users: readonly PresentUser[];
  /** Present users in all. */
  readonly count: number;
}

export interface PresenceStats {
  readonly version: number;
  readonly users: number;
  readonly connections: number;
}

/** Every call also sweeps the room's expired entries: their leaves come back with the call's own change. */
export interface PresenceStore {
  /** An entry for the connection, living `ttlMs`. */
  add(room: string, member: PresenceMember, ttlMs: number): Promise<PresenceChange[]>;
  /** Removes the entry now (`graceMs` 0, reason `left` or `revoked`), or lets it live `graceMs` more without refresh. */
  remove(room: string, member: PresenceMember, graceMs: number, reason: PresenceLeaveReason): Promise<PresenceChange[]>;
  /** Extends the node's entries of the room to `ttlMs` from now, adding any the store lost. */
  refresh(room: string, members: readonly PresenceMember[], ttlMs: number): Promise<PresenceChange[]>;
  snapshot(room: string, max: number): Promise<{ snapshot: PresenceSnapshot; changes: PresenceChange[] }>;
  stats(room: string): Promise<{ stats: PresenceStats; changes: PresenceChange[] }>;
  /** Sweeps rooms whose entries expired with nobody calling for them (Redis lets such keys expire: nothing). */
  sweepIdle(): Promise<Array<[room: string, changes: PresenceChange[]]>>;
}
