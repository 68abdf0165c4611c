/**
 * What the backend hears about the socket: lifecycle events, cluster-wide and once per transition
 * (`user.online` at a user's first connection anywhere, `user.offline` when the last one has been
 * gone for the grace window, `room.occupied` / `room.vacated` likewise for a room's members), and
 * the signals named in WS_SIGNALS_TO_BACKEND. They are appended to an event log: the Redis Stream
 * (src/redis/lifecycle.ts) or, without Redis, a bounded queue in memory (here). The webhook
 * deliverer (src/webhooks.ts) reads that log; a backend may also read the stream itself.
 *
 * Personal rooms (`user:<id>`) make no room events: user.online and user.offline say the same.
 */
import type { EventFate } from './metrics.js';

export const LIFECYCLE_TYPES = ['user.online', 'user.offline', 'room.occupied', 'room.vacated'] as const;
export type EventType = (typeof LIFECYCLE_TYPES)[number] | 'signal';

/** What a node tells the lifecycle; every call returns at once (failures are counted, and made up for by the refresh or the sweep). */
export interface Lifecycle {
  connected(userId: string, connectionId: string): void;
  disconnected(userId: string, connectionId: string): void;
  /** A room's first local member came (true) or its last left (false). */
  room(room: string, occupied: boolean): void;
  /** A signal the backend hears (WS_SIGNALS_TO_BACKEND). */
  signal(event: SignalEvent): void;
  stop(): void;
}

/** Events off (WS_EVENTS unset, no webhook, no WS_SIGNALS_TO_BACKEND). */
export const NO_LIFECYCLE: Lifecycle = { connected() {}, disconnected() {}, room() {}, signal() {}, stop() {} };

export interface SignalEvent {
  readonly name: string;
  readonly room: string;
  readonly user_id: string;
  readonly username: string;
  readonly connection_id: string;
  readonly data: unknown;
}

/** An event as the log holds it: its id (also its order and its time, `<ms>-<n>`) and its JSON without the id. */
export interface LoggedEvent {
  readonly id: string;
  readonly json: string;
}

/** The log the webhook deliverer reads, as one consumer: it holds the log (a lease) before reading. */
export interface EventLog {
  /** Whether this node is the one delivering now; refreshes the lease. */
  hold(): Promise<boolean>;
  /** The oldest events not yet acknowledged, at most `max`; [] when there are none. */
  read(max: number): Promise<LoggedEvent[]>;
  /** Acknowledges delivered (or dropped) events. */
  ack(ids: readonly string[]): Promise<void>;
  /** How many events wait for delivery. */
  backlog(): Promise<number>;
}

export interface LifecycleOptions {
  /** The types produced; the state behind them is kept either way. */
  readonly types: ReadonlySet<EventType>;
  readonly graceMs: number;
  readonly produced: (type: EventType) => void;
}

/** The time an event id carries (ms). */
export function eventTime(id: string): number {
  return Number(id.slice(0, id.indexOf('-')));
}

export function isPersonalRoom(room: string): boolean {
  return room.startsWith('user:');
}

/** A queue of at most `cap` events; when full, the oldest is dropped and counted. */
export function createMemoryLog(cap: number, dropped: (fate: EventFate, count: number) => void): EventLog & { append(type: EventType, fields: object): void } {
  const queue: LoggedEvent[] = [];
  let last = 0;
  let sequence = 0;
  return {
    append(type, fields) {
      const now = Date.now();
      sequence = now > last ? 0 : sequence + 1;
      last = Math.max(last, now);
      if (queue.length >= cap) {
        queue.shift();
        dropped('overflow', 1);
      }
      queue.push({ id: `${last}-${sequence}`, json: JSON.stringify({ ...fields, type, time: now }) });
    },
    hold: async () => true,
    read: async (max) => queue.slice(0, max),
    async ack(ids) {
      const done = new Set(ids);
      while (queue.length > 0 && done.has(queue[0]!.id)) queue.shift();
    },
    backlog: async () => queue.length,
  };
}

interface Tracked {
  readonly members: Set<string>;
  /** When its last member left; its grace window runs from there. */
  timer: NodeJS.Timeout | undefined;
}

/**
 * One node without Redis: users and rooms tracked in memory, events appended to `log`. Versions
 * come from one clock-based counter, so they only grow although gone users and rooms are forgotten.
 */
export function createMemoryLifecycle(opts: LifecycleOptions, log: ReturnType<typeof createMemoryLog>): Lifecycle {
  const users = new Map<string, Tracked>();
  const rooms = new Map<string, Tracked>();
  let version = 0;
  const emit = (type: EventType, fields: object): void => {
    if (!opts.types.has(type)) return;
    version = Math.max(version + 1, Date.now());
    log.append(type, { ...fields, version });
    opts.produced(type);
  };
  const appear = (tracked: Map<string, Tracked>, id: string, member: string, event: () => void): void => {
    const entry = tracked.get(id);
    if (entry === undefined) {
      tracked.set(id, { members: new Set([member]), timer: undefined });
      return event();
    }
    entry.members.add(member);
    clearTimeout(entry.timer);
    entry.timer = undefined;
  };
  const disappear = (tracked: Map<string, Tracked>, id: string, member: string, event: (seen: number) => void): void => {
    const entry = tracked.get(id);
    if (entry === undefined || !entry.members.delete(member) || entry.members.size > 0) return;
    const seen = Date.now();
    entry.timer = setTimeout(() => {
      tracked.delete(id);
      event(seen);
    }, opts.graceMs);
    entry.timer.unref();
  };
  return {
    connected: (userId, connectionId) => appear(users, userId, connectionId, () => emit('user.online', { user_id: userId })),
    disconnected: (userId, connectionId) => disappear(users, userId, connectionId, (seen) => emit('user.offline', { user_id: userId, last_seen: seen })),
    room(room, occupied) {
      if (isPersonalRoom(room)) return;
      if (occupied) appear(rooms, room, 'node', () => emit('room.occupied', { room }));
      else disappear(rooms, room, 'node', () => emit('room.vacated', { room }));
    },
    signal(event) {
      if (!opts.types.has('signal')) return;
      log.append('signal', event);
      opts.produced('signal');
    },
    stop() {
      for (const entry of [...users.values(), ...rooms.values()]) clearTimeout(entry.timer);
    },
  };
}
