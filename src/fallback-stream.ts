/**
 * One fallback stream's HTTP response: Server-Sent Events or NDJSON framing, the headers that keep
 * proxies from buffering it, and a bounded queue for a slow reader. Every write happens inside
 * `res.cork` (the response outlives its request callback); nothing touches `res` after it ended
 * or was aborted.
 */
import type { FallbackFormat } from './fallback-metrics.js';
import { checkOrigin } from './handshake.js';
import type { HttpResponse } from './uws.js';

/**
 * Seconds between SSE comment heartbeats (NDJSON: an empty line): far below the 30-60 s idle
 * timeouts of common proxies (the shipped HAProxy's `timeout server` is 30 s), so a quiet stream
 * is never cut as idle; each costs 3 bytes.
 */
export const HEARTBEAT_SECONDS = 5;
/** The browser's EventSource waits this long before reconnecting (the SSE `retry:` field), in ms. */
export const SSE_RETRY_MS = 1000;

export interface StreamOptions {
  readonly format: FallbackFormat;
  /** Written with the 200 (CORS). */
  readonly headers: Record<string, string>;
  /** Bytes queued for a reader that does not keep up before the stream is closed as slow. */
  readonly maxBuffered: number;
  /** The reader fell `maxBuffered` behind: the response was closed. */
  readonly slow: () => void;
}

export interface StreamWriter {
  /** Writes the status and headers: 200 and the format's content type. */
  open(): void;
  /** One server frame as one event (`id` when the positions changed: SSE only). */
  frame(json: string, id?: string): void;
  heartbeat(): void;
  /** Writes the last frame and ends the response. */
  end(last: string): void;
  /** Drops the connection at once (a slow reader). */
  abort(): void;
  /** The response has ended or was aborted: nothing more may be written. */
  readonly done: boolean;
}

const CONTENT_TYPE: Readonly<Record<FallbackFormat, string>> = {
  sse: 'text/event-stream; charset=utf-8',
  ndjson: 'application/x-ndjson; charset=utf-8',
};

/**
 * CORS for a page on another origin (a browser's EventSource and fetch): the Origin echoed when
 * WS_ALLOWED_ORIGINS lets it connect; none otherwise, so the browser withholds the answer (the
 * loopback upgrade refuses that origin anyway: 403). Credentials (the token cookie) only for an
 * origin the operator listed: with no list, any page may read a stream it holds a token for,
 * never one opened with the user's cookie.
 */
export function corsHeaders(origin: string, allowed: readonly string[]): Record<string, string> {
  if (origin === '' || checkOrigin(origin, allowed) !== undefined) return {};
  // Retry-After exposed: a page on another origin reads how long a 429 or 503 asks it to wait.
  return { 'Access-Control-Allow-Origin': origin, ...(allowed.length > 0 && { 'Access-Control-Allow-Credentials': 'true' }), 'Access-Control-Expose-Headers': 'Retry-After', Vary: 'Origin' };
}

/** JSON.stringify never writes a raw CR or LF, so a server frame is always one `data:` line. */
function encode(format: FallbackFormat, json: string, id: string | undefined): string {
  if (format === 'ndjson') return `${json}\n`;
  return id === undefined ? `data: ${json}\n\n` : `id: ${id}\ndata: ${json}\n\n`;
}

/** `markAborted` must be called from the response's `onAborted` (registered by the caller before any await). */
export function createStreamWriter(res: HttpResponse, options: StreamOptions): StreamWriter & { markAborted(): void } {
  const queue: string[] = [];
  let queued = 0;
  let blocked = false;
  let done = false;

  let ending = false;

  const finish = (): void => {
    done = true;
    res.cork(() => res.end());
  };

  const pulse = options.format === 'sse' ? ':\n\n' : '\n';

  /**
   * uWS calls this once the socket can take more, and leaves its own buffer (the rest of a chunk
   * only part of which the kernel took, whether its write returned false or, corked, true) to
   * this handler's next write: with nothing queued, a heartbeat is written so that buffer goes out
   * too, instead of waiting for the next frame.
   */
  const drain = (): boolean => {
    if (done) return true;
    if (queue.length === 0) queue.push(pulse);
    while (queue.length > 0) {
      const chunk = queue.shift()!;
      queued -= Buffer.byteLength(chunk);
      let ok = true;
      res.cork(() => {
        ok = res.write(chunk);
      });
      if (!ok) return false;
    }
    blocked = false;
    if (ending) finish();
    return true;
  };

  /** uWS buffers what one `write` could not send; past that, chunks wait here, counted against `maxBuffered`. */
  const write = (chunk: string): void => {
    if (done || ending) return;
    if (blocked) {
      queue.push(chunk);
      queued += Buffer.byteLength(chunk);
      if (queued > options.maxBuffered) {
        abort();
        options.slow();
      }
      return;
    }
    res.cork(() => {
      if (!res.write(chunk)) {
        blocked = true;
        res.onWritable(drain);
      }
    });
  };

  /**
   * Frames of one event-loop turn (the loopback socket hands over every frame of a TCP chunk in
   * one go) leave in one write: one syscall and one cork instead of one per frame.
   */
  let batch = '';
  const flush = (): void => {
    const chunk = batch;
    batch = '';
    if (chunk !== '') write(chunk);
  };
  const add = (chunk: string): void => {
    if (batch === '') queueMicrotask(flush);
    batch += chunk;
  };

  const abort = (): void => {
    if (done) return;
    done = true;
    queue.length = 0;
    res.close();
  };

  return {
    open() {
      res.cork(() => {
        res.writeStatus('200 OK').writeHeader('Content-Type', CONTENT_TYPE[options.format]);
        // no-transform: no proxy may compress or rewrite it; X-Accel-Buffering: nginx passes it through unbuffered.
        res.writeHeader('Cache-Control', 'no-cache, no-transform').writeHeader('X-Accel-Buffering', 'no');
        for (const [name, value] of Object.entries(options.headers)) res.writeHeader(name, value);
        if (options.format === 'sse') res.write(`retry: ${SSE_RETRY_MS}\n\n`);
        else res.write('\n');
      });
    },
    frame: (json, id) => add(encode(options.format, json, id)),
    heartbeat: () => add(pulse),
    end(last) {
      if (done || ending) return;
      batch += encode(options.format, last, undefined);
      flush();
      // A blocked response ends once its queue has drained (or is aborted as slow meanwhile).
      if (blocked) ending = true;
      else if (!done) finish();
    },
    abort,
    markAborted() {
      done = true;
      queue.length = 0;
    },
    get done() {
      return done;
    },
  };
}
