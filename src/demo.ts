/**
 * Dev mode's routes on the public port (no JWT key configured, NODE_ENV not production; main.ts
 * decides, and nothing here is served otherwise):
 *
 * - GET /dev/demo: a chat page on ws-edge/client. Each tab picks its own name and gets its tokens
 *   from /dev/token (the client's token provider), so a restarted node, whose new dev secret refuses
 *   the old token, only means a new token. It shows who is present and typing in channel:demo,
 *   messages as "who: text", what a rejoin recovered or lost, and publishes as the backend.
 * - GET /dev/token?user=<name>: a short-lived token for that user (all rooms).
 * - POST /dev/publish {"room","text"}: publishes a message.new as the backend does, through the
 *   node's own HTTP API with its key.
 * - GET /dev/<module>.js: the client's ES modules as tsc built them into dist/, served from memory.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { signToken } from './auth.js';
import { API_REFUSALS, HTTP_STATUS_TEXT, ROUTE_REFUSALS } from './errors.js';
import { sendEncodedJson, sendJson, sendRefusal } from './http.js';
import { isValidId } from './rooms.js';
import type { HttpRequest, HttpResponse, TemplatedApp } from './uws.js';

export const DEMO_PATH = '/dev/demo';
export const DEV_TOKEN_PATH = '/dev/token';
const DEV_PUBLISH_PATH = '/dev/publish';
/** The room the page, the banner's commands and the dev defaults use. */
export const DEMO_ROOM = 'channel:demo';
/** Lifetime of a /dev/token token; the page's client refreshes it in band before it ends. */
const ENDPOINT_TOKEN_TTL_SECONDS = 600;
/** A /dev/publish body is one short message. */
const MAX_PUBLISH_BODY = 16 * 1024;

export interface DevMode {
  /** The ephemeral secret of this start: /dev/token signs with it. */
  readonly secret: string;
  readonly issuer: string | undefined;
  readonly audience: string | undefined;
  /** Publishes `text` to `room` as a message.new from "backend"; resolves with the API's answer. Absent when the operator set PUBLISH_API_KEY: dev mode never relays with a key it did not make. */
  readonly publishAsBackend: ((room: string, text: string) => Promise<{ readonly status: number; readonly body: string }>) | undefined;
  /** The public port is on loopback: the dev routes then answer only requests naming a loopback host (no DNS rebinding). */
  readonly loopback: boolean;
}

/** `localhost`, `127.0.0.1`, `[::1]`, with or without a port. */
const LOOPBACK_HOST = /^(?:localhost|127\.0\.0\.1|\[::1\])(?::\d+)?$/i;

/** The address to reach a bound host at: a wildcard bind is reached on loopback; IPv6 in brackets. */
export function reachableHost(bind: string): string {
  if (bind === '0.0.0.0' || bind === '') return '127.0.0.1';
  if (bind === '::') return '[::1]';
  return bind.includes(':') ? `[${bind}]` : bind;
}

/** What a backend does to publish: POST /api/v1/publish on the node's internal port with the API key. */
export function internalPublisher(api: { readonly host: string; readonly port: () => number | undefined; readonly key: string }): DevMode['publishAsBackend'] {
  return async (room, text) => {
    const port = api.port();
    if (port === undefined) throw new Error('the internal port is not listening yet');
    const res = await fetch(`http://${reachableHost(api.host)}:${port}/api/v1/publish`, {
      method: 'POST',
      headers: { authorization: `Bearer ${api.key}`, 'content-type': 'application/json' },
      body: JSON.stringify({ room, type: 'message.new', data: { text }, sender: 'backend' }),
      signal: AbortSignal.timeout(5000),
    });
    return { status: res.status, body: await res.text() };
  };
}

/** The client's modules as built in dist/, relative to this file (dist/demo.js): dist/client/ and the protocol modules it imports. */
function modules(): string[] {
  const client = readdirSync(new URL('./client/', import.meta.url)).filter((f) => f.endsWith('.js'));
  return [...client.map((f) => `client/${f}`), 'messages.js', 'close-codes.js'];
}

