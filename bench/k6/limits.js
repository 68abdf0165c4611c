// Checks the promises docs/WEBSOCKET_API.md makes, against a running node or cluster, one scenario
// per promise, all at once (about two heartbeat intervals in total, ~70 s with the defaults):
//
//   user_limit     the (WS_MAX_CONNECTIONS_PER_USER + 1)th connection of a user is closed 4429
//                  "too many connections for this user" without `connected`, and the first ones
//                  still answer `ping` with `pong`
//   heartbeat      the server pings a silent client within the heartbeat interval, and a client
//                  that answers pings (k6 always does) stays open over two intervals
//   message_size   a send_message frame of exactly WS_MESSAGE_MAX_SIZE bytes is delivered (the
//                  `connected` frame advertises that size), one byte more is closed 1009
//                  "message too big"
//   rate_limit     a burst above WS_RATE_BURST gets `rate_limited` errors while the burst itself is
//                  served; the connection stays open and is served again once the bucket refills
//   invalid_token  a token signed with another secret closes 4401 "invalid token: signature", an expired one
//                  4401 "token expired", both without `connected`
//
//   k6 run -e JWT_SECRET="$JWT_SECRET" bench/k6/limits.js
//
// A broken promise adds to `promise_broken` (tag `promise`) and fails its checks; a kept one adds
// to `promise_kept`. Needs JWT_SECRET (it mints tokens for particular users), and k6 v1.5 or later
// for close codes.
//
// Not checked here: that a client that does NOT answer pings is dropped. k6 answers every server
// ping itself, in Go, before the script sees the `ping` event, and offers no way to turn that off,
// so a k6 client cannot go silent. test/integration/heartbeat.test.ts covers it with a client that
// never answers (dropped with 1006 within two intervals).
//
// Parameters: the nodes' settings, when they differ from the defaults.
//   WS_MAX_CONNECTIONS_PER_USER  5         connections per user
//   WS_MESSAGE_MAX_SIZE          1048576   bytes per frame
//   WS_RATE_BURST                40        frames a connection may send at once
//   WS_RATE_LIMIT_CLOSE_AFTER    50        rate-limited frames before a 4429 close (the burst stays below)
//   WS_HEARTBEAT_INTERVAL        30        seconds; only sizes the scenario, the value used is the one
//                                          the server announces in `connected`
import { check } from 'k6';
import { Counter, Trend } from 'k6/metrics';
import { JWT_SECRET, USER_PREFIX, console, duration, envInt, mintToken, openClient, settled, sleepMs, within } from './lib.js';

const USER_LIMIT = envInt('WS_MAX_CONNECTIONS_PER_USER', 5);
const MAX_MESSAGE_SIZE = envInt('WS_MESSAGE_MAX_SIZE', 1048576);
const RATE_BURST = envInt('WS_RATE_BURST', 40);
const RATE_LIMIT_CLOSE_AFTER = envInt('WS_RATE_LIMIT_CLOSE_AFTER', 50);
const HEARTBEAT_INTERVAL = envInt('WS_HEARTBEAT_INTERVAL', 30);
/** uWS timers tick every 4 s: every heartbeat bound carries that much slack. */
const TIMER_GRANULARITY_S = 4;
const REPLY_TIMEOUT_MS = 10000;

if (JWT_SECRET === undefined) throw new Error('limits.js mints tokens for chosen users: set JWT_SECRET');

const promiseKept = new Counter('promise_kept');
const promiseBroken = new Counter('promise_broken');
/** Client silence before the server's first ping, ms (by the docs about 22 s of a 30 s interval; uWS's 4 s timer ticks make it vary). */
const firstServerPing = new Trend('heartbeat_first_ping', true);

const PROMISES = ['user_limit', 'heartbeat', 'message_size', 'rate_limit', 'invalid_token'];
/** @param {string} exec @param {number} seconds */
const once = (exec, seconds) => ({ executor: /** @type {const} */ ('per-vu-iterations'), exec, vus: 1, iterations: 1, maxDuration: duration(seconds) });

/** @type {import('k6/options').Options['thresholds']} */
const thresholds = {
  promise_broken: ['count==0'],
  checks: ['rate==1'],
};
// Each promise must also have been judged: a scenario that died before its verdict fails here.
for (const promise of PROMISES) thresholds[`promise_kept{promise:${promise}}`] = ['count==1'];

export const options = {
  scenarios: {
    user_limit: once('userLimit', 60),
    heartbeat: once('heartbeat', 3 * HEARTBEAT_INTERVAL + 60),
    message_size: once('messageSize', 120),
    rate_limit: once('rateLimit', 60),
    invalid_token: once('invalidToken', 60),
  },
  thresholds,
};

