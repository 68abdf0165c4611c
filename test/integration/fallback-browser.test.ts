/// <reference lib="dom" />
/**
 * ★ A plain `EventSource` in real Chromium, no library (issue 28 item 5): a page on another origin
 * opens `new EventSource('/api/v1/ws/stream?token=...&rooms=task:a,task:b')` and nothing else.
 * Its session is closed twice while numbered events are published to both sequenced rooms without
 * pause; the browser reconnects by itself with `Last-Event-ID`, the node joins both rooms from the
 * positions in it, and every event of both rooms arrives once (counted).
 */
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { launchChromium, startPageServer, type PageServer } from '../helpers/browser.js';
import { token } from '../helpers/client.js';
import { startTestNode, stopAllNodes, type TestNode } from '../helpers/node.js';
import { lossOf } from '../helpers/numbered.js';
import { waitFor } from '../helpers/wait.js';

let browser: Browser;
let pages: PageServer;

beforeAll(async () => {
  [browser, pages] = await Promise.all([launchChromium(), startPageServer()]);
});

afterAll(async () => {
  await browser?.close();
  await pages?.stop();
  await stopAllNodes();
});

type PageGlobals = Record<string, any>;

interface Seen {
  opens: number;
  n: Record<string, number[]>;
  recovered: number;
  /** room_joined frames, first joins and rejoins. */
  joined: number;
  closed: number[];
}

const seen = (page: Page): Promise<Seen> =>
  page.evaluate(() => {
    return (window as unknown as PageGlobals).seen as Seen;
  });

describe('a plain EventSource follows two sequenced rooms across reconnects', () => {
  let node: TestNode;
  it('recovers both rooms through Last-Event-ID, 0 lost and 0 duplicated', async () => {
    node = await startTestNode({ WS_HISTORY_ROOMS: 'task:*', WS_HISTORY_SIZE: '5000', WS_HISTORY_RECOVER_MAX: '5000', LOG_LEVEL: 'info' });
    const page = await browser.newPage();
    await page.goto(pages.origin + '/');
    const url = `${node.http}/api/v1/ws/stream?token=${encodeURIComponent(token('eve'))}&rooms=task:a,task:b`;
    await page.evaluate((url) => {
      const w = window as unknown as PageGlobals;
      const seen = { opens: 0, n: { 'task:a': [], 'task:b': [] } as Record<string, number[]>, recovered: 0, joined: 0, closed: [] as number[] };
      w.seen = seen;
      const source = new EventSource(url);
      source.onopen = () => (seen.opens += 1);
      source.onmessage = (event) => {
        const message = JSON.parse(event.data);
        if (message.type === 'task.updated') seen.n[message.room]!.push(message.data.n);
        if (message.type === 'room_joined') seen.joined += 1;
        if (message.type === 'room_joined' && message.recovered === true) seen.recovered += 1;
        if (message.type === 'closed') seen.closed.push(message.code);
      };
    }, url);
    // Numbered from once both rooms are joined: a join without a position starts where the room is then.
    await waitFor('the stream opened, both rooms joined', async () => (await seen(page)).opens === 1 && (await seen(page)).joined === 2 && node.connections() === 1);

    let published = 0;
    const publishing = setInterval(() => {
      published += 1;
      node.events.publish('task:a', 'task.updated', { n: published });
      node.events.publish('task:b', 'task.updated', { n: published });
    }, 10);
    const received = async (count: number) => {
      const s = await seen(page);
      return s.n['task:a']!.length >= count && s.n['task:b']!.length >= count;
    };
    try {
      for (const round of [1, 2]) {
        await waitFor(`events before close ${round}`, () => received(round * 60), 20_000);
        node.broker.disconnectUser('eve', 4000, 'test reconnect');
        await waitFor(`reconnect ${round}`, async () => (await seen(page)).opens === round + 1, 20_000);
      }
      const target = published + 60;
      await waitFor('events after the last reconnect', () => received(target), 20_000);
    } finally {
      clearInterval(publishing);
    }
    const last = published;
    await waitFor('every event in both rooms', () => received(last), 20_000);
    const s = await seen(page);
    const a = lossOf(last, s.n['task:a']!);
    const b = lossOf(last, s.n['task:b']!);
    console.log(`plain EventSource: published ${last} per room, task:a got ${s.n['task:a']!.length} (lost ${a.lost}, duplicated ${a.duplicated}), task:b got ${s.n['task:b']!.length} (lost ${b.lost}, duplicated ${b.duplicated}), opens ${s.opens}, rooms recovered ${s.recovered}, closed codes ${s.closed.join(',')}`);
    expect({ a, b }).toEqual({ a: { lost: 0, duplicated: 0 }, b: { lost: 0, duplicated: 0 } });
    expect(s.recovered).toBe(4);
    expect(s.closed).toEqual([4000, 4000]);
    await page.close();
  }, 60_000);
});
