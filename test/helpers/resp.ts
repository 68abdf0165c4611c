/**
 * A raw RESP2 client for the test harness: one command on a fresh connection, the reply as text.
 * Independent of the client library under test.
 */
import { connect } from 'node:net';

/**
 * Sends one command on a fresh connection to 127.0.0.1:<port> and resolves with the raw RESP reply
 * (errors such as '-ERR ...' included, not thrown). Rejects if the connection fails, closes early,
 * or no complete reply arrives within `timeoutMs`.
 */
export function redisCommand(port: number, args: readonly string[], timeoutMs = 2000): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1');
    let received = Buffer.alloc(0);
    const finish = (err: Error | undefined, reply?: string) => {
      clearTimeout(timer);
      socket.destroy();
      if (err) reject(err);
      else resolve(reply!);
    };
    const timer = setTimeout(() => finish(new Error(`no reply to ${args[0]} from 127.0.0.1:${port} within ${timeoutMs} ms`)), timeoutMs);
    socket.once('connect', () => socket.write(encodeCommand(args)));
    socket.on('data', (chunk: Buffer) => {
      received = Buffer.concat([received, chunk]);
      try {
        const end = replyEnd(received, 0);
        if (end >= 0) finish(undefined, received.toString('utf8', 0, end));
      } catch (err) {
        finish(err as Error);
      }
    });
    socket.once('error', (err) => finish(err));
    socket.once('close', () => finish(new Error(`connection to 127.0.0.1:${port} closed before a reply to ${args[0]}`)));
  });
}

export function encodeCommand(args: readonly string[]): Buffer {
  const parts = [`*${args.length}\r\n`];
  for (const arg of args) parts.push(`$${Buffer.byteLength(arg)}\r\n${arg}\r\n`);
  return Buffer.from(parts.join(''));
}

/** Offset just past the RESP2 value starting at `at`, or -1 while it is incomplete. */
function replyEnd(buf: Buffer, at: number): number {
  if (at >= buf.length) return -1;
  const eol = buf.indexOf('\r\n', at);
  if (eol < 0) return -1;
  const kind = String.fromCharCode(buf[at]!);
  const n = Number(buf.toString('latin1', at + 1, eol));
  switch (kind) {
    case '+':
    case '-':
    case ':':
      return eol + 2;
    case '$': {
      if (n < 0) return eol + 2;
      const end = eol + 2 + n + 2;
      return buf.length >= end ? end : -1;
    }
    case '*': {
      let next = eol + 2;
      for (let i = 0; i < n; i++) {
        next = replyEnd(buf, next);
        if (next < 0) return -1;
      }
      return next;
    }
    default:
      throw new Error(`unexpected RESP type byte ${JSON.stringify(kind)}`);
  }
}
