// Shared plumbing of the k6 scripts: parameters, HS256 tokens, the ws-edge handshake and JSON frames.
//
// Needs k6 v1.5 or later: older k6/websockets builds fire `close` without `code`/`reason`, which
// limits.js and the unexpected-close counters rely on. Everything else is k6 v1.0 API.
//
// Every parameter comes from `-e NAME=value` (or the environment, with --include-system-env-vars);
// blank counts as unset. The defaults fit one node started with `npm start` on this machine.
import { SharedArray } from 'k6/data';
import crypto from 'k6/crypto';
import encoding from 'k6/encoding';
import { setTimeout, clearTimeout } from 'k6/timers';
import { WebSocket } from 'k6/websockets';

/**
 * k6's console (log, info, warn, error, debug; https://grafana.com/docs/k6/latest/javascript-api/#console).
 * @types/k6 1.7 does not declare it, and a global declaration file here would leak into the Node
 * project's type-check (tsconfig.check.json includes bench/), so the scripts import it from here.
 * @type {{ log(...args: unknown[]): void, info(...args: unknown[]): void, warn(...args: unknown[]): void, error(...args: unknown[]): void, debug(...args: unknown[]): void }}
 */
export const console = /** @type {any} */ (globalThis).console;

/** @param {string} name */
function raw(name) {
  const value = __ENV[name];
  return value === undefined || value.trim() === '' ? undefined : value.trim();
}

/** @param {string} name @param {string} fallback */
export function envString(name, fallback) {
  return raw(name) ?? fallback;
}

/**
 * A non-negative number; anything else stops the test in the init stage.
 * @param {string} name @param {number} fallback
 */
export function envNumber(name, fallback) {
  const value = raw(name);
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isFinite(n) || n < 0) throw new Error(`${name}: "${value}" is not a non-negative number`);
  return n;
}

/** @param {string} name @param {number} fallback */
export function envInt(name, fallback) {
  const n = envNumber(name, fallback);
  if (!Number.isInteger(n)) throw new Error(`${name}: "${n}" is not an integer`);
  return n;
}

/** @param {string} name @param {boolean} fallback */
export function envBool(name, fallback) {
  const value = raw(name);
  if (value === undefined) return fallback;
  if (/^(1|true|yes|on)$/i.test(value)) return true;
  if (/^(0|false|no|off)$/i.test(value)) return false;
  throw new Error(`${name}: "${value}" is not a boolean (1/0, true/false)`);
}

/**
 * Seconds from "90", "90s", "2m", "1h" or "1m30s" (k6's own duration style, without ms).
 * @param {string} name @param {string} fallback
 */
export function envSeconds(name, fallback) {
  const value = envString(name, fallback);
  if (/^\d+(\.\d+)?$/.test(value)) return Number(value);
  const parts = /^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+(?:\.\d+)?)s)?$/.exec(value);
  if (parts === null || value === '') throw new Error(`${name}: "${value}" is not a duration such as 90, 90s, 2m or 1h`);
  return Number(parts[1] ?? 0) * 3600 + Number(parts[2] ?? 0) * 60 + Number(parts[3] ?? 0);
}

/** A k6 duration string for scenario options. @param {number} seconds */
export function duration(seconds) {
  return `${Math.ceil(seconds)}s`;
}

// --- Parameters every script shares ----------------------------------------------------------

