/**
 * Calls to the product's backend: the authorization callback, the publish proxy and RPC. One POST of
 * JSON with `Authorization: Bearer <key>`, bounded on every side and failing closed: one deadline
 * (`timeoutMs`) for the wait for a turn and the call together, at most `concurrency` calls in flight
 * per node and kind (the rest wait, at most MAX_WAITING), redirects refused, answers read up to
 * MAX_ANSWER_BYTES and parsed as one JSON object. Anything else (a slow, down or garbled backend, a
 * status other than 200) rejects with a BackendError whose reason is for logs: bodies are never
 * logged. Each kind has its own turns, so a slow RPC endpoint never holds up room authorizations.
 */
import type { MessageError } from './errors.js';
import type { Logger } from './log.js';
import type { BackendKind, BackendOutcome, Metrics } from './metrics.js';

/** An answer body larger than this is an error, not an answer. */
export const MAX_ANSWER_BYTES = 4096;
/** Calls waiting for a turn beyond the concurrency cap; more fail at once. */
const MAX_WAITING = 10_000;
/** A call is started only with at least this much, and a quarter, of its deadline left: a call that waited out most of it would be aborted mid-way, and a backend that keeps working on it would carry far more than the cap. */
const MIN_CALL_MS = 10;

/** A backend's refusal (publish proxy deny, rpc error), as the client sees it: `rejected` with its code and text; undefined for a refusal of another shape. */
export function backendRefusal(code: unknown, message: unknown): MessageError | undefined {
  if (typeof code !== 'string' || !/^[a-z0-9_.-]{1,64}$/.test(code) || typeof message !== 'string' || message.length > 256) return undefined;
  return { code: 'rejected', message, detail: code };
}

export interface BackendEndpoint {
  readonly url: string;
  /** Sent as `Authorization: Bearer <key>`: the backend's proof that the call is ours. */
  readonly key: string;
  readonly timeoutMs: number;
  /** Calls in flight per node at most; more wait their turn within the deadline. */
  readonly concurrency: number;
}

/** A call that got no usable answer: `outcome` for the metrics, `message` for the log. */
export class BackendError extends Error {
  constructor(
    readonly outcome: Exclude<BackendOutcome, 'ok'>,
    message: string,
  ) {
    super(message);
  }
}

export interface BackendCaller {
  /** POSTs `body`; resolves with the answer's JSON object, or rejects with a BackendError. */
  call(body: unknown): Promise<Record<string, unknown>>;
}

/** The body, at most MAX_ANSWER_BYTES, read as it streams in. */
async function readCapped(res: Response): Promise<string> {
  const reader = res.body?.getReader();
  if (reader === undefined) return '';
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > MAX_ANSWER_BYTES) {
      await reader.cancel();
      throw new BackendError('bad_answer', `answer larger than ${MAX_ANSWER_BYTES} bytes`);
    }
    chunks.push(value);
  }
  return Buffer.concat(chunks).toString('utf8');
}

function parseAnswer(status: number, body: string): Record<string, unknown> {
  if (status !== 200) throw new BackendError('bad_answer', `status ${status}`);
  let answer: unknown;
  try {
    answer = JSON.parse(body);
  } catch {
    throw new BackendError('bad_answer', 'answer is not JSON');
  }
  if (typeof answer !== 'object' || answer === null || Array.isArray(answer)) throw new BackendError('bad_answer', 'answer is not a JSON object');
  return answer as Record<string, unknown>;
}

/** Turns to call, `concurrency` at a time; a finished call hands its turn straight to the next one waiting. */
function createTurns(concurrency: number) {
  const waiting: Array<() => void> = [];
  let running = 0;
  return {
    /** Resolves when it is this call's turn; rejects at `deadline`, or at once when too many wait. */
    take(deadline: number): Promise<void> {
      if (running < concurrency) {
        running += 1;
        return Promise.resolve();
      }
      if (waiting.length >= MAX_WAITING) return Promise.reject(new BackendError('busy', 'too many calls waiting'));
      return new Promise((resolve, reject) => {
        const turn = (): void => {
          clearTimeout(timer);
          resolve();
        };
        const timer = setTimeout(() => {
          waiting.splice(waiting.indexOf(turn), 1);
          reject(new BackendError('busy', 'no turn before the deadline'));
        }, deadline - Date.now());
        waiting.push(turn);
      });
    },
    release(): void {
      const next = waiting.shift();
      if (next !== undefined) next();
      else running -= 1;
    },
  };
}

export function createBackendCaller(kind: BackendKind, endpoint: BackendEndpoint, metrics: Metrics, log: Logger): BackendCaller {
  const turns = createTurns(endpoint.concurrency);
  let failing = false;

  const post = async (body: unknown, deadline: number): Promise<Record<string, unknown>> => {
    try {
      const res = await fetch(endpoint.url, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${endpoint.key}` },
        body: JSON.stringify(body),
        signal: AbortSignal.timeout(Math.max(1, deadline - Date.now())),
        redirect: 'error',
      });
      return parseAnswer(res.status, await readCapped(res));
    } catch (err) {
      if (err instanceof BackendError) throw err;
      const timedOut = (err as Error).name === 'TimeoutError';
      throw new BackendError(timedOut ? 'timeout' : 'down', timedOut ? `no answer within ${endpoint.timeoutMs} ms` : 'unreachable');
    }
  };

  const record = (outcome: BackendOutcome, started: bigint, reason?: string): void => {
    metrics.backendCall(kind, outcome, Number(process.hrtime.bigint() - started) / 1e9);
    if (outcome === 'ok' && failing) log.info({ event: 'backend_recovered', kind }, 'backend answering again');
    if (outcome !== 'ok' && !failing) log.warn({ event: 'backend_failed', kind, reason }, 'backend call failed; the requests that need it are answered unavailable');
    failing = outcome !== 'ok';
  };

  return {
    async call(body) {
      const started = process.hrtime.bigint();
      const deadline = Date.now() + endpoint.timeoutMs;
      try {
        await turns.take(deadline);
      } catch (err) {
        record('busy', started, (err as Error).message);
        throw err;
      }
      try {
        // A turn handed over near the deadline is no time left for a call.
        if (deadline - Date.now() < Math.max(MIN_CALL_MS, endpoint.timeoutMs / 4)) throw new BackendError('busy', 'no turn before the deadline');
        const answer = await post(body, deadline);
        record('ok', started);
        return answer;
      } catch (err) {
        const error = err as BackendError;
        record(error.outcome, started, error.message);
        throw error;
      } finally {
        turns.release();
      }
    },
  };
}
