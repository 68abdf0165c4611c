/**
 * The HTTP fallback transport for clients whose proxies break the WebSocket upgrade. A fallback
 * session is a loopback WebSocket: `GET /api/v1/ws/stream` opens a `ws` client to this node's own
 * public port with the caller's token, Origin and real address (vouched for by the relay header,
 * proxies.ts), and writes every server frame, unchanged, as one SSE event or NDJSON line; POSTs
 * (fallback-posts.ts) become client frames on that socket. Admission, limits, rate limits, errors,
 * recovery, presence, drains and close codes are therefore the WebSocket's own; a close of the
 * loopback socket becomes the final `{"type":"closed","code","reason"}` before the stream ends.
 * docs/WEBSOCKET_API.md "HTTP fallback" is its prose form.
 */
import { randomBytes } from 'node:crypto';
import { isIP } from 'node:net';
import WebSocket from 'ws';
import type { Authenticator } from './auth.js';
import type { Broker, Payload } from './broker.js';
import type { Config } from './config.js';
import { FALLBACK_REFUSALS, refusalBody, statusLine, type HttpRefusal } from './errors.js';
import { createFallbackMetrics, type FallbackFormat, type FallbackMetrics } from './fallback-metrics.js';
import { createOrder, createPosts, requestTokens, type Order } from './fallback-posts.js';
import { encodePositions, follow, parsePositions, type Positions } from './fallback-positions.js';
import { corsHeaders, createStreamWriter, HEARTBEAT_SECONDS, type StreamWriter } from './fallback-stream.js';
import { sendRefusal } from './http.js';
import type { Logger } from './log.js';
import { MAX_TOKEN_LENGTH, PROTOCOL, WS_PATH } from './messages.js';
import { newBucket, type Bucket, type FailureLimiter } from './limits.js';
import { createClientAddress, createRelayTrust, RELAY_HEADER, type ClientAddress, type RelayTrust } from './proxies.js';
import { isValidRoom } from './rooms.js';
import type { Registry } from 'prom-client';
import type { HttpRequest, HttpResponse, TemplatedApp } from './uws.js';

/** The stream (GET) and its client messages (POST). */
export const STREAM_PATH = '/api/v1/ws/stream';
/** Streams whose loopback socket has not said `connected` yet, at once; more are refused 503. */
const MAX_OPENING = 1024;
/** A loopback socket that does not say `connected` (or close) within this is dropped: 503. */
const OPEN_TIMEOUT_MS = 10_000;
/** Bytes of a refused upgrade's body relayed to the caller. */
const MAX_REFUSAL_BODY = 4096;

/** One open fallback session on the node that holds it. */
export interface Held {
  readonly id: string;
  readonly userId: string;
  readonly socket: WebSocket;
  readonly order: Order;
  /** POSTs per second, WS_RATE_LIMIT and WS_RATE_BURST like the socket's own frames. */
  readonly bucket: Bucket;
}

export interface FallbackDeps {
  readonly config: Config;
  readonly log: Logger;
  readonly registry: Registry;
  readonly auth: Authenticator;
  readonly broker: Broker;
  /** The upgrades' failed-authentication limiter (WS_AUTH_FAILURE_LIMIT), shared by the POSTs. */
  readonly authFailures: FailureLimiter;
  /** The public app: the routes are added at once (before its catch-all). */
  readonly app: TemplatedApp;
  /** The public port, known once the app listens. */
  readonly port: () => number;
}

export interface Fallback {
  /** What the upgrade believes of a loopback socket's address (proxies.ts `withRelay`). */
  readonly relay: RelayTrust;
  /** A POST another node forwarded (broker frame `f`). */
  forwarded(sessionId: string, payload: Payload): void;
  readonly metrics: FallbackMetrics;
  sessions(): number;
}

/** What a stream request asks for, copied out of `req` before the callback returns. */
interface StreamRequest {
  readonly format: FallbackFormat;
  readonly tokens: readonly string[];
  readonly origin: string;
  readonly address: string;
  readonly rooms: readonly string[];
  readonly since: Positions;
}