/** Public WebSocket endpoint: a node, or the load balancer in front of several. */
export const WS_URL = envString('WS_URL', 'ws://localhost:8080/api/v1/ws/connect');
/** `subprotocol` (the default, `wsedge.v1` + `wsedge.bearer.<token>`) or `query` (`?token=`). */
export const TOKEN_IN = envString('TOKEN_IN', 'subprotocol');
if (TOKEN_IN !== 'subprotocol' && TOKEN_IN !== 'query') throw new Error(`TOKEN_IN: "${TOKEN_IN}" is neither subprotocol nor query`);
/** The nodes' JWT_SECRET; tokens are minted HS256 per connection. Not needed with TOKENS_FILE (except by limits.js). */
export const JWT_SECRET = raw('JWT_SECRET');
/** Seconds a minted token stays valid; longer than the longest run so no connection meets 4401 "token expired". */
export const TOKEN_TTL = envInt('TOKEN_TTL', 86400);
/** Prefix of every minted `sub`; give concurrent runs against one cluster different prefixes. */
export const USER_PREFIX = envString('USER_PREFIX', 'k6');
/** Internal-port publish endpoint of one node (not the load balancer: the API is not public). */
export const PUBLISH_URL = envString('PUBLISH_URL', 'http://localhost:9090/api/v1/publish');
/** The nodes' PUBLISH_API_KEY; without it the scripts publish through send_message only. */
export const PUBLISH_API_KEY = raw('PUBLISH_API_KEY');

/**
 * Pre-minted tokens, one per line (blank lines and lines starting with # skipped), used in turn:
 * connection i gets token i mod count. Give an absolute path (`-e TOKENS_FILE=$PWD/tokens.txt`):
 * k6 resolves a relative one against this module's directory. Each user may hold
 * WS_MAX_CONNECTIONS_PER_USER connections (5), so the file needs at least connections / 5 users,
 * and their `rooms` claim must allow the rooms the script joins (`channel:*`).
 * `open()` works only in the init stage, hence here; SharedArray keeps one copy for all VUs.
 */
const TOKENS_FILE = raw('TOKENS_FILE');
/** @type {string[]} */
const tokens = TOKENS_FILE === undefined
  ? []
  : new SharedArray('tokens', () => open(TOKENS_FILE).split('\n').map((l) => l.trim()).filter((l) => l !== '' && !l.startsWith('#')));
if (TOKENS_FILE !== undefined && tokens.length === 0) throw new Error(`TOKENS_FILE: ${TOKENS_FILE} holds no tokens`);
if (TOKENS_FILE === undefined && JWT_SECRET === undefined) {
  throw new Error('set JWT_SECRET (the nodes\' secret, to mint tokens) or TOKENS_FILE (pre-minted tokens, one per line)');
}

// --- Tokens ------------------------------------------------------------------------------------

/**
 * An HS256 JWT as ws-edge verifies it: `exp` required, `sub` of [A-Za-z0-9_-]{1,64}, `rooms: ['*']`
 * so any room may be joined. Header and payload are base64url without padding (RFC 7515); the
 * signature is the HMAC-SHA256 of "header.payload" with the secret's UTF-8 bytes, like fast-jwt's.
 * @param {string} sub
 * @param {{ secret?: string, ttl?: number, exp?: number, username?: string, rooms?: string[] }} [options]
 */
export function mintToken(sub, options = {}) {
  const secret = options.secret ?? JWT_SECRET;
  if (secret === undefined) throw new Error('JWT_SECRET is needed to mint tokens');
  const header = { alg: 'HS256', typ: 'JWT' };
  const payload = {
    sub,
    username: options.username ?? sub,
    rooms: options.rooms ?? ['*'],
    exp: options.exp ?? Math.floor(Date.now() / 1000) + (options.ttl ?? TOKEN_TTL),
  };
  const signingInput = `${encoding.b64encode(JSON.stringify(header), 'rawurl')}.${encoding.b64encode(JSON.stringify(payload), 'rawurl')}`;
  return `${signingInput}.${crypto.hmac('sha256', secret, signingInput, 'base64rawurl')}`;
}

/**
 * The token of connection slot `index`: from TOKENS_FILE when given, else minted for
 * `<USER_PREFIX>-<runId>-<index>` (one user per slot, far below the per-user limit).
 * @param {number} index @param {string} runId
 */
export function tokenFor(index, runId) {
  if (tokens.length > 0) return /** @type {string} */ (tokens[index % tokens.length]);
  return mintToken(userId(index, runId));
}

