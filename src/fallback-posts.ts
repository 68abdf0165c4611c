/**
 * Client messages of fallback sessions: `POST /api/v1/ws/stream` with one client frame as the body,
 * `X-WsEdge-Session` and a per-session `X-WsEdge-Seq` (1, 2, ...). No stickiness: a POST that
 * reaches a node not holding the session is forwarded to the holder over the broker (frame `f`)
 * and answered once Redis handed it to the holder's subscription (else 503: the seq is not used
 * up); the holder applies a session's POSTs in `seq` order within a small reorder window,
 * whichever node they came through.
 */
import type { Authenticator } from './auth.js';
import type { Broker, Payload } from './broker.js';
import type { Config } from './config.js';
import { FALLBACK_REFUSALS, isRejection } from './errors.js';
import type { FallbackMetrics, PostOutcome } from './fallback-metrics.js';
import { corsHeaders } from './fallback-stream.js';
import { checkOrigin } from './handshake.js';
import { sendJson, sendRefusal } from './http.js';
import { newBucket, takeToken, type Bucket, type FailureLimiter } from './limits.js';
import type { Logger } from './log.js';
import type { ClientAddress } from './proxies.js';
import { isValidId } from './rooms.js';
import type { HttpRequest, HttpResponse } from './uws.js';
import type WebSocket from 'ws';

/** POSTs a session's holder keeps while an earlier `seq` has not arrived. */
export const REORDER_WINDOW = 32;
/** A missing `seq` waited for this long is skipped (its POST was lost): the ones after it are applied. */
export const GAP_TIMEOUT_MS = 2000;
/** Forwards this node has handed to Redis and not heard back about; more are answered 503. */
export const MAX_FORWARDS_IN_FLIGHT = 1024;
/** The cookie a plain EventSource may carry its token in (it cannot set headers). */
export const TOKEN_COOKIE = 'wsedge_token';

const textDecoder = new TextDecoder();

const SESSION_ID = /^[A-Za-z0-9_-]{1,64}\.[A-Za-z0-9_-]{24}$/;

/** The cookie's value ('' when absent). */
export function cookieToken(cookie: string): string {
  for (const part of cookie.split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0 && part.slice(0, eq).trim() === TOKEN_COOKIE) return part.slice(eq + 1).trim();
  }
  return '';
}

/**
 * The tokens a request carries: query `token` and Authorization: Bearer (more than one is refused);
 * without either, the `wsedge_token` cookie. The cookie is an ambient credential (another site's
 * page would send it too), so it is taken only from a request without Origin (a same-origin
 * EventSource) or from an origin the operator listed in WS_ALLOWED_ORIGINS.
 */
export function requestTokens(req: HttpRequest, params: URLSearchParams, allowed: readonly string[]): string[] {
  const bearer = /^bearer\s+(.+)$/i.exec(req.getHeader('authorization').trim())?.[1]?.trim() ?? '';
  const explicit = [...params.getAll('token'), bearer].filter((t) => t !== '');
  if (explicit.length > 0) return explicit;
  const cookie = cookieToken(req.getHeader('cookie'));
  const origin = req.getHeader('origin');
  const trusted = origin === '' || (allowed.length > 0 && checkOrigin(origin, allowed) === undefined);
  return cookie !== '' && trusted ? [cookie] : [];
}

/** A session's POSTs in `seq` order. */
export interface Order {
  /** Applies `frame` now, keeps it for later, or refuses it; the ones it unblocks follow at once. */
  accept(seq: number, frame: string): 'applied' | 'buffered' | 'duplicate' | 'out_of_order';
  stop(): void;
}

