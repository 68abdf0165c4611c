/**
 * Presence in Redis: per presence room five keys in the room channel's slot (entries with their
 * expiry, their owners, users with their connection counts, usernames, the version), changed only
 * by lua/presence-*.lua, so every node sees one answer and an expired entry leaves exactly once.
 * Keys live as long as an entry could and go with the room's last entry (README "Presence").
 */
import type { PresenceLeaveReason } from '../messages.js';
import type { PresenceChange, PresenceStore } from '../presence.js';
import type { RedisClient } from './links.js';
import { runScript } from './scripts.js';
import { slotOf, tagFor } from './slots.js';
import { channelsOf } from './wire.js';

export interface RedisPresenceDeps {
  readonly command: RedisClient;
  readonly prefix: string;
  readonly nodeId: string;
  /** How long a room's keys outlive their last write: the entry TTL plus the grace, and a second. */
  readonly keyLifeMs: number;
}

type Reply = Array<string | number>;

/** Groups of six (kind, user, username, version, users, reason) from `from` on. */
function changesOf(reply: Reply, from = 0): PresenceChange[] {
  const changes: PresenceChange[] = [];
  for (let i = from; i + 5 < reply.length; i += 6) {
    const kind = reply[i] as 'join' | 'leave';
    const base = { kind, userId: String(reply[i + 1]), username: String(reply[i + 2]), version: Number(reply[i + 3]), users: Number(reply[i + 4]) };
    changes.push(kind === 'leave' ? { ...base, reason: reply[i + 5] as PresenceLeaveReason } : base);
  }
  return changes;
}

export function createRedisPresence({ command, prefix, nodeId, keyLifeMs }: RedisPresenceDeps): PresenceStore {
  const channels = channelsOf(prefix, nodeId);
  const keysOf = (room: string): string[] => {
    const tag = `${prefix}{${tagFor(slotOf(channels.room(room)))}}`;
    return ['pe', 'po', 'pu', 'pn', 'pv'].map((kind) => `${tag}${kind}:${room}`);
  };
  const run = async (name: Parameters<typeof runScript>[1], room: string, args: ReadonlyArray<string | number>): Promise<Reply> =>
    (await runScript(command, name, keysOf(room), args)) as Reply;
  const read = async (room: string, max: number) => {
    const reply = await run('presence-read', room, [max, keyLifeMs]);
    const [version, users, connections, listed] = reply.slice(0, 4).map(Number) as [number, number, number, number];
    const list = [];
    for (let i = 0; i < listed; i++) list.push({ user_id: String(reply[4 + i * 3]), username: String(reply[5 + i * 3]), connections: Number(reply[6 + i * 3]) });
    return { version, users, connections, list, changes: changesOf(reply, 4 + listed * 3) };
  };

  return {
    add: async (room, m, ttlMs) => changesOf(await run('presence-add', room, [m.connectionId, m.userId, m.username, ttlMs, keyLifeMs])),
    remove: async (room, m, graceMs, reason) => changesOf(await run('presence-remove', room, [m.connectionId, graceMs, reason, keyLifeMs])),
    refresh: async (room, members, ttlMs) => changesOf(await run('presence-refresh', room, [ttlMs, keyLifeMs, ...members.flatMap((m) => [m.connectionId, m.userId, m.username])])),
    async snapshot(room, max) {
      const r = await read(room, max);
      return { snapshot: { version: r.version, users: r.list, count: r.users }, changes: r.changes };
    },
    // Keys expire on their own once no node writes them.
    sweepIdle: async () => [],
    async stats(room) {
      const r = await read(room, 0);
      return { stats: { version: r.version, users: r.users, connections: r.connections }, changes: r.changes };
    },
  };
}
