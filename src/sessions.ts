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
  byUser(userId: string): ReadonlySet<SessionSocket> | undefined;
  all(): IterableIterator<SessionSocket>;
}

export function createSessionIndex(): SessionIndex {
  const connections = new Map<string, SessionSocket>();
  const users = new Map<string, Set<SessionSocket>>();
  return {
    get size() {
      return connections.size;
    },
    add(ws) {
      const { connectionId, userId } = ws.getUserData();
      connections.set(connectionId, ws);
      let mine = users.get(userId);
      if (mine === undefined) users.set(userId, (mine = new Set()));
      mine.add(ws);
    },
    delete(ws) {
      const { connectionId, userId } = ws.getUserData();
      connections.delete(connectionId);
      const mine = users.get(userId);
      if (mine?.delete(ws) && mine.size === 0) users.delete(userId);
    },
    byConnection: (connectionId) => connections.get(connectionId),
    byUser: (userId) => users.get(userId),
    all: () => connections.values(),
  };
}
