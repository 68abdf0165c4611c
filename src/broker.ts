/**
 * The broker carries encoded events to every node that has members in a room, and node-level
 * commands (one connection, disconnect a user) to the node that can carry them out.
 *
 * Guarantees every implementation keeps (one contract test suite runs against each):
 * - Delivery is at-most-once: a payload reaches `deliver` on a node zero or one time, and is never
 *   replayed late after an outage (nothing is queued while the transport is away).
 * - Events from one publisher to one room arrive in publish order.
 * - The publishing node delivers to its own members at once, before `publish` returns, whatever the
 *   state of the transport; other nodes receive it only while they subscribe the room.
 * - Payload bytes are the encoded envelope and are handed to `deliver` as they are: never
 *   re-parsed or re-encoded, whatever the number of members or nodes.
 *
 * Sequenced rooms (history.ts) publish through the history instead, and their events arrive as
 * `deliverSequenced`, in offset order per room, the origin's own included.
 *
 * Implementations: broker-memory.ts and redis/broker.ts; server.ts picks one.
 */

import type { KeptRevocation } from './revocation.js';

/** Encoded envelope bytes as uWS takes them. */
export type Payload = string | Uint8Array;

/**
 * An event of a sequenced room with its position (history.ts), in offset order per room. `except`:
 * a connection id that must not receive it (see BrokerTarget.deliver).
 */
export type SequencedDelivery = (room: string, epoch: string, offset: number, payload: Payload, except?: string) => void;

/** What a node does with what the broker brings it. */
export interface BrokerTarget {
  /**
   * Hands an event to the local uWS topic `room` (uWS fans out in C++). `except`: a connection id
   * of this node that must not receive it (published from that socket, which uWS skips); the
   * broker passes only ids whose node part is this node's.
   */
  deliver(room: string, payload: Payload, except?: string): void;
  /** An event of a sequenced room with its position, as the history assigned it. */
  deliverSequenced: SequencedDelivery;
  /**
   * The transport has confirmed the node's subscription to `room`: after `subscribe`, and again
   * after every resubscribe (a reconnect, a failover, a slot move), when events may have been missed.
   */
  subscribed(room: string): void;
  /** Sends to one local connection; unknown ids are ignored (the connection is gone). */
  deliverToConnection(connectionId: string, payload: Payload): void;
  /** Closes every local connection of `userId` with `code`. */
  disconnectUser(userId: string, code: number, reason: string): void;
  /** Applies a backend's unsubscribe or subscribe to the local connections of the user. */
  changeAccess(change: AccessChange): void;
  /** Keeps a revocation and closes the local connections whose token it covers (4401 token revoked). */
  revoke(kept: KeptRevocation): void;
  /** A fallback POST forwarded to the node holding its session (fallback.ts); unknown sessions are counted there. */
  forwarded?(sessionId: string, payload: Payload): void;
}

/** A backend's change of a user's rooms, on every node: `connectionId` narrows it to one connection. */
export interface AccessChange {
  readonly op: 'unsubscribe' | 'subscribe';
  readonly userId: string;
  readonly room: string;
  readonly connectionId: string | undefined;
}

export interface Broker {
  readonly kind: 'memory' | 'redis';
  /** `except`: one connection id, on whichever node, that must not receive it (the others all do). */
  publish(room: string, payload: string, except?: string): void;
  /** To the room's members on the other nodes only (the caller delivers here itself); best effort, never stored. */
  relay(room: string, payload: string): void;
  /** Delivers to the connection wherever it lives (its id names its node). */
  sendToConnection(connectionId: string, payload: string): void;
  /**
   * Applies an unsubscribe or subscribe on every node (this one included); resolves false when it
   * could not be handed to the other nodes, and then changed nothing here either.
   */
  changeAccess(change: AccessChange): Promise<boolean>;
  /**
   * Hands a fallback POST to the node holding the session (its id names the node; this node at
   * once); resolves true once Redis accepted it, in PUBLISH order from this node.
   */
  forward(sessionId: string, payload: string): Promise<boolean>;
  /** Closes every connection of the user on every node. */
  disconnectUser(userId: string, code: number, reason: string): void;
  /** Applies a revocation on every node (this one at once); resolves false when the other nodes could not be told. */
  revoke(kept: KeptRevocation): Promise<boolean>;
  /** The node gained its first local member of `room`; `subscribed(room)` follows once confirmed. */
  subscribe(room: string): void;
  /** The node lost its last local member of `room`. */
  unsubscribe(room: string): void;
  /** Whether other nodes are reachable: always true for the memory broker. */
  isUp(): boolean;
  close(): Promise<void>;
}
