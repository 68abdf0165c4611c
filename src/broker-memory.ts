/**
 * The in-memory broker: the single-node default and the reference implementation of Broker.
 * Every publish is delivered locally and synchronously; there are no other nodes.
 */
import type { Broker, Deliver } from './broker.js';

export function createMemoryBroker(deliver: Deliver): Broker {
  let closed = false;
  return {
    kind: 'memory',
    publish(room, payload) {
      if (!closed) deliver(room, payload);
    },
    subscribe() {},
    unsubscribe() {},
    async close() {
      closed = true;
    },
  };
}