const textDecoder = new TextDecoder();

function streamRequest(res: HttpResponse, req: HttpRequest, clientAddress: ClientAddress, config: Config): StreamRequest {
  const params = new URLSearchParams(req.getQuery() ?? '');
  const wantsNdjson = params.get('format') === 'ndjson' || req.getHeader('accept').includes('application/x-ndjson');
  const rooms = [...new Set((params.get('rooms') ?? '').split(',').filter(isValidRoom))].slice(0, config.maxRoomsPerConnection);
  return {
    format: wantsNdjson ? 'ndjson' : 'sse',
    tokens: requestTokens(req, params, config.allowedOrigins),
    origin: req.getHeader('origin'),
    address: clientAddress(textDecoder.decode(res.getRemoteAddressAsText()), req.getHeader('x-forwarded-for')),
    rooms,
    since: parsePositions(req.getHeader('last-event-id') || (params.get('last_event_id') ?? '')),
  };
}

/** The preflight of a POST (custom headers) or of a fetch stream with Authorization. */
function preflight(res: HttpResponse, req: HttpRequest, allowed: readonly string[]): void {
  const cors = corsHeaders(req.getHeader('origin'), allowed);
  res.cork(() => {
    res.writeStatus('204 No Content');
    for (const [name, value] of Object.entries(cors)) res.writeHeader(name, value);
    if (cors['Access-Control-Allow-Origin'] !== undefined) {
      res.writeHeader('Access-Control-Allow-Methods', 'GET, POST').writeHeader('Access-Control-Max-Age', '600');
      res.writeHeader('Access-Control-Allow-Headers', 'authorization, content-type, last-event-id, x-wsedge-session, x-wsedge-seq');
    }
    res.end();
  });
}

/** The HTTP answer to a loopback socket closed before `connected`, by its close code. */
function refusalOf(code: number): HttpRefusal {
  if (code === 4401) return FALLBACK_REFUSALS.stream_unauthorized;
  if (code === 4403) return FALLBACK_REFUSALS.stream_forbidden;
  if (code === 4429) return FALLBACK_REFUSALS.stream_limited;
  return FALLBACK_REFUSALS.stream_refused;
}

/**
 * The URL's rooms joined in one `resume` frame (one frame for the rate limit, however many rooms),
 * each with its Last-Event-ID position when it had one; undefined without rooms.
 */
function joins(request: StreamRequest): string | undefined {
  if (request.rooms.length === 0) return undefined;
  const rooms = request.rooms.map((room) => ({ room, ...(request.since.has(room) && { since: request.since.get(room) }) }));
  return JSON.stringify({ type: 'resume', id: 'stream', rooms });
}

