/**
 * Authentication at the upgrade and during the connection: every refusal is a socket that opens and
 * closes at once with a code the client can read, counted by reason and logged once at warn without
 * the token; token expiry closes by timer; refresh_token extends a connection or closes it.
 */
import { createHmac } from 'node:crypto';
import { createSigner } from 'fast-jwt';
import { afterAll, describe, expect, it } from 'vitest';
import { connect, join, open, token, upgradeStatus, type TestClient } from '../helpers/client.js';
import { startTestNode, stopAllNodes, TEST_SECRET, type TestNode } from '../helpers/node.js';

afterAll(stopAllNodes);

const base64url = (value: unknown): string => Buffer.from(JSON.stringify(value)).toString('base64url');
const nowSeconds = (): number => Math.floor(Date.now() / 1000);

/** A token signed with the test secret and an arbitrary payload (for claims signToken cannot set). */
function signRaw(payload: Record<string, unknown>, key = TEST_SECRET): string {
  return createSigner({ key, algorithm: 'HS256' })(payload);
}

/** The `exp` claim of a token, in epoch seconds. */
function expOf(tok: string): number {
  return (JSON.parse(Buffer.from(tok.split('.')[1]!, 'base64url').toString()) as { exp: number }).exp;
}

interface Refusal {
  readonly code: number;
  readonly message: string;
  /** Label of wsedge_auth_failures_total. */
  readonly reason: string;
}

const MISSING: Refusal = { code: 4401, message: 'missing token', reason: 'token_missing' };
const FORMAT: Refusal = { code: 4401, message: 'invalid token: format', reason: 'token_invalid' };
/** `invalid token: <check>`: the check that failed, in the close reason and the log. */
const failed = (check: string): Refusal => ({ code: 4401, message: `invalid token: ${check}`, reason: 'token_invalid' });
const EXPIRED: Refusal = { code: 4401, message: 'token expired', reason: 'token_expired' };
const AMBIGUOUS: Refusal = { code: 4401, message: 'more than one token in the request', reason: 'token_ambiguous' };
const ORIGIN: Refusal = { code: 4403, message: 'origin not allowed', reason: 'origin' };

/** Warn lines the node logged for refused connections. */
const rejectionLogs = (node: TestNode) => node.logs.filter((l) => l['event'] === 'connection_rejected');

/**
 * Asserts one refusal end to end: close code and reason, no `connected`, one count under the
 * reason, one warn line, and no trace of `secret` (the token) in any log line.
 */
async function expectRefused(node: TestNode, client: TestClient, refusal: Refusal, secret?: string): Promise<void> {
  expect(await closedWithin(client)).toEqual({ code: refusal.code, reason: refusal.message });
  expect(client.received.filter((e) => e.type === 'connected')).toEqual([]);
  expect(await node.metric('wsedge_auth_failures_total', { reason: refusal.reason })).toBe(1);
  expect(await node.metric('wsedge_connections_opened_total')).toBe(0);
  expect(await node.metric('wsedge_connections')).toBe(0);
  const logs = rejectionLogs(node);
  expect(logs).toHaveLength(1);
  expect(logs[0]).toMatchObject({ level: 'warn', event: 'connection_rejected', reason: refusal.reason, code: refusal.code, close_reason: refusal.message });
  expect(typeof logs[0]!['remote']).toBe('string');
  if (secret !== undefined) expectNotLogged(node, secret);
}

/** The close, or a failure naming what arrived instead (an accepted socket stays open). */
function closedWithin(client: TestClient, ms = 3000): Promise<{ code: number; reason: string }> {
  return Promise.race([
    client.closed,
    new Promise<never>((_, reject) =>
      setTimeout(() => {
        client.close();
        reject(new Error(`not closed within ${ms} ms; received: ${JSON.stringify(client.received).slice(0, 300)}`));
      }, ms),
    ),
  ]);
}