/** @param {number} index @param {string} runId */
export function userId(index, runId) {
  return `${USER_PREFIX}-${runId}-${index}`;
}

/** A short id for this run (rooms and users), made once in setup() and handed to every VU. */
export function newRunId() {
  return Date.now().toString(36);
}

// --- Connections -------------------------------------------------------------------------------

// readyState values (WebSocket standard). Numbers rather than WebSocket.OPEN/CLOSED: those
// constants are not on the constructor in every k6 v1.x release.
const CONNECTING = 0;
const OPEN = 1;
const CLOSED = 3;

/**
 * @typedef {import('../../src/messages.js').WireMessage} Envelope
 * A server frame, parsed once (docs/WEBSOCKET_API.md, "Messages").
 *
 * @typedef {{ code: number | undefined, reason: string, opened: boolean, byUs: boolean, error: string }} CloseInfo
 * `code` is undefined when no WebSocket was established (an HTTP refusal or a network error
 * before the upgrade: see `error`); 1006 when an open socket was cut without a close frame.
 * `byUs` tells closes this script asked for from the server's (or the network's).
 *
 * @typedef {{
 *   onConnected?: (data: any, at: number) => void,
 *   onEnvelope?: (msg: Envelope, receivedAt: number) => void,
 *   onServerPing?: () => void,
 *   onClose?: (info: CloseInfo) => void,
 *   tags?: Record<string, string>,
 * }} Handlers
 * `at` / `receivedAt`: when k6 read the frame off the socket (ms since the epoch, the event's
 * `timestamp`), before it waited in the VU's event loop, so a busy VU does not inflate delays.
 *
 * @typedef {{ ws: WebSocket, send: (msg: object) => boolean, close: (code?: number, reason?: string) => void }} Conn
 * `send` drops the frame (and returns false) unless the socket is open.
 */

/**
 * k6 calls every listener with an event object, but @types/k6 1.7 declares `onclose`/`onping`
 * without one and has no CloseEvent type (the close event carries `code` and `reason` since k6
 * v1.5). This is the one place that steps around those declarations.
 * @param {WebSocket} ws @param {'open' | 'close' | 'error' | 'message' | 'ping'} type @param {(event: any) => void} listener
 */
function on(ws, type, listener) {
  ws.addEventListener(/** @type {any} */ (type), listener);
}

/**
 * Opens one connection with the token in the subprotocol header (or the query string, TOKEN_IN=query).
 * The subprotocols go in as a header rather than the constructor's `protocols` argument, which
 * k6 v1.x documents as "not yet implemented"; its Go client (gorilla/websocket) sends a
 * `Sec-WebSocket-Protocol` request header as given.
 * @param {string} token @param {Handlers} handlers
 * @returns {Conn}
 */
