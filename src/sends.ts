/**
 * A client's `send_message`, from the frame to `message_sent`. The event carries the sender's user
 * id beside its name. With an `idempotency_key`, a repeat by the same user in the same room within
 * IDEMPOTENCY_WINDOW_S is answered with the first result (`duplicate: true`) and never published
 * again: a sequenced room keeps the key atomically with its history, a plain room with its publish
 * (send-keys.ts), so a node dying mid-send leaves both or neither.
 * In a room under WS_PUBLISH_PROXY_ROOMS the backend decides first (backend.ts): it may replace the
 * data (and the type, from WS_PUBLISH_PROXY_TYPES) or refuse with its own code; a slow, failing or
 * garbled backend is `unavailable` and nothing is published.
 *
 * Sends of one connection to one room reach the room in the order they were sent, whatever order
 * the answers come back in: each waits in its room's queue until those before it are published. A
 * send refused `unavailable` takes those queued behind it along (refused `unavailable` too, their
 * claims freed; a backend that stored one sees its key again on the retry), since the client
 * retries it and they must not overtake it.
 * A send whose connection closed meanwhile is still published (the client cannot know it was not:
 * a resend with the same key gets the result); only the answer is dropped.
 */
import { backendRefusal, type BackendCaller } from './backend.js';
import type { BackendConfig } from './config.js';
import { messageError, type MessageError } from './errors.js';
import type { Appended } from './history.js';
import type { Metrics } from './metrics.js';
import type { Delivery } from './delivery.js';
import { encodeClientEvent, encodeReply } from './protocol.js';
import type { RoomPublish } from './publish.js';
import { sendError } from './replies.js';
import { covers } from './rooms.js';
import type { Claim, SendKeys } from './send-keys.js';
import type { QueuedSend, SendOutcome, Session, SessionSocket } from './session.js';
import type { Streams } from './streams.js';

/** A send queued behind one refused `unavailable` (its proxy answer, claim, whatever it was, set aside). */
const UNAVAILABLE_BEHIND: SendOutcome = { kind: 'refuse', error: messageError('unavailable_behind') };

/** Sends of one connection under way (waiting for a record or the proxy) when no backend is configured. */
const MAX_PENDING_SENDS = 64;

export interface SendsContext {
  readonly config: { readonly backend: BackendConfig | undefined };
  readonly metrics: Metrics;
  readonly delivery: Delivery;
  readonly streams: Streams;
  readonly publish: RoomPublish;
  readonly keys: SendKeys;
  /** The publish proxy's caller (WS_PUBLISH_PROXY_URL). */
  readonly proxy: BackendCaller | undefined;
  readonly isSequenced: (room: string) => boolean;
}

export type SendRequest = Omit<QueuedSend, 'outcome' | 'claimed'>;

export interface Sends {
  send(ws: SessionSocket, session: Session, request: SendRequest): void;
}

/** The backend's answer to a proxied send, checked: anything else is a bad answer (unavailable). */
function readProxyAnswer(answer: Record<string, unknown>, types: ReadonlySet<string>, request: SendRequest): SendOutcome | undefined {
  // A null field is an absent one (response models write them).
  const { allow, data, type, code, reason } = answer;
  if (allow === true) {
    if (type != null && (typeof type !== 'string' || !types.has(type))) return undefined;
    const replaced = data != null;
    return { kind: 'publish', type: (type as string | null | undefined) ?? 'message.new', data: replaced ? data : request.data, replaced };
  }
  const error = allow === false ? backendRefusal(code, reason) : undefined;
  return error === undefined ? undefined : { kind: 'refuse', error };
}

