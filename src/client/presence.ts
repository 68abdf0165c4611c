/**
 * A live list of a presence room's users: a snapshot (`presence`), then the room's presence events.
 * Events and snapshots carry the room's version; per user the newest wins, so an event that
 * arrives before the snapshot's reply, or after a newer one, is neither lost nor applied twice.
 * The snapshot is taken again after every (re)join, since events may have been missed meanwhile.
 */
import type { PresenceEvent, PresenceReply } from '../messages.js';

interface Entry {
  readonly username: string;
  readonly present: boolean;
  readonly version: number;
}

export interface PresenceList {
  /** user id -> username of the present users. */
  users(): Map<string, string>;
  /** Whether the list is complete (false past the snapshot's 1,000-user cap: use presence_stats). */
  complete(): boolean;
  stop(): void;
}

/** What watchPresence needs of the client (kept structural, so this module imports no client code). */
interface PresenceSource {
  on(event: 'presence', fn: (event: PresenceEvent) => void): () => void;
  on(event: 'connected', fn: () => void): () => void;
  presence(room: string): Promise<PresenceReply>;
}

/** Calls `changed` with the users whenever the list changes; the room must be joined (or being joined). */
export function watchPresence(client: PresenceSource, room: string, changed: (users: Map<string, string>) => void): PresenceList {
  const entries = new Map<string, Entry>();
  let complete = true;
  const users = (): Map<string, string> => new Map([...entries].filter(([, e]) => e.present).map(([id, e]) => [id, e.username]));
  const apply = (id: string, entry: Entry): boolean => {
    const known = entries.get(id);
    if (known !== undefined && known.version >= entry.version) return false;
    entries.set(id, entry);
    return true;
  };

  const load = (): void => {
    client.presence(room).then(
      ({ data }) => {
        const listed = new Set(data.users.map((u) => u.user_id));
        for (const u of data.users) apply(u.user_id, { username: u.username, present: true, version: data.version });
        // Users a complete snapshot does not list are gone, unless an event newer than it says otherwise.
        if (!data.truncated) for (const [id, e] of entries) if (!listed.has(id) && e.version <= data.version && e.present) entries.set(id, { ...e, present: false, version: data.version });
        complete = !data.truncated;
        changed(users());
      },
      // Tried again while it may come (Redis back, the join answered); not for a room that keeps no presence.
      (err: { code?: string }) => err.code !== 'no_presence' && err.code !== 'invalid_room' && err.code !== 'closed' && setTimeout(load, 1000),
    );
  };
  const offEvent = client.on('presence', (e) => {
    if (e.room !== room) return;
    if (apply(e.data.user_id, { username: e.data.username, present: e.type === 'presence.join', version: e.data.version })) changed(users());
  });
  const offConnected = client.on('connected', () => setTimeout(load, 0));
  load();
  return {
    users,
    complete: () => complete,
    stop() {
      offEvent();
      offConnected();
    },
  };
}