export function connect(token, handlers) {
  const url = TOKEN_IN === 'query' ? `${WS_URL}${WS_URL.includes('?') ? '&' : '?'}token=${encodeURIComponent(token)}` : WS_URL;
  const headers = TOKEN_IN === 'query' ? { 'Sec-WebSocket-Protocol': 'wsedge.v1' } : { 'Sec-WebSocket-Protocol': `wsedge.v1, wsedge.bearer.${token}` };
  const ws = new WebSocket(url, null, { headers, tags: handlers.tags ?? {} });
  let opened = false;
  let byUs = false;
  /** @type {[number, string] | undefined} */
  let closeWhenOpen;
  let connected = false;
  let lastError = '';
  on(ws, 'open', () => {
    opened = true;
    if (closeWhenOpen !== undefined) ws.close(...closeWhenOpen);
  });
  on(ws, 'message', (event) => {
    if (typeof event.data !== 'string') return; // ws-edge sends text frames only
    /** @type {Envelope} */
    let msg;
    try {
      msg = JSON.parse(event.data);
    } catch {
      return;
    }
    const at = typeof event.timestamp === 'number' ? event.timestamp : Date.now();
    if (!connected && msg.type === 'connected') {
      connected = true;
      handlers.onConnected?.(msg.data, at);
      return;
    }
    handlers.onEnvelope?.(msg, at);
  });
  // k6 answers every server ping with a pong by itself (from Go, whatever the script does) and
  // then fires `ping`; a listener can only observe it.
  if (handlers.onServerPing !== undefined) on(ws, 'ping', handlers.onServerPing);
  // Fired before `close` for any close other than 1000/1001, and for failed handshakes. It must
  // not throw: k6 skips the close listeners when an error listener fails.
  on(ws, 'error', (event) => {
    lastError = String(event.error ?? '');
  });
  on(ws, 'close', (event) => {
    handlers.onClose?.({ code: typeof event.code === 'number' ? event.code : undefined, reason: String(event.reason ?? ''), opened, byUs, error: lastError });
  });
  return {
    ws,
    send(msg) {
      if (ws.readyState !== OPEN) return false;
      ws.send(JSON.stringify(msg));
      return true;
    },
    close(code = 1000, reason = '') {
      byUs = true;
      // Only an open socket is closed at once: k6 queues the close frame for a writer that starts
      // with the connection, so close() during the handshake would block the VU until it ends
      // (for good if it fails). A connecting socket is closed as soon as it opens.
      if (ws.readyState === OPEN) ws.close(code, reason);
      else if (ws.readyState === CONNECTING) closeWhenOpen = [code, reason];
    },
  };
}

/** Resolves after `ms` milliseconds (k6 has no blocking sleep inside the event loop). @param {number} ms */
export function sleepMs(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * A connection with awaitable frames, for step-by-step checks (limits.js): `next(predicate)`
 * resolves with the first unread frame that matches, or null after the timeout or on close.
 * @typedef {Conn & {
 *   next: (predicate: (msg: Envelope) => boolean, timeoutMs: number) => Promise<Envelope | null>,
 *   connected: Promise<any>,
 *   closed: Promise<CloseInfo>,
 *   serverPings: number[],
 * }} Client
 */

/** @param {string} token @returns {Client} */
export function openClient(token) {
  /** @type {Envelope[]} */
  const unread = [];
  /** @type {{ predicate: (msg: Envelope) => boolean, resolve: (msg: Envelope | null) => void }[]} */
  let waiting = [];
  /** @type {number[]} */
  const serverPings = [];
  /** @type {(data: any) => void} */
  let resolveConnected = () => {};
  /** @type {(info: CloseInfo) => void} */
  let resolveClosed = () => {};
  /** @type {Promise<any>} */
  const connectedP = new Promise((resolve) => (resolveConnected = resolve));
  /** @type {Promise<CloseInfo>} */
  const closedP = new Promise((resolve) => (resolveClosed = resolve));
  const conn = connect(token, {
    onConnected: (data) => resolveConnected(data),
    onEnvelope: (msg) => {
      const i = waiting.findIndex((w) => w.predicate(msg));
      if (i === -1) {
        unread.push(msg);
        return;
      }
      const [w] = waiting.splice(i, 1);
      w?.resolve(msg);
    },
    onServerPing: () => serverPings.push(Date.now()),
    onClose: (info) => {
      resolveConnected(null); // never connected: waiters see null
      resolveClosed(info);
      for (const w of waiting) w.resolve(null);
      waiting = [];
    },
  });
  return {
    ...conn,
    connected: connectedP,
    closed: closedP,
    serverPings,
    next(predicate, timeoutMs) {
      const i = unread.findIndex(predicate);
      if (i !== -1) return Promise.resolve(/** @type {Envelope} */ (unread.splice(i, 1)[0]));
      if (conn.ws.readyState === CLOSED) return Promise.resolve(null);
      return new Promise((resolve) => {
        /** @type {{ predicate: (msg: Envelope) => boolean, resolve: (msg: Envelope | null) => void }} */
        const entry = {
          predicate,
          resolve: (msg) => {
            clearTimeout(timer);
            resolve(msg);
          },
        };
        const timer = setTimeout(() => {
          waiting = waiting.filter((w) => w !== entry);
          resolve(null);
        }, timeoutMs);
        waiting.push(entry);
      });
    },
  };
}

/**
 * The value of `promise` if it has already settled, else undefined; no timer. (A zero-delay
 * `within` is not the same in k6 v1.6: the 0 ms timer it clears still fires later, and resolves the
 * next timer-based wait of the VU at once, as if that had timed out.)
 * @template T @param {Promise<T>} promise @returns {Promise<T | undefined>}
 */
export function settled(promise) {
  return Promise.race([promise, Promise.resolve(undefined)]);
}

/**
 * The value of `promise` if it settles within `ms`, else null. Clears its timer, so a settled
 * wait does not keep the VU's iteration alive.
 * @template T @param {Promise<T>} promise @param {number} ms @returns {Promise<T | null>}
 */
export function within(promise, ms) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => resolve(null), ms);
    promise.then(
      (value) => {
        clearTimeout(timer);
        resolve(value);
      },
      (err) => {
        clearTimeout(timer);
        reject(err);
      },
    );
  });
}

