/**
 * The HTTP fallback as a WebSocket (docs/WEBSOCKET_API.md "HTTP fallback"): `fetch` of
 * GET /api/v1/ws/stream?format=ndjson with the token in an Authorization header, each line a
 * server frame; `send` POSTs one frame at a time, in order, with the session id and the next seq
 * (in the query: shorter than headers, and the same to the node).
 * The stream's `closed` message becomes `onclose` with its code; a stream that ends without one,
 * a refused stream or a refused POST closes with 1006 (or the refusal's close code), and the
 * connection's usual policy reconnects and resumes. A plain function used with `new` (it returns
 * the socket): closures minify smaller than a class's fields.
 */
import { BEARER_PREFIX } from '../messages.js';
import type { WebSocketLike } from './connection.js';

/**
 * The stream endpoint for the WebSocket endpoint `url`, ready for a query: ws: becomes http:, wss:
 * https:, a trailing /connect of the path /stream; the host and the endpoint's own query stay.
 */
export function streamUrl(url: string): string {
  const u = new URL(url.replace(/^ws/, 'http'));
  u.pathname = u.pathname.replace(/\/connect$/, '/stream');
  return u.href + (u.search ? '&' : '?');
}

/** `url`: the WebSocket endpoint (ws(s)://host/api/v1/ws/connect); the token rides in `protocols` as for a socket. */
export function FallbackSocket(url: string, protocols: string[]): WebSocketLike {
  const stream = streamUrl(url);
  // The connection offers [PROTOCOL, BEARER_PREFIX + token]; a refresh_token POST taken replaces it.
  const auth = { authorization: `Bearer ${protocols[1]!.slice(BEARER_PREFIX.length)}` };
  const abort = new AbortController();
  let session = '';
  let seq = 0;
  let posts: Promise<unknown> = Promise.resolve();
  let done = false;

  const end = (code: number, reason: string): void => {
    if (done) return;
    done = true;
    abort.abort();
    socket.onclose?.({ code, reason });
  };

  /** The first line is always the session; `closed` is the last. */
  const line = (text: string): void => {
    if (!session) session = (JSON.parse(text) as { session_id: string }).session_id;
    else if (!text.startsWith('{"type":"closed"')) socket.onmessage?.({ data: text });
    else {
      const { code, reason } = JSON.parse(text) as { code: number; reason: string };
      end(code, reason);
    }
  };

  const read = async (): Promise<void> => {
    try {
      const res = await fetch(`${stream}format=ndjson`, { headers: auth, signal: abort.signal });
      if (!res.ok) {
        const body = (await res.json().catch(() => ({}))) as { close_code?: number; message?: string };
        return end(body.close_code ?? 1006, body.message ?? '');
      }
      const reader = res.body!.getReader();
      const decoder = new TextDecoder();
      let buffer = '';
      for (let chunk = await reader.read(); !chunk.done; chunk = await reader.read()) {
        const lines = (buffer += decoder.decode(chunk.value, { stream: true })).split('\n');
        buffer = lines.pop()!;
        for (const text of lines) if (text && !done) line(text);
      }
    } catch {
      // aborted or cut: closed below
    }
    end(1006, '');
  };

  /**
   * A POST answered 429 or 503 is sent again, same seq (the node did not use it up), after its
   * Retry-After or 250 ms doubling, up to 5 times. Any other POST not taken (refused, or the node
   * unreachable), and one asked to wait more than 4 s (an address blocked for failed tokens: 60 s),
   * ends the socket: the connection reconnects with its backoff, resumes, and resends what was not
   * answered, as after a lost WebSocket. A refresh_token taken is the token of the POSTs after it.
   */
  const post = async (data: string, n: number): Promise<unknown> => {
    for (let wait = 250; ; wait *= 2) {
      const res = await fetch(`${stream}session=${session}&seq=${n}`, { method: 'POST', headers: auth, body: data, signal: abort.signal }).catch(() => undefined);
      if (res?.ok) return data.startsWith('{"type":"refresh_token"') && (auth.authorization = `Bearer ${(JSON.parse(data) as { token: string }).token}`);
      const after = +res?.headers.get('retry-after')! * 1e3 || wait;
      if (wait > 4e3 || after > 4e3 || (res?.status !== 429 && res?.status !== 503)) break;
      await new Promise((wake) => setTimeout(wake, after));
    }
    end(1006, '');
  };

  const socket: WebSocketLike = {
    onmessage: null,
    onclose: null,
    onerror: null,
    // One POST at a time: the holder gets them in order whatever node each reaches.
    send(data) {
      const n = ++seq;
      posts = posts.then(() => post(data, n));
    },
    close: () => end(1000, 'closed by the client'),
  };
  void read();
  return socket;
}
