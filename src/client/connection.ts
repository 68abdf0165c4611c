/**
 * One logical connection over successive sockets: the token in the subprotocol, the reconnect
 * policy after each close (policy.ts), the token refresh ahead of `exp`, an application-level
 * liveness check, and the browser's online/offline events. It knows frames only as text; the
 * client (index.ts) reads them.
 */
import { BEARER_PREFIX, PROTOCOL } from '../messages.js';
import { afterClose, refreshDelay, tokenExpiry, type Backoff, type Random } from './policy.js';

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
  /** Ping after this long without a frame from the server (ms); 0: no liveness check. */
  readonly pingAfter: number;
  /** Reconnect when nothing arrives this long after the ping (ms). */
  readonly pongTimeout: number;
  /** Refresh at this share of the token's remaining life. */
  readonly refreshAt: number;
}

export interface ConnectionHooks {
  frame(text: string): void;
  /** The socket is gone; `state` says whether another follows. */
  down(state: ClientState): void;
  state(change: StateChange): void;
  ping(): void;
  /** Sends `refresh_token`; resolves once the server took it. */
  refresh(token: string): Promise<unknown>;
}

/** A token this close to `exp` is replaced before a reconnect. */
const EXPIRY_MARGIN_MS = 10_000;
/** Reported when the liveness check gave up on a socket (nothing arrived after a ping). */
const NO_PONG = { code: 1006, reason: 'no pong' };

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

/** The token for the next socket: the current one while it is neither refused nor about to expire. */
async function nextToken(source: TokenSource, current: string | undefined, refused: string | undefined): Promise<string> {
  if (typeof source === 'string') return source;
  const expiry = current === undefined ? undefined : tokenExpiry(current);
  const usable = current !== undefined && current !== refused && (expiry === undefined || expiry - Date.now() > EXPIRY_MARGIN_MS);
  return usable ? current : await source();
}

/**
 * For networks that drop silently: after `pingAfter` ms without a frame, `ping()`; when nothing
 * arrives within `pongTimeout` ms more, `dead()`. A flag per frame, no clock read.
 */
function liveness(opts: ConnectionOptions, ping: () => void, dead: () => void) {
  let heard = false;
  let timer: Timer;
  const start = (): void => {
    if (opts.pingAfter <= 0) return;
    timer = setTimeout(() => {
      if (heard) return (heard = false), start();
      ping();
      timer = setTimeout(() => (heard ? ((heard = false), start()) : dead()), opts.pongTimeout);
    }, opts.pingAfter);
  };
  return {
    start,
    heard: (): void => {
      heard = true;
    },
    stop: (): void => clearTimeout(timer),
  };
}

export function createConnection(opts: ConnectionOptions, hooks: ConnectionHooks) {
  let state: ClientState = 'disconnected';
  let ws: WebSocketLike | undefined;
  let token: string | undefined;
  /** The token the server refused with 4401: never offered again. */
  let refused: string | undefined;
  let attempt = 0;
  /** Bumped whenever a socket is dropped: a token provider that answers later is ignored. */
  let generation = 0;
  const timers = { retry: undefined as Timer, refresh: undefined as Timer };
  const live = liveness(opts, hooks.ping, () => lost(NO_PONG.code, NO_PONG.reason));
  const clearTimers = (): void => {
    clearTimeout(timers.retry);
    clearTimeout(timers.refresh);
    timers.retry = timers.refresh = undefined;
    live.stop();
  };

  function setState(next: ClientState, change: Omit<StateChange, 'state'> = {}): void {
    state = next;
    hooks.state({ state: next, ...change });
  }

  async function open(): Promise<void> {
    clearTimers();
    const gen = ++generation;
    setState('connecting');
    let next: string;
    try {
      next = await nextToken(opts.token, token, refused);
    } catch (err) {
      if (gen === generation) lost(4401, `token provider failed: ${(err as Error)?.message ?? String(err)}`);
      return;
    }
    if (gen !== generation) return;
    // 4401 only with a new token; a provider that has none yet is asked again after a backoff.
    if (next === refused) return lost(4401, 'the token provider returned the refused token');
    token = next;
    const socket = new opts.WebSocket(opts.url, [PROTOCOL, BEARER_PREFIX + next]);
    ws = socket;
    socket.onmessage = (e) => {
      live.heard();
      hooks.frame(e.data as string);
    };
    socket.onclose = (e) => {
      if (ws === socket) lost(e.code, e.reason);
    };
    // A close event with the code follows every error.
    socket.onerror = () => {};
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
    const sent = token;
    drop();
    if (code === 4401) refused = sent;
    const next = afterClose(code, attempt, opts.backoff, opts.random);
    const stuck = next.retry && next.newToken && typeof opts.token === 'string';
    const ending = !next.retry || stuck;
    hooks.down(ending ? 'closed' : 'disconnected');
    if (ending) return setState('closed', { code, reason });
    attempt += 1;
    if (offline()) return setState('disconnected', { code, reason });
    setState('disconnected', { code, reason, delay: next.delay });
    timers.retry = setTimeout(() => void open(), next.delay);
  }

  function scheduleRefresh(share = opts.refreshAt): void {
    const expiry = token === undefined || typeof opts.token === 'string' ? undefined : tokenExpiry(token);
    if (expiry !== undefined) timers.refresh = setTimeout(() => void refresh(), refreshDelay(expiry, Date.now(), share));
  }

  async function refresh(): Promise<void> {
    const gen = generation;
    try {
      const next = await (opts.token as () => string | Promise<string>)();
      if (gen !== generation) return;
      if (next === token) throw new Error('the token provider returned the current token');
      await hooks.refresh(next);
      if (gen !== generation) return;
      token = next;
      scheduleRefresh();
    } catch {
      // Tried again at half the time left; at `exp` the server closes with 4401 and a reconnect asks for a new one.
      if (gen === generation) scheduleRefresh(0.5);
    }
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
      hooks.down('disconnected');
      setState('disconnected', { code: 1006, reason: 'offline' });
    },
  );

  return {
    get state(): ClientState {
      return state;
    },
    connect(): void {
      if (state === 'connecting' || state === 'connected') return;
      listen(true);
      void open();
    },
    /** The `connected` frame arrived. */
    established(): void {
      attempt = 0;
      setState('connected');
      scheduleRefresh();
      live.start();
    },
    close(): void {
      if (state === 'closed') return;
      drop();
      listen(false);
      hooks.down('closed');
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
