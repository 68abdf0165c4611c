// Reads a V8 .cpuprofile (node --cpu-prof) and returns the top frames by self and total time, time
// by origin (ws-edge code, dependencies, Node internals, native uWS/GC), and draws a flame graph SVG.
//   node bench/profile.mjs <file.cpuprofile> [flame.svg]   (bench/run.mjs --profile calls it)
import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const keyOf = (f) => `${f.functionName || '(anonymous)'} ${f.url}:${f.lineNumber + 1}`;

function originOf(frame) {
  const { url, functionName } = frame;
  if (url === '') return functionName.startsWith('(') ? functionName : 'native (uWS, V8 builtins)';
  if (url.startsWith('node:')) return 'node internals';
  const dep = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
  if (dep) return dep[1];
  if (url.includes('/dist/')) return 'ws-edge (dist/)';
  if (url.includes('/bench/')) return 'bench server script';
  return 'other';
}

function shortUrl(url) {
  const dep = /node_modules\/(.*)$/.exec(url);
  if (dep) return dep[1];
  const dist = /\/(dist\/.*)$/.exec(url);
  return dist ? dist[1] : url.replace(/^file:\/\/.*\//, '');
}

export function summarizeProfile(file, svgPath, title = 'CPU profile') {
  const profile = JSON.parse(readFileSync(file, 'utf8'));
  const byId = new Map(profile.nodes.map((n) => [n.id, { ...n, self: 0, total: 0 }]));
  // Self time from the samples and their time deltas (more exact than hitCount x interval).
  for (let i = 0; i < profile.samples.length; i++) {
    const node = byId.get(profile.samples[i]);
    node.self += (profile.timeDeltas[i + 1] ?? profile.timeDeltas[i] ?? 0) / 1000;
  }
  const root = byId.get(profile.nodes[0].id);
  const totalOf = (n) => (n.total = n.self + (n.children ?? []).reduce((s, id) => s + totalOf(byId.get(id)), 0));
  totalOf(root);
  const idle = [...byId.values()].filter((n) => n.callFrame.functionName === '(idle)').reduce((s, n) => s + n.self, 0);
  const busy = root.total - idle;

  const functions = new Map();
  const fn = (frame) => {
    const key = keyOf(frame);
    let f = functions.get(key);
    if (!f) functions.set(key, (f = { function: frame.functionName || '(anonymous)', location: frame.url ? `${shortUrl(frame.url)}:${frame.lineNumber + 1}` : '', origin: originOf(frame), self: 0, total: 0 }));
    return f;
  };
  const onPath = new Map();
  const walk = (n) => {
    const key = keyOf(n.callFrame);
    const f = fn(n.callFrame);
    f.self += n.self;
    const outermost = !onPath.get(key);
    if (outermost) f.total += n.total; // recursion counted once
    onPath.set(key, (onPath.get(key) ?? 0) + 1);
    for (const id of n.children ?? []) walk(byId.get(id));
    onPath.set(key, onPath.get(key) - 1);
  };
  walk(root);

  const pct = (ms) => +((100 * ms) / busy).toFixed(1);
  const listed = [...functions.values()].filter((f) => f.function !== '(idle)' && f.function !== '(root)');
  const top = (key) =>
    listed
      .sort((a, b) => b[key] - a[key])
      .slice(0, 40)
      .map((f) => ({ function: f.function, location: f.location, origin: f.origin, self_pct: pct(f.self), total_pct: pct(f.total) }));
  const origins = {};
  for (const f of listed) origins[f.origin] = (origins[f.origin] ?? 0) + f.self;

  const summary = {
    profiled_ms: Math.round(root.total),
    busy_ms: Math.round(busy),
    idle_pct: +((100 * idle) / root.total).toFixed(1),
    self_by_origin_pct: Object.fromEntries(Object.entries(origins).sort((a, b) => b[1] - a[1]).map(([k, v]) => [k, pct(v)])),
    top_self: top('self'),
    top_total: top('total'),
  };
  if (svgPath) writeFileSync(svgPath, flameGraph(root, byId, busy, idle, title));
  return summary;
}

const COLORS = {
  'ws-edge (dist/)': '#e4572e',
  'node internals': '#76b041',
  'native (uWS, V8 builtins)': '#a0a0a0',
  '(garbage collector)': '#ffc914',
  '(program)': '#c8c8c8',
};
const escape = (s) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

/** A flame graph of busy time (idle left out): width is total time, root at the bottom. */
function flameGraph(root, byId, busy, idle, title) {
  const width = 1200;
  const row = 16;
  const rects = [];
  let depthMax = 0;
  const place = (n, x, depth) => {
    const w = (n.total / busy) * width;
    if (w < 0.5) return;
    depthMax = Math.max(depthMax, depth);
    rects.push({ n, x, w, depth });
    let cx = x;
    for (const id of n.children ?? []) {
      const c = byId.get(id);
      if (c.callFrame.functionName === '(idle)') continue;
      place(c, cx, depth + 1);
      cx += (c.total / busy) * width;
    }
  };
  place({ ...root, total: root.total - idle }, 0, 0);
  const height = (depthMax + 2) * row + 30;
  const out = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="monospace" font-size="10">`,
    `<text x="4" y="14" font-size="12">${escape(title)}: CPU flame graph (busy time ${Math.round(busy)} ms; width = share of busy time; red: ws-edge, green: Node internals, yellow: GC, grey: native/uWS)</text>`,
  ];
  for (const { n, x, w, depth } of rects) {
    const f = n.callFrame;
    const label = `${f.functionName || '(anonymous)'}${f.url ? ' ' + shortUrl(f.url) + ':' + (f.lineNumber + 1) : ''}`;
    const y = height - (depth + 1) * row;
    const color = COLORS[originOf(f)] ?? '#4f9dde';
    const chars = Math.floor((w - 4) / 6);
    out.push(
      `<g><title>${escape(label)} (${((100 * n.total) / busy).toFixed(1)}%)</title><rect x="${x.toFixed(1)}" y="${y}" width="${w.toFixed(1)}" height="${row - 1}" fill="${color}"/>` +
        (chars >= 3 ? `<text x="${(x + 2).toFixed(1)}" y="${y + 11}">${escape(label.slice(0, chars))}</text>` : '') +
        '</g>',
    );
  }
  out.push('</svg>');
  return out.join('\n') + '\n';
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const summary = summarizeProfile(process.argv[2], process.argv[3]);
  console.log(JSON.stringify(summary, null, 2));
}
