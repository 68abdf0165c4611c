/**
 * The real client address: X-Forwarded-For only from trusted proxies; the per-address connection
 * cap and the failed-authentication limiter key on it. (The same through the shipped HAProxy
 * config is in lb-client-address.test.ts.)
 */
import { afterAll, describe, expect, it } from 'vitest';
import { connect, open, token } from '../helpers/client.js';
import { startTestNode, stopAllNodes } from '../helpers/node.js';

afterAll(stopAllNodes);

const from = (address: string) => ({ headers: { 'X-Forwarded-For': address } });

describe('WS_MAX_CONNECTIONS_PER_IP', () => {
  it('caps connections per socket address when no proxy is trusted; a spoofed X-Forwarded-For changes nothing', async () => {
    const node = await startTestNode({ WS_MAX_CONNECTIONS_PER_IP: '2' });
    await connect(node.url, 'u1', {}, from('198.51.100.1'));
    await connect(node.url, 'u2', {}, from('198.51.100.2'));
    const third = open(node.url, token('u3'), from('198.51.100.3'));
    expect(await third.closed).toEqual({ code: 4429, reason: 'too many connections from this address' });
    expect(await node.metric('wsedge_auth_failures_total', { reason: 'ip_limit' })).toBe(1);
    const rejected = node.logs.find((l) => l['event'] === 'connection_rejected');
    expect(rejected).toMatchObject({ reason: 'ip_limit', remote: '127.0.0.1', user_id: 'u3' });
  });

  it('counts each forwarded client separately behind a trusted proxy, and frees the slot on close', async () => {
    const node = await startTestNode({ WS_MAX_CONNECTIONS_PER_IP: '2', WS_TRUSTED_PROXIES: '127.0.0.1' });
    const a1 = await connect(node.url, 'u1', {}, from('198.51.100.1'));
    await connect(node.url, 'u2', {}, from('198.51.100.1'));
    expect(await open(node.url, token('u3'), from('198.51.100.1')).closed).toEqual({ code: 4429, reason: 'too many connections from this address' });
    await connect(node.url, 'u4', {}, from('198.51.100.2'));
    a1.close();
    await a1.closed;
    await connect(node.url, 'u5', {}, from('198.51.100.1'));
    const opened = node.logs.filter((l) => l['event'] === 'connection_open').map((l) => l['remote']);
    expect(opened).toEqual(['198.51.100.1', '198.51.100.1', '198.51.100.2', '198.51.100.1']);
  });
});

/** 'connected', the close code of a refused socket, or the HTTP status of a refused upgrade. */
const outcome = (url: string, tok: string, headers: Record<string, string>): Promise<string | number> => {
  const client = open(url, tok, { headers });
  const refusedHttp = new Promise<number>((resolve) => client.ws.once('unexpected-response', (_req, res) => resolve(res.statusCode ?? 0)));
  const connected = client.next((e) => e.type === 'connected', 5000).then(() => 'connected' as const);
  connected.catch(() => {});
  return Promise.race([connected, refusedHttp, client.closed.then((c) => c.code)]).finally(() => client.close());
};

describe('WS_AUTH_FAILURE_LIMIT', () => {
  it('answers HTTP 429 before the upgrade once an address has failed too often; other addresses are unaffected', async () => {
    const node = await startTestNode({ WS_AUTH_FAILURE_LIMIT: '5', WS_TRUSTED_PROXIES: '127.0.0.1' });
    const attacker = from('203.0.113.66');
    for (let i = 0; i < 5; i++) expect((await open(node.url, 'bad-token', attacker).closed).code).toBe(4401);
    // Blocked. A flood of 30 at once uses up its trial verifications (10 a second, limits.ts): the
    // rest get HTTP 429 without any verification work.
    const flood = await Promise.all(Array.from({ length: 30 }, () => outcome(node.url, 'bad-token', attacker.headers)));
    const refusedHttp = flood.filter((f) => f === 429).length;
    expect(refusedHttp).toBeGreaterThanOrEqual(15);
    expect(flood.filter((f) => f !== 429 && f !== 4401)).toEqual([]);
    expect(await node.metric('wsedge_upgrades_refused_total', { reason: 'auth_failures' })).toBe(refusedHttp);
    expect(await node.metric('wsedge_auth_failures_total', { reason: 'token_invalid' })).toBe(5 + 30 - refusedHttp);
    await connect(node.url, 'alice', {}, from('198.51.100.1'));
  });

  it('keeps letting valid users in behind an address an attacker keeps blocked with a bad upgrade every 250 ms', { timeout: 20_000 }, async () => {
    const node = await startTestNode({ WS_AUTH_FAILURE_LIMIT: '5', WS_TRUSTED_PROXIES: '127.0.0.1' });
    const shared = from('203.0.113.7'); // a carrier NAT: the attacker and the users behind it
    for (let i = 0; i < 5; i++) await open(node.url, 'bad-token', shared).closed;
    let attacking = true;
    const attacks: Array<string | number> = [];
    const attacker = (async () => {
      while (attacking) {
        attacks.push(await outcome(node.url, 'bad-token', shared.headers));
        await new Promise((r) => setTimeout(r, 250));
      }
    })();
    const users: Array<string | number> = [];
    for (let i = 0; i < 20; i++) {
      users.push(await outcome(node.url, token(`user-${i}`), shared.headers));
      await new Promise((r) => setTimeout(r, 150));
    }
    attacking = false;
    await attacker;
    const admitted = users.filter((s) => s === 'connected').length;
    console.log(JSON.stringify({ scenario: 'shared_address_lockout', valid_attempts: users.length, valid_admitted: admitted, attacker_attempts: attacks.length, attacker_statuses: [...new Set(attacks)] }));
    expect(admitted).toBe(20);
    // The attacker stays blocked and learns nothing new: each of its upgrades was refused.
    expect(attacks.length).toBeGreaterThanOrEqual(8);
    expect(attacks.filter((a) => a === 'connected')).toEqual([]);
    expect(await node.metric('wsedge_connections_opened_total')).toBe(20);
  });

  it('does not count origin refusals or user-limit refusals as failed authentications', async () => {
    const node = await startTestNode({ WS_AUTH_FAILURE_LIMIT: '2', WS_MAX_CONNECTIONS_PER_USER: '1', WS_ALLOWED_ORIGINS: 'https://app.example' });
    await connect(node.url, 'alice');
    for (let i = 0; i < 3; i++) expect((await open(node.url, token('alice')).closed).code).toBe(4429);
    for (let i = 0; i < 3; i++) expect((await open(node.url, token('bob'), { headers: { Origin: 'https://evil.example' } }).closed).code).toBe(4403);
    await connect(node.url, 'carol');
  });
});
