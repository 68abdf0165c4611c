// One simulated node for bench/channels.mjs: subscribes the rooms it owns (per-room layout) or the
// single shared channel (ws:events layout), counts what it receives, and reports its CPU on SIGTERM.
import { Redis } from 'ioredis';

const [layout, index, rooms, url, prefix] = process.argv.slice(2);
const nodes = 3;
const sub = new Redis(url);
const mine = [];
for (let r = Number(index); r < Number(rooms); r += nodes) mine.push(`room:${r}`);
let received = 0;
let relevant = 0;
const owned = new Set(mine);
sub.on('messageBuffer', (_channel, message) => {
  received += 1;
  if (layout === 'per-room') {
    relevant += 1; // Redis only sends what this node subscribed
    return;
  }
  // Shared channel: the node must read the room from each event to drop the ones it has no members for.
  const end = message.indexOf(10);
  if (owned.has(message.toString('latin1', 0, end))) relevant += 1;
});
const channels = layout === 'per-room' ? mine.map((r) => `${prefix}${r}`) : [`${prefix}events`];
for (let i = 0; i < channels.length; i += 1000) await sub.subscribe(...channels.slice(i, i + 1000));
const atReady = process.cpuUsage();
process.stdout.write('ready\n');
process.on('SIGTERM', () => {
  const cpu = process.cpuUsage(atReady);
  process.stdout.write(JSON.stringify({ received, relevant, cpu_s: (cpu.user + cpu.system) / 1e6 }) + '\n');
  process.exit(0);
});
