/**
 * Heartbeat through uWS (idleTimeout + sendPingsAutomatically) with the shortest interval uWS
 * allows. uWS timers tick every 4 s, so every bound here carries 4 s of granularity.
 */
import { afterAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { connect, join, open, token } from '../helpers/client.js';
import { startTestNode, stopAllNodes } from '../helpers/node.js';

afterAll(stopAllNodes);

const INTERVAL_MS = 8_000;
const GRANULARITY_MS = 4_000;

describe('heartbeat (WS_HEARTBEAT_INTERVAL=8)', () => {
  it(
    'pings every client, drops the ones that do not answer within two intervals, keeps the one that does',
    async () => {
      const node = await startTestNode({ WS_HEARTBEAT_INTERVAL: '8' });
      const t0 = Date.now();
      const pings = { silent: [] as number[], busy: [] as number[], answering: [] as number[] };
      const withPings = async (name: keyof typeof pings, autoPong: boolean) => {
        const client = await connect(node.url, name, {}, { autoPong });
        client.ws.on('ping', () => pings[name].push(Date.now() - t0));
        return client;
      };
      // Never answers pings (autoPong: false) and sends nothing.
      const silent = await withPings('silent', false);
      // Silent too, but the server keeps sending to it: outbound traffic must not keep it alive.
      const busy = await withPings('busy', false);
      const answering = await withPings('answering', true);
      await join(busy, 'project:busy');
      const feed = setInterval(() => node.events.publish('project:busy', 'project.updated', { at: Date.now() - t0 }), 500);

      const [silentClosed, busyClosed] = await Promise.all([silent.closed, busy.closed]).finally(() => clearInterval(feed));
      const closedAt = Date.now() - t0;
      expect(closedAt).toBeLessThanOrEqual(2 * INTERVAL_MS);
      // Each was pinged within one interval (plus timer granularity) and given time to answer.
      for (const name of ['silent', 'busy'] as const) {
        expect(pings[name].length).toBeGreaterThanOrEqual(1);
        expect(pings[name][0]).toBeLessThanOrEqual(INTERVAL_MS + GRANULARITY_MS);
      }
      // uWS cuts an idle socket without a close frame.
      expect(silentClosed.code).toBe(1006);
      expect(busyClosed.code).toBe(1006);
      expect(busy.received.filter((e) => e.type === 'project.updated').length).toBeGreaterThan(0);
      await expect.poll(() => node.connections()).toBe(1);
      expect(await node.metric('wsedge_connections_closed_total', { code: '1006' })).toBe(2);

      // The answering client stays open over the same two intervals and is still served.
      const rest = 2 * INTERVAL_MS - (Date.now() - t0);
      if (rest > 0) await new Promise((r) => setTimeout(r, rest));
      expect(answering.ws.readyState).toBe(WebSocket.OPEN);
      expect(pings.answering[0]).toBeLessThanOrEqual(INTERVAL_MS + GRANULARITY_MS);
      // Pinged again and again, and answered every time.
      expect(pings.answering.length).toBeGreaterThanOrEqual(2);
      answering.send({ type: 'ping', id: 'app-ping' });
      expect(await answering.next((e) => e.id === 'app-ping')).toMatchObject({ type: 'pong' });
      expect(node.connections()).toBe(1);
    },
    2 * INTERVAL_MS + 10_000,
  );

  it('announces the interval in the connected event', async () => {
    const node = await startTestNode({ WS_HEARTBEAT_INTERVAL: '8' });
    const client = open(node.url, token('alice'));
    expect((await client.next((e) => e.type === 'connected')).data.heartbeat_interval).toBe(8);
    client.close();
  });
});
