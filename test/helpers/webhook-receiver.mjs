// A webhook receiver as its own process, the way a product's backend receives ws-edge's events:
// checks the signature (HMAC-SHA256 over "<timestamp>.<body>", timestamp within 300 s), answers
// `WEBHOOK_STATUS` (200 by default; the control endpoint changes it), and writes one JSON line per
// request to stdout: {status, events} for an answered one, {rejected: reason} for a bad signature.
// Usage: WEBHOOK_SECRET=... node webhook-receiver.mjs  (prints {"port": N} first)
import { createHmac, timingSafeEqual } from 'node:crypto';
import { createServer } from 'node:http';

const secret = process.env.WEBHOOK_SECRET ?? '';
let status = 200;

function verified(timestamp, signature, body) {
  if (!/^\d+$/.test(timestamp ?? '') || Math.abs(Date.now() / 1000 - Number(timestamp)) > 300) return 'stale timestamp';
  const expected = Buffer.from(`v1=${createHmac('sha256', secret).update(`${timestamp}.${body}`).digest('hex')}`);
  const given = (signature ?? '').split(',').map((s) => Buffer.from(s.trim()));
  return given.some((g) => g.length === expected.length && timingSafeEqual(g, expected)) ? undefined : 'bad signature';
}

const server = createServer((req, res) => {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    const body = Buffer.concat(chunks).toString('utf8');
    if (req.url?.startsWith('/status/')) {
      status = Number(req.url.slice('/status/'.length));
      res.end('ok');
      return;
    }
    const rejected = verified(req.headers['x-wsedge-timestamp'], req.headers['x-wsedge-signature'], body);
    if (rejected !== undefined) {
      process.stdout.write(`${JSON.stringify({ rejected })}\n`);
      res.writeHead(401).end();
      return;
    }
    process.stdout.write(`${JSON.stringify({ status, events: JSON.parse(body).events })}\n`);
    res.writeHead(status, { 'content-type': 'application/json' }).end('{}');
  });
});
server.listen(0, '127.0.0.1', () => process.stdout.write(`${JSON.stringify({ port: server.address().port })}\n`));
