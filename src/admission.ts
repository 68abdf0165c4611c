/**
 * The upgrade path: copy what is needed out of `req`, check origin and token, take the address and
 * user seats, and `res.upgrade` before the upgrade callback returns, always. When the user seat
 * needs the Redis connection registry, the socket opens first and waits unadmitted: `connected`
 * (or the 4429 refusal) follows when the registry answers. An `HttpResponse` is never written after
 * its callback returned, because upgrading one inside a later `res.cork` is unsafe on both uWS
 * builds: the upgrade reallocates the socket, and when the allocator grows it in place the cork's
 * epilogue takes the new WebSocket for the HTTP response it was and may close it (1006 right after
 * `connected`; README "uWebSockets.js builds").
 */
import { tokenArrives } from './revocation.js';
import type { Authenticator, Identity } from './auth.js';
import type { Config } from './config.js';
import { isRejection, REJECTIONS, UPGRADE_REFUSALS, type Rejection } from './errors.js';
import { checkOrigin, extractToken, refusalProtocol } from './handshake.js';
import { sendRefusal } from './http.js';
import type { AddressCounts, ConnectionSeats, FailureLimiter } from './limits.js';
import { connectionLog, type Logger } from './log.js';
import type { Metrics } from './metrics.js';
import type { ClientAddress } from './proxies.js';
import { closeWith, type Session, type SessionSocket, type UserData } from './session.js';
import type { SessionIndex } from './sessions.js';
import type { HttpRequest, HttpResponse, us_socket_context_t } from './uws.js';

export interface AdmissionContext {
  readonly config: Config;
  readonly log: Logger;
  readonly auth: Authenticator;
  readonly metrics: Metrics;
  readonly seats: ConnectionSeats;
  readonly sessions: SessionIndex;
  readonly isDraining: () => boolean;
  readonly nextConnectionId: () => string;
  /** The real client address (X-Forwarded-For from trusted proxies). */
  readonly clientAddress: ClientAddress;
  readonly addressCounts: AddressCounts;
  readonly authFailures: FailureLimiter;
}

/** Refusals that count as a failed authentication for the per-address limiter. */
const AUTH_FAILURES = new Set(['token_missing', 'token_ambiguous', 'token_invalid', 'token_expired', 'subprotocol']);

const textDecoder = new TextDecoder();

/** Answered over HTTP, before any socket exists; counted by the entry's name. */
function refuseUpgrade(res: HttpResponse, metrics: Metrics, name: keyof typeof UPGRADE_REFUSALS): void {
  metrics.upgradeRefused(name);
  sendRefusal(res, UPGRADE_REFUSALS[name], { closeConnection: true });
}

/** A client frame kept while its socket waited for admission. */
export interface EarlyFrame {
  readonly frame: ArrayBuffer;
  readonly isBinary: boolean;
}

export interface Admission {
  /** The uWS `upgrade` handler. */
  upgrade(res: HttpResponse, req: HttpRequest, context: us_socket_context_t): void;
  /**
   * For a `pending` socket (opened before its user seat was granted): runs `welcome` with the
   * frames it sent meanwhile once granted, or closes it with 4429 (4500 when the registry failed).
   */
  settle(ws: SessionSocket, welcome: (ws: SessionSocket, early: readonly EarlyFrame[]) => void): void;
  /** Keeps a frame of a `pending` socket (copied: uWS reuses the buffer); false when it holds WS_RATE_BURST already. */
  keep(session: Session, message: ArrayBuffer, isBinary: boolean): boolean;
}

/** What a pending socket waits on, and what it sent meanwhile. */
interface Waiting {
  readonly admission: Promise<boolean>;
  readonly early: EarlyFrame[];
}

/** The session, its token's user, `iat` and `jti` noted for live revocations (revocation.ts). */
function remembered(identity: Identity, session: Session): Session {
  tokenArrives(session.connectionId, identity);
  return session;
}

/** A new connection's state: at most 15 fields (see `Rare` in session.ts). */
export function sessionOf(identity: Identity, connectionId: string, remoteAddress: string, kind: Session['kind'], burst: number): Session {
  return {
    kind,
    connectionId,
    userId: identity.userId,
    username: identity.username,
    claim: identity.claim,
    expiresAt: identity.expiresAt,
    remoteAddress,
    rooms: undefined,
    roomCount: 0,
    tokens: burst,
    refilledAt: Date.now(),
    sends: undefined,
    pending: 0,
    rare: undefined,
    closed: false,
  };
}

