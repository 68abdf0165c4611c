/// <reference lib="dom" />
/**
 * ws-edge/client in a real browser (Debian's chromium, headless): pages on a local HTTP server (a
 * real Origin) load the client's browser bundle and talk to real nodes. Covered: the token in the
 * subprotocol, the close codes and reasons a browser can read, a rolling restart of two nodes
 * behind HAProxy during which the page loses no event (counted), and the demo page, screenshot
 * included.
 */
import { randomUUID } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { launchChromium, startPageServer, type PageServer } from '../helpers/browser.js';
import { token } from '../helpers/client.js';
import { startHaproxy, stopAllHaproxy } from '../helpers/haproxy.js';
import { startTestNode, stopAllNodes, stopTestNode, type TestNode } from '../helpers/node.js';
import { freePort } from '../helpers/ports.js';
import { startNodeProcess, stopAllProcesses, type NodeProcess } from '../helpers/processes.js';
import { startRedis, stopAllRedis, uniquePrefix } from '../helpers/redis.js';
import { lossOf, numbers } from '../helpers/numbered.js';
import { waitFor } from '../helpers/wait.js';

const API_KEY = 'browser-suite-publish-key-0123456789abcdef';

let browser: Browser;
let pages: PageServer;

beforeAll(async () => {
  [browser, pages] = await Promise.all([launchChromium(), startPageServer()]);
  console.log(JSON.stringify({ chromium: browser.version(), client_bundle: pages.bundle }));
});

afterAll(async () => {
  await browser?.close();
  await pages?.stop();
  await stopAllHaproxy();
  await stopAllProcesses();
  await stopAllNodes();
  await stopAllRedis();
});

// The page's globals, as the tests use them (page code runs in the browser, typed loosely here).
type PageGlobals = Record<string, any>;

async function openPage(): Promise<Page> {
  const page = await browser.newPage();
  await page.goto(pages.origin + '/');
  await page.waitForFunction(() => document.title === 'ready');
  return page;
}

/** Starts a library client in the page as `window[name]`, recording states and the `n` of each task.updated event. */
async function startClient(page: Page, name: string, url: string, tok: string, rooms: string[] = []): Promise<void> {
  await page.evaluate(
    ({ name, url, tok, rooms }) => {
      const w = window as unknown as PageGlobals;
      const record = { states: [] as unknown[], events: {} as Record<string, number[]>, recovered: 0, resets: 0, nodes: [] as string[] };
      const client = w.edge.createClient({ url, token: tok });
      client.on('state', (s: unknown) => record.states.push(s));
      client.on('connected', (d: { connection_id: string }) => record.nodes.push(d.connection_id.split('.')[0]!));
      for (const room of rooms) {
        record.events[room] = [];
        client.join(room, {
          event: (e: { type: string; data: { n: number } }) => e.type === 'task.updated' && record.events[room]!.push(e.data.n),
          recovered: () => (record.recovered += 1),
          reset: () => (record.resets += 1),
        });
      }
      client.connect();
      w[name] = { client, record };
    },
    { name, url, tok, rooms },
  );
}

const record = (page: Page, name: string) => page.evaluate((name) => (window as unknown as PageGlobals)[name].record, name);
const lastState = async (page: Page, name: string) => (await record(page, name)).states.at(-1);
const waitForState = (page: Page, name: string, match: (s: any) => boolean, what: string, timeoutMs = 5000) =>
  waitFor(what, async () => ((await record(page, name)).states as unknown[]).some(match), timeoutMs);

/** True when the node answered 200; in a sequenced room the idempotency key makes a retry of an unclear answer harmless. */
async function publish(internal: string, room: string, n: number, sequenced = false): Promise<boolean> {
  const res = await fetch(`${internal}/api/v1/publish`, {
    method: 'POST',
    headers: { authorization: `Bearer ${API_KEY}`, 'content-type': 'application/json' },
    body: JSON.stringify({ room, type: 'task.updated', data: { n }, ...(sequenced ? { idempotency_key: `n-${n}` } : {}) }),
    signal: AbortSignal.timeout(2000),
  }).catch(() => undefined);
  return res?.status === 200;
}

