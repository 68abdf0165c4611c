/**
 * One client frame, in order: size (1009), rate (rate_limited, then 4429), binary, one JSON.parse,
 * the typed handler. Invalid frames are answered, then closed with 1008 once a client keeps sending
 * them. Frames that arrive before admission are kept and go the same way once admitted.
 */
import type { Admission } from './admission.js';
import { INVALID_WINDOW_MS, RATE_STRIKE_WINDOW_MS } from './config.js';
import { CLOSES, messageError, type MessageError } from './errors.js';
import type { HandlerContext } from './handler-context.js';
import { sendError } from './replies.js';
import { handle } from './handlers.js';
import { newStrikes, strike, takeToken } from './limits.js';
import { connectionLog } from './log.js';
import { isParseFailure, parseFrame } from './protocol.js';
import { closeWith, type Session, type SessionSocket } from './session.js';

export interface Inbound {
  /** A frame of an admitted session. */
  receive(ws: SessionSocket, session: Session, message: ArrayBuffer, isBinary: boolean): void;
  /** A frame of a pending session: kept for later, or the socket is closed. */
  keepEarly(ws: SessionSocket, session: Session, message: ArrayBuffer, isBinary: boolean): void;
}

export function createInbound(ctx: HandlerContext, admission: Admission): Inbound {
  const { config, metrics, log } = ctx;

  /** An invalid message: error envelope, and 1008 once a client keeps sending them. */
  const invalid = (ws: SessionSocket, session: Session, error: MessageError, id: string | undefined): void => {
    if (strike(((session.rare ??= {}).invalidStrikes ??= newStrikes()), Date.now(), INVALID_WINDOW_MS, config.maxInvalidMessages)) {
      metrics.policyClose('invalid_messages');
      closeWith(ws, CLOSES.invalid_messages);
      return;
    }
    sendError(ctx, ws, error, id);
  };

  /** A frame over WS_MESSAGE_MAX_SIZE closes the socket with 1009. */
  const tooBig = (ws: SessionSocket, message: ArrayBuffer): boolean => {
    if (message.byteLength <= config.messageMaxSize) return false;
    metrics.messageTooBig('limit');
    closeWith(ws, CLOSES.too_big);
    return true;
  };

  /** One client frame of an admitted session. */
  const receive = (ws: SessionSocket, session: Session, message: ArrayBuffer, isBinary: boolean): void => {
    if (tooBig(ws, message)) return;
    const now = Date.now();
    if (!takeToken(session, now, config.rateLimit, config.rateBurst)) {
      metrics.rateLimited();
      if (strike(((session.rare ??= {}).rateStrikes ??= newStrikes()), now, RATE_STRIKE_WINDOW_MS, config.rateLimitCloseAfter)) {
        metrics.policyClose('flooding');
        closeWith(ws, CLOSES.flooding);
        return;
      }
      sendError(ctx, ws, messageError('rate_limited', config.rateLimit), undefined);
      return;
    }
    if (isBinary) {
      metrics.messageReceived('invalid');
      invalid(ws, session, messageError('binary'), undefined);
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
      connectionLog(log, session).error({ err, type: parsed.type }, 'message handler failed');
      if (!session.closed) sendError(ctx, ws, messageError('internal_error'), parsed.id);
    }
  };

  /** A frame before admission is kept and handled once admitted; more than the rate limiter's burst closes like a flood. */
  const keepEarly = (ws: SessionSocket, session: Session, message: ArrayBuffer, isBinary: boolean): void => {
    if (tooBig(ws, message) || admission.keep(session, message, isBinary)) return;
    metrics.policyClose('flooding');
    closeWith(ws, CLOSES.flooding);
  };

  return { receive, keepEarly };
}
