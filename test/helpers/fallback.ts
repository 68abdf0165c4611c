/**
 * A fallback stream read the way a non-browser client does: `fetch` of GET /api/v1/ws/stream,
 * the body parsed as Server-Sent Events (or NDJSON), every event queued for assertions; and POSTs.
 */
import { createWaiters } from './wait.js';

export interface StreamEvent {
  /** The SSE `id:` of this event, when it had one. */
  readonly id: string | undefined;
  readonly data: Record<string, unknown> & { type: string };
}

export interface TestStream {
  readonly status: number;
  readonly headers: Headers;
  /** The refusal body when status is not 200. */
  readonly body: unknown;
  readonly sessionId: string;
  /** Every event so far, in order (`next` removes what it returns). */
  readonly events: StreamEvent[];
  /** Every event ever received, never removed. */
  readonly all: StreamEvent[];
  /** Bytes of comment heartbeats received. */
  readonly heartbeats: () => number;
  next(match?: (e: StreamEvent) => boolean, timeoutMs?: number): Promise<StreamEvent>;
  /** Resolves when the body ends. */
  readonly ended: Promise<void>;
  abort(): void;
  /** The next POST's sequence number (1, 2, ...). */
  seq: number;
}

export interface StreamOptions {
  readonly token?: string;
  /** Sent as `Authorization: Bearer` (default) or in the query or a cookie. */
  readonly via?: 'header' | 'query' | 'cookie';
  readonly rooms?: readonly string[];
  readonly lastEventId?: string;
  readonly format?: 'sse' | 'ndjson';
  readonly headers?: Record<string, string>;
}

export async function openStream(http: string, opts: StreamOptions): Promise<TestStream> {
  const query = new URLSearchParams();
  const headers: Record<string, string> = { ...opts.headers };
  if (opts.token !== undefined) {
    const via = opts.via ?? 'header';
    if (via === 'header') headers['authorization'] = `Bearer ${opts.token}`;
    else if (via === 'query') query.set('token', opts.token);
    else headers['cookie'] = `wsedge_token=${opts.token}`;
  }
  if (opts.rooms !== undefined) query.set('rooms', opts.rooms.join(','));
  if (opts.format === 'ndjson') query.set('format', 'ndjson');
  if (opts.lastEventId !== undefined) headers['last-event-id'] = opts.lastEventId;
  const controller = new AbortController();
  const res = await fetch(`${http}/api/v1/ws/stream?${query}`, { headers, signal: controller.signal });
  const events: StreamEvent[] = [];
  const all: StreamEvent[] = [];
  const { wake, until } = createWaiters();
  if (res.status !== 200) {
    const body: unknown = await res.json();
    return { status: res.status, headers: res.headers, body, sessionId: '', events, all, heartbeats: () => 0, next: () => Promise.reject(new Error('refused')), ended: Promise.resolve(), abort: () => {}, seq: 1 };
  }
  let heartbeats = 0;
  let done = false;
  const push = (event: StreamEvent): void => {
    events.push(event);
    all.push(event);
  };
  const ended = (async () => {
    const decoder = new TextDecoder();
    let buffer = '';
    try {
      const reader = res.body!.getReader();
      for (let read = await reader.read(); !read.done; read = await reader.read()) {
        buffer += decoder.decode(read.value, { stream: true });
        buffer = opts.format === 'ndjson' ? parseNdjson(buffer, push, () => (heartbeats += 1)) : parseSse(buffer, push, () => (heartbeats += 1));
        wake();
      }
    } catch {
      // aborted
    }
    done = true;
    wake();
  })();
  const stream: TestStream = {
    status: res.status,
    headers: res.headers,
    body: undefined,
    sessionId: '',
    events,
    all,
    heartbeats: () => heartbeats,
    next: (match = () => true, timeoutMs = 5000) =>
      until(
        () => {
          const index = events.findIndex(match);
          if (index >= 0) return events.splice(index, 1)[0]!;
          if (done) throw new Error(`stream ended while waiting; left: ${JSON.stringify(events).slice(0, 500)}`);
          return undefined;
        },
        timeoutMs,
        () => `timed out waiting for a stream event; left: ${JSON.stringify(events).slice(0, 500)}`,
      ),
    ended,
    abort: () => controller.abort(),
    seq: 1,
  };
  const first = await stream.next();
  if (first.data.type !== 'session') throw new Error(`first event is not the session: ${JSON.stringify(first)}`);
  return Object.assign(stream, { sessionId: first.data['session_id'] as string });
}