/** Neither the whole token nor its signature appears in any log line. */
function expectNotLogged(node: TestNode, tok: string): void {
  const text = JSON.stringify(node.logs);
  expect(text).not.toContain(tok);
  const signature = tok.split('.')[2];
  if (signature) expect(text).not.toContain(signature);
}

describe('refused at the upgrade', () => {
  it('closes 4401 "missing token" without a token', async () => {
    const node = await startTestNode();
    await expectRefused(node, open(node.url, undefined), MISSING);
  });

  it('closes 4401 "missing token" for an empty token parameter', async () => {
    const node = await startTestNode();
    await expectRefused(node, open(node.url, undefined, { query: '?token=' }), MISSING);
  });

  it('takes the bearer subprotocol when the token parameter is empty (an empty one counts as missing)', async () => {
    const node = await startTestNode();
    const client = open(node.url, undefined, { query: '?token=', protocols: ['wsedge.v1', `wsedge.bearer.${token('alice')}`] });
    expect(await client.next((e) => e.type === 'connected')).toMatchObject({ data: { user_id: 'alice' } });
    client.close();
  });

  it('closes 4401 "token longer than 8192 characters" for a 12 KB token, before verifying it', async () => {
    const node = await startTestNode();
    const long = signRaw({ sub: 'alice', rooms: ['*'], exp: nowSeconds() + 3600, pad: 'x'.repeat(9000) });
    expect(long.length).toBeGreaterThan(12_000);
    await expectRefused(node, open(node.url, long), { code: 4401, message: 'token longer than 8192 characters', reason: 'token_invalid' }, long);
  });

  it('connects with a token of 8000 characters (the official build alone would refuse its headers, 4 KiB, with 431)', async () => {
    const node = await startTestNode();
    const rooms = Array.from({ length: 420 }, (_, i) => `task:${100_000 + i}`);
    const big = signRaw({ sub: 'alice', rooms, exp: nowSeconds() + 3600 });
    expect(big.length).toBeGreaterThan(7000);
    expect(big.length).toBeLessThanOrEqual(8192);
    for (const client of [open(node.url, big), open(node.url, undefined, { protocols: ['wsedge.v1', `wsedge.bearer.${big}`] })]) {
      expect(await client.next((e) => e.type === 'connected')).toMatchObject({ data: { user_id: 'alice' } });
      client.close();
    }
  });

  it('refuses headers past UWS_HTTP_MAX_HEADERS_SIZE (16 KiB): HTTP 431 on the official build, which checks it; the legacy build lets them through to the token check', async () => {
    const node = await startTestNode();
    const huge = signRaw({ sub: 'alice', rooms: ['*'], exp: nowSeconds() + 3600, pad: 'x'.repeat(30_000) });
    if (node.uws.source === 'uWebSockets.js') {
      expect(await upgradeStatus(node.url, huge)).toBe(431);
      expect(await node.metric('wsedge_auth_failures_total', { reason: 'token_invalid' })).toBe(0);
    } else {
      await expectRefused(node, open(node.url, huge), { code: 4401, message: 'token longer than 8192 characters', reason: 'token_invalid' }, huge);
    }
  });

  it('closes 4401 for an exp after year 9999, and refresh_token with one closes the same way', async () => {
    const node = await startTestNode();
    const far = signRaw({ sub: 'alice', rooms: ['*'], exp: 1e308 });
    const FAR: Refusal = { code: 4401, message: 'invalid token: exp after year 9999', reason: 'token_invalid' };
    await expectRefused(node, open(node.url, far), FAR, far);
    const client = await connect(node.url, 'alice');
    client.send({ type: 'refresh_token', token: far, id: 'far' });
    expect(await closedWithin(client)).toEqual({ code: 4401, reason: FAR.message });
    expect(client.received.filter((e) => e.type === 'error')).toEqual([]);
  });

  it('closes 4401 "invalid token: format" for a token that is not a JWT, and logs the check, never the token', async () => {
    const node = await startTestNode();
    const bad = 'not-a-jwt-at-all';
    await expectRefused(node, open(node.url, bad), FORMAT, bad);
  });

  it('closes 4401 "invalid token: signature" for a token signed with another secret', async () => {
    const node = await startTestNode();
    const forged = token('alice', { secret: 'another-secret-that-is-long-enough-for-hs256-xyz' });
    await expectRefused(node, open(node.url, forged), failed('signature'), forged);
  });

  it('closes 4401 "invalid token: algorithm" for an `alg: none` token', async () => {
    const node = await startTestNode();
    const unsigned = `${base64url({ alg: 'none', typ: 'JWT' })}.${base64url({ sub: 'alice', rooms: ['*'], exp: nowSeconds() + 3600 })}.`;
    await expectRefused(node, open(node.url, unsigned), failed('algorithm'), unsigned);
  });

  it('closes 4401 "invalid token: algorithm" for an HS512 token when JWT_ALGORITHMS=HS256, and accepts HS256', async () => {
    const node = await startTestNode({ JWT_ALGORITHMS: 'HS256' });
    const hs512 = token('alice', { algorithm: 'HS512' });
    await expectRefused(node, open(node.url, hs512), failed('algorithm'), hs512);
    const ok = await connect(node.url, 'alice', { algorithm: 'HS256' });
    ok.close();
  });

  it('closes 4401 "token expired" for an expired token', async () => {
    const node = await startTestNode({ JWT_CLOCK_TOLERANCE: '0' });
    const expired = signRaw({ sub: 'alice', rooms: ['*'], iat: nowSeconds() - 120, exp: nowSeconds() - 60 });
    await expectRefused(node, open(node.url, expired), EXPIRED, expired);
  });

  it('closes 4401 "invalid token: missing exp" for a token without exp', async () => {
    const node = await startTestNode();
    const forever = signRaw({ sub: 'alice', rooms: ['*'] });
    await expectRefused(node, open(node.url, forever), failed('missing exp'), forever);
  });

  it('closes 4401 "invalid token: missing sub" for a token without sub', async () => {
    const node = await startTestNode();
    const anonymous = signRaw({ rooms: ['*'], exp: nowSeconds() + 3600 });
    await expectRefused(node, open(node.url, anonymous), failed('missing sub'), anonymous);
  });

  it('closes 4401 "invalid token: nbf" for a token not valid yet', async () => {
    const node = await startTestNode();
    const early = signRaw({ sub: 'alice', rooms: ['*'], nbf: nowSeconds() + 120, exp: nowSeconds() + 3600 });
    await expectRefused(node, open(node.url, early), failed('nbf'), early);
  });

  it('closes 4401 "invalid token: exp must be a number" for a string exp', async () => {
    const node = await startTestNode();
    // Signed by hand: fast-jwt's signer refuses such an exp.
    const input = `${base64url({ alg: 'HS256', typ: 'JWT' })}.${base64url({ sub: 'alice', rooms: ['*'], exp: 'tomorrow' })}`;
    const odd = `${input}.${createHmac('sha256', TEST_SECRET).update(input).digest('base64url')}`;
    await expectRefused(node, open(node.url, odd), failed('exp must be a number'), odd);
  });

  describe('with JWT_ISSUER and JWT_AUDIENCE', () => {
    const env = { JWT_ISSUER: 'https://auth.example.com', JWT_AUDIENCE: 'ws-edge' };

    it('accepts the configured iss and aud', async () => {
      const node = await startTestNode(env);
      const client = await connect(node.url, 'alice', { issuer: env.JWT_ISSUER, audience: env.JWT_AUDIENCE });
      client.close();
    });

    it('closes 4401 "invalid token: iss" for a wrong iss', async () => {
      const node = await startTestNode(env);
      const tok = token('alice', { issuer: 'https://evil.example.com', audience: env.JWT_AUDIENCE });
      await expectRefused(node, open(node.url, tok), failed('iss'), tok);
    });

    it('closes 4401 "invalid token: aud" for a wrong aud', async () => {
      const node = await startTestNode(env);
      const tok = token('alice', { issuer: env.JWT_ISSUER, audience: 'another-service' });
      await expectRefused(node, open(node.url, tok), failed('aud'), tok);
    });

    it('closes 4401 for an iss that only matches as a pattern', async () => {
      const node = await startTestNode(env);
      const tok = token('alice', { issuer: 'https://authXexample.com', audience: env.JWT_AUDIENCE });
      await expectRefused(node, open(node.url, tok), failed('iss'), tok);
    });

    it('closes 4401 "invalid token: missing iss" for a token without iss', async () => {
      const node = await startTestNode(env);
      const tok = token('alice', { audience: env.JWT_AUDIENCE });
      await expectRefused(node, open(node.url, tok), failed('missing iss'), tok);
    });

    it('closes 4401 "invalid token: missing aud" for a token without aud', async () => {
      const node = await startTestNode(env);
      const tok = token('alice', { issuer: env.JWT_ISSUER });
      await expectRefused(node, open(node.url, tok), failed('missing aud'), tok);
    });
  });

  const SUB: Refusal = failed('sub must be a string of 1-64 [A-Za-z0-9_-]');

  it('closes 4401 "invalid token: sub must be a string ..." for a sub outside [A-Za-z0-9_-]', async () => {
    const node = await startTestNode();
    const tok = token('alice:admin');
    await expectRefused(node, open(node.url, tok), SUB, tok);
  });

  it('closes 4401 "invalid token: sub must be a string ..." for a numeric sub (a backend that forgot str(user.id))', async () => {
    const node = await startTestNode();
    const tok = signRaw({ sub: 42, rooms: ['*'], exp: nowSeconds() + 3600 });
    await expectRefused(node, open(node.url, tok), SUB, tok);
  });

  describe('with WS_ALLOWED_ORIGINS', () => {
    const env = { WS_ALLOWED_ORIGINS: 'https://app.example.com, https://admin.example.com' };

    it('closes 4403 for an origin not in the list', async () => {
      const node = await startTestNode(env);
      const tok = token('alice');
      await expectRefused(node, open(node.url, tok, { headers: { Origin: 'https://evil.example.com' } }), ORIGIN, tok);
    });

    it('accepts a listed origin', async () => {
      const node = await startTestNode(env);
      const client = await connect(node.url, 'alice', {}, { headers: { Origin: 'https://admin.example.com' } });
      client.close();
    });

    it('accepts a request without Origin (non-browser client)', async () => {
      const node = await startTestNode(env);
      const client = await connect(node.url, 'alice');
      client.close();
      expect(await node.metric('wsedge_auth_failures_total', { reason: 'origin' })).toBe(0);
    });
  });

  describe('token in Sec-WebSocket-Protocol', () => {
    it('accepts wsedge.bearer.<token> next to wsedge.v1 and answers wsedge.v1', async () => {
      const node = await startTestNode();
      const tok = token('alice');
      const client = open(node.url, undefined, { protocols: ['wsedge.v1', `wsedge.bearer.${tok}`] });
      const connected = await client.next((e) => e.type === 'connected');
      expect(connected.data.user_id).toBe('alice');
      expect(client.ws.protocol).toBe('wsedge.v1');
      expect(await node.metric('wsedge_connections')).toBe(1);
      expectNotLogged(node, tok);
      client.close();
    });

    it('closes 4401 when the token is in both the query and the subprotocol', async () => {
      const node = await startTestNode();
      const tok = token('alice');
      const client = open(node.url, tok, { protocols: ['wsedge.v1', `wsedge.bearer.${tok}`] });
      await expectRefused(node, client, AMBIGUOUS, tok);
    });

    it('closes 4401 for two bearer subprotocols', async () => {
      const node = await startTestNode();
      const tok = token('alice');
      const client = open(node.url, undefined, { protocols: ['wsedge.v1', `wsedge.bearer.${tok}`, `wsedge.bearer.${token('bob')}`] });
      await expectRefused(node, client, AMBIGUOUS, tok);
    });

    it('refuses a bearer without wsedge.v1: counted and logged once as reason "subprotocol"', async () => {
      const node = await startTestNode();
      const tok = token('alice');
      const client = open(node.url, undefined, { protocols: [`wsedge.bearer.${tok}`] });
      await closedWithin(client);
      expect(client.received.filter((e) => e.type === 'connected')).toEqual([]);
      expect(await node.metric('wsedge_auth_failures_total', { reason: 'subprotocol' })).toBe(1);
      expect(await node.metric('wsedge_connections_opened_total')).toBe(0);
      expect(rejectionLogs(node)).toHaveLength(1);
      expect(rejectionLogs(node)[0]).toMatchObject({ level: 'warn', reason: 'subprotocol', code: 4401 });
      expectNotLogged(node, tok);
    });

    it('a client that offered only the bearer subprotocol fails the handshake; the refusal is counted and logged', async () => {
      // Answering its only offered protocol would echo the token in a response header, so the
      // server answers none and the client sees a failed handshake (documented in WEBSOCKET_API.md).
      const node = await startTestNode();
      const tok = token('alice');
      const client = open(node.url, undefined, { protocols: [`wsedge.bearer.${tok}`] });
      expect((await closedWithin(client)).code).toBe(1006);
      expect(await node.metric('wsedge_auth_failures_total', { reason: 'subprotocol' })).toBe(1);
      expect(node.logs.filter((l) => l['event'] === 'connection_rejected' && l['reason'] === 'subprotocol')).toHaveLength(1);
      expectNotLogged(node, tok);
    });

    it('a refused client that offered a foreign subprotocol gets it answered and reads the close code', async () => {
      const node = await startTestNode();
      const client = open(node.url, 'not-a-jwt', { protocols: ['chat'] });
      expect(await closedWithin(client)).toEqual({ code: 4401, reason: 'invalid token: format' });
      expect(client.ws.protocol).toBe('chat');
    });
  });

  describe('token in an Authorization: Bearer header (non-browser clients)', () => {
    it('connects with the token in the header alone, and never logs it', async () => {
      const node = await startTestNode();
      const tok = token('alice');
      const client = open(node.url, undefined, { headers: { Authorization: `Bearer ${tok}` } });
      expect(await client.next((e) => e.type === 'connected')).toMatchObject({ data: { user_id: 'alice' } });
      expect(client.ws.protocol).toBe('');
      expectNotLogged(node, tok);
      client.close();
    });

    it('answers wsedge.v1 when offered next to the header', async () => {
      const node = await startTestNode();
      const client = open(node.url, undefined, { protocols: ['wsedge.v1'], headers: { Authorization: `Bearer ${token('alice')}` } });
      await client.next((e) => e.type === 'connected');
      expect(client.ws.protocol).toBe('wsedge.v1');
      client.close();
    });

    it('closes 4401 "more than one token in the request" for a header token next to a query token', async () => {
      const node = await startTestNode();
      const tok = token('alice');
      await expectRefused(node, open(node.url, tok, { headers: { Authorization: `Bearer ${tok}` } }), AMBIGUOUS, tok);
    });

    it('closes 4401 "more than one token in the request" for a header token next to a bearer subprotocol', async () => {
      const node = await startTestNode();
      const tok = token('alice');
      const client = open(node.url, undefined, { protocols: ['wsedge.v1', `wsedge.bearer.${tok}`], headers: { Authorization: `Bearer ${token('bob')}` } });
      await expectRefused(node, client, AMBIGUOUS, tok);
    });

    it('names the failed check for a header token too, and ignores other schemes', async () => {
      const node = await startTestNode();
      const forged = token('alice', { secret: 'another-secret-that-is-long-enough-for-hs256-xyz' });
      await expectRefused(node, open(node.url, undefined, { headers: { Authorization: `Bearer ${forged}` } }), failed('signature'), forged);
      const basic = open(node.url, undefined, { headers: { Authorization: 'Basic YWxpY2U6c2VjcmV0' } });
      expect(await closedWithin(basic)).toEqual({ code: 4401, reason: 'missing token' });
    });
  });

  it('closes 4401 for two token query parameters', async () => {
    const node = await startTestNode();
    const first = token('alice');
    const second = token('bob');
    const client = open(node.url, undefined, { query: `?token=${first}&token=${second}` });
    await expectRefused(node, client, AMBIGUOUS, first);
    expectNotLogged(node, second);
  });
});

