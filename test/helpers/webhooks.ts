/**
 * A real webhook receiver process (webhook-receiver.mjs) for the lifecycle tests: what it was
 * sent, in order, and a switch for the status it answers (a receiver that is down for a while).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { readLines } from './lines.js';
import { createWaiters } from './wait.js';

export const WEBHOOK_SECRET = 'webhook-secret-for-the-test-suite-0123456789';

export interface ReceivedEvent {
  readonly id: string;
  readonly type: string;
  readonly time: number;
  readonly version?: number;
  readonly user_id?: string;
  readonly room?: string;
  readonly last_seen?: number;
  readonly [field: string]: unknown;
}

export interface Receiver {
  readonly url: string;
  /** Events of the requests it answered with a 2xx, in arrival order. */
  readonly events: ReceivedEvent[];
  /** Every request: its status (or `rejected` for a bad signature) and how many events it carried. */
  readonly requests: Array<{ status: number | 'rejected'; events: number }>;
  /** Resolves with `check`'s first result other than undefined, re-checked after every request. */
  until<T>(what: string, check: () => T | undefined, timeoutMs?: number): Promise<T>;
  /** Answers `status` from now on. */
  answer(status: number): Promise<void>;
  stop(): void;
}

const receivers = new Set<ChildProcess>();

export function startReceiver(): Promise<Receiver> {
  const child = spawn(process.execPath, [fileURLToPath(new URL('./webhook-receiver.mjs', import.meta.url))], { env: { WEBHOOK_SECRET }, stdio: ['ignore', 'pipe', 'inherit'] });
  receivers.add(child);
  const waiters = createWaiters();
  const events: ReceivedEvent[] = [];
  const requests: Receiver['requests'] = [];
  return new Promise((resolve, reject) => {
    child.once('exit', () => reject(new Error('webhook receiver exited before listening')));
    readLines(child.stdout!, (line) => {
      const parsed = JSON.parse(line) as { port?: number; status?: number; events?: ReceivedEvent[]; rejected?: string };
      if (parsed.port !== undefined) {
        const url = `http://127.0.0.1:${parsed.port}`;
        return resolve({
          url,
          events,
          requests,
          until: (what, check, timeoutMs = 20_000) => waiters.until(check, timeoutMs, () => `timed out after ${timeoutMs} ms waiting for ${what}; ${events.length} events received`),
          answer: async (status) => void (await fetch(`${url}/status/${status}`, { method: 'POST' })),
          stop: () => child.kill('SIGKILL'),
        });
      }
      requests.push({ status: parsed.rejected === undefined ? parsed.status! : 'rejected', events: parsed.events?.length ?? 0 });
      if (parsed.status !== undefined && parsed.status >= 200 && parsed.status < 300) events.push(...parsed.events!);
      waiters.wake();
    });
  });
}

export function stopAllReceivers(): void {
  for (const child of receivers) child.kill('SIGKILL');
  receivers.clear();
}
