/**
 * Lifecycle events on Redis: the state that decides them and the stream they are appended to share
 * one slot (lua/lifecycle-head.lua names the keys), so each transition is decided and appended in
 * one script, once, whichever node sees it. Members (a user's connections, a room's nodes) carry an
 * expiry that their node refreshes every third of the ttl; the sweep, run by every node, decides the
 * users and rooms whose grace window is over, also those whose node died without a word.
 *
 * The webhook deliverer reads the stream as the consumer group `webhooks`, on the node holding the
 * lease `<stream>:webhooks`; a node that takes the lease over first claims what its predecessor
 * left pending, so nothing is skipped and the order stays the stream's.
 */
import type { EventType, EventLog, Lifecycle, LifecycleOptions, LoggedEvent, SignalEvent } from '../lifecycle.js';
import { isPersonalRoom } from '../lifecycle.js';
import type { Logger } from '../log.js';
import type { EventFate } from '../metrics.js';
import { createLeasedGroup, type GroupEntry } from './group.js';
import type { RedisClient } from './links.js';
import { startRefreshLoop } from './refresh-loop.js';
import { runScript } from './scripts.js';

/** How often each node decides due users and rooms, and how many per script. */
const SWEEP_MS = 250;
const SWEEP_MAX = 200;
/** Members re-added per refresh script. */
const REFRESH_CHUNK = 300;
const GROUP = 'webhooks';

export interface RedisLifecycleOptions extends LifecycleOptions {
  readonly redis: RedisClient;
  readonly stream: string;
  readonly nodeId: string;
  readonly ttlMs: number;
  readonly maxlen: number;
  /** This node's connections, for the refresh (its rooms it knows from `room`). */
  readonly connections: () => Iterable<[userId: string, connectionId: string]>;
  readonly failed: () => void;
  readonly log: Logger;
}

/** The key of the events stream: `{...}` makes it its own hash tag, which every lifecycle key shares. */
export function streamKey(prefix: string): string {
  return `${prefix}{events}`;
}

export function createRedisLifecycle(opts: RedisLifecycleOptions): Lifecycle {
  const { redis, stream } = opts;
  const head = [opts.maxlen, opts.ttlMs, opts.graceMs, [...opts.types].join(' ')];
  const count = (reply: unknown): void => {
    for (const type of reply as unknown[]) if (typeof type === 'string') opts.produced(type as EventType);
  };
  const run = (name: 'lifecycle-appear' | 'lifecycle-disappear' | 'lifecycle-sweep', args: ReadonlyArray<string | number>): Promise<unknown> => runScript(redis, name, [stream], [...head, ...args]);
  const write = (name: 'lifecycle-appear' | 'lifecycle-disappear', args: string[]): void => {
    if (redis.status !== 'ready') return opts.failed();
    run(name, args).then(count, opts.failed);
  };

  // The rooms with a local member (personal rooms aside): at most the node's topics.
  const rooms = new Set<string>();
  const refresh = async (): Promise<void> => {
    const triples: string[] = [];
    for (const [userId, connectionId] of opts.connections()) triples.push('u', userId, connectionId);
    for (const room of rooms) triples.push('r', room, opts.nodeId);
    const calls: Promise<unknown>[] = [];
    for (let i = 0; i < triples.length; i += REFRESH_CHUNK * 3) calls.push(run('lifecycle-appear', triples.slice(i, i + REFRESH_CHUNK * 3)).then(count));
    await Promise.all(calls);
  };
  const loop = startRefreshLoop(redis, opts.ttlMs / 3, 'lifecycle', opts.log, refresh);

  let sweeping = false;
  const sweep = async (): Promise<void> => {
    if (sweeping || redis.status !== 'ready') return;
    sweeping = true;
    try {
      for (;;) {
        const reply = (await run('lifecycle-sweep', [SWEEP_MAX])) as unknown[];
        count(reply);
        if (reply[reply.length - 1] !== SWEEP_MAX) break;
      }
    } catch {
      opts.failed();
    } finally {
      sweeping = false;
    }
  };
  const sweeper = setInterval(() => void sweep(), SWEEP_MS);
  sweeper.unref();

  return {
    connected: (userId, connectionId) => write('lifecycle-appear', ['u', userId, connectionId]),
    disconnected: (userId, connectionId) => write('lifecycle-disappear', ['u', userId, connectionId]),
    room(room, occupied) {
      if (isPersonalRoom(room)) return;
      if (occupied) rooms.add(room);
      else rooms.delete(room);
      write(occupied ? 'lifecycle-appear' : 'lifecycle-disappear', ['r', room, opts.nodeId]);
    },
    signal(event: SignalEvent) {
      if (!opts.types.has('signal')) return;
      if (redis.status !== 'ready') return opts.failed();
      const json = JSON.stringify({ ...event, type: 'signal', time: Date.now() });
      redis.xadd(stream, 'MAXLEN', '~', opts.maxlen, '*', 'type', 'signal', 'event', json).then(() => opts.produced('signal'), opts.failed);
    },
    stop() {
      loop.stop();
      clearInterval(sweeper);
    },
  };
}

function logged(entries: readonly GroupEntry[]): LoggedEvent[] {
  return entries.map(([id, fields]) => ({ id, json: fields[fields.indexOf('event') + 1] ?? '{}' }));
}

/**
 * The stream as the webhook deliverer's log: read by the lease holder only (redis/group.ts), its
 * own pending entries first. Entries trimmed away before delivery are counted.
 */
export function createRedisEventLog(redis: RedisClient, stream: string, nodeId: string, dropped: (fate: EventFate, count: number) => void): EventLog {
  const group = createLeasedGroup(redis, { stream, group: GROUP, lease: `${stream}:webhooks`, nodeId, gone: (count) => dropped('trimmed', count) });
  return {
    hold: group.hold,
    read: async (max) => logged(await group.read(max)),
    async ack(ids) {
      if (ids.length > 0) await redis.xack(stream, GROUP, ...ids);
    },
    async backlog() {
      const groups = (await redis.xinfo('GROUPS', stream)) as unknown[][];
      for (const group of groups) {
        const info = new Map<unknown, unknown>();
        for (let i = 0; i < group.length; i += 2) info.set(group[i], group[i + 1]);
        if (info.get('name') === GROUP) return Number(info.get('pending') ?? 0) + Number(info.get('lag') ?? 0);
      }
      return 0;
    },
  };
}
