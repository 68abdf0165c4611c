/**
 * The node's open sessions, indexed by connection id and by user: for drain, the node-wide
 * connection cap, one-connection delivery and disconnecting a user. Entries are added in `open`
 * and removed in `close`, so the index never outlives a socket.
 */
import type { SessionSocket } from './session.js';

export interface SessionIndex {
  readonly size: number;
  add(ws: SessionSocket): void;
  delete(ws: SessionSocket): void;
  byConnection(connectionId: string): SessionSocket | undefined;
  /** The user's open sessions, as a new array (closing them edits the index). */
  byUser(userId: string): SessionSocket[];
  all(): IterableIterator<SessionSocket>;
}

/** `connectionsOf` is the per-user connection limit's own list (limits.ts): no second per-user map. */
export function createSessionIndex(connectionsOf: (userId: string) => readonly string[] | undefined): SessionIndex {
  const connections = new Map<string, SessionSocket>();
  return {
    get size() {
      return connections.size;
    },
    add(ws) {
      connections.set(ws.getUserData().connectionId, ws);
    },
    delete(ws) {
      connections.delete(ws.getUserData().connectionId);
    },
    byConnection: (connectionId) => connections.get(connectionId),
    byUser(userId) {
      const mine: SessionSocket[] = [];
      for (const id of connectionsOf(userId) ?? []) {
        const ws = connections.get(id);
        if (ws !== undefined) mine.push(ws);
      }
      return mine;
    },
    all: () => connections.values(),
  };
}
