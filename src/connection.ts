/**
 * The uWS WebSocket behaviour, handlers in lifecycle order: upgrade (copy what is needed out of
 * `req`, verify, acquire the user slot, `res.upgrade`), open, message (size, rate, one JSON.parse,
 * handler), subscription (room gauge and broker interest), dropped, close (release everything).
 */
import type { Identity } from './auth.js';
import { INVALID_WINDOW_MS, RATE_STRIKE_WINDOW_MS } from './config.js';
import { CloseCode, isRejection, messageError, rejection, type MessageError, type Rejection } from './errors.js';
import { announceMembership, closesAt, handle, sendError, type HandlerContext } from './handlers.js';
import { checkOrigin, extractToken, refusalProtocol } from './handshake.js';
import { newStrikes, strike, takeToken, type AddressCounts, type ConnectionSlots, type FailureLimiter } from './limits.js';
import type { ClientAddress } from './proxies.js';
import { encodeReply, isParseFailure, parseFrame } from './protocol.js';
import { userRoom } from './rooms.js';
import type { Session, SessionSocket, Socket, UserData } from './session.js';
import type { SessionIndex } from './sessions.js';
import type { HttpResponse, WebSocketBehavior } from './uws.js';

export interface ConnectionContext extends HandlerContext {
  readonly slots: ConnectionSlots;
  /** Every open session: for drain, the node-wide cap, one-connection delivery, disconnects. */
  readonly sessions: SessionIndex;
  readonly isDraining: () => boolean;
  /** The loaded uWS build reports backpressure drops (`dropped` handler). */
  readonly droppedHandler: boolean;
  /** The loaded uWS build survives an upgrade inside `res.cork` after the upgrade callback returned (uws.ts). */
  readonly corkAsyncUpgrade: boolean;
  readonly nextConnectionId: () => string;
  /** The real client address (X-Forwarded-For from trusted proxies). */
  readonly clientAddress: ClientAddress;
  readonly addressCounts: AddressCounts;
  readonly authFailures: FailureLimiter;
}

const USER_LIMIT = rejection('user_limit', CloseCode.TOO_MANY, 'too many connections for this user');
const IP_LIMIT = rejection('ip_limit', CloseCode.TOO_MANY, 'too many connections from this address');
const INTERNAL = rejection('internal', CloseCode.INTERNAL, 'internal error');

/** Refusals that count as a failed authentication for the per-address limiter. */
const AUTH_FAILURES = new Set(['token_missing', 'token_ambiguous', 'token_invalid', 'token_expired', 'subprotocol']);

/** uWS's own reason when a frame passes maxPayloadLength (it then closes without a close frame). */
const UWS_TOO_BIG = 'Received too big message';
const textDecoder = new TextDecoder();

function refuseUpgrade(res: HttpResponse, status: '503 Service Unavailable' | '429 Too Many Requests', reason: string, retryAfter: number): void {
  res.cork(() => {
    res.writeStatus(status).writeHeader('Content-Type', 'application/json').writeHeader('Retry-After', String(retryAfter));
    res.end(JSON.stringify({ error: status === '429 Too Many Requests' ? 'too_many_requests' : 'unavailable', reason }), true);
  });
}

