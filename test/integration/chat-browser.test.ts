/// <reference lib="dom" />
/**
 * Chat through the publish proxy in Chromium (issue 22): a page sends chat messages with
 * ws-edge/client through the shipped HAProxy config to two node processes on Redis, the rooms
 * sequenced and proxied to the real backend process (test/backend/chat_backend.py, SQLite); a
 * second page, on the other node, receives each with the backend's message_id and the sender's
 * user_id. The sender's node is restarted (SIGTERM, a new process on its port) while four of its
 * sends are at the backend (each held there 2.5 s, so the drain's 1012 comes before any answer):
 * their outcome is unknown to the page, whose library sends them again with their keys after the
 * resume. Counted: every send resolved once, every message stored once, received once, in order,
 * and the four sent twice on the wire.
 */
import { randomUUID } from 'node:crypto';
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BACKEND_KEY, startChatBackend, stopAllChatBackends, type ChatBackend } from '../helpers/backend.js';
import { launchChromium, startPageServer, type PageServer } from '../helpers/browser.js';
import { token } from '../helpers/client.js';
import { startHaproxy, stopAllHaproxy } from '../helpers/haproxy.js';
import { freePort } from '../helpers/ports.js';
import { startNodeProcess, stopAllProcesses, type NodeProcess } from '../helpers/processes.js';
import { startRedis, stopAllRedis, uniquePrefix } from '../helpers/redis.js';
import { waitFor } from '../helpers/wait.js';

/** Sends answered before the restart, held at the backend across it, and sent after it. */
const BEFORE = 3;
const HELD = 4;
const AFTER = 2;
const TOTAL = BEFORE + HELD + AFTER;
/** How long the backend holds each held send (its `slow:<ms>` text), the first try and the resend alike. */
const HOLD_MS = 2500;

let browser: Browser;
let pages: PageServer;
let backend: ChatBackend;

beforeAll(async () => {
  [browser, pages, backend] = await Promise.all([launchChromium(), startPageServer(), startChatBackend()]);
});

afterAll(async () => {
  await browser?.close();
  await pages?.stop();
  await stopAllHaproxy();
  await stopAllProcesses();
  await stopAllRedis();
  stopAllChatBackends();
});

// The page's globals, as the test uses them (page code runs in the browser, typed loosely here).
type PageGlobals = Record<string, any>;

async function openPage(): Promise<Page> {
  const page = await browser.newPage();
  await page.goto(pages.origin + '/');
  await page.waitForFunction(() => document.title === 'ready');
  return page;
}

/**
 * A library client in the page as `window.chat`, in `room`, on a WebSocket that counts the
 * send_message frames per idempotency key and the message.new frames per message_id (while the
 * library listens); its app records every message.new, every send's outcome and its nodes.
 */
async function startChat(page: Page, url: string, tok: string, room: string): Promise<void> {
  await page.evaluate(
    ({ url, tok, room }) => {
      const w = window as unknown as PageGlobals;
      const record = { nodes: [] as string[], codes: [] as number[], events: [] as unknown[], tries: {} as Record<string, number>, frames: {} as Record<string, number>, outcomes: {} as Record<string, unknown[]> };
      class Tapped extends WebSocket {
        constructor(u: string, protocols: string[]) {
          super(u, protocols);
          this.addEventListener('message', (e) => {
            const msg = JSON.parse(String(e.data));
            if (this.onmessage !== null && msg.type === 'message.new') record.frames[msg.data.message_id] = (record.frames[msg.data.message_id] ?? 0) + 1;
          });
        }
        override send(data: string): void {
          const frame = JSON.parse(data);
          if (frame.type === 'send_message') record.tries[frame.idempotency_key] = (record.tries[frame.idempotency_key] ?? 0) + 1;
          super.send(data);
        }
      }
      const client = w.edge.createClient({ url, token: tok, WebSocket: Tapped });
      client.on('connected', (d: { connection_id: string }) => record.nodes.push(d.connection_id.split('.')[0]!));
      client.on('state', (s: { code?: number }) => s.code !== undefined && record.codes.push(s.code));
      const joined = client.join(room, { event: (e: { type: string }) => e.type === 'message.new' && record.events.push(e) });
      client.connect();
      /** Sends one message; its outcome (the reply, or the error's code) is recorded under `n` each time it settles. */
      const send = (n: number, text: string): Promise<void> =>
        client.send(room, { text, n }).then(
          (reply: unknown) => void (record.outcomes[n] ??= []).push(reply),
          (err: { code: string }) => void (record.outcomes[n] ??= []).push({ error: err.code }),
        );
      w.chat = { client, record, joined, send };
    },
    { url, tok, room },
  );
  await page.evaluate(() => (window as unknown as PageGlobals).chat.joined);
}

const recordOf = (page: Page) => page.evaluate(() => (window as unknown as PageGlobals).chat.record);