export function createOrder(send: (frame: string) => void, skipped: () => void): Order {
  let next = 1;
  const waiting = new Map<number, string>();
  let timer: NodeJS.Timeout | undefined;
  const release = (): void => {
    for (let frame = waiting.get(next); frame !== undefined; frame = waiting.get(next)) {
      waiting.delete(next);
      next += 1;
      send(frame);
    }
  };
  const skip = (): void => {
    timer = undefined;
    if (waiting.size === 0) return;
    next = Math.min(...waiting.keys());
    skipped();
    release();
    if (waiting.size > 0) timer = setTimeout(skip, GAP_TIMEOUT_MS);
  };
  return {
    accept(seq, frame) {
      if (seq < next || waiting.has(seq)) return 'duplicate';
      if (seq >= next + REORDER_WINDOW) return 'out_of_order';
      if (seq > next) {
        waiting.set(seq, frame);
        timer ??= setTimeout(skip, GAP_TIMEOUT_MS);
        return 'buffered';
      }
      next += 1;
      send(frame);
      release();
      if (waiting.size === 0 && timer !== undefined) {
        clearTimeout(timer);
        timer = undefined;
      }
      return 'applied';
    },
    stop() {
      clearTimeout(timer);
      waiting.clear();
    },
  };
}

/** What the holder needs of one session. */
export interface PostTarget {
  readonly userId: string;
  readonly socket: WebSocket;
  readonly order: Order;
  readonly bucket: Bucket;
}

export interface PostsDeps {
  readonly config: Config;
  readonly log: Logger;
  readonly metrics: FallbackMetrics;
  readonly auth: Authenticator;
  readonly broker: Broker;
  readonly held: (sessionId: string) => PostTarget | undefined;
  /** The upgrades' WS_AUTH_FAILURE_LIMIT: a POST's refused token counts against its address as an upgrade's does. */
  readonly authFailures: FailureLimiter;
  readonly clientAddress: ClientAddress;
}

/** What a POST asks, copied out of `req`. */
interface PostRequest {
  readonly tokens: readonly string[];
  /** The client's address, as the upgrade would see it (WS_TRUSTED_PROXIES). */
  readonly address: string;
  readonly sessionId: string;
  readonly seq: number;
  readonly cors: Record<string, string>;
}

const ANSWERS: Partial<Record<PostOutcome, keyof typeof FALLBACK_REFUSALS>> = {
  unknown_session: 'unknown_session',
  forbidden: 'forbidden',
  rate_limited: 'rate_limited',
  out_of_order: 'out_of_order',
  busy: 'busy',
};

/** Users whose forwarded POSTs are rate-limited on this node at once; the least recent go first. */
const MAX_FORWARDING_USERS = 10_000;