describe('token expiry during the connection', () => {
  it('closes 4401 "token expired" at exp by timer, with no client traffic', async () => {
    const node = await startTestNode({ JWT_CLOCK_TOLERANCE: '0' });
    const tok = token('alice', { ttlSeconds: 2 });
    const client = open(node.url, tok);
    await client.next((e) => e.type === 'connected');
    const closedAt = await Promise.race([
      client.closed.then((c) => ({ ...c, at: Date.now() })),
      new Promise<never>((_, reject) => setTimeout(() => reject(new Error('not closed within 5 s')), 5000)),
    ]);
    expect({ code: closedAt.code, reason: closedAt.reason }).toEqual({ code: 4401, reason: 'token expired' });
    // Not before exp; within the sweep granularity (1 s) plus slack after it.
    expect(closedAt.at).toBeGreaterThanOrEqual(expOf(tok) * 1000);
    expect(closedAt.at).toBeLessThan(expOf(tok) * 1000 + 2500);
    expect(await node.metric('wsedge_policy_closes_total', { reason: 'token_expired' })).toBe(1);
    expect(await node.metric('wsedge_connections_closed_total', { code: '4401' })).toBe(1);
    expect(await node.metric('wsedge_connections')).toBe(0);
    // The verifier cache (which saw this token valid) must not outlive exp.
    const again = open(node.url, tok);
    expect(await closedWithin(again)).toEqual({ code: 4401, reason: 'token expired' });
    expect(again.received.filter((e) => e.type === 'connected')).toEqual([]);
    expect(await node.metric('wsedge_auth_failures_total', { reason: 'token_expired' })).toBe(1);
    expectNotLogged(node, tok);
  });

  it('refresh_token with a newer token for the same sub answers token_refreshed and keeps the socket past the old exp', async () => {
    const node = await startTestNode({ JWT_CLOCK_TOLERANCE: '0' });
    const old = token('alice', { ttlSeconds: 2 });
    const client = open(node.url, old);
    await client.next((e) => e.type === 'connected');
    const fresh = token('alice', { ttlSeconds: 3600 });
    client.send({ type: 'refresh_token', token: fresh, id: 'r1' });
    const reply = await client.next((e) => e.id === 'r1');
    expect(reply).toEqual({
      type: 'token_refreshed',
      id: 'r1',
      data: { expires_at: new Date(expOf(fresh) * 1000).toISOString() },
      timestamp: expect.any(String),
    });
    // Wait past the old exp plus the sweep period: the socket must still be open.
    const waitMs = expOf(old) * 1000 + 2000 - Date.now();
    const early = await Promise.race([client.closed, new Promise<undefined>((r) => setTimeout(() => r(undefined), waitMs))]);
    expect(early).toBeUndefined();
    client.send({ type: 'ping', id: 'still-here' });
    expect(await client.next((e) => e.id === 'still-here')).toMatchObject({ type: 'pong' });
    expect(await node.metric('wsedge_policy_closes_total', { reason: 'token_expired' })).toBe(0);
    expectNotLogged(node, fresh);
    client.close();
  });

  it('refresh_token with a bad token closes 4401 "invalid token: signature"', async () => {
    const node = await startTestNode();
    const client = await connect(node.url, 'alice');
    const forged = token('alice', { secret: 'another-secret-that-is-long-enough-for-hs256-xyz' });
    client.send({ type: 'refresh_token', token: forged });
    expect(await closedWithin(client)).toEqual({ code: 4401, reason: 'invalid token: signature' });
    expect(client.received.filter((e) => e.type === 'token_refreshed')).toEqual([]);
    expect(await node.metric('wsedge_auth_failures_total', { reason: 'token_invalid' })).toBe(1);
    expectNotLogged(node, forged);
  });

  it('refresh_token with an expired token closes 4401 "token expired"', async () => {
    const node = await startTestNode({ JWT_CLOCK_TOLERANCE: '0' });
    const client = await connect(node.url, 'alice');
    const expired = signRaw({ sub: 'alice', rooms: ['*'], iat: nowSeconds() - 120, exp: nowSeconds() - 60 });
    client.send({ type: 'refresh_token', token: expired });
    expect(await closedWithin(client)).toEqual({ code: 4401, reason: 'token expired' });
    expect(await node.metric('wsedge_auth_failures_total', { reason: 'token_expired' })).toBe(1);
  });

  it("refresh_token with another user's valid token closes 4401", async () => {
    const node = await startTestNode();
    const client = await connect(node.url, 'alice');
    const bobs = token('bob');
    client.send({ type: 'refresh_token', token: bobs });
    expect(await closedWithin(client)).toEqual({ code: 4401, reason: 'token is for another user' });
    expect(client.received.filter((e) => e.type === 'token_refreshed')).toEqual([]);
    expect(await node.metric('wsedge_auth_failures_total', { reason: 'token_invalid' })).toBe(1);
    expectNotLogged(node, bobs);
  });

  it('refresh_token with a token that expires before the current one closes 4401', async () => {
    const node = await startTestNode();
    const client = await connect(node.url, 'alice', { ttlSeconds: 3600 });
    client.send({ type: 'refresh_token', token: token('alice', { ttlSeconds: 60 }) });
    expect(await closedWithin(client)).toEqual({ code: 4401, reason: 'token expires before the current one' });
  });

  it('a refresh whose rooms claim no longer allows a joined room leaves it at once', async () => {
    const node = await startTestNode();
    const client = await connect(node.url, 'alice', { rooms: ['*'] });
    const other = await connect(node.url, 'bob');
    await join(client, 'channel:7');
    await join(client, 'project:1');
    await join(other, 'channel:7');
    client.send({ type: 'refresh_token', token: token('alice', { rooms: ['project:*'], ttlSeconds: 7200 }), id: 'r1' });
    expect(await client.next((e) => e.type === 'room_left')).toMatchObject({ type: 'room_left', room: 'channel:7', reason: 'access_revoked' });
    expect(await client.next((e) => e.type === 'token_refreshed')).toMatchObject({ id: 'r1' });
    expect(await other.next((e) => e.type === 'user_left')).toMatchObject({ room: 'channel:7', data: { user_id: 'alice' } });
    // Still in project:1, no longer in channel:7.
    await node.events.publish('channel:7', 'channel.note', { n: 1 });
    await node.events.publish('project:1', 'project.note', { n: 2 });
    expect(await client.next((e) => e.type === 'project.note')).toMatchObject({ room: 'project:1' });
    await client.expectNothing((e) => e.type === 'channel.note');
  });

  it('a refused refresh is logged once at warn as a security event (user known, no token)', async () => {
    const node = await startTestNode();
    const client = await connect(node.url, 'alice');
    const bobs = token('bob');
    client.send({ type: 'refresh_token', token: bobs });
    await closedWithin(client);
    const warns = node.logs.filter((l) => l['level'] === 'warn');
    expect(warns).toHaveLength(1);
    expect(warns[0]).toMatchObject({ reason: 'token_invalid', close_reason: 'token is for another user', user_id: 'alice' });
    expectNotLogged(node, bobs);
  });
});