describe('ws-edge/client in chromium', () => {
  let node: TestNode;
  beforeAll(async () => {
    node = await startTestNode({ PUBLISH_API_KEY: API_KEY, WS_MESSAGE_MAX_SIZE: '2048', WS_MAX_CONNECTIONS_PER_USER: '1' });
  });

  it('connects with the token in the subprotocol (none in the URL) and receives events', async () => {
    const tok = token('ivy');
    const page = await openPage();
    // A WebSocket that records what the library offered and what the server answered.
    await page.evaluate(() => {
      const w = window as unknown as PageGlobals;
      w.opened = [];
      w.edgeSocket = class extends WebSocket {
        constructor(url: string, protocols: string[]) {
          super(url, protocols);
          w.opened.push({ url, protocols, socket: this });
        }
      };
    });
    await page.evaluate(
      ({ url, tok }) => {
        const w = window as unknown as PageGlobals;
        w.events = [];
        w.c = w.edge.createClient({ url, token: tok, WebSocket: w.edgeSocket });
        w.c.join('project:7', { event: (e: unknown) => w.events.push(e) }).then(() => (w.joined = true));
        w.c.connect();
      },
      { url: node.url, tok },
    );
    // Joined, not only connected: an event published before the join is answered is not the page's.
    await waitFor('joined', () => page.evaluate(() => (window as unknown as PageGlobals).joined === true), 5000);
    expect(await publish(node.internal, 'project:7', 1)).toBe(true);
    await waitFor('the event', () => page.evaluate(() => (window as unknown as PageGlobals).events.length === 1));
    const seen = await page.evaluate(() => {
      const w = window as unknown as PageGlobals;
      return { offered: w.opened[0].protocols, url: w.opened[0].url, answered: w.opened[0].socket.protocol, origin: location.origin, event: w.events[0] };
    });
    expect(seen.offered).toEqual(['wsedge.v1', `wsedge.bearer.${tok}`]);
    expect(seen.url).toBe(node.url);
    expect(seen.answered).toBe('wsedge.v1');
    expect(seen.event).toMatchObject({ type: 'task.updated', room: 'project:7', data: { n: 1 } });
    await page.evaluate(() => (window as unknown as PageGlobals).c.close());
    await page.close();
  });

  it('reads 4401 (stops: a fixed token), 4429 (waits 30 s or more) and 1009; refuses a frame above max_message_size itself', async () => {
    const page = await openPage();
    await startClient(page, 'bad', node.url, 'not-a-jwt');
    await waitForState(page, 'bad', (s) => s.code === 4401, '4401');
    expect(await lastState(page, 'bad')).toEqual({ state: 'closed', code: 4401, reason: 'invalid token: format' });

    await startClient(page, 'first', node.url, token('jade'), ['project:1']);
    await waitForState(page, 'first', (s) => s.state === 'connected', 'first connected');
    await startClient(page, 'second', node.url, token('jade'));
    await waitForState(page, 'second', (s) => s.code === 4429, '4429');
    const limited = await lastState(page, 'second');
    expect(limited).toMatchObject({ state: 'disconnected', code: 4429, reason: 'too many connections for this user' });
    expect(limited.delay).toBeGreaterThanOrEqual(30_000);

    const refused = await page.evaluate(() =>
      (window as unknown as PageGlobals).first.client.send('project:1', 'x'.repeat(3000)).then(
        () => 'sent',
        (err: { code: string }) => err.code,
      ),
    );
    expect(refused).toBe('message_too_big');
    // What the server does with such a frame, seen by a raw browser WebSocket: 1009 and its reason.
    const closed = await page.evaluate(
      ({ url, tok }) =>
        new Promise((resolve) => {
          const ws = new WebSocket(url, ['wsedge.v1', 'wsedge.bearer.' + tok]);
          // Above max_message_size (2048) and below twice it, where uWS drops the connection without a close frame.
          ws.onmessage = () => ws.send(JSON.stringify({ type: 'send_message', room: 'project:1', data: 'x'.repeat(3000) }));
          ws.onclose = (e) => resolve({ code: e.code, reason: e.reason });
        }),
      { url: node.url, tok: token('kim') },
    );
    expect(closed).toEqual({ code: 1009, reason: 'message too big' });
    await page.evaluate(() => ['bad', 'first', 'second'].forEach((n) => (window as unknown as PageGlobals)[n].client.close()));
    await page.close();
  });

  it('reads 4403 from WS_ALLOWED_ORIGINS (stops) and 1012 from a draining node (reconnects within 0-5 s)', async () => {
    const strict = await startTestNode({ WS_ALLOWED_ORIGINS: 'https://app.example.com' });
    const open = await startTestNode();
    const page = await openPage();
    await startClient(page, 'foreign', strict.url, token('lee'));
    await waitForState(page, 'foreign', (s) => s.code === 4403, '4403');
    expect(await lastState(page, 'foreign')).toEqual({ state: 'closed', code: 4403, reason: 'origin not allowed' });

    await startClient(page, 'drained', open.url, token('max'));
    await waitForState(page, 'drained', (s) => s.state === 'connected', 'connected');
    await stopTestNode(open);
    await waitForState(page, 'drained', (s) => s.code === 1012, '1012');
    const drained = (await record(page, 'drained')).states.find((s: { code?: number }) => s.code === 1012);
    expect(drained).toMatchObject({ state: 'disconnected', code: 1012, reason: 'service restart' });
    expect(drained.delay).toBeLessThanOrEqual(5000);
    await page.evaluate(() => ['foreign', 'drained'].forEach((n) => (window as unknown as PageGlobals)[n].client.close()));
    await page.close();
    await stopTestNode(strict);
  });
});