// --- Delivery bookkeeping ----------------------------------------------------------------------

/**
 * Per-publisher sequence tracking on one receiving connection. Every publisher numbers its
 * events to one room 1, 2, 3, ... (ws-edge promises order per publisher and room, at most once).
 *
 * - A publisher's first event sets the baseline, unless `expectFromOne` (the receiver joined
 *   before publishing began): then the first seen must be 1 and anything skipped is a gap.
 * - seq > last + 1: the skipped numbers are remembered as missing.
 * - seq <= last and missing: it came late, out of order (and is no longer missing).
 * - seq <= last and not missing: a duplicate.
 * - `finish()` returns the numbers still missing: the gaps. Losses after the last event a
 *   receiver saw cannot be told from the end of the run and are not counted.
 */
export function createSequenceTracker(expectFromOne = false) {
  /** @type {Map<string, { last: number, missing: Set<number> }>} */
  const byPublisher = new Map();
  return {
    /** @param {string} pub @param {number} seq @returns {'ok' | 'duplicate' | 'out_of_order'} */
    see(pub, seq) {
      let state = byPublisher.get(pub);
      if (state === undefined) {
        state = { last: expectFromOne ? 0 : seq - 1, missing: new Set() };
        byPublisher.set(pub, state);
      }
      if (seq > state.last) {
        for (let s = state.last + 1; s < seq; s++) state.missing.add(s);
        state.last = seq;
        return 'ok';
      }
      if (state.missing.delete(seq)) return 'out_of_order';
      return 'duplicate';
    },
    /** @returns {number} */
    finish() {
      let gaps = 0;
      for (const state of byPublisher.values()) gaps += state.missing.size;
      byPublisher.clear();
      return gaps;
    },
  };
}

/** Event type of probes published through POST /api/v1/publish (any non-reserved dotted type works). */
export const API_EVENT_TYPE = 'k6.probe';

/**
 * The probe payload publishers send: send time (ms since the epoch), publisher id, sequence,
 * and optional padding to reach a message size.
 * @param {string} pub @param {number} seq @param {string} pad
 */
export function probe(pub, seq, pad) {
  return pad === '' ? { ts: Date.now(), pub, seq } : { ts: Date.now(), pub, seq, pad };
}

/**
 * If `msg` carries a probe, returns it: `message.new` from send_message and the API's `k6.probe`.
 * @param {Envelope} msg @returns {{ ts: number, pub: string, seq: number } | null}
 */
export function probeOf(msg) {
  if (msg.type !== 'message.new' && msg.type !== API_EVENT_TYPE) return null;
  const d = msg.data;
  if (d === null || typeof d !== 'object' || typeof d.ts !== 'number' || typeof d.pub !== 'string' || typeof d.seq !== 'number') return null;
  return d;
}
