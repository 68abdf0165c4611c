#!/usr/bin/env node
// The Docker image without a container engine: reads the Dockerfile, replays its build stage (COPY
// and RUN, in order) from the working tree into an empty directory, then starts the runtime stage's
// CMD with its ENV, and checks what a container would: the HEALTHCHECK command passes, a client
// connects with a token and gets pong for ping, SIGTERM drains and exits 0. Run by
// scripts/test-official.sh inside the Debian 13 root with Node 24, the image's runtime.
//
//   node scripts/image-smoke.mjs <empty directory>
import { execSync, spawn } from 'node:child_process';
import { once } from 'node:events';
import { cpSync, mkdirSync, readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { basename, join } from 'node:path';

const SRC = process.cwd();
const APP = process.argv[2];
if (!APP) throw new Error('usage: image-smoke.mjs <empty directory>');
mkdirSync(APP, { recursive: true });

/** Instructions per stage, continuation lines joined, comments dropped. */
const stages = [];
for (const line of readFileSync('Dockerfile', 'utf8').replace(/\\\n/g, ' ').split('\n')) {
  const trimmed = line.trim();
  if (trimmed === '' || trimmed.startsWith('#')) continue;
  const [instruction, ...rest] = trimmed.split(/\s+/);
  const args = rest.join(' ');
  if (instruction === 'FROM') stages.push({ from: args, steps: [] });
  else stages.at(-1).steps.push({ instruction, args });
}
const [build, runtime] = stages;

for (const { instruction, args } of build.steps) {
  if (instruction === 'COPY') {
    const paths = args.split(/\s+/);
    const target = paths.pop();
    const intoDir = target.endsWith('/') || paths.length > 1;
    for (const path of paths) cpSync(join(SRC, path), intoDir ? join(APP, target, basename(path)) : join(APP, target), { recursive: true });
  } else if (instruction === 'RUN') {
    console.log(`== RUN ${args}`);
    execSync(args, { cwd: APP, stdio: 'inherit' });
  }
}

/** `ENV A=1 B=2` pairs and the exec-form CMD / HEALTHCHECK CMD of the runtime stage. */
const env = {};
let cmd;
let healthcheck;
for (const { instruction, args } of runtime.steps) {
  if (instruction === 'ENV') for (const [, k, v] of args.matchAll(/(\w+)=(\S+)/g)) env[k] = v;
  if (instruction === 'CMD') cmd = JSON.parse(args);
  if (instruction === 'HEALTHCHECK') healthcheck = JSON.parse(args.slice(args.indexOf('CMD') + 3));
}
if (!cmd || !healthcheck || cmd[0] !== 'node' || healthcheck[0] !== 'node') throw new Error('the runtime stage needs exec-form CMD and HEALTHCHECK running node');

const freePort = () =>
  new Promise((resolve) => {
    const server = createServer().listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
// The image's ports are fixed (8080, 9090); here they are free ones, nothing else differs.
const ports = { PORT: String(await freePort()), INTERNAL_PORT: String(await freePort()) };
const secret = 'image-smoke-secret-that-is-long-enough-for-hs256';
const runEnv = { PATH: process.env.PATH, ...env, ...ports, JWT_SECRET: secret };
console.log(`== ${cmd.join(' ')} (${Object.entries(env).map(([k, v]) => `${k}=${v}`).join(' ')})`);
const node = spawn(process.execPath, cmd.slice(1), { cwd: APP, env: runEnv, stdio: ['ignore', 'inherit', 'inherit'] });
const exited = once(node, 'exit');

const healthy = () => new Promise((resolve) => spawn(process.execPath, healthcheck.slice(1), { cwd: APP, env: runEnv }).on('exit', (code) => resolve(code === 0)));
const deadline = Date.now() + 10_000;
while (!(await healthy())) {
  if (Date.now() > deadline) throw new Error('HEALTHCHECK did not pass within 10 s');
  await new Promise((r) => setTimeout(r, 200));
}
console.log('== HEALTHCHECK passes');

const { signToken } = await import(join(APP, 'dist/auth.js'));
const ws = new WebSocket(`ws://127.0.0.1:${ports.PORT}/api/v1/ws/connect`, ['wsedge.v1', `wsedge.bearer.${signToken({ secret, userId: 'image', rooms: ['*'], ttlSeconds: 60 })}`]);
const frames = [];
const closed = new Promise((resolve) => ws.addEventListener('close', (e) => resolve(e.code)));
await new Promise((resolve, reject) => {
  ws.addEventListener('message', (e) => {
    const msg = JSON.parse(e.data);
    frames.push(msg.type);
    if (msg.type === 'connected') ws.send(JSON.stringify({ type: 'ping', id: 'smoke' }));
    if (msg.type === 'pong' && msg.id === 'smoke') resolve();
  });
  setTimeout(() => reject(new Error(`no pong within 5 s; got ${frames.join(', ')}`)), 5000);
});
console.log(`== WebSocket: ${frames.join(', ')}`);
node.kill('SIGTERM');
const closeCode = await closed;
const [code] = await exited;
if (closeCode !== 1012 || code !== 0) throw new Error(`SIGTERM: client closed ${closeCode} (want 1012), node exited ${code} (want 0)`);
console.log('== SIGTERM: client closed 1012, node exited 0');