describe('the browser going offline', () => {
  it('drops the socket at once on offline, makes no attempt while offline, reconnects and rejoins on online', async () => {
    const node = await startTestNode();
    const page = await openPage();
    await startClient(page, 'net', node.url, token('olga'), ['project:net']);
    await waitForState(page, 'net', (s) => s.state === 'connected', 'connected');
    await page.context().setOffline(true);
    await waitForState(page, 'net', (s) => s.reason === 'offline', 'offline');
    expect(await lastState(page, 'net')).toEqual({ state: 'disconnected', code: 1006, reason: 'offline' });
    await new Promise((r) => setTimeout(r, 1500));
    expect((await record(page, 'net')).states.filter((s: { state: string }) => s.state === 'connecting')).toHaveLength(1);
    await page.context().setOffline(false);
    await waitFor('back', async () => (await record(page, 'net')).nodes.length === 2 && (await lastState(page, 'net')).state === 'connected', 5000);
    // A plain room is rejoined and the app told to reload it.
    await waitFor('reset', async () => (await record(page, 'net')).resets === 1, 3000);
    await page.evaluate(() => (window as unknown as PageGlobals).net.client.close());
    await page.close();
    await stopTestNode(node);
  });
});

describe('a rolling restart of two nodes behind HAProxy, seen from a browser', () => {
  it('the page loses no event and sees none twice: every published number, in order', { timeout: 90_000 }, async () => {
    const redis = await startRedis();
    const ports = [await freePort(), await freePort(), await freePort()];
    const prefix = uniquePrefix();
    const env = (port: number) => ({
      PORT: String(port),
      REDIS_URL: redis.url,
      REDIS_PREFIX: prefix,
      WS_HISTORY_ROOMS: 'task:*',
      WS_HISTORY_SIZE: '2000',
      WS_HISTORY_RECOVER_MAX: '2000',
      WS_ROOM_ACCESS: 'open',
      PUBLISH_API_KEY: API_KEY,
      WS_DRAIN_TIMEOUT: '2',
    });
    // Two nodes; the config's third server points at a port nobody listens on (DOWN throughout).
    const nodes: NodeProcess[] = [await startNodeProcess(env(ports[0]!)), await startNodeProcess(env(ports[1]!))];
    const lb = await startHaproxy(ports);
    const page = await openPage();
    const room = `task:${randomUUID().slice(0, 8)}`;
    await startClient(page, 'roll', lb.url, token('nina'), [room]);
    await waitFor('joined', async () => (await record(page, 'roll')).nodes.length === 1 && (await page.evaluate((r) => (window as unknown as PageGlobals).roll.client.position(r), room)) !== undefined, 10_000);

    let stop = false;
    let published = 0;
    const publishing = (async () => {
      while (!stop) {
        // Whichever node is up takes the next number.
        const n = published + 1;
        let ok = false;
        for (const node of nodes) if ((ok = await publish(node.internal, room, n, true))) break;
        if (ok) published = n;
        await new Promise((r) => setTimeout(r, 20));
      }
    })();
    try {
      for (const i of [0, 1]) {
        await new Promise((r) => setTimeout(r, 700));
        await nodes[i]!.stop();
        nodes[i] = await startNodeProcess(env(ports[i]!));
        await waitFor(`node ${i + 1} back in HAProxy`, async () => (await lb.servers())[i]?.status === 'UP', 15_000);
      }
      await new Promise((r) => setTimeout(r, 700));
    } finally {
      stop = true;
    }
    await publishing;
    await waitFor('every event in the page', async () => (await record(page, 'roll')).events[room].length >= published, 10_000).catch(() => {});
    const seen = await record(page, 'roll');
    const got: number[] = seen.events[room];
    const expected = numbers(published);
    const { lost, duplicated } = lossOf(published, got);
    const reconnects = seen.states.filter((s: { state: string }) => s.state === 'connecting').length - 1;
    console.log(JSON.stringify({ scenario: 'browser-rolling-restart', published, received: got.length, lost, duplicated, reconnects, nodes: seen.nodes.length, recovered: seen.recovered, resets: seen.resets, close_codes: seen.states.filter((s: { code?: number }) => s.code !== undefined).map((s: { code: number }) => s.code) }));
    expect({ lost, duplicated, resets: seen.resets }).toEqual({ lost: 0, duplicated: 0, resets: 0 });
    expect(got).toEqual(expected);
    expect(reconnects).toBeGreaterThanOrEqual(1);
    await page.evaluate(() => (window as unknown as PageGlobals).roll.client.close());
    await page.close();
  });
});

