// Where a server's heap goes per idle connection: heap snapshots before and after N connections
// (each in its own room plus project:shared), diffed by object kind and divided by N.
//   node bench/heap.mjs [connections=5000] [ws-edge|raw-uws]
// The snapshots go to the temp directory and are removed afterwards.
import { readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { createSigner } from 'fast-jwt';
import { startServer, sleep } from './lib.mjs';
import { createStats, joinRooms, openClients } from './loadgen.mjs';

const SECRET = 'bench-secret-0123456789abcdef0123456789abcdef';
const count = Number(process.argv[2] ?? 5000);
const raw = process.argv[3] === 'raw-uws';
const script = raw ? ['bench/raw-uws.mjs'] : ['dist/cli.js', 'serve'];
const probe = pathToFileURL(resolve('bench/probe.mjs')).href;
const env = { PORT: '0', INTERNAL_PORT: '0', HOST: '127.0.0.1', NODE_ENV: 'production', JWT_SECRET: SECRET, WS_MEMBERSHIP_EVENTS: 'false' };
const node = await startServer(['--expose-gc', '--import', probe, ...script], env, { ipc: true });
setTimeout(() => process.exit(1), 300_000).unref();

const snapshot = (tag) =>
  new Promise((done) => {
    node.child.once('message', (msg) => done(msg.file));
    node.child.send({ probe: 'heap-snapshot', file: join(os.tmpdir(), `wsedge-heap-${process.pid}-${tag}.heapsnapshot`) });
  });

/** Self size and count per object kind (strings, arrays and code lumped together). */
function byKind(file) {
  const heap = JSON.parse(readFileSync(file, 'utf8'));
  rmSync(file);
  const fields = heap.snapshot.meta.node_fields;
  const types = heap.snapshot.meta.node_types[0];
  const [iType, iName, iSize] = ['type', 'name', 'self_size'].map((f) => fields.indexOf(f));
  const kinds = new Map();
  for (let i = 0; i < heap.nodes.length; i += fields.length) {
    const type = types[heap.nodes[i + iType]];
    const kind = ['object', 'closure'].includes(type) ? `${type} ${heap.strings[heap.nodes[i + iName]]}` : type.endsWith('string') ? '(string)' : `(${type})`;
    const k = kinds.get(kind) ?? { count: 0, size: 0 };
    k.count += 1;
    k.size += heap.nodes[i + iSize];
    kinds.set(kind, k);
  }
  return kinds;
}

const sign = createSigner({ key: SECRET, expiresIn: 3_600_000 });
const tokens = Array.from({ length: count }, (_, i) => sign({ sub: `u${i}`, rooms: ['*'] }));
await sleep(300);
const before = await snapshot('before');
const { clients } = await openClients({ port: node.port, count, protocol: 'edge', stats: createStats(), localAddresses: ['127.250.0.1', '127.250.0.2'], tokenFor: (i) => tokens[i] });
await joinRooms({ clients, protocol: 'edge', roomsOf: () => ['project:shared'] });
await sleep(500);
const after = await snapshot('after');
node.child.kill('SIGKILL');

const a = byKind(before);
const rows = [...byKind(after)].map(([kind, v]) => ({ kind, count: v.count - (a.get(kind)?.count ?? 0), size: v.size - (a.get(kind)?.size ?? 0) }));
rows.sort((x, y) => y.size - x.size);
const total = rows.reduce((sum, r) => sum + r.size, 0);
console.log(`${raw ? 'raw-uws' : 'ws-edge'}: ${clients.length} connections, heap grew ${total} bytes = ${Math.round(total / clients.length)} bytes per connection`);
console.log('| bytes/conn | objects/conn | kind |\n|---|---|---|');
for (const r of rows.slice(0, 12)) console.log(`| ${Math.round(r.size / clients.length)} | ${(r.count / clients.length).toFixed(2)} | ${r.kind} |`);
process.exit(0);
