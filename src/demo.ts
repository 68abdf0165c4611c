/**
 * The browser demo, in dev mode only (no JWT key configured, NODE_ENV not production): GET
 * /dev/demo on the public port is a page that connects with the dev token through ws-edge/client,
 * joins a room, shows its events, who is present (with WS_PRESENCE_ROOMS), who is typing, and
 * every connection state change. The page loads the client as the ES modules tsc built into
 * dist/, served from memory under /dev/; nothing else is served.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { ROUTE_REFUSALS } from './errors.js';
import { sendRefusal } from './http.js';
import type { TemplatedApp } from './uws.js';

export const DEMO_PATH = '/dev/demo';

/** The client's modules as built in dist/, relative to this file (dist/demo.js): dist/client/ and the protocol modules it imports. */
function modules(): string[] {
  const client = readdirSync(new URL('./client/', import.meta.url)).filter((f) => f.endsWith('.js'));
  return [...client.map((f) => `client/${f}`), 'messages.js', 'close-codes.js'];
}

function page(token: string): string {
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>ws-edge demo</title>
<style>
body{font:15px system-ui,sans-serif;margin:2em auto;max-width:52em;padding:0 1em;color:#1f2328}
#state{display:inline-block;padding:.15em .7em;border-radius:4px;color:#fff;background:#6e7781}
#state.connected{background:#1a7f37}#state.connecting,#state.disconnected{background:#9a6700}#state.closed{background:#cf222e}
form{margin:.6em 0}input{font:inherit;padding:.2em .4em}ol{font:13px ui-monospace,monospace;padding-left:2em}li{white-space:pre-wrap;margin:.15em 0}
.muted{color:#656d76}
</style></head>
<body>
<h1>ws-edge demo</h1>
<p>Connection: <span id="state">disconnected</span> <span id="detail" class="muted"></span></p>
<form id="join">Room <input id="room" value="channel:demo" size="24"> <button>Join</button> <span id="rooms" class="muted"></span></form>
<form id="send">Message <input id="text" value="hello" size="40"> <button>Send</button> <span id="typing" class="muted"></span></form>
<p>Present in channel:demo: <span id="present" class="muted">(presence is off: start the node with WS_PRESENCE_ROOMS=channel:*)</span></p>
<p class="muted">Open this page in a second tab and send a message; stop the node (Ctrl-C, a 1012) or restart it to watch the client reconnect and rejoin.</p>
<ol id="log" reversed></ol>
<script type="module">
import { createClient, createTyping, watchPresence } from './client/index.js';
const $ = (id) => document.getElementById(id);
const log = (text) => { const li = document.createElement('li'); li.textContent = new Date().toISOString().slice(11, 23) + ' ' + text; $('log').prepend(li); };
const url = (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/api/v1/ws/connect';
const client = createClient({ url, token: ${JSON.stringify(token)} });
const joined = new Set();
client.on('state', (s) => {
  $('state').textContent = s.state;
  $('state').className = s.state;
  $('detail').textContent = s.code === undefined ? '' : s.code + ' ' + (s.reason || '') + (s.delay === undefined ? '' : ', next attempt in ' + (s.delay / 1000).toFixed(1) + ' s');
  log('state ' + s.state + (s.code === undefined ? '' : ' (' + s.code + ' ' + (s.reason || '') + ')'));
});
client.on('connected', (d) => log('connected as ' + d.username + ' to ' + d.connection_id));
client.on('message', (m) => log(JSON.stringify(m)));
function join(room) {
  client.join(room, {
    event: (e) => log(room + ' ' + e.type + ' from ' + (e.sender ?? 'system') + ': ' + JSON.stringify(e.data) + (e.offset === undefined ? '' : ' @' + e.offset)),
    recovered: (p) => log(room + ' recovered up to ' + p.offset),
    reset: () => log(room + ' rejoined: reload its state'),
    left: (reason) => (joined.delete(room), log(room + ' left: ' + reason)),
  }).then(() => { joined.add(room); $('rooms').textContent = [...joined].join(', '); log('joined ' + room); }, (err) => log('join ' + room + ' refused: ' + err.code));
}
$('join').onsubmit = (e) => { e.preventDefault(); join($('room').value.trim()); };
$('send').onsubmit = (e) => {
  e.preventDefault();
  typing.stop();
  client.send($('room').value.trim(), { text: $('text').value }).catch((err) => log('send refused: ' + err.code + ' ' + err.message));
};
join('channel:demo');
client.connect();
watchPresence(client, 'channel:demo', (users) => { $('present').textContent = [...users.values()].join(', ') || 'nobody'; });
const typing = createTyping(client, 'channel:demo', (others) => { $('typing').textContent = others.size ? [...others.values()].join(', ') + ' typing…' : ''; });
$('text').oninput = () => typing.typing();
$('text').onblur = () => typing.stop();
</script>
</body></html>
`;
}

/** Adds the demo's routes; call before the public port's catch-all 404. */
export function addDemoRoutes(app: TemplatedApp, token: string): void {
  const html = page(token);
  const files = new Map(modules().map((path) => [`/dev/${path}`, readFileSync(new URL(path, import.meta.url), 'utf8')]));
  const headers = (res: Parameters<Parameters<TemplatedApp['get']>[1]>[0], type: string) =>
    res.writeStatus('200 OK').writeHeader('Content-Type', type).writeHeader('Cache-Control', 'no-store').writeHeader('X-Content-Type-Options', 'nosniff');
  app.get(DEMO_PATH, (res) => {
    res.cork(() => headers(res, 'text/html; charset=utf-8').end(html));
  });
  app.get('/dev/*', (res, req) => {
    const body = files.get(req.getUrl());
    if (body === undefined) return sendRefusal(res, ROUTE_REFUSALS.not_found);
    res.cork(() => {
      headers(res, 'text/javascript; charset=utf-8').end(body);
    });
  });
}