export function createAdmission(ctx: AdmissionContext): Admission {
  const { config, metrics, log, sessions } = ctx;
  /**
   * Sockets open but not yet admitted, by connection id (uWS hands `open` and later handlers a
   * user data object of its own, not the one given to `res.upgrade`); they count against
   * WS_MAX_CONNECTIONS too. Kept here, not on every session: almost none is ever pending for more
   * than a Redis round trip.
   */
  const waiting = new Map<string, Waiting>();

  /** Counts a refusal: metrics, the failed-authentication limiter, a log line. */
  const rejected = (rej: Rejection, remoteAddress: string, userId?: string): void => {
    metrics.connectionRejected(rej.reason);
    if (AUTH_FAILURES.has(rej.reason)) ctx.authFailures.fail(remoteAddress, Date.now());
    log.warn({ event: 'connection_rejected', reason: rej.reason, code: rej.code, close_reason: rej.message, user_id: userId, remote: remoteAddress }, 'connection rejected');
  };

  const newSession = (identity: Identity, connectionId: string, remoteAddress: string, kind: Session['kind']): Session => remembered(identity, sessionOf(identity, connectionId, remoteAddress, kind, config.rateBurst));

  function upgrade(res: HttpResponse, req: HttpRequest, context: us_socket_context_t): void {
    if (ctx.isDraining()) return refuseUpgrade(res, metrics, 'draining');
    // Resolved at start (startNode): never undefined here.
    const max = config.maxConnections ?? 0;
    if (max > 0 && sessions.size + waiting.size >= max) return refuseUpgrade(res, metrics, 'max_connections');
    // req is only valid until this callback returns: everything is copied out of it here.
    const remoteAddress = ctx.clientAddress(textDecoder.decode(res.getRemoteAddressAsText()), req.getHeader('x-forwarded-for'), req.getHeader('x-wsedge-relay'));
    const now = Date.now();
    // A flood of bad tokens from one address is refused before any verification work.
    if (!ctx.authFailures.mayVerify(remoteAddress, now)) return refuseUpgrade(res, metrics, 'auth_failures');
    const key = req.getHeader('sec-websocket-key');
    const protocols = req.getHeader('sec-websocket-protocol');
    const extensions = req.getHeader('sec-websocket-extensions');
    const origin = req.getHeader('origin');
    const authorization = req.getHeader('authorization');
    const query = req.getQuery() ?? '';

    const open = (data: UserData, protocol: string): void => res.upgrade<UserData>(data, key, protocol, extensions, context);
    const refuse = (rej: Rejection, userId?: string): void => {
      rejected(rej, remoteAddress, userId);
      open({ kind: 'rejected', rejection: rej }, refusalProtocol(protocols));
    };

    const originProblem = checkOrigin(origin, config.allowedOrigins);
    if (originProblem) return refuse(originProblem);
    const found = extractToken({ query, protocols, origin, authorization });
    if (isRejection(found)) return refuse(found);
    const identity = ctx.auth.verify(found.token);
    if (isRejection(identity)) return refuse(identity);
    if (!ctx.addressCounts.acquire(remoteAddress)) return refuse(REJECTIONS.ip_limit, identity.userId);

    const connectionId = ctx.nextConnectionId();
    const seat = ctx.seats.acquire(identity.userId, connectionId);
    if (typeof seat === 'boolean') {
      // The node's own count answers at once.
      if (seat) return open(newSession(identity, connectionId, remoteAddress, 'session'), found.protocol);
      ctx.addressCounts.release(remoteAddress);
      return refuse(REJECTIONS.user_limit, identity.userId);
    }
    const session = newSession(identity, connectionId, remoteAddress, 'pending');
    waiting.set(connectionId, { admission: seat, early: [] });
    // Forgotten when the registry answers, whatever became of the socket.
    const forget = (): void => void waiting.delete(connectionId);
    seat.then(forget, forget);
    open(session, found.protocol);
  }

  function settle(ws: SessionSocket, welcome: (ws: SessionSocket, early: readonly EarlyFrame[]) => void): void {
    const session = ws.getUserData();
    const { admission, early } = waiting.get(session.connectionId)!;
    const finish = (granted: boolean | Error): void => {
      if (session.closed) {
        if (granted === true) ctx.seats.release(session.userId, session.connectionId);
        return;
      }
      if (granted === true) {
        session.kind = 'session';
        ws.cork(() => welcome(ws, early));
        return;
      }
      const rej = granted === false ? REJECTIONS.user_limit : REJECTIONS.internal;
      if (granted !== false) connectionLog(log, session).error({ err: granted }, 'connection seat lookup failed');
      rejected(rej, session.remoteAddress, session.userId);
      closeWith(ws, rej);
    };
    admission.then(finish, (err: unknown) => finish(err instanceof Error ? err : new Error(String(err))));
  }

  function keep(session: Session, message: ArrayBuffer, isBinary: boolean): boolean {
    const early = waiting.get(session.connectionId)?.early;
    if (early === undefined || early.length >= config.rateBurst) return false;
    early.push({ frame: message.slice(0), isBinary });
    return true;
  }

  return { upgrade, settle, keep };
}
