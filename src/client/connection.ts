/**
 * One logical connection over successive sockets: the token in the subprotocol, the reconnect
 * policy after each close (policy.ts), the token refresh ahead of `exp`, a connect timeout and an
 * application-level liveness check, and the browser's online/offline events. It knows frames only
 * as text; the client (index.ts) reads them. Timers are set before the app hears of a state, so a
 * listener that calls close() or connect() always has the last word.
 */
import { BEARER_PREFIX, PROTOCOL } from '../messages.js';
import { afterClose, clampTimer, lifeLeft, mayResend, tokenTimes, type Backoff, type Random } from './policy.js';

export type ClientState = 'disconnected' | 'connecting' | 'connected' | 'closed';

/** A state change; `code` and `reason` of the close that caused it, `delay` (ms) until the next attempt. */
export interface StateChange {
  readonly state: ClientState;
  readonly code?: number;
  readonly reason?: string;
  readonly delay?: number;
}

/** A string, or a provider called for the first connect, after a 4401, and ahead of `exp`. */
export type TokenSource = string | (() => string | Promise<string>);

// Method syntax keeps the handlers' parameters bivariant, so `ws`'s and the browser's classes fit.
interface SocketHandlers {
  onmessage(event: { data: unknown }): void;
  onclose(event: { code: number; reason: string }): void;
  onerror(event: unknown): void;
}
/** What the client needs of a WebSocket: the browser's, Node 22's global one, or the `ws` package's. */
export interface WebSocketLike {
  onmessage: SocketHandlers['onmessage'] | null;
  onclose: SocketHandlers['onclose'] | null;
  onerror: SocketHandlers['onerror'] | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}
export type WebSocketConstructor = new (url: string, protocols: string[]) => WebSocketLike;

export interface ConnectionOptions {
  readonly url: string;
  readonly token: TokenSource;
  readonly WebSocket: WebSocketConstructor;
  readonly backoff: Backoff;
  readonly random: Random;
  /** From the start of an attempt (the token provider included) until `connected` (ms). */
  readonly connectTimeout: number;
  /** Ping after this long without a frame from the server (ms); 0: no liveness check. */
  readonly pingAfter: number;
  /** Reconnect when nothing arrives this long after the ping (ms). */
  readonly pongTimeout: number;
  /** Refresh at this share of the token's life. */
  readonly refreshAt: number;
  /** The HTTP fallback (transport.ts); undefined: WebSocket only. */
  readonly fallback: WebSocketConstructor | undefined;
  /** A WebSocket attempt not `connected` within this (ms), or failed before it, goes to the fallback. */
  readonly fallbackAfter: number;
  /** The fallback, once chosen, is kept this long (ms); then the WebSocket is tried again. */
  readonly retryWebSocketAfter: number;
}

export interface ConnectionHooks {
  frame(text: string): void;
  /** The socket is gone; `state` says whether another follows; `resend` false: its close code says not to send a message in flight again (1009). */
  down(state: ClientState, resend: boolean): void;
  state(change: StateChange): void;
  ping(): void;
  /** Sends `refresh_token`; resolves once the server took it. */
  refresh(token: string): Promise<unknown>;
}

/** A token this close to `exp` is replaced before a reconnect. */
const EXPIRY_MARGIN_MS = 10_000;

type Timer = ReturnType<typeof setTimeout> | undefined;

interface Network {
  addEventListener?(type: string, fn: () => void): void;
  removeEventListener?(type: string, fn: () => void): void;
  navigator?: { onLine?: boolean };
}
const browser = globalThis as Network;
const offline = (): boolean => browser.navigator?.onLine === false;

/** The browser's online/offline events (none in Node): `listen(on)` adds or removes the handlers. */
function network(online: () => void, offline: () => void): (on: boolean) => void {
  let listening = false;
  return (on) => {
    if (listening === on) return;
    listening = on;
    const method = on ? browser.addEventListener : browser.removeEventListener;
    method?.call(browser, 'online', online);
    method?.call(browser, 'offline', offline);
  };
}

/**
 * For networks that drop silently: after `pingAfter` ms without a frame, `ping()`; when nothing
 * arrives within `pongTimeout` ms more, `dead()`. A flag per frame, no clock read.
 */