/** Parses complete SSE events out of `buffer`; returns what is left. */
function parseSse(buffer: string, push: (e: StreamEvent) => void, heartbeat: () => void): string {
  for (let end = buffer.indexOf('\n\n'); end >= 0; end = buffer.indexOf('\n\n')) {
    const block = buffer.slice(0, end);
    buffer = buffer.slice(end + 2);
    let id: string | undefined;
    let data: string | undefined;
    for (const line of block.split('\n')) {
      if (line.startsWith(':')) heartbeat();
      else if (line.startsWith('id: ')) id = line.slice(4);
      else if (line.startsWith('data: ')) data = line.slice(6);
    }
    if (data !== undefined) push({ id, data: JSON.parse(data) as StreamEvent['data'] });
  }
  return buffer;
}

function parseNdjson(buffer: string, push: (e: StreamEvent) => void, heartbeat: () => void): string {
  for (let end = buffer.indexOf('\n'); end >= 0; end = buffer.indexOf('\n')) {
    const line = buffer.slice(0, end);
    buffer = buffer.slice(end + 1);
    if (line === '') heartbeat();
    else push({ id: undefined, data: JSON.parse(line) as StreamEvent['data'] });
  }
  return buffer;
}

export interface PostAnswer {
  readonly status: number;
  readonly body: Record<string, unknown>;
}

/** POSTs one client frame for `session` with the next (or the given) sequence number. */
export async function post(http: string, stream: { sessionId: string; seq: number }, token: string, frame: unknown, opts: { seq?: number; session?: string; headers?: Record<string, string> } = {}): Promise<PostAnswer> {
  const seq = opts.seq ?? stream.seq++;
  const res = await fetch(`${http}/api/v1/ws/stream`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'x-wsedge-session': opts.session ?? stream.sessionId, 'x-wsedge-seq': String(seq), 'content-type': 'application/json', ...opts.headers },
    body: typeof frame === 'string' ? frame : JSON.stringify(frame),
  });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

/** A reader that reopens its stream whenever it ends (a killed or drained node), with the last event id, as EventSource does. */
export interface Follower {
  /** The `n` of every task.updated received per room, in arrival order, across every stream. */
  count(room: string): number;
  numbers(room: string): number[];
  /** Streams opened (1 + reconnects). */
  opens(): number;
  /** Close codes of the `closed` messages received (a killed node sends none). */
  readonly closes: number[];
  /** The node id of each stream's session, in order. */
  readonly nodes: string[];
  stop(): void;
}

/** Reconnects after this; a real client would add jitter. */
const REOPEN_MS = 100;

export function follow(http: string, token: string, rooms: readonly string[]): Follower {
  const done: StreamEvent[] = [];
  let current: TestStream | undefined;
  let lastEventId: string | undefined;
  let opens = 0;
  let stopped = false;
  const closes: number[] = [];
  const nodes: string[] = [];
  const updates = (events: readonly StreamEvent[], room: string): number[] => events.filter((e) => e.data.type === 'task.updated' && e.data['room'] === room).map((e) => (e.data['data'] as { n: number }).n);
  const run = async (): Promise<void> => {
    while (!stopped) {
      const stream = await openStream(http, { token, rooms, ...(lastEventId !== undefined && { lastEventId }) }).catch(() => undefined);
      if (stream?.status === 200) {
        current = stream;
        opens += 1;
        nodes.push(stream.sessionId.split('.')[0]!);
        await stream.ended;
        done.push(...stream.all);
        current = undefined;
        for (const e of stream.all) {
          if (e.id !== undefined) lastEventId = e.id;
          if (e.data.type === 'closed') closes.push(e.data['code'] as number);
        }
      }
      await new Promise((r) => setTimeout(r, REOPEN_MS));
    }
  };
  void run();
  return {
    count: (room) => updates(done, room).length + (current === undefined ? 0 : updates(current.all, room).length),
    numbers: (room) => [...updates(done, room), ...(current === undefined ? [] : updates(current.all, room))],
    opens: () => opens,
    closes,
    nodes,
    stop() {
      stopped = true;
      current?.abort();
    },
  };
}