const STYLE = `
body{font:15px system-ui,sans-serif;margin:2em auto;max-width:52em;padding:0 1em;color:#1f2328}
#state{display:inline-block;padding:.15em .7em;border-radius:4px;color:#fff;background:#6e7781}
#state.connected{background:#1a7f37}#state.connecting,#state.disconnected{background:#9a6700}#state.closed{background:#cf222e}
form{margin:.6em 0}input{font:inherit;padding:.2em .4em}ol{font:13px ui-monospace,monospace;padding-left:2em}li{white-space:pre-wrap;margin:.15em 0}
li.chat{font:15px system-ui,sans-serif}li.old{color:#656d76}.muted{color:#656d76}
`;

/** The page's module script: plain JavaScript, no template placeholders. */
const SCRIPT = `
import { createClient, createTyping, watchPresence } from './client/index.js';
const $ = (id) => document.getElementById(id);
const DEMO = 'channel:demo';
const NAME_KEY = 'ws-edge-demo-name';
const ANIMALS = ['otter', 'lynx', 'heron', 'badger', 'puffin', 'marten', 'ibex', 'gecko', 'koala', 'tapir', 'wren', 'okapi'];
// A name per tab (sessionStorage survives the tab's reloads), so presence and typing tell tabs apart.
const name = sessionStorage.getItem(NAME_KEY) || 'dev-' + ANIMALS[Math.floor(Math.random() * ANIMALS.length)] + Math.floor(10 + Math.random() * 90);
sessionStorage.setItem(NAME_KEY, name);
$('name').value = name;

const line = (text, opts = {}) => {
  const li = document.createElement('li');
  li.textContent = new Date(opts.at ?? Date.now()).toISOString().slice(11, 23) + ' ' + text;
  li.className = opts.cls ?? '';
  if (opts.older) $('log').append(li);
  else $('log').prepend(li);
};
const log = (text) => line(text);
const isChat = (e) => e.type === 'message.new' && e.data !== null && typeof e.data === 'object' && typeof e.data.text === 'string';
// Chat as "who: text" (the room first when it is not the demo room); other events as they came.
const show = (room, e) => isChat(e)
  ? (room === DEMO ? '' : room + ' ') + (e.sender ?? 'system') + ': ' + e.data.text
  : room + ' ' + e.type + ' from ' + (e.sender ?? 'system') + ': ' + JSON.stringify(e.data) + (e.offset === undefined ? '' : ' @' + e.offset);

// The token provider: asked at the first connect, after a 4401 (a restarted node has a new dev secret) and before exp.
async function token() {
  const res = await fetch('/dev/token?user=' + encodeURIComponent(name), { cache: 'no-store' });
  if (!res.ok) throw new Error('/dev/token answered ' + res.status);
  log('new token for ' + name + ' from /dev/token');
  return (await res.json()).token;
}

const url = (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/api/v1/ws/connect';
const client = createClient({ url, token });
const joined = new Set();
// Rooms rejoining after a lost connection, with the events replayed so far.
const rejoining = new Map();
let wasConnected = false;
client.on('state', (s) => {
  $('state').textContent = s.state;
  $('state').className = s.state;
  $('detail').textContent = s.code === undefined ? '' : s.code + ' ' + (s.reason || '') + (s.delay === undefined ? '' : ', next attempt in ' + (s.delay / 1000).toFixed(1) + ' s');
  log('state ' + s.state + (s.code === undefined ? '' : ' (' + s.code + ' ' + (s.reason || '') + ')'));
  if (s.state !== 'connected' && wasConnected) for (const room of joined) if (!rejoining.has(room)) rejoining.set(room, 0);
});
client.on('connected', (d) => {
  wasConnected = true;
  log('connected as ' + d.username + ' to ' + d.connection_id);
});
client.on('message', (m) => log(JSON.stringify(m)));

// The kept events of a sequenced room up to the joined position, newest first, at the bottom: older than anything shown.
function loadHistory(room, position) {
  client.history(room, { reverse: true, limit: 20 }).then((h) => {
    const kept = h.data.events.filter((e) => e.epoch === position.epoch && e.offset <= position.offset);
    for (const e of kept) line(show(room, e) + '  (history)', { at: e.timestamp, cls: 'old', older: true });
    log(room + ': ' + (kept.length === 0 ? 'no earlier messages kept' : kept.length + ' earlier message' + (kept.length === 1 ? '' : 's') + ' from its history, at the bottom'));
  }, (err) => log(room + ' history: ' + err.code));
}

function join(room) {
  client.join(room, {
    event: (e) => {
      const replayed = rejoining.has(room);
      if (replayed) rejoining.set(room, rejoining.get(room) + 1);
      line(show(room, e) + (replayed ? '  (recovered)' : ''), { cls: isChat(e) ? 'chat' : '' });
    },
    recovered: (p) => {
      const n = rejoining.get(room) ?? 0;
      rejoining.delete(room);
      log(room + ' recovered after the reconnect: ' + n + ' missed event' + (n === 1 ? '' : 's') + ' replayed, now at @' + p.offset);
    },
    reset: (p) => {
      rejoining.delete(room);
      if (p === null) return log(room + ' rejoined (not sequenced: events meanwhile are not recovered)');
      log(room + ' rejoined without recovery: the node lost its history (restarted without Redis?); loading what it keeps');
      loadHistory(room, p);
    },
    left: (reason) => (joined.delete(room), log(room + ' left: ' + reason)),
  }).then((reply) => {
    joined.add(room);
    $('rooms').textContent = [...joined].join(', ');
    log('joined ' + room);
    if (reply.epoch !== undefined) loadHistory(room, reply);
    if (room === DEMO) client.presence(room).catch((err) => err.code === 'no_presence' && ($('present').textContent = '(presence is off: WS_PRESENCE_ROOMS is set without ' + DEMO + ')'));
  }, (err) => log('join ' + room + ' refused: ' + err.code));
}

$('who').onsubmit = (e) => {
  e.preventDefault();
  const next = $('name').value.trim();
  if (!/^[A-Za-z0-9_-]{1,64}$/.test(next)) return log('a name is 1-64 of A-Z a-z 0-9 _ -');
  sessionStorage.setItem(NAME_KEY, next);
  // A clean close first: the old name leaves presence now, not after WS_PRESENCE_GRACE (an unload may cut the socket: 1006).
  client.close();
  location.reload();
};
$('join').onsubmit = (e) => { e.preventDefault(); join($('room').value.trim()); };
$('send').onsubmit = (e) => {
  e.preventDefault();
  typing.stop();
  const to = $('to').value.trim();
  client.send(to, { text: $('text').value }).catch((err) => log('send to ' + to + ' refused: ' + err.code + ' ' + err.message));
};
$('backend').onclick = async () => {
  const to = $('to').value.trim();
  const res = await fetch('/dev/publish', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ room: to, text: $('text').value }) }).catch(() => undefined);
  log(res?.ok ? 'published to ' + to + ' as the backend (POST /api/v1/publish with the dev key)' : 'publish as the backend failed: ' + (res === undefined ? 'no answer' : res.status + ' ' + await res.text()));
};
join(DEMO);
client.connect();
watchPresence(client, DEMO, (users) => { $('present').textContent = [...users.values()].join(', ') || 'nobody'; });
const typing = createTyping(client, DEMO, (others) => { $('typing').textContent = others.size ? [...others.values()].join(', ') + ' typing…' : ''; });
$('text').oninput = () => typing.typing();
$('text').onblur = () => typing.stop();
`;

