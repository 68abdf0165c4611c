// Draws bench/results/chart.svg from bench/results/results.json (written by `npm run bench`):
// one panel per headline number, a bar per server at its median with a whisker over the min-max
// spread of the repetitions. Usage: node bench/chart.mjs [results.json] [chart.svg]
import { readFileSync, writeFileSync } from 'node:fs';

const input = process.argv[2] ?? 'bench/results/results.json';
const output = process.argv[3] ?? 'bench/results/chart.svg';
const results = JSON.parse(readFileSync(input, 'utf8'));

const PANELS = [
  { scenario: 'fanout', key: 'deliveries_per_s', title: 'Fan-out: deliveries/s (more is better)' },
  { scenario: 'fanout', key: 'server_cpu_s_per_million', title: 'Fan-out: server CPU s per million deliveries (less is better)', digits: 2 },
  { scenario: 'cross-node', key: 'max_b_deliveries_per_s', title: 'Cross-node: deliveries/s on node B, max rate (more is better)' },
  { scenario: 'cross-node', key: 'paced_latency_p99_ms', title: 'Cross-node: p99 latency ms at 200 msgs/s (less is better, log scale)', digits: 1, log: true },
  { scenario: 'idle', key: 'rss_bytes_per_connection', title: 'Idle: server RSS bytes per connection (less is better)' },
  { scenario: 'idle', key: 'handshakes_per_s', title: 'Idle ramp: handshakes/s with JWT verification (more is better)' },
  { scenario: 'many-rooms', key: 'deliveries_per_s', title: 'Many rooms: deliveries/s (more is better)' },
  { scenario: 'many-rooms', key: 'server_cpu_s_per_million', title: 'Many rooms: server CPU s per million deliveries (less is better)', digits: 2 },
];
const COLORS = { 'ws-edge': '#e4572e', 'raw-uws': '#2e86ab', 'raw-uws-direct': '#8ec1dd', 'socket.io': '#6c757d' };
const LABELS = { 'ws-edge': 'ws-edge', 'raw-uws': 'raw uWS (deferred)', 'raw-uws-direct': 'raw uWS (direct)', 'socket.io': 'Socket.IO 4' };

const W = 460;
const LABEL_W = 130;
const BAR_H = 16;
const GAP = 6;
const fmt = (v, digits) => (digits === undefined ? Math.round(v).toLocaleString('en-US') : v.toFixed(digits));
const esc = (s) => String(s).replace(/&/g, '&amp;').replace(/</g, '&lt;');

function panel({ scenario, key, title, digits, log }, x0, y0) {
  const servers = Object.entries(results.scenarios[scenario]?.servers ?? {})
    .map(([name, s]) => ({ name, stat: s.summary?.[key] }))
    .filter((s) => s.stat);
  const out = [`<text x="${x0}" y="${y0 + 12}" font-size="12" font-weight="bold">${esc(title)}</text>`];
  if (servers.length === 0) return { svg: out.concat(`<text x="${x0}" y="${y0 + 30}">not run</text>`).join('\n'), height: 40 };
  const max = Math.max(...servers.map((s) => s.stat.max));
  const min = Math.min(...servers.map((s) => s.stat.min));
  const plotW = W - LABEL_W - 90;
  const scale = log
    ? (v) => (Math.log10(Math.max(v, min / 2)) - Math.log10(min / 2)) / (Math.log10(max) - Math.log10(min / 2) || 1)
    : (v) => v / max;
  servers.forEach(({ name, stat }, i) => {
    const y = y0 + 22 + i * (BAR_H + GAP);
    const bx = x0 + LABEL_W;
    const w = Math.max(1, scale(stat.median) * plotW);
    out.push(`<text x="${bx - 6}" y="${y + 12}" text-anchor="end">${esc(LABELS[name] ?? name)}</text>`);
    out.push(`<rect x="${bx}" y="${y}" width="${w.toFixed(1)}" height="${BAR_H}" fill="${COLORS[name] ?? '#999'}"/>`);
    if (stat.max > stat.min) {
      const a = bx + scale(stat.min) * plotW;
      const b = bx + scale(stat.max) * plotW;
      const m = y + BAR_H / 2;
      out.push(`<path d="M${a.toFixed(1)} ${m}H${b.toFixed(1)}M${a.toFixed(1)} ${m - 4}V${m + 4}M${b.toFixed(1)} ${m - 4}V${m + 4}" stroke="#222" fill="none"/>`);
    }
    out.push(`<text x="${(bx + Math.max(w, scale(stat.max) * plotW) + 6).toFixed(1)}" y="${y + 12}">${fmt(stat.median, digits)}</text>`);
  });
  return { svg: out.join('\n'), height: 30 + servers.length * (BAR_H + GAP) };
}

const m = results.machine;
const parts = [];
let y = 44;
for (let i = 0; i < PANELS.length; i += 2) {
  const left = panel(PANELS[i], 10, y);
  const right = PANELS[i + 1] ? panel(PANELS[i + 1], 20 + W, y) : { svg: '', height: 0 };
  parts.push(left.svg, right.svg);
  y += Math.max(left.height, right.height) + 16;
}
const svg = [
  `<svg xmlns="http://www.w3.org/2000/svg" width="${2 * W + 30}" height="${y + 10}" font-family="Helvetica, Arial, sans-serif" font-size="11">`,
  `<rect width="100%" height="100%" fill="white"/>`,
  `<text x="10" y="18" font-size="14" font-weight="bold">ws-edge vs raw uWebSockets.js vs Socket.IO 4: medians of ${results.config.reps} runs, whiskers: min-max</text>`,
  `<text x="10" y="34">${esc(`${m.cores} cores ${m.cpu}, Node ${m.node}, ${m.uws}, Socket.IO ${m.socketio}; ${results.config.duration} s per phase; loopback, load generator on the same cores`)}</text>`,
  ...parts,
  '</svg>',
].join('\n');
writeFileSync(output, svg + '\n');
console.log(`wrote ${output}`);