function liveness(opts: ConnectionOptions, ping: () => void, dead: () => void) {
  let heard = false;
  let timer: Timer;
  const watch = (): void => {
    timer = setTimeout(() => {
      if (heard) return (heard = false), watch();
      ping();
      timer = setTimeout(() => (heard ? ((heard = false), watch()) : dead()), opts.pongTimeout);
    }, opts.pingAfter);
  };
  return {
    start(): void {
      heard = false;
      if (opts.pingAfter > 0) watch();
    },
    heard(): void {
      heard = true;
    },
    stop: (): void => clearTimeout(timer),
  };
}

/** The token the client holds, and when it got it (its life is counted from then). */
interface Held {
  readonly token: string;
  readonly at: number;
}

/** The token for the next socket: the one held while it is neither refused nor about to expire. */
async function nextToken(source: TokenSource, held: Held | undefined, refused: string | undefined): Promise<Held> {
  if (typeof source === 'string') return held?.token === source ? held : { token: source, at: Date.now() };
  const left = held === undefined ? undefined : lifeLeft(tokenTimes(held.token), held.at, Date.now());
  if (held !== undefined && held.token !== refused && (left === undefined || left.left > EXPIRY_MARGIN_MS)) return held;
  return { token: await source(), at: Date.now() };
}

/** The token a provider answered for a connect is one the server refused already. */
const REFUSED = new Error('refused');

/** The tokens of a connection: the one held, the one refused, the one offered in band. */
function tokenKeeper(source: TokenSource, refreshAt: number, sendRefresh: (token: string) => Promise<unknown>) {
  let held: Held | undefined;
  /** A token the server refused with 4401: never offered again. */
  let refused: string | undefined;
  /** A token sent in band and not yet taken: refused instead of the held one when the server closes with 4401. */
  let offered: string | undefined;
  return {
    /** The token for the next socket; rejects with REFUSED rather than offer a refused one. */
    async next(): Promise<string> {
      const next = await nextToken(source, held, refused);
      if (next.token === refused) throw REFUSED;
      held = next;
      return next.token;
    },
    /** The socket closed: with 4401 the token it used (or the one offered in band) is refused. */
    closed(code: number): void {
      if (code === 4401) refused = offered ?? held?.token;
      offered = undefined;
    },
    /** ms until the next refresh (after a failure: half of what is left); undefined when there is none to make. */
    delay(retry: boolean): number | undefined {
      const left = held === undefined || typeof source === 'string' ? undefined : lifeLeft(tokenTimes(held.token), held.at, Date.now());
      return left === undefined ? undefined : clampTimer(retry ? left.left / 2 : left.left - left.life * (1 - refreshAt));
    },
    /** A new token from the provider, sent in band; `current()` false: the socket went meanwhile. */
    async refresh(current: () => boolean): Promise<void> {
      const token = await (source as () => string | Promise<string>)();
      if (!current()) return;
      if (token === held?.token || token === refused) throw new Error('the token provider returned no new token');
      offered = token;
      await sendRefresh(token);
      if (!current()) return;
      offered = undefined;
      held = { token, at: Date.now() };
    },
  };
}

/** A timer absent is one not set. */
type Timers = Partial<Record<'retry' | 'refresh' | 'connect' | 'fallback', Timer>>;

/** Refreshes the token in band ahead of `exp`, while the socket of `generation()` lives. */
function refresher(tokens: ReturnType<typeof tokenKeeper>, timers: Timers, generation: () => number) {
  const schedule = (retry = false): void => {
    const delay = tokens.delay(retry);
    if (delay === undefined) return;
    timers.refresh = setTimeout(() => {
      const gen = generation();
      tokens.refresh(() => gen === generation()).then(
        () => gen === generation() && schedule(),
        // At `exp` the server closes with 4401 and the reconnect asks for a new token.
        () => gen === generation() && schedule(true),
      );
    }, delay);
  };
  return schedule;
}

/** Which class the next socket is: the fallback once chosen, until retryWebSocketAfter has passed; else the WebSocket. */
function transportChoice(opts: ConnectionOptions) {
  let since: number | undefined;
  return {
    current(): WebSocketConstructor | undefined {
      if (since !== undefined && Date.now() - since >= opts.retryWebSocketAfter) since = undefined;
      return since === undefined ? undefined : opts.fallback;
    },
    choose: (on: boolean): void => void (since = on ? Date.now() : undefined),
  };
}

