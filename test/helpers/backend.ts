/**
 * The product backend the backend-call suites talk to: test/backend/chat_backend.py, a real Python
 * process (standard library only) answering the publish proxy and RPC, storing chat in a real
 * SQLite file, and receiving the nodes' signed webhook events at /events. Spawned with Debian's
 * python3 (any python3 works: no third-party module).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { sign } from '../../src/webhooks.js';
import { readLines } from './lines.js';

const SCRIPT = fileURLToPath(new URL('../backend/chat_backend.py', import.meta.url));
export const BACKEND_KEY = 'chat-backend-key-0123456789abcdef';
export const BACKEND_WEBHOOK_SECRET = 'chat-backend-webhook-secret-0123456789abcdef';

export interface ChatBackendStats {
  /** Chat rows stored. */
  readonly rows: number;
  /** Read receipts stored (from `read` signal events and messages.mark_read). */
  readonly reads: number;
  /** The most publish/RPC calls it had in flight at once. */
  readonly max_in_flight: number;
  /** Webhook events applied, each id once. */
  readonly events: number;
  /** Applied events per type (`signal.<name>` for signals). */
  readonly event_types: Record<string, number>;
  /** Events that came again with an id already applied. */
  readonly duplicate_events: number;
  /** Webhook requests answered 401 (bad signature or timestamp). */
  readonly refused_webhooks: number;
  /** The last lifecycle event applied per `user:<id>` / `room:<name>` (ordered by version). */
  readonly lifecycle: Record<string, { type: string; version: number; last_seen: number | null }>;
}

export interface ChatBackend {
  /** http://127.0.0.1:<port> */
  readonly url: string;
  /** The node settings that deliver its events to the backend's webhook (/events). */
  readonly webhookEnv: Readonly<Record<'WS_WEBHOOK_URL' | 'WS_WEBHOOK_SECRET', string>>;
  stats(): Promise<ChatBackendStats>;
  /** POSTs `{"events": [...]}` to the webhook as a node would (signed with the backend's secret and now, unless given); the status. */
  postEvents(events: readonly object[], signing?: { secret?: string; timestamp?: number }): Promise<number>;
  stop(): void;
}

const running = new Set<ChildProcess>();

export async function startChatBackend(): Promise<ChatBackend> {
  const python = existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3';
  const dir = mkdtempSync(join(tmpdir(), 'chat-backend-'));
  const child = spawn(python, [SCRIPT, join(dir, 'chat.db'), BACKEND_KEY, BACKEND_WEBHOOK_SECRET], { stdio: ['ignore', 'pipe', 'pipe'] });
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
    webhookEnv: { WS_WEBHOOK_URL: `${url}/events`, WS_WEBHOOK_SECRET: BACKEND_WEBHOOK_SECRET },
    stats: async () => (await (await fetch(`${url}/stats`)).json()) as ChatBackendStats,
    async postEvents(events, { secret = BACKEND_WEBHOOK_SECRET, timestamp = Math.floor(Date.now() / 1000) } = {}) {
      const body = JSON.stringify({ events });
      const res = await fetch(`${url}/events`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-wsedge-timestamp': String(timestamp), 'x-wsedge-signature': sign(secret, timestamp, body) }, body });
      await res.arrayBuffer();
      return res.status;
    },
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