const PAGE = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>ws-edge demo</title>
<style>${STYLE}</style></head>
<body>
<h1>ws-edge demo</h1>
<p>Connection: <span id="state">disconnected</span> <span id="detail" class="muted"></span></p>
<form id="who">You are <input id="name" size="16" maxlength="64"> <button>Rename</button> <span class="muted">(each tab has its own name; tokens come from ${DEV_TOKEN_PATH})</span></form>
<form id="join">Join <input id="room" value="${DEMO_ROOM}" size="24"> <button>Join</button> <span id="rooms" class="muted"></span></form>
<form id="send">To <input id="to" value="${DEMO_ROOM}" size="20"> <input id="text" value="hello" size="30"> <button>Send</button> <button type="button" id="backend">Publish as the backend</button> <span id="typing" class="muted"></span></form>
<p>Present in ${DEMO_ROOM}: <span id="present" class="muted">…</span></p>
<p class="muted">Open this page in a second tab and send a message. Stop the node (Ctrl-C, a 1012) and start it again: the page takes a new token for the new dev secret, rejoins, and says what it recovered (everything, with REDIS_URL; without Redis the history starts again).</p>
<ol id="log" reversed></ol>
<script type="module">${SCRIPT}</script>
</body></html>
`;

type Res = HttpResponse;

function sendPage(res: Res, type: string, body: string): void {
  res.cork(() => {
    res.writeStatus('200 OK').writeHeader('Content-Type', type).writeHeader('Cache-Control', 'no-store').writeHeader('X-Content-Type-Options', 'nosniff').end(body);
  });
}

/** GET /dev/token?user=<name> (default "dev"): a token for that user and every room. */
function mintDevToken(res: Res, query: string, dev: DevMode): void {
  const user = new URLSearchParams(query).get('user') ?? 'dev';
  if (!isValidId(user)) return sendRefusal(res, API_REFUSALS.invalid_user_id, { reason: '"user" must be 1-64 of [A-Za-z0-9_-]' });
  const token = signToken({ secret: dev.secret, userId: user, username: user, rooms: ['*'], ttlSeconds: ENDPOINT_TOKEN_TTL_SECONDS, issuer: dev.issuer, audience: dev.audience });
  sendJson(res, '200 OK', { token, user_id: user, expires_at: new Date(Date.now() + ENDPOINT_TOKEN_TTL_SECONDS * 1000).toISOString() });
}

/**
 * POST /dev/publish {"room","text"} with Content-Type application/json (which a cross-site form
 * cannot send without a preflight this node never answers): the API's own status and body back.
 */
function relayPublish(res: Res, contentType: string, dev: DevMode): void {
  let aborted = false;
  res.onAborted(() => {
    aborted = true;
  });
  const answer = (send: () => void): void => {
    if (!aborted) send();
  };
  if (!/^application\/json\b/i.test(contentType)) return sendRefusal(res, API_REFUSALS.invalid_body, { reason: 'send {"room","text"} as application/json' });
  const chunks: Buffer[] = [];
  let size = 0;
  res.onData((chunk, isLast) => {
    size += chunk.byteLength;
    // uWS reuses the chunk's memory after this callback: copy it.
    if (size <= MAX_PUBLISH_BODY) chunks.push(Buffer.from(Buffer.from(chunk)));
    if (!isLast) return;
    if (size > MAX_PUBLISH_BODY) return answer(() => sendRefusal(res, API_REFUSALS.too_large, { limit: MAX_PUBLISH_BODY }));
    let body: { room?: unknown; text?: unknown } | null;
    try {
      body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as typeof body;
    } catch {
      return answer(() => sendRefusal(res, API_REFUSALS.invalid_json));
    }
    if (typeof body?.room !== 'string' || typeof body.text !== 'string') return answer(() => sendRefusal(res, API_REFUSALS.invalid_body, { reason: 'send {"room","text"}: two strings' }));
    dev.publishAsBackend!(body.room, body.text).then(
      ({ status, body: json }) => answer(() => sendEncodedJson(res, status === 200 ? '200 OK' : `${status} ${HTTP_STATUS_TEXT[status] ?? 'Error'}`, json)),
      (err: unknown) => answer(() => sendRefusal(res, API_REFUSALS.internal_error, { reason: `the node's publish API did not answer: ${(err as Error).message}` })),
    );
  });
}

