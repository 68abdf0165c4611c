/** How a client message is refused: an error envelope with the catalogue's code, counted, in the socket's order. */
import type { Delivery } from './delivery.js';
import type { MessageError } from './errors.js';
import type { Metrics } from './metrics.js';
import { encodeError } from './protocol.js';
import type { SessionSocket } from './session.js';

export interface ReplyContext {
  readonly metrics: Metrics;
  readonly delivery: Delivery;
}

/** `room`: the room of a `resume` the error is about. */
export function sendError(ctx: ReplyContext, ws: SessionSocket, error: MessageError, id: string | undefined, room?: string): void {
  ctx.metrics.errorSent(error.code);
  ctx.delivery.send(ws, encodeError(error, id, room));
}