export function createConnection(opts: ConnectionOptions, hooks: ConnectionHooks) {
  let state: ClientState = 'disconnected';
  let ws: WebSocketLike | undefined;
  const tokens = tokenKeeper(opts.token, opts.refreshAt, hooks.refresh);
  let attempt = 0;
  /** Bumped whenever a socket is dropped: a token provider or refresh that answers later is ignored. */
  let generation = 0;
  const timers: Timers = {};
  const transport = transportChoice(opts);
  const live = liveness(opts, hooks.ping, () => lost(1006, 'no pong'));
  const clearTimers = (): void => {
    for (const key in timers) timers[key as keyof Timers] = void clearTimeout(timers[key as keyof Timers]);
    live.stop();
  };
  const scheduleRefresh = refresher(tokens, timers, () => generation);

  function setState(next: ClientState, change: Omit<StateChange, 'state'> = {}): void {
    state = next;
    hooks.state({ state: next, ...change });
  }

  async function open(): Promise<void> {
    drop();
    const gen = generation;
    timers.connect = setTimeout(() => lost(1006, 'connect timeout'), opts.connectTimeout);
    setState('connecting');
    if (gen !== generation) return;
    let token: string;
    try {
      token = await tokens.next();
    } catch (err) {
      // 4401 only with a new token; a provider that has none yet is asked again after a backoff.
      const reason = err === REFUSED ? 'the token was refused' : `token provider failed: ${(err as Error)?.message ?? String(err)}`;
      if (gen === generation) lost(4401, reason);
      return;
    }
    if (gen !== generation) return;
    const fallback = transport.current();
    const socket = (ws = new (fallback ?? opts.WebSocket)(opts.url, [PROTOCOL, BEARER_PREFIX + token]));
    if (fallback === undefined && opts.fallback !== undefined) timers.fallback = setTimeout(useFallback, opts.fallbackAfter);
    socket.onmessage = (e) => {
      live.heard();
      hooks.frame(e.data as string);
    };
    socket.onclose = (e) => {
      if (ws !== socket) return;
      // A socket that never opened (a proxy refused the upgrade: 1006) goes to the fallback at once;
      // the fallback is kept only once it connected (else the server was just down).
      if (timers.fallback !== undefined && e.code === 1006) return useFallback();
      if (fallback !== undefined && state === 'connecting') transport.choose(false);
      lost(e.code, e.reason);
    };
    // A close event with the code follows every error.
    socket.onerror = () => {};
  }

  function useFallback(): void {
    transport.choose(true);
    void open();
  }


  function drop(code = 1000): void {
    generation += 1;
    clearTimers();
    if (ws === undefined) return;
    const socket = ws;
    ws = undefined;
    socket.onmessage = socket.onclose = socket.onerror = null;
    try {
      socket.close(code);
    } catch {
      // Already closing.
    }
  }

  function lost(code: number, reason: string): void {
    drop();
    tokens.closed(code);
    const next = afterClose(code, attempt, opts.backoff, opts.random);
    const stuck = next.retry && next.newToken && typeof opts.token === 'string';
    if (!next.retry || stuck) {
      listen(false);
      hooks.down('closed', false);
      return setState('closed', { code, reason });
    }
    hooks.down('disconnected', mayResend(code));
    attempt += 1;
    if (offline()) return setState('disconnected', { code, reason });
    timers.retry = setTimeout(() => void open(), next.delay);
    setState('disconnected', { code, reason, delay: next.delay });
  }

  const listen = network(
    () => {
      if (state !== 'disconnected') return;
      attempt = 0;
      void open();
    },
    () => {
      if (state !== 'connected' && state !== 'connecting' && timers.retry === undefined) return;
      drop();
      hooks.down('disconnected', true);
      setState('disconnected', { code: 1006, reason: 'offline' });
    },
  );

  return {
    get state(): ClientState {
      return state;
    },
    connect(): void {
      if (state === 'connecting' || state === 'connected') return;
      if (state === 'closed') attempt = 0;
      listen(true);
      void open();
    },
    /** The `connected` frame arrived. */
    established(): void {
      attempt = 0;
      timers.connect = void clearTimeout(timers.connect);
      timers.fallback = void clearTimeout(timers.fallback);
      scheduleRefresh();
      live.start();
      setState('connected');
    },
    close(): void {
      if (state === 'closed') return;
      drop();
      listen(false);
      hooks.down('closed', false);
      setState('closed', { code: 1000, reason: 'closed by the client' });
    },
    /** False when there is no open socket. */
    send(frame: string): boolean {
      if (ws === undefined || state !== 'connected') return false;
      ws.send(frame);
      return true;
    },
  };
}
