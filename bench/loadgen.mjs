// A cheap WebSocket load generator over `net`: hand-written upgrade requests, client frames masked
// with a zero key (so payloads go out as they are), and a frame reader that only walks headers
// unless a frame's bytes are needed (control frames, setup replies, latency samples). It speaks
// ws-edge's protocol (also served by bench/raw-uws.mjs) and Engine.IO v4 / Socket.IO v5 over a
// WebSocket (bench/socketio-server.mjs), cheap enough to share 2 cores with the server.
import net from 'node:net';
import { performance } from 'node:perf_hooks';

const KEY = 'dGhlIHNhbXBsZSBub25jZQ==';
const OP_TEXT = 1;
const OP_CLOSE = 8;
const OP_PING = 9;
/** Marks the send time inside a message: `~<epoch ms>~` (never in room names or envelopes). */
const TILDE = 0x7e;
const HANDSHAKE_TIMEOUT_MS = 30_000;

/** Wall-clock milliseconds with sub-millisecond resolution, comparable across processes. */
export const nowMs = () => performance.timeOrigin + performance.now();

function frame(opcode, payload) {
  const len = payload.length;
  let header;
  if (len < 126) {
    header = Buffer.from([0x80 | opcode, 0x80 | len, 0, 0, 0, 0]);
  } else if (len < 65536) {
    header = Buffer.from([0x80 | opcode, 0xfe, len >> 8, len & 0xff, 0, 0, 0, 0]);
  } else {
    header = Buffer.alloc(14);
    header[0] = 0x80 | opcode;
    header[1] = 0xff;
    header.writeUInt32BE(len, 6);
  }
  return Buffer.concat([header, payload]);
}

/** One masked client text frame (zero mask key: the payload is sent unchanged). */
export const textFrame = (text) => frame(OP_TEXT, Buffer.from(text));

/** The data of one published message: `~<send time>~` padded with `x` to `size` bytes. */
export function messageData(size) {
  const stamp = `~${nowMs().toFixed(3)}~`;
  return stamp + 'x'.repeat(Math.max(0, size - stamp.length));
}

/**
 * What differs between the servers, client side. ws-edge and the raw uWS baseline speak ws-edge's
 * JSON protocol; Socket.IO speaks Engine.IO v4 (`0{...}` open, `40` connect, `42[...]` events,
 * `2`/`3` ping/pong as text frames).
 */
export const PROTOCOLS = {
  edge: {
    socketio: false,
    path: (token) => `/api/v1/ws/connect?token=${token}`,
    join: (room) => textFrame(`{"type":"join_room","room":"${room}"}`),
    publish: (room, data) => textFrame(`{"type":"send_message","room":"${room}","data":"${data}"}`),
    isJoinReply: (text) => text.startsWith('{"type":"room_joined"'),
  },
  socketio: {
    socketio: true,
    path: (token) => `/socket.io/?EIO=4&transport=websocket&token=${token}`,
    join: (room) => textFrame(`42["join_room","${room}"]`),
    publish: (room, data) => textFrame(`42["send_message",{"room":"${room}","data":"${data}"}]`),
    isJoinReply: (text) => text.startsWith('42["room_joined"'),
  },
};
PROTOCOLS.raw = PROTOCOLS.edge;

const PONG_EIO = textFrame('3');
const CONNECT_SIO = textFrame('40');

/**
 * Counters shared by every client of one load-generator process.
 * - deliveries: text frames received by counted clients outside setup (server pings excluded);
 * - probe: frames received by the probe client (the publisher's flow control);
 * - latencies: delivery delays in ms, from clients with `sample` set.
 */
export function createStats() {
  return { deliveries: 0, probe: 0, latencies: [], onProbe: null, onData: null };
}

/**
 * Opens one client and resolves with it once the server has accepted it (ws-edge/raw: the first
 * frame, `connected`; Socket.IO: `40{...}` after the open packet). Rejects on refusal or error.
 *
 * While `client.inspect` is a function every text frame is decoded and passed to it (setup);
 * otherwise frames are only counted, and with `client.sample` set the send time is read from them.
 */
