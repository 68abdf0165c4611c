// The ceiling: a raw uWebSockets.js server doing ws-edge's job in a few lines: same path, JWT
// verification in the upgrade (when JWT_SECRET is set), the personal room at open, join_room,
// send_message published to the room as the same envelope, and, with REDIS_URL, a short Redis
// bridge to other nodes. No limits, no metrics, no logging.
//   RAW_PUBLISH=deferred (default) queues publishes and runs them after the read (setImmediate);
//   RAW_PUBLISH=direct calls app.publish inside the message handler. bench/run.mjs measures both.
import { createVerifier } from 'fast-jwt';
import { Redis } from 'ioredis';
import { loadUws } from '../dist/uws.js';

const { uws } = loadUws();
const port = Number(process.env.PORT ?? 0);
const secret = process.env.JWT_SECRET;
const verify = secret && createVerifier({ key: secret, algorithms: ['HS256'], requiredClaims: ['exp', 'sub'] });
const app = uws.App();
const node = Math.random().toString(36).slice(2, 10);
let seq = 0;

// The Redis bridge: every node publishes `<node> <room>\n<payload>` on one channel and hands what
// other nodes publish to its own topic, without parsing the payload.
let bridge = () => {};
if (process.env.REDIS_URL) {
  const pub = new Redis(process.env.REDIS_URL);
  const sub = new Redis(process.env.REDIS_URL);
  await sub.subscribe('raw:events');
  const mine = Buffer.from(`${node} `);
  sub.on('messageBuffer', (_channel, message) => {
    if (message.subarray(0, mine.length).equals(mine)) return; // our own echo
    const nl = message.indexOf(10);
    app.publish(message.latin1Slice(message.indexOf(32) + 1, nl), message.subarray(nl + 1), false, false);
  });
  bridge = (room, payload) => void pub.publish('raw:events', `${node} ${room}\n${payload}`);
}

const publishNow = (room, payload) => {
  app.publish(room, payload, false, false);
  bridge(room, payload);
};
let queue = [];
const flush = () => {
  const batch = queue;
  queue = [];
  for (let i = 0; i < batch.length; i += 2) publishNow(batch[i], batch[i + 1]);
};
const publish =
  process.env.RAW_PUBLISH === 'direct'
    ? publishNow
    : (room, payload) => {
        if (queue.length === 0) setImmediate(flush);
        queue.push(room, payload);
      };

const stamp = () => new Date().toISOString();
app.ws('/api/v1/ws/connect', {
  compression: 0,
  idleTimeout: 30,
  sendPingsAutomatically: true,
  maxPayloadLength: 2 * 1024 * 1024,
  maxBackpressure: 4 * 1024 * 1024,
  closeOnBackpressureLimit: true,
  upgrade(res, req, context) {
    let sub = `anon${++seq}`;
    if (verify) {
      try {
        sub = verify(/(?:^|&)token=([^&]*)/.exec(req.getQuery() ?? '')?.[1] ?? '').sub;
      } catch {
        res.writeStatus('401 Unauthorized').end();
        return;
      }
    }
    const key = req.getHeader('sec-websocket-key');
    res.upgrade({ sub, id: `${node}.${++seq}` }, key, req.getHeader('sec-websocket-protocol'), req.getHeader('sec-websocket-extensions'), context);
  },
  open(ws) {
    const { sub, id } = ws.getUserData();
    ws.subscribe(`user:${sub}`);
    ws.send(JSON.stringify({ type: 'connected', data: { connection_id: id, user_id: sub }, timestamp: stamp() }));
  },
  message(ws, message) {
    const msg = JSON.parse(Buffer.from(message).toString());
    if (msg.type === 'join_room') {
      ws.subscribe(msg.room);
      ws.send(JSON.stringify({ type: 'room_joined', room: msg.room, timestamp: stamp() }));
    } else if (msg.type === 'send_message') {
      const { sub } = ws.getUserData();
      publish(msg.room, JSON.stringify({ type: 'message.new', room: msg.room, data: msg.data, sender: sub, timestamp: stamp() }));
    }
  },
});
app.listen('127.0.0.1', port, (ls) => {
  if (!ls) process.exit(1);
  process.stdout.write(JSON.stringify({ event: 'start', port: uws.us_socket_local_port(ls) }) + '\n');
});
process.on('SIGTERM', () => process.exit(0));
