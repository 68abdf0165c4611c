/**
 * The uWS WebSocket behaviour, handlers in lifecycle order: upgrade (admission.ts), open (admitted
 * at once, or once the user slot is granted), message (size, rate, one JSON.parse, handler),
 * subscription (room gauge and broker interest), dropped, close (release everything).
 */
import { createAdmission, type AdmissionContext, type EarlyFrame } from './admission.js';
import { INVALID_WINDOW_MS, RATE_STRIKE_WINDOW_MS } from './config.js';
import { CloseCode, messageError, type MessageError } from './errors.js';
import { announceMembership, closesAt, handle, sendError, type HandlerContext } from './handlers.js';
import { newStrikes, strike, takeToken } from './limits.js';
import { encodeReply, isParseFailure, parseFrame } from './protocol.js';
import { userRoom } from './rooms.js';
import type { Session, SessionSocket, Socket, UserData } from './session.js';
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

  /** An invalid message: error envelope, and 1008 once a client keeps sending them. */
  const invalid = (ws: SessionSocket, session: Session, error: MessageError, id: string | undefined): void => {
    if (strike((session.invalidStrikes ??= newStrikes()), Date.now(), INVALID_WINDOW_MS, config.maxInvalidMessages)) {
      metrics.policyClose('invalid_messages');
      ws.end(CloseCode.POLICY_VIOLATION, 'too many invalid messages');
      return;
    }
    sendError(ctx, ws, error, id);
  };

  /** A socket closed (or about to be) for exceeding WS_MAX_BACKPRESSURE: counted once. */
  const slowConsumer = (data: Session): void => {
    if (data.slow) return;
    data.slow = true;
    metrics.backpressureDrop();
    log.info({ event: 'slow_consumer', connection_id: data.connectionId, user_id: data.userId }, 'slow consumer closed');
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

  /** An admitted socket: indexed, its personal room joined, `connected` sent, then any early frames. */
  const welcome = (ws: SessionSocket, early: readonly EarlyFrame[]): void => {
    const data = ws.getUserData();
    sessions.add(ws);
    metrics.connectionOpened();
    ctx.expiry.add(ws, closesAt(ctx, data));
    const personal = userRoom(data.userId);
    ctx.delivery.flush();
    ws.subscribe(personal);
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
    log.debug({ event: 'connection_open', connection_id: data.connectionId, user_id: data.userId, remote: data.remoteAddress }, 'connection opened');
    // Admitted while the drain began: counted like any other, then sent elsewhere.
    if (ctx.isDraining()) return ws.end(CloseCode.SERVICE_RESTART, 'service restart');
    for (const { frame, isBinary } of early) {
      if (data.closed) return;
      receive(ws, data, frame, isBinary);
    }
  };

  /** A frame over WS_MESSAGE_MAX_SIZE closes the socket with 1009. */
  const tooBig = (ws: SessionSocket, message: ArrayBuffer): boolean => {
    if (message.byteLength <= config.messageMaxSize) return false;
    metrics.messageTooBig('limit');
    ws.end(CloseCode.MESSAGE_TOO_BIG, 'message too big');
    return true;
  };

  /** One client frame of an admitted session. */
  const receive = (ws: SessionSocket, session: Session, message: ArrayBuffer, isBinary: boolean): void => {
    if (tooBig(ws, message)) return;
    const now = Date.now();
    if (!takeToken(session, now, config.rateLimit, config.rateBurst)) {
      metrics.rateLimited();
      if (strike((session.rateStrikes ??= newStrikes()), now, RATE_STRIKE_WINDOW_MS, config.rateLimitCloseAfter)) {
        metrics.policyClose('flooding');
        ws.end(CloseCode.TOO_MANY, 'rate limit exceeded');
        return;
      }
      sendError(ctx, ws, messageError('rate_limited', `at most ${config.rateLimit} messages per second`), undefined);
      return;
    }
    if (isBinary) {
      metrics.messageReceived('invalid');
      invalid(ws, session, messageError('binary_not_supported', 'only JSON text frames are supported'), undefined);
      return;
    }
    const parsed = parseFrame(Buffer.from(message).toString('utf8'));
    if (isParseFailure(parsed)) {
      metrics.messageReceived(parsed.type ?? 'invalid');
      invalid(ws, session, parsed.error, parsed.id);
      return;
    }
    metrics.messageReceived(parsed.type);
    try {
      handle(ctx, ws, session, parsed);
    } catch (err) {
      log.error({ err, connection_id: session.connectionId, type: parsed.type }, 'message handler failed');
      if (!session.closed) sendError(ctx, ws, messageError('internal_error', 'internal error'), parsed.id);
    }
  };

  /** A frame before admission is kept and handled once admitted; more than the rate limiter's burst closes like a flood. */
  const keepEarly = (ws: SessionSocket, session: Session, message: ArrayBuffer, isBinary: boolean): void => {
    if (tooBig(ws, message) || admission.keep(session, message, isBinary)) return;
    metrics.policyClose('flooding');
    ws.end(CloseCode.TOO_MANY, 'rate limit exceeded');
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
        ws.end(data.rejection.code, data.rejection.message);
        return;
      }
      const sws = ws as SessionSocket;
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
      if (newCount > oldCount) {
        if (oldCount > 0) return;
        const room = textDecoder.decode(topic);
        metrics.roomAdded();
        ctx.broker.subscribe(room);
        return;
      }
      const data = ws.getUserData();
      if (!ctx.droppedHandler && data.kind === 'session' && !data.slow) countLegacyDrop(ws as SessionSocket, data);
      const room = textDecoder.decode(topic);
      if (newCount === 0) {
        metrics.roomRemoved();
        ctx.broker.unsubscribe(room);
      }
      // A member left (leave_room, a revoked room, or a close): tell the others. Only the socket's
      // own user: room can be a user: topic, and its loss is not announced.
      if (data.kind === 'session' && !room.startsWith('user:')) announceMembership(ctx, data, room, 'user_left');
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
      // Never admitted: its slot is given back when the registry answers (admission.ts).
      if (data.kind === 'pending') return;
      sessions.delete(sws);
      ctx.slots.release(data.userId, data.connectionId);
      ctx.expiry.remove(sws, closesAt(ctx, data));
      const reason = message.byteLength > 0 ? textDecoder.decode(message) : '';
      if (code === 1006 && reason === UWS_TOO_BIG) metrics.messageTooBig('ceiling');

      metrics.connectionClosed(code);
      log.debug({ event: 'connection_close', connection_id: data.connectionId, user_id: data.userId, code, reason }, 'connection closed');
    },
  };
}
