// A cheap WebSocket load generator over `net`: hand-written upgrade requests, no masking library,
// just enough framing to see the first server frame. Cheap enough to share 2 cores with the server.
import net from 'node:net';

const KEY = 'dGhlIHNhbXBsZSBub25jZQ==';

/**
 * Opens `count` connections with at most `concurrency` handshakes in flight. A connection counts
 * when its first WebSocket frame (the `connected` message) has arrived. Resolves with the sockets
 * and the handshake rate.
 */
export async function openConnections({ port, count, concurrency = 200, tokenFor, host = '127.0.0.1', localAddresses = ['127.0.0.1'] }) {
  const sockets = [];
  let started = 0;
  let failed = 0;
  const begin = process.hrtime.bigint();
  const one = (i) =>
    new Promise((resolve) => {
      const socket = net.connect({ port, host, localAddress: localAddresses[i % localAddresses.length] });
      let buffered = Buffer.alloc(0);
      let upgraded = false;
      socket.setNoDelay(true);
      socket.on('connect', () => {
        socket.write(
          `GET /api/v1/ws/connect?token=${tokenFor(i)} HTTP/1.1\r\nHost: ${host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
            `Sec-WebSocket-Key: ${KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n`,
        );
      });
      const onData = (chunk) => {
        buffered = Buffer.concat([buffered, chunk]);
        if (!upgraded) {
          const end = buffered.indexOf('\r\n\r\n');
          if (end < 0) return;
          if (!buffered.subarray(0, 12).toString().includes('101')) return done(false);
          upgraded = true;
          buffered = buffered.subarray(end + 4);
        }
        if (buffered.length >= 2) done(true);
      };
      const done = (ok) => {
        socket.off('data', onData);
        if (ok) {
          socket.on('data', () => {}); // keep draining pings and events
          sockets.push(socket);
        } else {
          failed += 1;
          socket.destroy();
        }
        resolve();
      };
      socket.on('data', onData);
      socket.on('error', () => done(false));
    });
  const workers = Array.from({ length: concurrency }, async () => {
    while (started < count) await one(started++);
  });
  await Promise.all(workers);
  const seconds = Number(process.hrtime.bigint() - begin) / 1e9;
  return { sockets, failed, seconds, rate: sockets.length / seconds };
}