export function createBehavior(ctx: ConnectionContext): WebSocketBehavior<UserData> {
  const { config, metrics, log, sessions } = ctx;
  /** Upgrades waiting for a slot; they count against WS_MAX_CONNECTIONS too. */
  let pending = 0;

  const reject = (rej: Rejection, remoteAddress: string, userId?: string): RejectedData => {
    metrics.connectionRejected(rej.reason);
    if (AUTH_FAILURES.has(rej.reason)) ctx.authFailures.fail(remoteAddress, Date.now());
    log.warn({ event: 'connection_rejected', reason: rej.reason, code: rej.code, user_id: userId, remote: remoteAddress }, 'connection rejected');
    return { kind: 'rejected', rejection: rej };
  };

  const newSession = (identity: Identity, connectionId: string, remoteAddress: string): Session => ({
    kind: 'session',
    connectionId,
    userId: identity.userId,
    username: identity.username,
    grant: identity.grant,
    expiresAt: identity.expiresAt,
    remoteAddress,
    roomCount: 0,
    tokens: config.rateBurst,
    refilledAt: Date.now(),
    rateStrikes: undefined,
    invalidStrikes: undefined,
    slow: false,
    closed: false,
  });

  /** An invalid message: error envelope, and 1008 once a client keeps sending them. */
  const invalid = (ws: SessionSocket, session: Session, error: MessageError, id: string | undefined): void => {
    if (strike((session.invalidStrikes ??= newStrikes()), Date.now(), INVALID_WINDOW_MS, config.maxInvalidMessages)) {
      metrics.policyClose('invalid_messages');
      ws.end(CloseCode.POLICY_VIOLATION, 'too many invalid messages');
      return;
    }
    sendError(ctx, ws, error, id);
  };

  return {
    compression: 0, // uWS.DISABLED: the legacy build has no compression; one encoding per event either way
    maxPayloadLength: config.messageMaxSize * 2,
    idleTimeout: config.heartbeatInterval,
    sendPingsAutomatically: true,
    maxBackpressure: config.maxBackpressure,
    closeOnBackpressureLimit: true,
    maxLifetime: 0,

    upgrade(res, req, context) {
      if (ctx.isDraining()) {
        metrics.upgradeRefused('draining');
        return refuseUpgrade(res, '503 Service Unavailable', 'draining', 1);
      }
      if (config.maxConnections > 0 && sessions.size + pending >= config.maxConnections) {
        metrics.upgradeRefused('max_connections');
        return refuseUpgrade(res, '503 Service Unavailable', 'max_connections', 1);
      }
      // req is only valid until the first await or return: everything is copied out of it here.
      const remoteAddress = ctx.clientAddress(textDecoder.decode(res.getRemoteAddressAsText()), req.getHeader('x-forwarded-for'));
      // A flood of bad tokens from one address is refused before any verification work.
      if (ctx.authFailures.blocked(remoteAddress, Date.now())) {
        metrics.upgradeRefused('auth_failures');
        return refuseUpgrade(res, '429 Too Many Requests', 'too many failed authentications from this address', 60);
      }
      const key = req.getHeader('sec-websocket-key');
      const protocols = req.getHeader('sec-websocket-protocol');
      const extensions = req.getHeader('sec-websocket-extensions');
      const origin = req.getHeader('origin');
      const query = req.getQuery() ?? '';

      const upgrade = (data: UserData, protocol: string): void => res.upgrade<UserData>(data, key, protocol, extensions, context);
      const refuse = (rej: Rejection, userId?: string): void => upgrade(reject(rej, remoteAddress, userId), refusalProtocol(protocols));

      const originProblem = checkOrigin(origin, config.allowedOrigins);
      if (originProblem) return refuse(originProblem);
      const found = extractToken({ query, protocols, origin });
      if (isRejection(found)) return refuse(found);
      const identity = ctx.auth.verify(found.token);
      if (isRejection(identity)) return refuse(identity);
      if (!ctx.addressCounts.acquire(remoteAddress)) return refuse(IP_LIMIT, identity.userId);

      const connectionId = ctx.nextConnectionId();
      const admit = (granted: boolean): void => {
        if (granted) return upgrade(newSession(identity, connectionId, remoteAddress), found.protocol);
        ctx.addressCounts.release(remoteAddress);
        refuse(USER_LIMIT, identity.userId);
      };
      const slot = ctx.slots.acquire(identity.userId, connectionId);
      // The node's own count answers at once: upgrade within this callback, no abort handler needed.
      if (typeof slot === 'boolean') return admit(slot);
      let aborted = false;
      res.onAborted(() => {
        aborted = true;
      });
      // Corked as uWS documents, except on the build whose cork breaks around an upgrade (uws.ts).
      const later = (write: () => void): void => void (ctx.corkAsyncUpgrade ? res.cork(write) : write());
      pending += 1;
      slot.then(
        (granted) => {
          pending -= 1;
          if (!aborted) return later(() => admit(granted));
          ctx.addressCounts.release(remoteAddress);
          if (granted) ctx.slots.release(identity.userId, connectionId);
        },
        (err: unknown) => {
          pending -= 1;
          ctx.addressCounts.release(remoteAddress);
          log.error({ err, user_id: identity.userId }, 'connection slot lookup failed');
          if (!aborted) later(() => refuse(INTERNAL, identity.userId));
        },
      );
    },

    open(ws) {
      const data = ws.getUserData();
      if (data.kind === 'rejected') {
        ws.end(data.rejection.code, data.rejection.message);
        return;
      }
      const sws = ws as SessionSocket;
      sessions.add(sws);
      metrics.connectionOpened();
      ctx.expiry.add(sws, closesAt(ctx, data));
      const personal = userRoom(data.userId);
      ctx.delivery.flush();
      ws.subscribe(personal);
      ctx.delivery.send(
        sws,
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
      // Upgraded while the drain began: counted like any other, then sent elsewhere.
      if (ctx.isDraining()) ws.end(CloseCode.SERVICE_RESTART, 'service restart');
    },

    message(ws, message, isBinary) {
      const sws = ws as SessionSocket;
      const session = sws.getUserData();
      if (session.kind !== 'session') return;
      if (message.byteLength > config.messageMaxSize) {
        metrics.messageTooBig('limit');
        ws.end(CloseCode.MESSAGE_TOO_BIG, 'message too big');
        return;
      }
      const now = Date.now();
      if (!takeToken(session, now, config.rateLimit, config.rateBurst)) {
        metrics.rateLimited();
        if (strike((session.rateStrikes ??= newStrikes()), now, RATE_STRIKE_WINDOW_MS, config.rateLimitCloseAfter)) {
          metrics.policyClose('flooding');
          ws.end(CloseCode.TOO_MANY, 'rate limit exceeded');
          return;
        }
        sendError(ctx, sws, messageError('rate_limited', `at most ${config.rateLimit} messages per second`), undefined);
        return;
      }
      if (isBinary) {
        metrics.messageReceived('invalid');
        invalid(sws, session, messageError('binary_not_supported', 'only JSON text frames are supported'), undefined);
        return;
      }
      const parsed = parseFrame(Buffer.from(message).toString('utf8'));
      if (isParseFailure(parsed)) {
        metrics.messageReceived(parsed.type ?? 'invalid');
        invalid(sws, session, parsed.error, parsed.id);
        return;
      }
      metrics.messageReceived(parsed.type);
      try {
        handle(ctx, sws, session, parsed);
      } catch (err) {
        log.error({ err, connection_id: session.connectionId, type: parsed.type }, 'message handler failed');
        if (!session.closed) sendError(ctx, sws, messageError('internal_error', 'internal error'), parsed.id);
      }
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
      const room = textDecoder.decode(topic);
      if (newCount === 0) {
        metrics.roomRemoved();
        ctx.broker.unsubscribe(room);
      }
      // A member left (leave_room, a revoked room, or a close): tell the others. Only the socket's
      // own user: room can be a user: topic, and its loss is not announced.
      const data = ws.getUserData();
      if (data.kind === 'session' && !room.startsWith('user:')) announceMembership(ctx, data, room, 'user_left');
    },

    // Only the official build calls this; closeOnBackpressureLimit closes the socket either way.
    ...(ctx.droppedHandler && {
      dropped(ws: Socket) {
        const data = ws.getUserData();
        if (data.kind !== 'session' || data.slow) return;
        data.slow = true;
        metrics.backpressureDrop();
        log.info({ event: 'slow_consumer', connection_id: data.connectionId, user_id: data.userId }, 'slow consumer closed');
      },
    }),

    close(ws, code, message) {
      const data = ws.getUserData();
      if (data.kind !== 'session') return;
      const sws = ws as SessionSocket;
      data.closed = true;
      sessions.delete(sws);
      ctx.slots.release(data.userId, data.connectionId);
      ctx.addressCounts.release(data.remoteAddress);
      ctx.expiry.remove(sws, closesAt(ctx, data));
      const reason = message.byteLength > 0 ? textDecoder.decode(message) : '';
      if (code === 1006 && reason === UWS_TOO_BIG) metrics.messageTooBig('ceiling');
      metrics.connectionClosed(code);
      log.debug({ event: 'connection_close', connection_id: data.connectionId, user_id: data.userId, code, reason }, 'connection closed');
    },
  };
}

type RejectedData = Extract<UserData, { kind: 'rejected' }>;
