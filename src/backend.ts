/**
 * Calls to the product's backend: the authorization callback, the publish proxy and RPC. One POST of
 * JSON with `Authorization: Bearer <key>`, bounded on every side and failing closed: one deadline
 * (`timeoutMs`) for the wait for a turn and the call together, at most `concurrency` calls in flight
 * per node and kind (the rest wait, at most MAX_WAITING), redirects refused, answers read up to
 * MAX_ANSWER_BYTES and parsed as one JSON object. Anything else (a slow, down or garbled backend, a
 * status other than 200) rejects with a BackendError whose reason is for logs: bodies are never
 * logged. Each kind has its own turns and its own keep-alive connections (node:http: `fetch` cost
 * about 4 times the CPU per call), so a slow RPC endpoint never holds up room authorizations.
 * `postJson` is the bounded POST itself, for callers with their own headers and reading of the answer.
 */
import { Agent as HttpAgent, request as httpRequest, type ClientRequest } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import type { MessageError } from './errors.js';
import type { Logger } from './log.js';
import type { BackendKind, BackendOutcome, Metrics } from './metrics.js';

/** An answer body larger than this is an error, not an answer. */
export const MAX_ANSWER_BYTES = 4096;
/** Calls waiting for a turn beyond the concurrency cap; more fail at once. */
const MAX_WAITING = 10_000;
/** A call is started only with at least this much, and a quarter, of its deadline left: a call that waited out most of it would be aborted mid-way, and a backend that keeps working on it would carry far more than the cap. */
const MIN_CALL_MS = 10;
/** An idle keep-alive connection is closed after this long: under the 5 s that common servers (Node's, uvicorn's) keep one, so a call rarely gets a connection the server is closing. */
const IDLE_SOCKET_MS = 4000;

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

/** Where calls go, and the connections to it: keep-alive, at most `sockets` of them open or idle. */
export interface PostTarget {
  readonly url: URL;
  readonly agent: HttpAgent;
}

export function createPostTarget(url: string, sockets: number): PostTarget {
  const parsed = new URL(url);
  const options = { keepAlive: true, maxSockets: sockets, maxFreeSockets: sockets, timeout: IDLE_SOCKET_MS };
  return { url: parsed, agent: parsed.protocol === 'https:' ? new HttpsAgent(options) : new HttpAgent(options) };
}

export interface PostRequest {
  /** Sent with `content-type: application/json` and `content-length`. */
  readonly headers: Readonly<Record<string, string>>;
  /** The JSON, already serialized. */
  readonly body: string;
  /** Date.now() time by which the whole answer must be in; the request is destroyed then. */
  readonly deadline: number;
  readonly maxAnswerBytes: number;
}

/**
 * One bounded POST: resolves with the status and the body (read in full, up to `maxAnswerBytes`) of
 * any answer but a 3xx, or rejects with a BackendError: `timeout` at the deadline, `down` when the
 * connection fails, `bad_answer` for a 3xx (redirects are refused, never followed) or a larger body.
 * A failed call's connection is closed, never reused. It takes no turn: the caller caps its calls in
 * flight (beyond the agent's sockets, requests queue in the agent until their deadline).
 */
export function postJson({ url, agent }: PostTarget, { headers, body, deadline, maxAnswerBytes }: PostRequest): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    let req: ClientRequest;
    try {
      req = (url.protocol === 'https:' ? httpsRequest : httpRequest)(url, { method: 'POST', agent, headers: { ...headers, 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } });
    } catch {
      // An invalid header value; its message would quote the value, a key perhaps.
      return reject(new BackendError('down', 'request not sent: invalid header'));
    }
    let settled = false;
    const settle = (error: BackendError | undefined, answer?: { status: number; body: string }): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (error === undefined) return resolve(answer!);
      req.destroy();
      reject(error);
    };
    const timer = setTimeout(() => settle(new BackendError('timeout', 'no answer before the deadline')), Math.max(1, deadline - Date.now()));
    req.on('error', () => settle(new BackendError('down', 'unreachable')));
    req.on('response', (res) => {
      const status = res.statusCode ?? 0;
      if (status >= 300 && status < 400) return settle(new BackendError('bad_answer', `status ${status}: redirects are refused`));
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (chunk: Buffer) => {
        size += chunk.length;
        if (size > maxAnswerBytes) settle(new BackendError('bad_answer', `answer larger than ${maxAnswerBytes} bytes`));
        else chunks.push(chunk);
      });
      res.on('end', () => settle(undefined, { status, body: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', () => settle(new BackendError('down', 'connection lost during the answer')));
    });
    req.end(body);
  });
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
  const target = createPostTarget(endpoint.url, endpoint.concurrency);
  const headers = { authorization: `Bearer ${endpoint.key}` };
  let failing = false;

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
        const { status, body: text } = await postJson(target, { headers, body: JSON.stringify(body), deadline, maxAnswerBytes: MAX_ANSWER_BYTES });
        const answer = parseAnswer(status, text);
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