/** Adds the dev routes; call before the public port's catch-all 404, and only in dev mode. */
export function addDemoRoutes(app: TemplatedApp, dev: DevMode): void {
  const files = new Map(modules().map((path) => [`/dev/${path}`, readFileSync(new URL(path, import.meta.url), 'utf8')]));
  // A page on another site that rebinds its name to 127.0.0.1 still sends its own name as Host.
  const foreign = (req: HttpRequest): boolean => dev.loopback && !LOOPBACK_HOST.test(req.getHeader('host'));
  const notFound = (res: Res): void => sendRefusal(res, ROUTE_REFUSALS.not_found);
  app.get(DEMO_PATH, (res, req) => (foreign(req) ? notFound(res) : sendPage(res, 'text/html; charset=utf-8', PAGE)));
  app.get(DEV_TOKEN_PATH, (res, req) => (foreign(req) ? notFound(res) : mintDevToken(res, req.getQuery() ?? '', dev)));
  app.post(DEV_PUBLISH_PATH, (res, req) => (foreign(req) || dev.publishAsBackend === undefined ? notFound(res) : relayPublish(res, req.getHeader('content-type'), dev)));
  app.get('/dev/*', (res, req) => {
    const body = files.get(req.getUrl());
    if (body === undefined) return sendRefusal(res, ROUTE_REFUSALS.not_found);
    sendPage(res, 'text/javascript; charset=utf-8', body);
  });
}
