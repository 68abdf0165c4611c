/**
 * The product backend the backend-call suites talk to: test/backend/chat_backend.py, a real Python
 * process (standard library only) answering the publish proxy and RPC and storing chat in a real
 * SQLite file. Spawned with Debian's python3 (any python3 works: no third-party module).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { readLines } from './lines.js';

const SCRIPT = fileURLToPath(new URL('../backend/chat_backend.py', import.meta.url));
export const BACKEND_KEY = 'chat-backend-key-0123456789abcdef';

export interface ChatBackend {
  /** http://127.0.0.1:<port> */
  readonly url: string;
  /** Rows stored and the most calls it had in flight at once. */
  stats(): Promise<{ rows: number; reads: number; max_in_flight: number }>;
  stop(): void;
}

const running = new Set<ChildProcess>();

export async function startChatBackend(): Promise<ChatBackend> {
  const python = existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3';
  const dir = mkdtempSync(join(tmpdir(), 'chat-backend-'));
  const child = spawn(python, [SCRIPT, join(dir, 'chat.db'), BACKEND_KEY], { stdio: ['ignore', 'pipe', 'pipe'] });
  running.add(child);
  let stderr = '';
  child.stderr!.on('data', (chunk) => (stderr += String(chunk)));
  const port = await new Promise<number>((resolve, reject) => {
    child.once('exit', (code) => reject(new Error(`chat backend exited with ${code}: ${stderr}`)));
    readLines(child.stdout!, (line) => {
      const match = /^listening (\d+)$/.exec(line);
      if (match) resolve(Number(match[1]));
    });
  });
  const url = `http://127.0.0.1:${port}`;
  return {
    url,
    stats: async () => (await (await fetch(`${url}/stats`)).json()) as { rows: number; reads: number; max_in_flight: number },
    stop() {
      child.kill('SIGKILL');
      running.delete(child);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export function stopAllChatBackends(): void {
  for (const child of running) child.kill('SIGKILL');
  running.clear();
}