describe('chat through the publish proxy in chromium, across a restart of the sender’s node', () => {
  it('the other page receives every message once with the stored message_id and the sender’s user_id; sends held at the backend are sent again and stored once', { timeout: 60_000 }, async () => {
    const redis = await startRedis();
    const ports = [await freePort(), await freePort(), await freePort()];
    const prefix = uniquePrefix();
    const env = (port: number): Record<string, string> => ({
      PORT: String(port),
      REDIS_URL: redis.url,
      REDIS_PREFIX: prefix,
      WS_HISTORY_ROOMS: 'channel:*',
      WS_PUBLISH_PROXY_URL: `${backend.url}/publish`,
      WS_PUBLISH_PROXY_ROOMS: 'channel:*',
      WS_BACKEND_KEY: BACKEND_KEY,
      // Above HOLD_MS: a held send is answered, not timed out, on whichever node asks.
      WS_BACKEND_TIMEOUT: '10000',
      WS_ROOM_ACCESS: 'open',
      WS_DRAIN_TIMEOUT: '2',
    });
    // Two nodes; the config's third server points at a port nobody listens on (DOWN throughout).
    const nodes: NodeProcess[] = [await startNodeProcess(env(ports[0]!)), await startNodeProcess(env(ports[1]!))];
    const lb = await startHaproxy(ports);
    const room = `channel:${randomUUID().slice(0, 8)}`;

    const sender = await openPage();
    await startChat(sender, lb.url, token('ana'), room);
    const senderNode = (await recordOf(sender)).nodes[0] as string;
    const homeIndex = nodes.findIndex((n) => n.nodeId === senderNode);
    expect(homeIndex).toBeGreaterThanOrEqual(0);
    const other = nodes[1 - homeIndex]!;
    const receiver = await openPage();
    await startChat(receiver, other.url, token('ben'), room);

    const received = () => recordOf(receiver).then((r) => r.events as Array<{ user_id?: string; sender: string; data: { n: number; message_id: number; text: string } }>);
    // Answered one at a time: the backend never has more than one of these at once.
    for (let n = 1; n <= BEFORE; n++) await sender.evaluate((n) => (window as unknown as PageGlobals).chat.send(n, `hello ${n}`), n);
    await waitFor('the first messages at the other page', async () => (await received()).length === BEFORE, 10_000);
    const inFlightBefore = (await backend.stats()).max_in_flight;

    // Held at the backend: all four there at once, then the sender's node drains (its 1012 comes ~0.2 s in, the answers 2.5 s in).
    await sender.evaluate(
      ({ from, count, hold }) => {
        const chat = (window as unknown as PageGlobals).chat;
        for (let n = from; n < from + count; n++) void chat.send(n, `slow:${hold}`);
      },
      { from: BEFORE + 1, count: HELD, hold: HOLD_MS },
    );
    await waitFor('the held sends at the backend', async () => (await backend.stats()).max_in_flight >= HELD, 10_000);
    await nodes[homeIndex]!.stop();
    nodes[homeIndex] = await startNodeProcess(env(ports[homeIndex]!));
    await waitFor('every held send settled', async () => Object.keys((await recordOf(sender)).outcomes).length === BEFORE + HELD, 20_000);
    for (let n = BEFORE + HELD + 1; n <= TOTAL; n++) await sender.evaluate((n) => (window as unknown as PageGlobals).chat.send(n, `after ${n}`), n);
    await waitFor('every message at the other page', async () => (await received()).length >= TOTAL, 10_000).catch(() => {});

    const sent = await recordOf(sender);
    const got = await recordOf(receiver);
    const stats = await backend.stats();
    const outcomes = Array.from({ length: TOTAL }, (_, i) => (sent.outcomes[i + 1] ?? []) as Array<{ data?: { message_id?: number }; duplicate?: boolean; error?: string }>);
    const resolvedIds = outcomes.map((o) => o[0]?.data?.message_id);
    const events = got.events as Array<{ user_id?: string; sender: string; data: { n: number; message_id: number } }>;
    const tries = Object.values(sent.tries as Record<string, number>);
    const counts = {
      sends: TOTAL,
      settled_once: outcomes.filter((o) => o.length === 1).length,
      resolved: outcomes.filter((o) => o.length === 1 && o[0]!.error === undefined).length,
      rows: stats.rows,
      distinct_message_ids: new Set(resolvedIds.filter((id) => typeof id === 'number')).size,
      received: events.length,
      duplicated: events.length - new Set(events.map((e) => e.data.n)).size,
      wire_duplicated: Object.values(got.frames as Record<string, number>).reduce((sum, times) => sum + times - 1, 0),
      in_order: events.every((e, i) => e.data.n === i + 1),
      with_stored_id: events.filter((e) => e.data.message_id === resolvedIds[e.data.n - 1]).length,
      from_sender: events.filter((e) => e.user_id === 'ana' && e.sender === 'ana').length,
      resent: tries.filter((t) => t > 1).length,
    };
    console.log(
      JSON.stringify({
        scenario: 'chat-browser-restart',
        chromium: browser.version(),
        ...counts,
        send_frames: tries.reduce((a, b) => a + b, 0),
        duplicate_replies: outcomes.filter((o) => o[0]?.duplicate === true).length,
        backend_max_in_flight_before: inFlightBefore,
        sender_nodes: sent.nodes.length,
        sender_close_codes: sent.codes,
        receiver_nodes: got.nodes.length,
      }),
    );
    expect(inFlightBefore).toBe(1);
    expect(sent.codes).toContain(1012);
    expect(counts).toEqual({
      sends: TOTAL,
      settled_once: TOTAL,
      resolved: TOTAL,
      rows: TOTAL,
      distinct_message_ids: TOTAL,
      received: TOTAL,
      duplicated: 0,
      wire_duplicated: 0,
      in_order: true,
      with_stored_id: TOTAL,
      from_sender: TOTAL,
      resent: HELD,
    });
    await Promise.all([sender, receiver].map((p) => p.evaluate(() => (window as unknown as PageGlobals).chat.client.close())));
    await Promise.all([sender.close(), receiver.close()]);
  });
});
