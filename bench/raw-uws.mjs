// The ceiling: a raw uWebSockets.js server doing the same job as ws-edge in a few lines
// (same path, subscribe to a personal and a shared topic, a "connected" frame). No auth, no limits.
import { loadUws } from '../dist/uws.js';

const { uws } = loadUws();
const port = Number(process.env.PORT ?? 0);
let seq = 0;
const app = uws.App();
app.ws('/api/v1/ws/connect', {
  idleTimeout: 30,
  sendPingsAutomatically: true,
  maxPayloadLength: 2 * 1024 * 1024,
  maxBackpressure: 4 * 1024 * 1024,
  open(ws) {
    const id = ++seq;
    ws.subscribe(`user:${id}`);
    ws.subscribe('project:shared');
    ws.send(JSON.stringify({ type: 'connected', data: { connection_id: String(id) }, timestamp: new Date().toISOString() }));
  },
  message(ws, message) {
    const msg = JSON.parse(Buffer.from(message).toString());
    if (msg.type === 'join_room') ws.subscribe(msg.room);
    else if (msg.type === 'send_message') app.publish(msg.room, JSON.stringify({ type: 'message.new', room: msg.room, data: msg.data, sender: 'raw', timestamp: new Date().toISOString() }));
  },
});
app.listen('127.0.0.1', port, (ls) => {
  if (!ls) process.exit(1);
  process.stdout.write(JSON.stringify({ event: 'start', port: uws.us_socket_local_port(ls) }) + '\n');
});
process.on('SIGTERM', () => process.exit(0));