/** A user of its own for each check, so the scenarios never share a per-user slot. @param {string} name */
function user(name) {
  return `${USER_PREFIX}-limits-${Date.now().toString(36)}-${name}`;
}

/**
 * Runs one promise's steps and records the verdict: every condition must hold. An exception is a
 * broken promise too.
 * @param {string} promise @param {() => Promise<Record<string, boolean>>} steps
 */
async function verify(promise, steps) {
  /** @type {Record<string, boolean>} */
  let conditions;
  try {
    conditions = await steps();
  } catch (err) {
    conditions = { [`${promise}: the steps ran to the end (${String(err)})`]: false };
  }
  /** @type {Record<string, () => boolean>} */
  const checks = {};
  for (const [name, holds] of Object.entries(conditions)) checks[name] = () => holds;
  const kept = check(null, checks, { promise });
  (kept ? promiseKept : promiseBroken).add(1, { promise });
  if (!kept) {
    const failed = Object.entries(conditions).filter(([, holds]) => !holds).map(([name]) => name);
    console.error(`promise broken: ${promise}: ${failed.join('; ')}`);
  }
}

/** @param {import('./lib.js').Client} client @param {string} id */
async function pingPong(client, id) {
  if (!client.send({ type: 'ping', id })) return false;
  return (await client.next((m) => m.type === 'pong' && m.id === id, REPLY_TIMEOUT_MS)) !== null;
}

export async function userLimit() {
  await verify('user_limit', async () => {
    const token = mintToken(user('u'));
    const held = Array.from({ length: USER_LIMIT }, () => openClient(token));
    const connected = await Promise.all(held.map((c) => within(c.connected, REPLY_TIMEOUT_MS)));
    // Only once all of them hold their slot does the next one go over the limit.
    const extra = openClient(token);
    const extraClose = await within(extra.closed, REPLY_TIMEOUT_MS);
    const extraConnected = await settled(extra.connected);
    const answers = await Promise.all(held.map((c, i) => pingPong(c, `held-${i}`)));
    const stillOpen = held.every((c) => c.ws.readyState === 1);
    for (const c of [...held, extra]) c.close(1000, 'done'); // no-op on a closed socket
    return {
      [`${USER_LIMIT} connections of one user get connected`]: connected.every((d) => d !== null && d !== undefined),
      [`connection ${USER_LIMIT + 1} of the user is closed 4429`]: extraClose?.code === 4429,
      'with reason "too many connections for this user"': extraClose?.reason === 'too many connections for this user',
      [`connection ${USER_LIMIT + 1} never gets connected`]: extraConnected === null || extraConnected === undefined,
      [`the first ${USER_LIMIT} still answer ping with pong`]: answers.every(Boolean),
      [`the first ${USER_LIMIT} stay open`]: stillOpen,
    };
  });
}

export async function heartbeat() {
  await verify('heartbeat', async () => {
    const client = openClient(mintToken(user('hb')));
    const info = await within(client.connected, REPLY_TIMEOUT_MS);
    const interval = typeof info?.heartbeat_interval === 'number' ? info.heartbeat_interval : HEARTBEAT_INTERVAL;
    if (interval > HEARTBEAT_INTERVAL) console.warn(`the server announces heartbeat_interval ${interval}; set -e WS_HEARTBEAT_INTERVAL=${interval} so the scenario lasts long enough`);
    const silentSince = Date.now();
    // Send nothing. k6 answers the server's pings (from Go); those pongs are the only client frames.
    const firstPingBy = silentSince + (interval + TIMER_GRANULARITY_S) * 1000;
    while (client.serverPings.length === 0 && Date.now() < firstPingBy && client.ws.readyState === 1) await sleepMs(250);
    const firstPing = client.serverPings[0];
    if (firstPing !== undefined) firstServerPing.add(firstPing - silentSince);
    // A silent client is dropped about one interval after its last frame; an answering one never.
    const closed = await within(client.closed, Math.max(0, silentSince + (2 * interval + TIMER_GRANULARITY_S) * 1000 - Date.now()));
    const pings = client.serverPings.length;
    const answered = closed === null && (await pingPong(client, 'after-two-intervals'));
    client.close(1000, 'done');
    return {
      'connected announces heartbeat_interval': typeof info?.heartbeat_interval === 'number',
      'the server pings a silent client within heartbeat_interval (+4 s timer slack)': firstPing !== undefined && firstPing <= firstPingBy,
      'a client that answers pings stays open over two intervals': closed === null,
      'and is pinged again in the second interval': pings >= 2,
      'and is still served (ping, pong)': answered,
    };
  });
}

/**
 * A send_message frame of exactly `size` bytes (ASCII, so characters are bytes).
 * @param {number} size @param {string} room @param {string} id
 */
