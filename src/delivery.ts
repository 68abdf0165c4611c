/**
 * Writes to local sockets, batched per event-loop turn. uWS packs up to 32 queued messages per
 * subscriber into one write, but only when `app.publish` runs outside the read of another socket:
 * inside a message handler it flushes subscribers message by message (BENCHMARKS.md, "Where the
 * publish runs"). So topic publishes are queued and run after the current read (`setImmediate`),
 * and a direct send to a socket waits behind them while any are queued, which keeps each socket's
 * order: an event a client caused arrives before the reply that acknowledges it.
 */
import type { Payload } from './broker.js';
import type { TemplatedApp, WebSocket } from './uws.js';

/** Any socket whose user data says whether it has closed. */
type Target = WebSocket<{ readonly closed: boolean }>;

export interface Delivery {
  /** Queues an event for the uWS topic `room`; uWS fans it out in C++ when the queue runs. */
  publish(room: string, payload: Payload): void;
  /** The same for every member but `sender` (a signal is not echoed to its sender). */
  publishExcept(sender: Target, room: string, payload: Payload): void;
  /** Sends to one socket: at once when nothing is queued, else behind the queue. */
  send(ws: Target, payload: Payload): void;
  /** Runs the queue now: before a subscription changes (a joiner must not get what was published before it joined) or a socket is ended. */
  flush(): void;
}

export function createDelivery(app: TemplatedApp): Delivery {
  /** Pairs of (room, socket or [sender, room], payload), in the order they were written. */
  let queue: Array<string | Target | [Target, string] | Payload> = [];

  const flush = (): void => {
    if (queue.length === 0) return;
    const batch = queue;
    queue = [];
    for (let i = 0; i < batch.length; i += 2) {
      const target = batch[i] as string | Target | [Target, string];
      const payload = batch[i + 1] as Payload;
      if (typeof target === 'string') app.publish(target, payload, false, false);
      else if (Array.isArray(target)) publishFrom(target[0], target[1], payload);
      else if (!target.getUserData().closed) target.send(payload, false, false);
    }
  };
  // uWS's ws.publish reaches every subscriber of the topic but that socket; a closed sender cannot publish.
  const publishFrom = (sender: Target, room: string, payload: Payload): void => {
    if (sender.getUserData().closed) app.publish(room, payload, false, false);
    else sender.publish(room, payload, false, false);
  };
  const enqueue = (target: string | Target | [Target, string], payload: Payload): void => {
    if (queue.length === 0) setImmediate(flush);
    queue.push(target, payload);
  };

  return {
    publish: enqueue,
    publishExcept: (sender, room, payload) => enqueue([sender, room], payload),
    send(ws, payload) {
      if (queue.length > 0) enqueue(ws, payload);
      else if (!ws.getUserData().closed) ws.send(payload, false, false);
    },
    flush,
  };
}
