/**
 * ws-edge/client: the official client for browsers and Node. One logical connection that
 * reconnects by the close-code policy, refreshes its token in band, rejoins every room in one
 * `resume` with its stream position, hands events to the app once and in order, sends every message
 * with an idempotency key (resent after a loss, delivered once), and answers every request with a
 * promise. docs/WEBSOCKET_API.md ("Client library") describes it.
 */
import { IDEMPOTENCY_KEY_PATTERN, RPC_METHOD } from '../messages.js';
import type {
  ConnectedData,
  Envelope,
  ErrorReply,
  MessageSent,
  PresenceEvent,
  PresenceReply,
  PresenceStatsReply,
  RoomHistory,
  RoomJoined,
  RoomLeft,
  RoomReset,
  RpcResult,
  ServerMessage,
  SignalEvent,
  StreamPosition,
  WireMessage,
} from '../messages.js';
import { createConnection, type ClientState, type StateChange, type TokenSource, type WebSocketConstructor } from './connection.js';
import { DEFAULT_BACKOFF, type Backoff } from './policy.js';
import { FallbackSocket } from './transport.js';
import { ClientError, createRequests, replyError } from './requests.js';
import { createSends, newKey } from './sends.js';
import { createGrants, type GrantSource } from './grants.js';
import { createJoins } from './joins.js';
import { call, createRooms, type RoomHandlers, type Rooms } from './rooms.js';

export type * from '../messages.js';
export type { ClientState, StateChange, TokenSource, WebSocketConstructor, WebSocketLike } from './connection.js';
export type { GrantSource } from './grants.js';
export type { Backoff } from './policy.js';
export type { ClientErrorCode } from './requests.js';
export type { OutgoingRoom, RoomHandlers } from './rooms.js';
export { watchPresence, type PresenceList } from './presence.js';
export { createTyping, type Typing, type TypingOptions } from './typing.js';
export { ClientError };

export interface ClientOptions {
  /** ws(s)://host/api/v1/ws/connect */
  readonly url: string;
  readonly token: TokenSource;
  /** Where there is no global WebSocket (Node 20): the `ws` package's class. */
  readonly WebSocket?: WebSocketConstructor;
  /**
   * A WebSocket not `connected` within this (ms), or refused before it, makes the client use the
   * HTTP fallback (docs/WEBSOCKET_API.md "HTTP fallback"), same API (default 2500; 0: never).
   */
  readonly fallbackAfter?: number;
  /** The fallback, once chosen, is kept this long before the next connect tries the WebSocket again (ms, default 300000). */
  readonly retryWebSocketAfter?: number;
  /** Reconnect backoff in ms; defaults base 1000, factor 2, cap 30000. */
  readonly backoff?: Partial<Backoff>;
  /** How long a request waits for its reply (ms, default 10000). */
  readonly requestTimeout?: number;
  /** How long a connection attempt may take until `connected`, the token provider included (ms, default 15000). */
  readonly connectTimeout?: number;
  /** Ping after this long without a frame from the server (ms, default 25000; 0: never). */
  readonly pingAfter?: number;
  /** Reconnect when nothing arrives this long after that ping (ms, default 10000). */
  readonly pongTimeout?: number;
  /** Refresh the token at this share of its life (default 0.8). */
  readonly refreshAt?: number;
  /** `send` while not connected: queue up to this many messages, sent after the rejoin (default 0: reject at once). */
  readonly queueSize?: number;
  /** Sends in flight at a connection loss kept to be sent again after the rejoin (default 100); the oldest beyond are rejected with `disconnected`. */
  readonly resendLimit?: number;
  /** For tests: the jitter's source (default Math.random). */
  readonly random?: () => number;
}

export interface SendOptions {
  /** The send's idempotency key (1-128 printable ASCII characters, no spaces); default: a random one. */
  readonly idempotencyKey?: string;
}

export interface RpcOptions {
  /** How long to wait for the reply (ms, default `requestTimeout`). */
  readonly timeout?: number;
}

export interface HistoryOptions {
  readonly since?: StreamPosition;
  readonly limit?: number;
  readonly reverse?: boolean;
}

export interface ClientEvents {
  state(change: StateChange): void;
  connected(data: ConnectedData): void;
  /** A message no room handler took: events to this connection (`room` null), rooms not joined through `join`. */
  message(message: ServerMessage): void;
  /** An error reply that answers no request (a frame dropped by the rate limit, a refused signal). */
  error(err: ClientError): void;
  /** Every presence event of a joined room (after its room handler). */
  presence(event: PresenceEvent): void;
  /** Every signal of a joined room (after its room handler). */
  signal(signal: SignalEvent): void;
}

interface Routes {
  connected(data: ConnectedData): void;
  joined(): void;
  refused(room: string, err: ClientError, id: string | undefined): void;
  emit: ReturnType<typeof listeners>['emit'];
}