function frameOfSize(size, room, id) {
  const overhead = JSON.stringify({ type: 'send_message', room, id, data: { pad: '' } }).length;
  return JSON.stringify({ type: 'send_message', room, id, data: { pad: 'x'.repeat(size - overhead) } });
}

export async function messageSize() {
  await verify('message_size', async () => {
    const sub = user('size');
    const client = openClient(mintToken(sub));
    const info = await within(client.connected, REPLY_TIMEOUT_MS);
    // The personal room needs no join; the sender is its member and gets its own copy.
    const room = `user:${sub}`;
    const exact = frameOfSize(MAX_MESSAGE_SIZE, room, 'exact');
    if (client.ws.readyState === 1) client.ws.send(exact);
    const sent = await client.next((m) => m.type === 'message_sent' && m.id === 'exact', 30000);
    const copy = await client.next((m) => m.type === 'message.new' && m.room === room, 30000);
    const over = frameOfSize(MAX_MESSAGE_SIZE + 1, room, 'over');
    if (client.ws.readyState === 1) client.ws.send(over);
    const closed = await within(client.closed, 30000);
    if (closed === null) client.close(1000, 'done');
    return {
      [`connected announces max_message_size ${MAX_MESSAGE_SIZE}`]: info?.max_message_size === MAX_MESSAGE_SIZE,
      [`a frame of exactly ${MAX_MESSAGE_SIZE} bytes is accepted (message_sent)`]: exact.length === MAX_MESSAGE_SIZE && sent !== null,
      'and delivered whole (message.new)': copy !== null && typeof copy.data?.pad === 'string' && copy.data.pad.length === JSON.parse(exact).data.pad.length,
      [`a frame of ${MAX_MESSAGE_SIZE + 1} bytes is closed 1009`]: over.length === MAX_MESSAGE_SIZE + 1 && closed?.code === 1009,
      'with reason "message too big"': closed?.reason === 'message too big',
    };
  });
}

export async function rateLimit() {
  await verify('rate_limit', async () => {
    const client = openClient(mintToken(user('rate')));
    await within(client.connected, REPLY_TIMEOUT_MS);
    // The bucket is full at connect. Over the burst, but well below the flooding close.
    const extra = Math.max(1, Math.min(10, RATE_LIMIT_CLOSE_AFTER));
    const total = RATE_BURST + extra;
    for (let i = 0; i < total; i++) client.send({ type: 'ping', id: `burst-${i}` });
    let pongs = 0;
    let limited = 0;
    for (let i = 0; i < total; i++) {
      // Rate-limited frames are answered without their id.
      const reply = await client.next((m) => (m.type === 'pong' && (m.id ?? '').startsWith('burst-')) || (m.type === 'error' && m.data?.code === 'rate_limited'), REPLY_TIMEOUT_MS);
      if (reply === null) break;
      if (reply.type === 'pong') pongs++;
      else limited++;
    }
    // The bucket refills at WS_RATE_LIMIT per second (20): a second later there is room again.
    await sleepMs(1100);
    const servedAgain = await pingPong(client, 'after-refill');
    const open = client.ws.readyState === 1;
    client.close(1000, 'done');
    return {
      [`a burst of ${total} frames gets rate_limited errors`]: limited >= 1,
      [`the first ${RATE_BURST} frames of the burst are served`]: pongs >= RATE_BURST,
      'every frame of the burst is answered (pong or rate_limited)': pongs + limited === total,
      'the connection stays open': open,
      'and is served again after the bucket refills': servedAgain,
    };
  });
}

export async function invalidToken() {
  await verify('invalid_token', async () => {
    const forged = openClient(mintToken(user('forged'), { secret: `${JWT_SECRET}-not-the-secret` }));
    const forgedClose = await within(forged.closed, REPLY_TIMEOUT_MS);
    const forgedConnected = await settled(forged.connected);
    const expired = openClient(mintToken(user('expired'), { exp: Math.floor(Date.now() / 1000) - 3600 }));
    const expiredClose = await within(expired.closed, REPLY_TIMEOUT_MS);
    const expiredConnected = await settled(expired.connected);
    forged.close(1000, 'done'); // no-op unless the promise is broken and it stayed open
    expired.close(1000, 'done');
    return {
      'a token signed with another secret is closed 4401': forgedClose?.code === 4401,
      'with reason "invalid token: signature"': forgedClose?.reason === 'invalid token: signature',
      'an expired token is closed 4401 "token expired"': expiredClose?.code === 4401 && expiredClose.reason === 'token expired',
      'neither gets connected': (forgedConnected ?? null) === null && (expiredConnected ?? null) === null,
    };
  });
}