/** Opens the loopback socket and answers: the stream once `connected` arrives, else the refusal. */
function open(relays: Relays, res: HttpResponse, request: StreamRequest): void {
  const { config, log, metrics, held } = relays;
  const { format } = request;
  let session: (Held & { writer: StreamWriter }) | undefined;
  let slowed = false;
  const writer = createStreamWriter(res, {
    format,
    headers: corsHeaders(request.origin, config.allowedOrigins),
    maxBuffered: config.maxBackpressure,
    slow: () => {
      slowed = true;
      metrics.streamEnded(format, 'slow');
      log.info({ event: 'fallback_slow', session_id: session?.id }, 'slow fallback reader closed');
      socket.terminate();
    },
  });
  const headers: Record<string, string> = { [RELAY_HEADER]: relays.relay.header(request.address) };
  if (request.tokens.length === 1) headers['authorization'] = `Bearer ${request.tokens[0]}`;
  const socket = new WebSocket(relays.url(), PROTOCOL, {
    headers,
    ...(request.origin !== '' && { origin: request.origin }),
    perMessageDeflate: false,
    maxPayload: 0,
  });
  relays.opening += 1;
  let settled = false;
  const settle = (): void => {
    if (settled) return;
    settled = true;
    relays.opening -= 1;
    clearTimeout(timer);
  };
  const timer = setTimeout(() => socket.terminate(), OPEN_TIMEOUT_MS);
  const refuse = (refusal: HttpRefusal, reason?: string, closeCode?: number): void => {
    settle();
    metrics.streamEnded(format, 'refused');
    if (writer.done) return;
    writer.markAborted();
    res.cork(() => {
      res.writeStatus(statusLine(refusal)).writeHeader('Content-Type', 'application/json').writeHeader('Cache-Control', 'no-store');
      for (const [name, value] of Object.entries(corsHeaders(request.origin, config.allowedOrigins))) res.writeHeader(name, value);
      if (refusal.retryAfter !== undefined) res.writeHeader('Retry-After', String(refusal.retryAfter));
      res.end(JSON.stringify({ ...refusalBody(refusal, undefined, reason), ...(closeCode !== undefined && { close_code: closeCode }) }));
    });
  };

  const welcome = (connected: string): void => {
    settle();
    const { data } = JSON.parse(connected) as { data: { user_id: string } };
    const id = `${config.nodeId}.${randomBytes(18).toString('base64url')}`;
    const order = createOrder(
      (frame) => socket.readyState === WebSocket.OPEN && socket.send(frame),
      () => metrics.post('gap_skipped'),
    );
    session = { id, userId: data.user_id, socket, writer, order, bucket: newBucket(config.rateBurst, Date.now()) };
    held.set(id, session);
    metrics.streamOpened(format);
    writer.open();
    writer.frame(JSON.stringify({ type: 'session', session_id: id, transport: format, heartbeat: HEARTBEAT_SECONDS }));
    writer.frame(connected);
    const resume = joins(request);
    if (resume !== undefined) socket.send(resume);
  };

  // Seeded from Last-Event-ID: an id written before every room answered still names them all.
  const positions: Positions = new Map([...request.since].filter(([room]) => request.rooms.includes(room)));
  socket.on('message', (raw, isBinary) => {
    if (isBinary) return;
    const text = raw.toString();
    if (session === undefined) {
      if (text.startsWith('{"type":"connected"')) welcome(text);
      return;
    }
    metrics.relayed(1);
    writer.frame(text, format === 'sse' && follow(positions, text) ? encodePositions(positions) : undefined);
  });
  socket.on('unexpected-response', (_req, answer) => {
    const chunks: Buffer[] = [];
    let size = 0;
    answer.on('data', (chunk: Buffer) => {
      if ((size += chunk.length) <= MAX_REFUSAL_BODY) chunks.push(chunk);
    });
    answer.on('end', () => {
      settle();
      socket.terminate();
      metrics.streamEnded(format, 'refused');
      if (writer.done) return;
      writer.markAborted();
      const retry = answer.headers['retry-after'];
      const headers = { ...corsHeaders(request.origin, config.allowedOrigins), ...(typeof retry === 'string' && { 'Retry-After': retry }) };
      sendRefusalText(res, `${answer.statusCode ?? 503} ${answer.statusMessage ?? ''}`.trim(), Buffer.concat(chunks).toString(), headers);
    });
  });
  socket.on('error', (err) => log.debug({ event: 'fallback_socket_error', err }, 'fallback loopback socket error'));
  socket.on('close', (code, reason) => {
    clearTimeout(timer);
    if (session === undefined) {
      if (!settled) refuse(refusalOf(code), reason.toString() || undefined, code);
      return;
    }
    held.delete(session.id);
    session.order.stop();
    if (writer.done) return;
    writer.end(JSON.stringify({ type: 'closed', code, reason: reason.toString() }));
    // The final frame may itself pass the reader's limit: then it ended as `slow`, counted once.
    if (!slowed) metrics.streamEnded(format, 'closed');
  });
  res.onAborted(() => {
    const wasOpen = session !== undefined && !writer.done;
    writer.markAborted();
    // The reader is gone: the socket goes at once, as a dropped WebSocket would (presence grace, lifecycle).
    socket.terminate();
    if (wasOpen) metrics.streamEnded(format, 'aborted');
    else if (!settled) {
      settle();
      metrics.streamEnded(format, 'abandoned');
    }
  });
}