/** One JSON.parse per frame; an event goes straight to its room's handler. `settle`: answers the request or send a reply is for. */
function router(rooms: Rooms, settle: (reply: WireMessage) => boolean, routes: Routes): (text: string) => void {
  return (text) => {
    const msg = JSON.parse(text) as WireMessage;
    switch (msg.type) {
      case 'connected':
        return routes.connected(msg.data as ConnectedData);
      case 'room_joined':
        if (rooms.joined(msg as RoomJoined)) routes.joined();
        break;
      case 'room_reset':
        return rooms.reset(msg as RoomReset);
      case 'room_left':
        rooms.left(msg as RoomLeft);
        break;
      case 'error': {
        const err = replyError(msg as ErrorReply);
        const room = typeof msg.room === 'string' ? msg.room : undefined;
        if (room !== undefined && rooms.has(room)) routes.refused(room, err, msg.id);
        // A refusal that answers no request (a signal's, a dropped frame's) goes to `error`.
        if (!settle(msg) && (room === undefined || !rooms.has(room))) routes.emit('error', err);
        return;
      }
      case 'resumed':
      case 'message_sent':
      case 'room_history':
      case 'presence':
      case 'presence_stats':
      case 'pong':
      case 'token_refreshed':
      case 'rpc_result':
        break;
      default: {
        // The type's family is read once: presence events and signals go to their own handlers.
        const kind = msg.type.startsWith('presence.') ? 'presence' : msg.type.startsWith('signal.') ? 'signal' : undefined;
        if (!rooms.event(msg as Envelope, kind)) routes.emit('message', msg as ServerMessage);
        // `kind` names the event too; the frame is that kind's.
        else if (kind) routes.emit(kind, msg as PresenceEvent & SignalEvent);
        return;
      }
    }
    settle(msg);
  };
}

function listeners() {
  // A set per event, made by its first listener.
  const sets: { [K in keyof ClientEvents]?: Set<unknown> } = {};
  return {
    on<K extends keyof ClientEvents>(event: K, fn: ClientEvents[K]): () => void {
      (sets[event] ??= new Set()).add(fn);
      return () => void sets[event]!.delete(fn);
    },
    emit<K extends keyof ClientEvents>(event: K, arg: Parameters<ClientEvents[K]>[0]): void {
      for (const fn of sets[event] ?? []) call(fn as (a: typeof arg) => void, arg);
    },
  };
}