describe('the demo page', () => {
  it('zero-config ws-edge serve prints its address; it connects with the dev token, joins channel:demo, shows an event; the screenshot shows the connected badge', async () => {
    // No JWT key: dev mode, as after `npm start`.
    const node = await startNodeProcess({ JWT_SECRET: '', PUBLISH_API_KEY: API_KEY, WS_PRESENCE_ROOMS: 'channel:*' });
    await waitFor('the banner', () => node.stderr().includes('Browser demo'), 5000);
    const address = /Browser demo \(dev mode only\): (http:\S+)/.exec(node.stderr())![1]!;
    expect(address).toBe(`http://127.0.0.1:${node.port}/dev/demo`);
    const page = await browser.newPage({ viewport: { width: 900, height: 600 } });
    await page.goto(address);
    await page.waitForFunction(() => document.getElementById('state')?.textContent === 'connected' && document.getElementById('rooms')?.textContent === 'channel:demo', undefined, { timeout: 5000 });
    await publish(node.internal, 'channel:demo', 42);
    await page.waitForFunction(() => document.getElementById('log')!.textContent!.includes('"n":42'), undefined, { timeout: 5000 });
    const text = await page.evaluate(() => document.body.innerText);
    expect(text).toContain('connected as dev');
    expect(text).toContain('channel:demo task.updated from system: {"n":42}');
    expect(text).toContain('Present in channel:demo: dev');

    const shot = await page.screenshot();
    const file = join(tmpdir(), `ws-edge-demo-${process.pid}.png`);
    writeFileSync(file, shot);
    // Decoded by the browser itself: the badge's green (#1a7f37) must be on the picture.
    const green = await page.evaluate(async (b64) => {
      const bitmap = await createImageBitmap(await (await fetch(`data:image/png;base64,${b64}`)).blob());
      const canvas = new OffscreenCanvas(bitmap.width, bitmap.height);
      const ctx = canvas.getContext('2d')!;
      ctx.drawImage(bitmap, 0, 0);
      const px = ctx.getImageData(0, 0, bitmap.width, bitmap.height).data;
      let count = 0;
      for (let i = 0; i < px.length; i += 4) if (Math.abs(px[i]! - 0x1a) < 8 && Math.abs(px[i + 1]! - 0x7f) < 8 && Math.abs(px[i + 2]! - 0x37) < 8) count++;
      return { count, width: bitmap.width, height: bitmap.height };
    }, shot.toString('base64'));
    console.log(JSON.stringify({ demo_screenshot: file, ...green }));
    expect(green).toMatchObject({ width: 900, height: 600 });
    expect(green.count).toBeGreaterThan(200);
    await page.close();
    await node.stop();
  });
});
