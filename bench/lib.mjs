// Shared benchmark plumbing: start a server process, read its RSS and CPU, print results.
import { spawn } from 'node:child_process';
import { createWriteStream, readdirSync, readFileSync } from 'node:fs';
import net from 'node:net';
import { createInterface } from 'node:readline';

/**
 * Spawns `node <script> ...args`, resolves once it logs its start line ({event:'start', port}).
 * With `ipc`, the child gets an IPC channel (for bench/probe.mjs); `onSpawn` sees the child at once
 * (to kill it whatever happens); a server that has not started within `timeoutMs` is killed.
 */
export function startServer(args, env = {}, { ipc = false, onSpawn, timeoutMs = 30_000 } = {}) {
  const stdio = ['ignore', 'pipe', 'inherit', ...(ipc ? ['ipc'] : [])];
  const child = spawn(process.execPath, args, { env: { ...process.env, ...env }, stdio });
  onSpawn?.(child);
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  child.once('exit', () => clearTimeout(timer));
  return new Promise((resolve, reject) => {
    const lines = createInterface({ input: child.stdout });
    // BENCH_LOG_DIR keeps each server's stdout (its log) for debugging a run.
    const log = process.env.BENCH_LOG_DIR ? createWriteStream(`${process.env.BENCH_LOG_DIR}/${child.pid}.log`) : undefined;
    lines.on('line', (line) => {
      log?.write(line + '\n');
      try {
        const entry = JSON.parse(line);
        if (entry.event === 'start') {
          clearTimeout(timer);
          resolve({ child, port: entry.port, internalPort: entry.internal_port });
        }
      } catch {
        // not a JSON log line (a banner): nothing to read from it
      }
    });
    child.once('exit', (code) => reject(new Error(`server exited with ${code}`)));
  });
}

/** Resident set size in bytes, from /proc. */
export function rssOf(pid) {
  const match = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(match[1]) * 1024;
}

/** User+system CPU seconds the process has used, from /proc (clock ticks of 10 ms). */
export function cpuSecondsOf(pid) {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

/** Open file descriptors of a process. */
export function fdsOf(pid) {
  return readdirSync(`/proc/${pid}/fd`).length;
}

export function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export async function stop(child) {
  if (child.exitCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGKILL');
  await exited;
}

/** A free TCP port on 127.0.0.1 (closed again: the caller binds it). */
export const freePort = () =>
  new Promise((r) => {
    const probe = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = probe.address();
      probe.close(() => r(port));
    });
  });

/**
 * redis-server on a free port, no persistence, bounded by `timeout <timeoutS>`; resolves once it
 * accepts connections. `onSpawn` sees the `timeout` child at once (to kill it however the bench
 * ends); `pid` is redis-server itself (that child's child), for its CPU and to kill it.
 */
export async function startRedisServer(timeoutS, onSpawn = () => {}) {
  const port = await freePort();
  const child = spawn('timeout', [String(timeoutS), 'redis-server', '--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
  onSpawn(child);
  for (let i = 0; ; i++) {
    const up = await new Promise((r) => {
      const s = net.connect(port, '127.0.0.1', () => (s.destroy(), r(true)));
      s.on('error', () => r(false));
    });
    if (up) break;
    if (i > 50) throw new Error('redis-server did not start (is it installed?)');
    await sleep(100);
  }
  const pid = Number(readFileSync(`/proc/${child.pid}/task/${child.pid}/children`, 'utf8').trim().split(' ')[0]) || child.pid;
  return { port, child, pid };
}