export function createClient(options: ClientOptions) {
  const WebSocket = options.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
  if (WebSocket === undefined) throw new TypeError('no global WebSocket: pass options.WebSocket (the ws package in Node 20)');
  const rooms = createRooms();
  const requests = createRequests(options.requestTimeout ?? 10_000);
  const { on, emit } = listeners();
  const queueSize = options.queueSize ?? 0;
  let info: ConnectedData | undefined;
  /** Connected, and every wanted room answered: queued sends may go. */
  let ready = false;
  let flushing = false;

  const conn = createConnection(
    {
      url: options.url,
      token: options.token,
      WebSocket,
      backoff: { ...DEFAULT_BACKOFF, ...options.backoff },
      random: options.random ?? Math.random,
      connectTimeout: options.connectTimeout ?? 15_000,
      pingAfter: options.pingAfter ?? 25_000,
      pongTimeout: options.pongTimeout ?? 10_000,
      refreshAt: options.refreshAt ?? 0.8,
      fallback: options.fallbackAfter === 0 || typeof fetch !== 'function' ? undefined : (FallbackSocket as unknown as WebSocketConstructor),
      fallbackAfter: options.fallbackAfter ?? 2500,
      retryWebSocketAfter: options.retryWebSocketAfter ?? 300_000,
    },
    {
      frame: router(rooms, (reply) => requests.settle(reply) || sends.settle(reply), { connected, joined: afterJoins, refused: (room, err, id) => joins.refused(room, err, id), emit }),
      down(state, resend) {
        ready = false;
        joins.reset();
        const err = new ClientError(state === 'closed' ? 'closed' : 'disconnected', state === 'closed' ? 'the client is closed' : 'the connection was lost');
        requests.failAll(err);
        rooms.disconnected(state === 'closed' ? err : undefined);
        sends.down(state === 'closed', resend);
      },
      state: (change) => emit('state', change),
      ping: () => void request({ type: 'ping' }, 'pong').catch(() => {}),
      refresh: (token) => request({ type: 'refresh_token', token }, 'token_refreshed'),
    },
  );

  function transmit(frame: string): void {
    const max = info?.max_message_size ?? Infinity;
    // Bytes are at least characters: they are counted only when the frame could pass the limit.
    if (frame.length > max || (frame.length * 3 > max && new TextEncoder().encode(frame).length > max)) throw new ClientError('message_too_big', `the message is larger than max_message_size (${max} bytes)`);
    if (!conn.send(frame)) throw new ClientError('disconnected', 'not connected');
  }

  function request<T>(message: Record<string, unknown>, until: string, timeoutMs?: number): Promise<T> {
    return requests.request<T>(message, until, transmit, timeoutMs);
  }

  const sends = createSends({ nextId: requests.nextId, ready: () => ready, transmit, timeout: options.requestTimeout ?? 10_000, queueSize, resendLimit: options.resendLimit ?? 100 });

  const grants = createGrants((room, grant) => request({ type: 'join_room', room, grant }, 'room_joined'), rooms.grantOf);
  const joins = createJoins({ rooms, requests, grants, request, connected: () => conn.state === 'connected', personal: () => `user:${info!.user_id}`, settled: afterJoins });
  const flushJoins = (): void => {
    flushing = false;
    joins.flush();
  };

  function connected(data: ConnectedData): void {
    info = data;
    conn.established();
    emit('connected', data);
    flushJoins();
  }

  function afterJoins(): void {
    if (ready || conn.state !== 'connected' || rooms.pending() > 0) return;
    ready = true;
    sends.flush();
  }

  return {
    get state(): ClientState {
      return conn.state;
    },
    /** The `connected` data of the current (or last) connection. */
    get connection(): ConnectedData | undefined {
      return info;
    },
    on,
    /** Opens the connection (again, after `close` or a terminal close code). */
    connect: (): void => conn.connect(),
    /** Closes for good (1000): requests in flight and sends not yet answered are rejected with `closed`. */
    close: (): void => conn.close(),
    /** Joins a room, now and after every reconnect; resolves with the first `room_joined`. `grant`: a room grant, or a provider of fresh ones. */
    join(room: string, handlers: RoomHandlers = {}, options: { readonly grant?: GrantSource } = {}): Promise<RoomJoined> {
      const joined = rooms.add(room, handlers, options.grant);
      if (conn.state === 'connected' && !flushing) {
        flushing = true;
        queueMicrotask(flushJoins);
      }
      return joined;
    },
    async leave(room: string): Promise<void> {
      grants.cancel(room);
      if (!rooms.remove(room, new ClientError('closed', `left ${room}`)) || conn.state !== 'connected') return;
      await request<RoomLeft>({ type: 'leave_room', room }, 'room_left').catch((err: ClientError) => {
        if (err.code !== 'not_joined' && err.code !== 'disconnected') throw err;
      });
    },
    /**
     * send_message with an idempotency key; resolves once with `message_sent` (its position in a
     * sequenced room, `duplicate` when it was a repeat). A send whose reply a lost connection took is
     * sent again with the same key after the rejoin, and delivered once.
     */
    send(room: string, data: unknown, opts: SendOptions = {}): Promise<MessageSent> {
      const key = opts.idempotencyKey ?? newKey();
      if (!IDEMPOTENCY_KEY_PATTERN.test(key)) return Promise.reject(new ClientError('invalid_message', `invalid idempotencyKey: ${key}`));
      if (conn.state === 'closed') return Promise.reject(new ClientError('closed', 'the client is closed'));
      return sends.add({ type: 'send_message', room, data, idempotency_key: key }, ready || (conn.state === 'connected' && queueSize === 0));
    },
    /**
     * A call to the product backend through the node; resolves with its data. Refused: a ClientError
     * (`rejected` with the backend's code in `detail`; `unavailable` when it was slow or down). Never
     * sent again: one in flight at a connection loss is rejected with `disconnected`.
     */
    rpc<T = unknown>(method: string, data: unknown = null, opts: RpcOptions = {}): Promise<T> {
      if (!RPC_METHOD.test(method)) return Promise.reject(new ClientError('invalid_message', `invalid rpc method: ${method}`));
      return request<RpcResult>({ type: 'rpc', method, data }, 'rpc_result', opts.timeout).then((reply) => reply.data as T);
    },
    history(room: string, opts: HistoryOptions = {}): Promise<RoomHistory> {
      return request({ type: 'history', room, ...opts }, 'room_history');
    },
    /** The present users of a joined presence room (at most 1,000; `truncated` past that), with the room's presence version. */
    presence: (room: string): Promise<PresenceReply> => request({ type: 'presence', room }, 'presence'),
    presenceStats: (room: string): Promise<PresenceStatsReply> => request({ type: 'presence_stats', room }, 'presence_stats'),
    /** An ephemeral event to the room's other members; false when not connected. Refusals come to `error`. */
    signal(room: string, name: string, data: unknown = null): boolean {
      return conn.state === 'connected' && conn.send(JSON.stringify({ type: 'signal', room, name, data }));
    },
    /** Round trip in ms. */
    async ping(): Promise<number> {
      const started = Date.now();
      await request({ type: 'ping' }, 'pong');
      return Date.now() - started;
    },
    /** The position of the last event handed to the app in a sequenced room. */
    position: (room: string): StreamPosition | undefined => rooms.position(room),
  };
}

export type Client = ReturnType<typeof createClient>;