type Sessions = ReturnType<typeof createSessions>;

/** The node's open sessions by id, and their heartbeat: one timer, running only while there is a session. */
function createSessions() {
  const held = new Map<string, Held & { writer: StreamWriter }>();
  let heartbeat: NodeJS.Timeout | undefined;
  return {
    get: (id: string) => held.get(id),
    get size(): number {
      return held.size;
    },
    set(id: string, session: Held & { writer: StreamWriter }): void {
      held.set(id, session);
      heartbeat ??= setInterval(() => {
        for (const each of held.values()) each.writer.heartbeat();
      }, HEARTBEAT_SECONDS * 1000);
    },
    delete(id: string): void {
      held.delete(id);
      if (held.size > 0) return;
      clearInterval(heartbeat);
      heartbeat = undefined;
    },
  };
}

/** What every stream of the node shares. */
interface Relays {
  readonly config: Config;
  readonly log: Logger;
  readonly metrics: FallbackMetrics;
  readonly relay: RelayTrust;
  readonly held: Sessions;
  /** The loopback socket's URL: this node's public port. */
  readonly url: () => string;
  /** Streams whose socket has not said `connected` yet. */
  opening: number;
}

export function createFallback(deps: FallbackDeps): Fallback {
  const { config, log, app } = deps;
  const metrics = createFallbackMetrics(deps.registry);
  const held = createSessions();
  const relay = createRelayTrust(config.host);
  const clientAddress = createClientAddress(config.trustedProxies);
  // A wildcard bind is reached on 127.0.0.1; a concrete address is dialled as it is (IPv6 in brackets).
  const loopHost = config.host === '0.0.0.0' || config.host === '::' || config.host === '' ? '127.0.0.1' : isIP(config.host) === 6 ? `[${config.host}]` : config.host;
  const relays: Relays = { config, log, metrics, relay, held, url: () => `ws://${loopHost}:${deps.port()}${WS_PATH}`, opening: 0 };

  const posts = createPosts({ config, log, metrics, auth: deps.auth, broker: deps.broker, held: (id) => held.get(id), authFailures: deps.authFailures, clientAddress });
  app.get(STREAM_PATH, (res, req) => {
    const request = streamRequest(res, req, clientAddress, config);
    const cors = corsHeaders(request.origin, config.allowedOrigins);
    if (request.tokens.length > 1 || request.tokens.some((t) => t.length > MAX_TOKEN_LENGTH)) {
      metrics.streamEnded(request.format, 'refused');
      return sendRefusal(res, FALLBACK_REFUSALS.stream_unauthorized, { reason: 'give exactly one token of at most 8192 characters: query, Authorization header or cookie', headers: cors });
    }
    if (relays.opening >= MAX_OPENING) {
      metrics.streamEnded(request.format, 'refused');
      return sendRefusal(res, FALLBACK_REFUSALS.stream_refused, { headers: cors });
    }
    open(relays, res, request);
  });
  app.post(STREAM_PATH, posts.handle);
  app.options(STREAM_PATH, (res, req) => preflight(res, req, config.allowedOrigins));

  return {
    relay,
    metrics,
    forwarded: posts.forwarded,
    sessions: () => held.size,
  };
}

/** A refused upgrade's status and body, relayed as the loopback socket got them. */
function sendRefusalText(res: HttpResponse, status: string, body: string, headers: Record<string, string>): void {
  res.cork(() => {
    res.writeStatus(status).writeHeader('Content-Type', 'application/json').writeHeader('Cache-Control', 'no-store');
    for (const [name, value] of Object.entries(headers)) res.writeHeader(name, value);
    res.end(body);
  });
}