export function openClient({ port, host = '127.0.0.1', localAddress, protocol, token, stats }) {
  const proto = PROTOCOLS[protocol];
  return new Promise((resolve, reject) => {
    const socket = net.connect({ port, host, localAddress });
    socket.setNoDelay(true);
    socket.setTimeout(HANDSHAKE_TIMEOUT_MS, () => fail('handshake timed out'));
    const client = { socket, inspect: null, sample: false, probe: false, counted: true, closed: false, closedWith: undefined, onClose: undefined };
    let settled = false;
    const fail = (why) => {
      if (settled) return;
      settled = true;
      socket.destroy();
      reject(new Error(why));
    };
    const accept = () => {
      client.inspect = null;
      settled = true;
      socket.setTimeout(0);
      resolve(client);
    };
    client.inspect = (text) => {
      if (!proto.socketio) {
        if (text.startsWith('{"type":"connected"')) accept();
        else fail(`unexpected first frame: ${text.slice(0, 80)}`);
        return;
      }
      if (text[0] === '0') socket.write(CONNECT_SIO);
      else if (text.startsWith('40')) accept();
      else if (text !== '2') fail(`socket.io refused: ${text.slice(0, 80)}`);
    };

    // Reader state: a partial header kept between chunks, payload bytes still to come, and the
    // parts of a payload that is needed but spans chunks.
    let head = null;
    let left = 0;
    let parts = null;
    let opcode = 0;
    let upgraded = false;
    let http = null;

    const onPayload = (payload) => {
      if (opcode === OP_TEXT) {
        if (client.inspect !== null) {
          const text = payload.toString('utf8');
          if (proto.socketio && text === '2') socket.write(PONG_EIO);
          else client.inspect(text);
        } else if (proto.socketio && payload.length === 1) {
          if (payload[0] === 0x32) socket.write(PONG_EIO); // Engine.IO ping, not a delivery
        } else if (client.sample) {
          const a = payload.indexOf(TILDE);
          const b = a < 0 ? -1 : payload.indexOf(TILDE, a + 1);
          if (b > a) stats.latencies.push(nowMs() - Number(payload.latin1Slice(a + 1, b)));
        }
      } else if (opcode === OP_PING) {
        socket.write(frame(0xa, Buffer.from(payload)));
      } else if (opcode === OP_CLOSE) {
        const code = payload.length >= 2 ? payload.readUInt16BE(0) : 1005;
        client.closedWith ??= `${code} ${payload.subarray(2).toString()}`;
        fail(`closed by the server: ${client.closedWith}`);
        socket.end();
      }
    };

    const onFrames = (buf) => {
      let i = 0;
      const n = buf.length;
      let probeSeen = false;
      while (i < n) {
        if (left > 0) {
          const take = Math.min(left, n - i);
          if (parts !== null) parts.push(buf.subarray(i, i + take));
          left -= take;
          i += take;
          if (left === 0 && parts !== null) {
            const payload = Buffer.concat(parts);
            parts = null;
            onPayload(payload);
          }
          continue;
        }
        if (n - i < 2) {
          head = Buffer.from(buf.subarray(i));
          break;
        }
        let len = buf[i + 1] & 0x7f;
        let h = 2;
        if (len === 126) {
          if (n - i < 4) {
            head = Buffer.from(buf.subarray(i));
            break;
          }
          len = buf.readUInt16BE(i + 2);
          h = 4;
        } else if (len === 127) {
          if (n - i < 10) {
            head = Buffer.from(buf.subarray(i));
            break;
          }
          len = buf.readUInt32BE(i + 6);
          h = 10;
        }
        opcode = buf[i] & 0x0f;
        i += h;
        const needed = opcode !== OP_TEXT || client.inspect !== null || client.sample || (proto.socketio && len === 1);
        if (opcode === OP_TEXT && client.inspect === null && !(proto.socketio && len === 1)) {
          if (client.counted) stats.deliveries += 1;
          if (client.probe) {
            stats.probe += 1;
            probeSeen = true;
          }
        }
        if (!needed) {
          const take = Math.min(len, n - i);
          left = len - take;
          i += take;
          continue;
        }
        if (n - i >= len) {
          onPayload(buf.subarray(i, i + len));
          i += len;
        } else {
          parts = [buf.subarray(i)];
          left = len - (n - i);
          i = n;
        }
      }
      if (probeSeen && stats.onProbe !== null) stats.onProbe();
      if (stats.onData !== null) stats.onData();
    };

    socket.on('connect', () => {
      socket.write(
        `GET ${proto.path(token)} HTTP/1.1\r\nHost: ${host}:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
          `Sec-WebSocket-Key: ${KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n`,
      );
    });
    socket.on('data', (chunk) => {
      if (!upgraded) {
        http = http === null ? chunk : Buffer.concat([http, chunk]);
        const end = http.indexOf('\r\n\r\n');
        if (end < 0) return;
        if (!http.subarray(0, 13).toString().includes(' 101')) return fail(`upgrade refused: ${http.subarray(0, 40).toString()}`);
        upgraded = true;
        chunk = http.subarray(end + 4);
        http = null;
        if (chunk.length === 0) return;
      }
      if (head !== null) {
        chunk = Buffer.concat([head, chunk]);
        head = null;
      }
      onFrames(chunk);
    });
    socket.on('error', (err) => {
      client.closedWith ??= err.code ?? err.message;
      fail(err.code ?? err.message);
    });
    socket.on('close', () => {
      client.closed = true;
      client.onClose?.();
      fail('connection closed before it was accepted');
    });
  });
}

/**
 * Opens `count` clients with at most `concurrency` handshakes in flight, spreading them over
 * `localAddresses` (one loopback address has ~28k ephemeral ports). Failures are counted, not fatal.
 */
export async function openClients({ count, concurrency = 64, localAddresses, tokenFor, onFailure, ...options }) {
  const clients = [];
  let next = 0;
  let failed = 0;
  const worker = async () => {
    while (next < count) {
      const i = next++;
      try {
        clients[i] = await openClient({ ...options, token: tokenFor(i), localAddress: localAddresses[i % localAddresses.length] });
      } catch (err) {
        failed += 1;
        onFailure?.(err);
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, worker));
  return { clients: clients.filter(Boolean), failed };
}

/**
 * Sends each client's join frames (one write per client) and resolves once every join has been
 * answered or its client has closed, or after `timeoutMs`, with the joins not answered by open
 * clients and the clients lost meanwhile.
 */
export function joinRooms({ clients, protocol, roomsOf, timeoutMs = 30_000 }) {
  const proto = PROTOCOLS[protocol];
  return new Promise((resolve) => {
    let waiting = 0;
    let timer;
    let unexpected;
    let done = false;
    const finished = () => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      for (const c of clients) {
        c.inspect = null;
        c.onClose = undefined;
      }
      const closed = clients.filter((c) => c.closed);
      resolve({ unanswered: waiting, unexpected, lost: closed.length, closedWith: closed[0]?.closedWith ?? (closed.length > 0 ? 'closed without a close frame' : undefined) });
    };
    clients.forEach((client, i) => {
      const rooms = roomsOf(i);
      if (rooms.length === 0 || client.closed) return;
      let pending = rooms.length;
      waiting += pending;
      client.inspect = (text) => {
        if (proto.isJoinReply(text)) {
          pending -= 1;
          waiting -= 1;
        } else unexpected ??= text.slice(0, 200);
        if (waiting === 0) finished();
      };
      client.onClose = () => {
        waiting -= pending;
        pending = 0;
        if (waiting === 0) finished();
      };
      client.socket.write(Buffer.concat(rooms.map((room) => proto.join(room))));
    });
    if (waiting === 0) return finished();
    timer = setTimeout(finished, timeoutMs);
  });
}

/**
 * The first load generator: opens `count` connections and counts one when its first frame has
 * arrived. Kept for bench/connections.mjs (ws-edge's protocol only); bench/run.mjs uses the above.
 */
export async function openConnections({ port, count, concurrency = 200, tokenFor, host = '127.0.0.1', localAddresses = ['127.0.0.1'] }) {
  const stats = createStats();
  const begin = process.hrtime.bigint();
  const { clients, failed } = await openClients({ port, host, count, concurrency, tokenFor, localAddresses, protocol: 'edge', stats });
  const seconds = Number(process.hrtime.bigint() - begin) / 1e9;
  return { sockets: clients.map((c) => c.socket), failed, seconds, rate: clients.length / seconds };
}