export function createPosts(deps: PostsDeps) {
  const { config, metrics, broker } = deps;
  let inFlight = 0;
  // A POST for another node's session crosses Redis before its holder can refuse it: each user's
  // are rate-limited here first, at the session's own WS_RATE_LIMIT and WS_RATE_BURST.
  const forwarding = new Map<string, Bucket>();
  const mayForward = (userId: string): boolean => {
    const now = Date.now();
    let bucket = forwarding.get(userId);
    if (bucket === undefined) {
      if (forwarding.size >= MAX_FORWARDING_USERS) forwarding.delete(forwarding.keys().next().value!);
      bucket = newBucket(config.rateBurst, now);
    }
    // Re-inserted: the map's order is the users' last use.
    forwarding.delete(userId);
    forwarding.set(userId, bucket);
    return takeToken(bucket, now, config.rateLimit, config.rateBurst);
  };

  /** The holder's decision. A forwarded POST over the rate goes on to the socket, whose own limit answers on the stream. */
  function apply(sessionId: string, userId: string, seq: number, frame: string, forwarded: boolean): PostOutcome {
    const session = deps.held(sessionId);
    if (session === undefined) return 'unknown_session';
    if (session.userId !== userId) return 'forbidden';
    if (!takeToken(session.bucket, Date.now(), config.rateLimit, config.rateBurst) && !forwarded) return 'rate_limited';
    return session.order.accept(seq, frame);
  }

  function answer(res: HttpResponse, outcome: PostOutcome, headers: Record<string, string>): void {
    metrics.post(outcome);
    const refusal = ANSWERS[outcome];
    if (refusal === undefined) return sendJson(res, '202 Accepted', { ok: true, outcome }, headers);
    sendRefusal(res, FALLBACK_REFUSALS[refusal], { limit: REORDER_WINDOW, headers });
  }

  function decide(res: HttpResponse, request: PostRequest, body: string, aborted: () => boolean): void {
    const { cors, address } = request;
    const now = Date.now();
    const identity = request.tokens.length === 1 ? deps.auth.verify(request.tokens[0]!) : undefined;
    if (identity === undefined || isRejection(identity)) {
      deps.authFailures.fail(address, now);
      metrics.post('unauthorized');
      return sendRefusal(res, FALLBACK_REFUSALS.unauthorized, { headers: cors });
    }
    const { sessionId, seq } = request;
    const owner = sessionId.slice(0, sessionId.indexOf('.'));
    if (owner === config.nodeId || broker.kind === 'memory') return answer(res, apply(sessionId, identity.userId, seq, body, false), cors);
    if (!mayForward(identity.userId)) return answer(res, 'rate_limited', cors);
    if (inFlight >= MAX_FORWARDS_IN_FLIGHT || !broker.isUp()) return answer(res, 'busy', cors);
    inFlight += 1;
    metrics.forwardedOut();
    void broker.forward(sessionId, `${identity.userId} ${seq}\n${body}`).then((ok) => {
      inFlight -= 1;
      if (!aborted()) answer(res, ok ? 'forwarded' : 'busy', cors);
    });
  }

  function handle(res: HttpResponse, req: HttpRequest): void {
    const params = new URLSearchParams(req.getQuery() ?? '');
    const tokens = requestTokens(req, params, config.allowedOrigins);
    const sessionId = req.getHeader('x-wsedge-session') || (params.get('session') ?? '');
    const seq = Number(req.getHeader('x-wsedge-seq') || (params.get('seq') ?? ''));
    const max = config.messageMaxSize;
    const cors = corsHeaders(req.getHeader('origin'), config.allowedOrigins);
    const address = deps.clientAddress(textDecoder.decode(res.getRemoteAddressAsText()), req.getHeader('x-forwarded-for'));
    let aborted = false;
    res.onAborted(() => {
      aborted = true;
    });
    // A flood of bad tokens from one address is refused before its body is read or its token verified, as at the upgrade.
    if (!deps.authFailures.mayVerify(address, Date.now())) {
      metrics.post('auth_failures');
      return sendRefusal(res, FALLBACK_REFUSALS.auth_failures, { closeConnection: true, headers: cors });
    }
    if (!SESSION_ID.test(sessionId) || !Number.isSafeInteger(seq) || seq < 1) {
      metrics.post('bad_session');
      return sendRefusal(res, FALLBACK_REFUSALS.bad_session, { closeConnection: true, headers: cors });
    }
    if (Number(req.getHeader('content-length')) > max) {
      metrics.post('too_large');
      return sendRefusal(res, FALLBACK_REFUSALS.too_large, { limit: max, closeConnection: true, headers: cors });
    }
    const chunks: Buffer[] = [];
    let size = 0;
    let done = false;
    res.onData((chunk, isLast) => {
      if (done || aborted) return;
      size += chunk.byteLength;
      if (size > max) {
        done = true;
        metrics.post('too_large');
        return sendRefusal(res, FALLBACK_REFUSALS.too_large, { limit: max, closeConnection: true, headers: cors });
      }
      // uWS reuses the chunk's memory once this returns.
      chunks.push(Buffer.from(chunk.slice(0)));
      if (!isLast) return;
      done = true;
      decide(res, { tokens, address, sessionId, seq, cors }, Buffer.concat(chunks).toString(), () => aborted);
    });
  }

  /** A POST another node forwarded: `<user id> <seq>\n<frame>`; counted here, answered there. */
  function forwarded(sessionId: string, payload: Payload): void {
    const text = typeof payload === 'string' ? payload : Buffer.from(payload).toString();
    const newline = text.indexOf('\n');
    const [userId, seqText] = text.slice(0, Math.max(newline, 0)).split(' ');
    const seq = Number(seqText);
    if (newline < 0 || !isValidId(userId) || !Number.isSafeInteger(seq) || seq < 1) return metrics.post('bad_session');
    metrics.post(apply(sessionId, userId, seq, text.slice(newline + 1), true));
  }

  return { handle, forwarded };
}