export function createSends(ctx: SendsContext): Sends {
  const { metrics, delivery } = ctx;
  const maxPending = ctx.config.backend?.perConnection ?? MAX_PENDING_SENDS;
  const proxied = (room: string): boolean => ctx.proxy !== undefined && ctx.config.backend?.publish !== undefined && covers(ctx.config.backend.publish.rooms, room);

  const refuse = (ws: SessionSocket, session: Session, error: MessageError, id: string | undefined): void => {
    if (!session.closed) sendError(ctx, ws, error, id);
  };
  const answer = (ws: SessionSocket, session: Session, id: string | undefined, fields: Record<string, unknown>): void => {
    if (id !== undefined && !session.closed) delivery.send(ws, encodeReply('message_sent', fields, id));
  };

  /** A keyed send to a plain room: published and recorded in one step, or answered as a repeat. */
  const publishOnce = (ws: SessionSocket, session: Session, request: QueuedSend, envelope: string, extra: Record<string, unknown>): void => {
    const { room, key, id } = request;
    const done = (claim: Claim): void => {
      if (claim === 'new') {
        metrics.published('client');
        return answer(ws, session, id, { room, ...extra });
      }
      if (claim === 'pending') return refuse(ws, session, messageError('send_pending'), id);
      answer(ws, session, id, { room, ...claim.result, duplicate: true });
    };
    const failed = (): void => {
      metrics.brokerPublishError('down');
      if (request.claimed) ctx.keys.release(session.userId, room, key!);
      refuse(ws, session, messageError('unavailable'), id);
    };
    try {
      const claim = ctx.keys.publishOnce({ userId: session.userId, room, key: key!, result: { room, ...extra }, claimed: request.claimed, envelope });
      if (claim instanceof Promise) claim.then(done, failed);
      else done(claim);
    } catch {
      failed();
    }
  };

  /** Publishes through the seam; the result is what `message_sent` (and a repeat of the key) carries. */
  const publish = (ws: SessionSocket, session: Session, request: QueuedSend, outcome: SendOutcome & { kind: 'publish' }): void => {
    const { room, key, id } = request;
    const envelope = encodeClientEvent(outcome.type, room, outcome.data, session.username, session.userId);
    const extra = outcome.replaced ? { data: outcome.data } : {};
    const sequenced = ctx.isSequenced(room);
    if (!sequenced && key !== undefined) return publishOnce(ws, session, request, envelope, extra);
    const appended = ctx.publish(room, envelope, sequenced && key !== undefined ? `client ${session.userId} ${key}` : undefined);
    if (appended === undefined) {
      metrics.published('client');
      return answer(ws, session, id, { room, ...extra });
    }
    appended.then(
      (position: Appended) => {
        if (!position.duplicate) metrics.published('client');
        const fields = { room, epoch: position.epoch, offset: position.offset, ...extra, ...(position.duplicate && { duplicate: true }) };
        if (id !== undefined) ctx.streams.afterDelivered(room, position, () => answer(ws, session, id, fields));
      },
      () => {
        metrics.brokerPublishError('down');
        refuse(ws, session, messageError('unavailable'), id);
      },
    );
  };

  /** Runs a send whose turn it is. */
  const settle = (ws: SessionSocket, session: Session, request: QueuedSend, outcome: SendOutcome): void => {
    if (outcome.kind === 'publish') return publish(ws, session, request, outcome);
    // Nothing was published: a claim this send made is freed (never another send's, still under way).
    if (request.claimed && request.key !== undefined) ctx.keys.release(session.userId, request.room, request.key);
    if (outcome.kind === 'duplicate') return answer(ws, session, request.id, { room: request.room, ...outcome.result, duplicate: true });
    refuse(ws, session, outcome.error, request.id);
  };

  /** Publishes the sends at the head of the room's queue that are ready; the rest wait for theirs. */
  const drain = (ws: SessionSocket, session: Session, room: string): void => {
    const queue = session.sends?.get(room);
    while (queue !== undefined && queue.length > 0 && queue[0]!.outcome !== undefined) {
      const head = queue.shift()!;
      session.pending -= 1;
      const outcome = head.behind ? UNAVAILABLE_BEHIND : head.outcome!;
      settle(ws, session, head, outcome);
      // The sends behind it went out before the client heard of this refusal: published now, they would overtake its retry.
      if (outcome.kind === 'refuse' && outcome.error.code === 'unavailable') for (const later of queue) later.behind = true;
    }
    if (queue?.length === 0) session.sends!.delete(room);
  };

  /** What the key's claim says (a proxied send to a plain room), then what the backend says: the send's outcome. */
  const decide = async (session: Session, request: QueuedSend): Promise<SendOutcome> => {
    const { room, key } = request;
    if (key !== undefined && !ctx.isSequenced(room) && proxied(room)) {
      let claim: Claim;
      try {
        claim = await ctx.keys.claim(session.userId, room, key);
      } catch {
        return { kind: 'refuse', error: messageError('unavailable') };
      }
      if (claim === 'pending') return { kind: 'refuse', error: messageError('send_pending') };
      if (claim !== 'new') return { kind: 'duplicate', result: claim.result };
      request.claimed = true;
    }
    if (!proxied(room)) return { kind: 'publish', type: 'message.new', data: request.data, replaced: false };
    const body = { user_id: session.userId, username: session.username, connection_id: session.connectionId, room, type: 'message.new', data: request.data, idempotency_key: key ?? null };
    try {
      const outcome = readProxyAnswer(await ctx.proxy!.call(body), ctx.config.backend!.publish!.types, request);
      if (outcome === undefined) metrics.backendCall('publish', 'bad_answer', 0);
      else if (outcome.kind === 'refuse') metrics.backendRefusal('publish');
      return outcome ?? { kind: 'refuse', error: messageError('backend_unavailable') };
    } catch {
      return { kind: 'refuse', error: messageError('backend_unavailable') };
    }
  };

  return {
    send(ws, session, request) {
      const { room, id } = request;
      const queue = session.sends?.get(room);
      // Nothing to ask and nothing waiting: published at once (a keyed send in one step with its record, in send order on Redis's one connection).
      if (queue === undefined && !proxied(room)) {
        return publish(ws, session, { ...request, claimed: false, outcome: undefined }, { kind: 'publish', type: 'message.new', data: request.data, replaced: false });
      }
      if (session.pending >= maxPending) return refuse(ws, session, messageError('backend_busy', maxPending), id);
      session.pending += 1;
      const queued: QueuedSend = { ...request, claimed: false, outcome: undefined };
      if (queue === undefined) (session.sends ??= new Map()).set(room, [queued]);
      else queue.push(queued);
      void decide(session, queued).then((outcome) => {
        queued.outcome = outcome;
        drain(ws, session, room);
      });
    },
  };
}
