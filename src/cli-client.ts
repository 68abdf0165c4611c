/**
 * `ws-edge client`: the manual test client. Interactive mode reads commands from stdin and prints
 * every event; demo mode runs a scripted session and exits 0 only if every step succeeded.
 */
import { createInterface } from 'node:readline';
import WebSocket from 'ws';
import { BEARER_PREFIX, PROTOCOL, type WireMessage as Envelope } from './messages.js';

export interface ClientOptions {
  readonly url: string;
  readonly token: string;
  /** Send the token as `?token=` instead of the subprotocol (the subprotocol keeps it out of access logs). */
  readonly queryToken: boolean;
  readonly room: string;
  readonly timeoutMs: number;
}

function connect(opts: ClientOptions): WebSocket {
  if (opts.queryToken) {
    const url = new URL(opts.url);
    url.searchParams.set('token', opts.token);
    return new WebSocket(url);
  }
  return new WebSocket(opts.url, [PROTOCOL, BEARER_PREFIX + opts.token]);
}

/** A queue of received envelopes with `next(predicate)` that waits up to the timeout. */
function inbox(ws: WebSocket, timeoutMs: number) {
  const queued: Envelope[] = [];
  const waiters: Array<() => void> = [];
  let closed: { code: number; reason: string } | undefined;
  ws.on('message', (raw) => {
    queued.push(JSON.parse(String(raw)) as Envelope);
    waiters.splice(0).forEach((w) => w());
  });
  ws.on('close', (code, reason) => {
    closed = { code, reason: reason.toString() };
    waiters.splice(0).forEach((w) => w());
  });
  return async function next(what: string, match: (e: Envelope) => boolean): Promise<Envelope> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const index = queued.findIndex(match);
      if (index >= 0) return queued.splice(index, 1)[0]!;
      if (closed) throw new Error(`closed ${closed.code} ${closed.reason} while waiting for ${what}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out waiting for ${what}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  };
}

export async function runDemo(opts: ClientOptions, out: (line: string) => void = console.log): Promise<void> {
  const ws = connect(opts);
  const next = inbox(ws, opts.timeoutMs);
  const step = async (name: string, run: () => Promise<void>): Promise<void> => {
    await run();
    out(`ok   ${name}`);
  };
  try {
    let userId = '';
    await step('connected', async () => {
      const hello = await next('connected', (e) => e.type === 'connected');
      userId = hello.data.user_id;
      out(`     connection ${hello.data.connection_id} as ${userId}`);
    });
    await step(`join ${opts.room}`, async () => {
      ws.send(JSON.stringify({ type: 'join_room', room: opts.room, id: 'j1' }));
      await next('room_joined', (e) => e.type === 'room_joined' && e.id === 'j1');
    });
    await step('send and receive message.new', async () => {
      const text = `hello from ws-edge client ${Date.now()}`;
      ws.send(JSON.stringify({ type: 'send_message', room: opts.room, data: { text }, id: 's1' }));
      await next('message_sent', (e) => e.type === 'message_sent' && e.id === 's1');
      await next('message.new', (e) => e.type === 'message.new' && e.room === opts.room && e.data?.text === text);
    });
    await step('ping/pong', async () => {
      ws.send(JSON.stringify({ type: 'ping', id: 'p1' }));
      await next('pong', (e) => e.type === 'pong' && e.id === 'p1');
    });
    await step('invalid message answered with an error', async () => {
      ws.send('not json');
      await next('error invalid_json', (e) => e.type === 'error' && e.data?.code === 'invalid_json');
    });
    await step(`leave ${opts.room}`, async () => {
      ws.send(JSON.stringify({ type: 'leave_room', room: opts.room, id: 'l1' }));
      await next('room_left', (e) => e.type === 'room_left' && e.id === 'l1');
    });
  } finally {
    ws.close(1000, 'demo done');
  }
  out('demo passed');
}

const HELP = `commands:
  join <room>            join a room (project:1, channel:general, task:7)
  leave <room>           leave a room
  send <room> <text|json> send a message (JSON is sent as data, anything else as {"text": ...})
  ping                   application ping
  raw <json>             send a frame as typed
  quit                   close and exit`;

export function runInteractive(opts: ClientOptions): Promise<number> {
  const ws = connect(opts);
  const rl = createInterface({ input: process.stdin, output: process.stdout, prompt: '> ' });
  let seq = 0;
  ws.on('open', () => {
    console.log(`connected to ${opts.url}\n${HELP}`);
    rl.prompt();
  });
  ws.on('message', (raw) => {
    console.log(`< ${String(raw)}`);
    rl.prompt(true);
  });
  rl.on('line', (line) => {
    const [command, arg, ...rest] = line.trim().split(/\s+/);
    const id = `c${++seq}`;
    const send = (frame: unknown) => ws.send(typeof frame === 'string' ? frame : JSON.stringify(frame));
    switch (command) {
      case 'join':
        send({ type: 'join_room', room: arg, id });
        break;
      case 'leave':
        send({ type: 'leave_room', room: arg, id });
        break;
      case 'send': {
        const body = rest.join(' ');
        let data: unknown;
        try {
          data = JSON.parse(body);
        } catch {
          data = { text: body };
        }
        send({ type: 'send_message', room: arg, data, id });
        break;
      }
      case 'ping':
        send({ type: 'ping', id });
        break;
      case 'raw':
        send(line.trim().slice(4));
        break;
      case 'quit':
        ws.close(1000, 'bye');
        return;
      case undefined:
      case '':
        break;
      default:
        console.log(HELP);
    }
    rl.prompt();
  });
  return new Promise((resolve) => {
    ws.on('close', (code, reason) => {
      console.log(`closed ${code} ${reason.toString()}`);
      rl.close();
      resolve(code === 1000 || code === 1005 ? 0 : 1);
    });
    ws.on('error', (err) => console.error(`error: ${err.message}`));
    rl.on('close', () => ws.close(1000, 'bye'));
  });
}
