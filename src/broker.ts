/**
 * The broker carries encoded events to every node that has members in a room.
 *
 * Guarantees every implementation keeps (one contract test suite runs against each):
 * - Delivery is at-most-once: an event is handed to `deliver` on a node zero or one time, never
 *   replayed late after an outage.
 * - Events from one publisher to one room arrive in publish order.
 * - The node that publishes delivers to its own members at once, through `deliver`, before
 *   `publish` returns; other nodes receive it only when they have subscribed the room.
 * - Payload bytes are the encoded envelope and are handed to `deliver` as they are: never
 *   re-parsed or re-encoded, whatever the number of members.
 */
import type { Config } from './config.js';
import { createMemoryBroker } from './broker-memory.js';

/** Hands an encoded event to the local uWS topic of `room` (uWS fans out in C++). */
export type Deliver = (room: string, payload: string | ArrayBuffer | Uint8Array) => void;

export interface Broker {
  readonly kind: 'memory';
  publish(room: string, payload: string): void;
  /** The node gained its first local member of `room`. */
  subscribe(room: string): void;
  /** The node lost its last local member of `room`. */
  unsubscribe(room: string): void;
  close(): Promise<void>;
}

export function createBroker(_config: Config, deliver: Deliver): Broker {
  return createMemoryBroker(deliver);
}
