// Handshake rate (with JWT verification for ws-edge) and idle memory per connection,
// ws-edge against a raw uWebSockets.js server in the same run. Usage:
//   npm run build && node bench/connections.mjs [connections=10000] [repetitions=3]
// With BENCH_REDIS_URL, the ws-edge node uses that Redis: each handshake then waits for the
// connection registry's script (the cluster-wide per-user limit) before `connected`.
import { createSigner } from 'fast-jwt';
import os from 'node:os';
import { openConnections } from './loadgen.mjs';
import { cpuSecondsOf, median, rssOf, sleep, startServer, stop } from './lib.mjs';

const count = Number(process.argv[2] ?? 10_000);
const repetitions = Number(process.argv[3] ?? 3);
const LOCAL_ADDRESSES = Array.from({ length: 16 }, (_, i) => `127.0.0.${i + 1}`);
const secret = 'bench-secret-0123456789abcdef0123456789abcdef';
const sign = createSigner({ key: secret, expiresIn: 3_600_000 });
// Distinct users so the per-user limit never trips; tokens minted before the clock starts.
const tokens = Array.from({ length: count }, (_, i) => sign({ sub: `u${i}`, rooms: ['*'] }));

const servers = {
  'ws-edge': () =>
    startServer(['dist/cli.js', 'serve'], {
      PORT: '0', INTERNAL_PORT: '0', HOST: '127.0.0.1', JWT_SECRET: secret, LOG_LEVEL: 'info', NODE_ENV: 'production',
      WS_MAX_CONNECTIONS_PER_USER: '5',
      ...(process.env.BENCH_REDIS_URL && { REDIS_URL: process.env.BENCH_REDIS_URL, REDIS_PREFIX: `bench${Date.now()}:` }),
    }),
  'raw-uws': () => startServer(['bench/raw-uws.mjs'], { PORT: '0' }),
};

async function measure(name) {
  const { child, port } = await servers[name]();
  await sleep(300);
  const rssBefore = rssOf(child.pid);
  const cpuBefore = cpuSecondsOf(child.pid);
  // Several loopback source addresses: one address has ~28k ephemeral ports, and repetitions leave TIME_WAIT behind.
  const result = await openConnections({ port, count, tokenFor: (i) => tokens[i], localAddresses: LOCAL_ADDRESSES });
  const cpu = cpuSecondsOf(child.pid) - cpuBefore;
  await sleep(1000);
  const rssAfter = rssOf(child.pid);
  for (const s of result.sockets) s.destroy();
  await stop(child);
  return {
    server: name,
    connections: result.sockets.length,
    failed: result.failed,
    handshakes_per_s: Math.round(result.rate),
    server_cpu_ms_per_handshake: +((cpu * 1000) / result.sockets.length).toFixed(4),
    rss_bytes_per_connection: Math.round((rssAfter - rssBefore) / result.sockets.length),
  };
}

const runs = { 'ws-edge': [], 'raw-uws': [] };
for (let r = 0; r < repetitions; r++) {
  for (const name of Object.keys(runs)) runs[name].push(await measure(name));
}
const summary = {};
for (const [name, results] of Object.entries(runs)) {
  summary[name] = {
    handshakes_per_s: median(results.map((x) => x.handshakes_per_s)),
    handshakes_spread: [Math.min(...results.map((x) => x.handshakes_per_s)), Math.max(...results.map((x) => x.handshakes_per_s))],
    rss_bytes_per_connection: median(results.map((x) => x.rss_bytes_per_connection)),
    server_cpu_ms_per_handshake: median(results.map((x) => x.server_cpu_ms_per_handshake)),
    failed: results.reduce((a, x) => a + x.failed, 0),
  };
}
const ratio = {
  handshakes: +(summary['ws-edge'].handshakes_per_s / summary['raw-uws'].handshakes_per_s).toFixed(2),
  rss_per_connection: +(summary['ws-edge'].rss_bytes_per_connection / summary['raw-uws'].rss_bytes_per_connection).toFixed(2),
};
console.log(JSON.stringify({ scenario: 'connections', redis: Boolean(process.env.BENCH_REDIS_URL), connections: count, repetitions, node: process.version, cpus: os.cpus().length, summary, ratio }));
console.log(`| server  | handshakes/s (median, spread) | server CPU ms/handshake | RSS bytes/conn |`);
for (const [name, s] of Object.entries(summary)) {
  console.log(`| ${name} | ${s.handshakes_per_s} (${s.handshakes_spread.join('-')}) | ${s.server_cpu_ms_per_handshake} | ${s.rss_bytes_per_connection} |`);
}
console.log(`| ratio ws-edge/raw | ${ratio.handshakes} | | ${ratio.rss_per_connection} |`);
