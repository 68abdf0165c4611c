/**
 * The node's side of presence rooms: which of its connections are members, an entry in the store
 * for each, refreshed every WS_PRESENCE_REFRESH seconds (re-created if the store lost it), removed
 * at once on a leave or a normal close and after WS_PRESENCE_GRACE on an abnormal close or a drain.
 * Every user join or leave the store reports becomes one presence.join or presence.leave event,
 * published once by the node whose call caused it, for rooms of at most
 * WS_PRESENCE_EVENTS_MAX_USERS present users.
 */
import type { Broker } from './broker.js';
import type { PresenceConfig } from './config.js';
import type { Logger } from './log.js';
import type { PresenceLeaveReason } from './messages.js';
import type { Metrics } from './metrics.js';
import type { PresenceChange, PresenceMember, PresenceSnapshot, PresenceStats, PresenceStore } from './presence.js';
import { encodeEvent } from './protocol.js';

/** Close codes after which the user is likely back in a moment: their entries get the grace. */
const GRACE_CODES: ReadonlySet<number> = new Set([1006, 1012]);

export interface PresenceTracker {
  /** The connection became a member of a presence room. */
  entered(room: string, member: PresenceMember): void;
  /** The connection stopped being a member: a leave_room (`left`) or a revoked room. */
  left(room: string, connectionId: string, reason: PresenceLeaveReason): void;
  /** The connection closed with `code`: each of its presence rooms is left, with the grace where the code allows. */
  closed(connectionId: string, code: number): void;
  snapshot(room: string, max: number): Promise<PresenceSnapshot>;
  stats(room: string): Promise<PresenceStats>;
  /** Local entries, for the gauge. */
  entries(): number;
  stop(): void;
}

export interface PresenceTrackerDeps {
  readonly config: PresenceConfig;
  readonly store: PresenceStore;
  readonly broker: Broker;
  readonly metrics: Metrics;
  readonly log: Logger;
}

export function createPresenceTracker({ config, store, broker, metrics, log }: PresenceTrackerDeps): PresenceTracker {
  const ttlMs = config.ttl * 1000;
  /** room -> this node's members of it. */
  const rooms = new Map<string, Map<string, PresenceMember>>();
  /** connection -> its presence rooms. */
  const byConnection = new Map<string, Set<string>>();
  let entries = 0;
  let failing = false;

  function announce(room: string, changes: readonly PresenceChange[]): void {
    for (const c of changes) {
      metrics.presenceChange(c.kind, c.reason);
      // Past the cap a room gets no per-user events: clients ask presence_stats instead.
      if ((c.kind === 'join' ? c.users : c.users + 1) > config.eventsMaxUsers) continue;
      const data = { user_id: c.userId, username: c.username, version: c.version, users: c.users, ...(c.reason === undefined ? {} : { reason: c.reason }) };
      broker.publish(room, encodeEvent(`presence.${c.kind}`, room, data, null));
      metrics.published('membership');
    }
  }

  const settled = (room: string) => (changes: PresenceChange[]) => {
    if (failing) log.info({ event: 'presence_recovered' }, 'presence store reachable again');
    failing = false;
    announce(room, changes);
  };
  const failed = (err: unknown): void => {
    metrics.presenceError();
    if (!failing) log.warn({ event: 'presence_failed', err }, 'presence store unreachable; entries are re-created at the next refresh');
    failing = true;
  };

  function forget(room: string, connectionId: string): PresenceMember | undefined {
    const members = rooms.get(room);
    const member = members?.get(connectionId);
    if (member === undefined) return undefined;
    members!.delete(connectionId);
    if (members!.size === 0) rooms.delete(room);
    const own = byConnection.get(connectionId);
    own?.delete(room);
    if (own?.size === 0) byConnection.delete(connectionId);
    entries -= 1;
    return member;
  }

  function remove(room: string, connectionId: string, graceMs: number, reason: PresenceLeaveReason): void {
    const member = forget(room, connectionId);
    if (member !== undefined) store.remove(room, member, graceMs, reason).then(settled(room), failed);
  }

  // Refreshes re-add: a store that lost an entry (Redis restarted empty, an add that failed) gets it back.
  const timer = setInterval(() => {
    for (const [room, members] of rooms) {
      store.refresh(room, [...members.values()], ttlMs).then(settled(room), failed);
    }
    store.sweepIdle().then((swept) => swept.forEach(([room, changes]) => announce(room, changes)), failed);
  }, config.refresh * 1000);
  timer.unref();

  return {
    entered(room, member) {
      let members = rooms.get(room);
      if (members === undefined) rooms.set(room, (members = new Map()));
      if (!members.has(member.connectionId)) entries += 1;
      members.set(member.connectionId, member);
      let own = byConnection.get(member.connectionId);
      if (own === undefined) byConnection.set(member.connectionId, (own = new Set()));
      own.add(room);
      store.add(room, member, ttlMs).then(settled(room), failed);
    },
    left: (room, connectionId, reason) => remove(room, connectionId, 0, reason),
    closed(connectionId, code) {
      const graceMs = GRACE_CODES.has(code) ? config.grace * 1000 : 0;
      for (const room of [...(byConnection.get(connectionId) ?? [])]) remove(room, connectionId, graceMs, 'left');
    },
    async snapshot(room, max) {
      const { snapshot, changes } = await store.snapshot(room, max);
      announce(room, changes);
      return snapshot;
    },
    async stats(room) {
      const { stats, changes } = await store.stats(room);
      announce(room, changes);
      return stats;
    },
    entries: () => entries,
    stop: () => clearInterval(timer),
  };
}
