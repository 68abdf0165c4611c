/**
 * The real client address through the shipped HAProxy config: nodes trust the proxy
 * (WS_TRUSTED_PROXIES), so the per-address connection cap and the failed-authentication limiter
 * see each client's own address from X-Forwarded-For, and a spoofed header cannot escape them.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { connect, open, token } from '../helpers/client.js';
import { startHaproxy, stopAllHaproxy } from '../helpers/haproxy.js';
import { startNodeProcess, stopAllProcesses } from '../helpers/processes.js';
import { waitFor } from '../helpers/wait.js';

afterAll(async () => {
  await stopAllHaproxy();
  await stopAllProcesses();
});

describe('behind HAProxy with WS_TRUSTED_PROXIES', () => {
  /** How a bad-token upgrade was refused: the HTTP status, or the close code after the upgrade. */
  const refusal = (url: string, headers: Record<string, string>): Promise<number> => {
    const client = open(url, 'bad', { headers });
    const http = new Promise<number>((resolve) => client.ws.once('unexpected-response', (_req, res) => resolve(res.statusCode ?? 0)));
    return Promise.race([http, client.closed.then((c) => c.code)]);
  };

  it('keys the per-address cap and the auth-failure limiter on the forwarded client address', async () => {
    // One node, so every connection meets the same counters.
    const env = { WS_TRUSTED_PROXIES: '127.0.0.1', WS_MAX_CONNECTIONS_PER_IP: '2', WS_AUTH_FAILURE_LIMIT: '3' };
    const node = await startNodeProcess(env);
    const lb = await startHaproxy([node.port, node.port, node.port]);
    // HAProxy appends the peer it saw (127.0.0.1 here) to any X-Forwarded-For the client sent, so a
    // client's claimed address is the one HAProxy received from the outside: emulate distinct
    // clients by sending the header a front proxy would, and trust loopback as both hops.
    const as = (address: string) => ({ headers: { 'X-Forwarded-For': address } });

    await connect(lb.url, 'u1', {}, as('198.51.100.1'));
    await connect(lb.url, 'u2', {}, as('198.51.100.1'));
    expect(await open(lb.url, token('u3'), as('198.51.100.1')).closed).toEqual({ code: 4429, reason: 'too many connections from this address' });
    await connect(lb.url, 'u4', {}, as('198.51.100.2'));

    for (let i = 0; i < 3; i++) expect((await open(lb.url, 'bad', as('203.0.113.9')).closed).code).toBe(4401);
    // Blocked. A flood of 30 at once uses up its trial verifications (10 a second, limits.ts): the
    // rest get HTTP 429 without verification, and no other address is touched.
    const flood = await Promise.all(Array.from({ length: 30 }, () => refusal(lb.url, as('203.0.113.9').headers)));
    const refusedHttp = flood.filter((f) => f === 429).length;
    expect(refusedHttp).toBeGreaterThanOrEqual(15);
    expect(flood.filter((f) => f !== 429 && f !== 4401)).toEqual([]);
    expect(await node.metric('wsedge_upgrades_refused_total', { reason: 'auth_failures' })).toBe(refusedHttp);

    const expected = ['198.51.100.1', ...Array(3 + 30 - refusedHttp).fill('203.0.113.9')];
    const rejected = () => node.logs.filter((l) => l['event'] === 'connection_rejected').map((l) => l['remote']);
    await waitFor('every rejection in the node log', () => rejected().length >= expected.length);
    expect(rejected()).toEqual(expected);
  }, 30_000);

  it('without trusting the proxy, every client shares the proxy address and a spoofed header changes nothing', async () => {
    const node = await startNodeProcess({ WS_MAX_CONNECTIONS_PER_IP: '2' });
    const lb = await startHaproxy([node.port, node.port, node.port]);
    await connect(lb.url, 'u1', {}, { headers: { 'X-Forwarded-For': '198.51.100.1' } });
    await connect(lb.url, 'u2', {}, { headers: { 'X-Forwarded-For': '198.51.100.2' } });
    const third = open(lb.url, token('u3'), { headers: { 'X-Forwarded-For': '198.51.100.3' } });
    expect(await third.closed).toEqual({ code: 4429, reason: 'too many connections from this address' });
    // The node's stdout may reach the test after the client has seen the close.
    const rejected = await node.waitForLog((l) => l['event'] === 'connection_rejected');
    expect(rejected).toMatchObject({ remote: '127.0.0.1', reason: 'ip_limit' });
  }, 30_000);
});
