/**
 * The uWS WebSocket behaviour, handlers in lifecycle order: upgrade (admission.ts), open (admitted
 * at once, or once the user seat is granted), message (inbound.ts: size, rate, one JSON.parse, handler),
 * subscription (to the membership: room gauge and broker interest), dropped, close (release everything).
 */
import { adoptToken } from './revocation.js';
import { createAdmission, type AdmissionContext, type EarlyFrame } from './admission.js';
import { CLOSES } from './errors.js';
import { closesAt, type HandlerContext } from './handler-context.js';
import { createInbound } from './inbound.js';
import { connectionLog } from './log.js';
import { encodeReply } from './protocol.js';
import { userRoom } from './rooms.js';
import { closeWith, type Session, type SessionSocket, type Socket, type UserData } from './session.js';
import type { WebSocketBehavior } from './uws.js';

export interface ConnectionContext extends HandlerContext, AdmissionContext {
  /** The loaded uWS build reports backpressure drops (`dropped` handler). */
  readonly droppedHandler: boolean;
}

/** uWS's own reason when a frame passes maxPayloadLength (it then closes without a close frame). */
const UWS_TOO_BIG = 'Received too big message';
const NO_FRAMES: readonly EarlyFrame[] = [];
const textDecoder = new TextDecoder();

export function createBehavior(ctx: ConnectionContext): WebSocketBehavior<UserData> {
  const { config, metrics, log, sessions } = ctx;
  const admission = createAdmission(ctx);
  const { receive, keepEarly } = createInbound(ctx, admission);

  /** A socket closed (or about to be) for exceeding WS_MAX_BACKPRESSURE: counted once. */
  const slowConsumer = (data: Session): void => {
    if (data.rare?.slow) return;
    (data.rare ??= {}).slow = true;
    metrics.backpressureDrop();
    connectionLog(log, data).info({ event: 'slow_consumer' }, 'slow consumer closed');
  };

  /**
   * The legacy build has no `dropped`, and its socket is unreadable in `close`. A socket that uWS
   * closes for backpressure is still readable when it leaves its first topic, with its buffer over
   * the limit; one closed by `end()` is not (the read throws, and it was no slow consumer).
   */
  const countLegacyDrop = (ws: SessionSocket, data: Session): void => {
    try {
      if (ws.getBufferedAmount() >= config.maxBackpressure) slowConsumer(data);
    } catch {
      // closed by end(): not a backpressure close
    }
  };

  /** An admitted socket: indexed, `connected` sent, its personal room joined, then any early frames. */
  const welcome = (ws: SessionSocket, early: readonly EarlyFrame[]): void => {
    const data = ws.getUserData();
    sessions.add(ws);
    metrics.connectionOpened();
    ctx.lifecycle.connected(data.userId, data.connectionId);
    ctx.expiry.add(ws, closesAt(ctx, data));
    const personal = userRoom(data.userId);
    // A plain personal room is in the topic at once (`connected` lists it); a sequenced one once its
    // position is known, announced by a room_joined without id.
    ctx.membership.opened(ws, data);
    ctx.delivery.send(
      ws,
      encodeReply(
        'connected',
        {
          data: {
            connection_id: data.connectionId,
            user_id: data.userId,
            username: data.username,
            heartbeat_interval: config.heartbeatInterval,
            max_message_size: config.messageMaxSize,
            rooms: [personal],
          },
        },
        undefined,
      ),
    );
    if (log.isLevelEnabled('debug')) connectionLog(log, data).debug({ event: 'connection_open', remote: data.remoteAddress }, 'connection opened');
    // Admitted while the drain began: counted like any other, then sent elsewhere.
    if (ctx.isDraining()) return closeWith(ws, CLOSES.service_restart);
    for (const { frame, isBinary } of early) {
      if (data.closed) return;
      receive(ws, data, frame, isBinary);
    }
  };

  return {
    compression: 0, // uWS.DISABLED: the legacy build has no compression; one encoding per event either way
    maxPayloadLength: config.messageMaxSize * 2,
    idleTimeout: config.heartbeatInterval,
    sendPingsAutomatically: true,
    maxBackpressure: config.maxBackpressure,
    closeOnBackpressureLimit: true,
    maxLifetime: 0,

    upgrade: admission.upgrade,

    open(ws) {
      const data = ws.getUserData();
      if (data.kind === 'rejected') {
        closeWith(ws, data.rejection);
        return;
      }
      const sws = ws as SessionSocket;
      adoptToken(data);
      if (data.kind === 'pending') admission.settle(sws, welcome);
      else welcome(sws, NO_FRAMES);
    },

    message(ws, message, isBinary) {
      const sws = ws as SessionSocket;
      const session = sws.getUserData();
      if (session.kind === 'session') receive(sws, session, message, isBinary);
      else if (session.kind === 'pending') keepEarly(sws, session, message, isBinary);
    },

    // Called for every socket joining or leaving a topic, also for each topic of a closing socket.
    subscription(ws, topic, newCount, oldCount) {
      if (newCount < oldCount) {
        const data = ws.getUserData();
        if (!ctx.droppedHandler && data.kind === 'session' && !data.rare?.slow) countLegacyDrop(ws as SessionSocket, data);
      }
      // Only a topic's first member and its last matter: one decode for those.
      if ((oldCount === 0 && newCount > 0) || (newCount === 0 && oldCount > 0)) ctx.membership.topic(textDecoder.decode(topic), newCount, oldCount);
    },

    // Only the official build calls this; closeOnBackpressureLimit closes the socket either way.
    ...(ctx.droppedHandler && {
      dropped(ws: Socket) {
        const data = ws.getUserData();
        if (data.kind === 'session') slowConsumer(data);
      },
    }),

    close(ws, code, message) {
      const data = ws.getUserData();
      if (data.kind === 'rejected') return;
      const sws = ws as SessionSocket;
      data.closed = true;
      ctx.addressCounts.release(data.remoteAddress);
      // Never admitted: its seat is given back when the registry answers (admission.ts).
      if (data.kind === 'pending') return;
      sessions.delete(sws);
      ctx.membership.closed(sws, data, code);
      ctx.seats.release(data.userId, data.connectionId);
      ctx.lifecycle.disconnected(data.userId, data.connectionId);
      ctx.expiry.remove(sws, closesAt(ctx, data));
      const reason = message.byteLength > 0 ? textDecoder.decode(message) : '';
      if (code === 1006 && reason === UWS_TOO_BIG) metrics.messageTooBig('ceiling');

      metrics.connectionClosed(code);
      if (log.isLevelEnabled('debug')) connectionLog(log, data).debug({ event: 'connection_close', code, reason }, 'connection closed');
    },
  };
}
