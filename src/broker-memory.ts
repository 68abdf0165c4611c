/**
 * The in-memory broker: the single-node default and the reference implementation of Broker.
 * Everything is delivered locally and synchronously; there are no other nodes.
 */
import type { Broker, BrokerTarget } from './broker.js';

export function createMemoryBroker(target: BrokerTarget): Broker {
  let closed = false;
  return {
    kind: 'memory',
    publish(room, payload, except) {
      if (!closed) target.deliver(room, payload, except);
    },
    // There are no other nodes.
    relay() {},
    sendToConnection(connectionId, payload) {
      if (!closed) target.deliverToConnection(connectionId, payload);
    },
    async forward(sessionId, payload) {
      if (!closed) target.forwarded?.(sessionId, payload);
      return !closed;
    },
    disconnectUser(userId, code, reason) {
      if (!closed) target.disconnectUser(userId, code, reason);
    },
    async revoke(kept) {
      if (!closed) target.revoke(kept);
      return !closed;
    },
    async changeAccess(change) {
      if (!closed) target.changeAccess(change);
      return !closed;
    },
    // Confirmed after the caller's turn, as a transport would.
    subscribe(room) {
      if (!closed) queueMicrotask(() => !closed && target.subscribed(room));
    },
    unsubscribe() {},
    isUp: () => true,
    async close() {
      closed = true;
    },
  };
}
