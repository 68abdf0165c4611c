// The popular alternative: a Socket.IO 4 server doing the same job as ws-edge and bench/raw-uws.mjs
// (JWT verified at connect when JWT_SECRET is set, the personal room, join_room, send_message to
// the room as the same envelope), WebSocket transport only. With REDIS_URL it joins other nodes
// through @socket.io/redis-adapter.
import { createServer } from 'node:http';
import { createAdapter } from '@socket.io/redis-adapter';
import { createVerifier } from 'fast-jwt';
import { Redis } from 'ioredis';
import { Server } from 'socket.io';

const port = Number(process.env.PORT ?? 0);
const secret = process.env.JWT_SECRET;
const verify = secret && createVerifier({ key: secret, algorithms: ['HS256'], requiredClaims: ['exp', 'sub'] });
const http = createServer();
const io = new Server(http, { transports: ['websocket'], serveClient: false, perMessageDeflate: false, pingInterval: 25_000, pingTimeout: 20_000 });
if (process.env.REDIS_URL) {
  const pub = new Redis(process.env.REDIS_URL);
  io.adapter(createAdapter(pub, pub.duplicate()));
}
let seq = 0;

io.use((socket, next) => {
  if (!verify) {
    socket.data.sub = `anon${++seq}`;
    return next();
  }
  try {
    socket.data.sub = verify(String(socket.handshake.query.token ?? '')).sub;
    next();
  } catch {
    next(new Error('invalid token'));
  }
});

const stamp = () => new Date().toISOString();
io.on('connection', (socket) => {
  const sub = socket.data.sub;
  socket.join(`user:${sub}`);
  socket.on('join_room', (room) => {
    socket.join(room);
    socket.emit('room_joined', room);
  });
  socket.on('send_message', ({ room, data }) => {
    io.to(room).emit('message.new', { type: 'message.new', room, data, sender: sub, timestamp: stamp() });
  });
});

http.listen(port, '127.0.0.1', () => {
  process.stdout.write(JSON.stringify({ event: 'start', port: http.address().port }) + '\n');
});
process.on('SIGTERM', () => process.exit(0));
