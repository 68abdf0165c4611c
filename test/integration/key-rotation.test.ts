/**
 * Several verification keys at once (issue 26): a JWKS served by the test over HTTP (allowed
 * outside production), rotated A -> A+B -> B while clients connect and refresh throughout; an
 * unknown-kid flood refetches at most once per interval; refused sets keep the last good one;
 * JWT_SECRET's current and previous secrets; a key file of several PEM keys. Counts are printed.
 */
import { generateKeyPairSync, randomBytes, type KeyObject } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join as joinPath } from 'node:path';
import { createSigner } from 'fast-jwt';
import { afterAll, describe, expect, it } from 'vitest';
import { open, type TestClient } from '../helpers/client.js';
import { startTestNode, stopAllNodes, type TestNode } from '../helpers/node.js';
import { waitFor } from '../helpers/wait.js';

afterAll(stopAllNodes);

interface Key {
  readonly kid: string;
  readonly privateKey: KeyObject;
  readonly jwk: Record<string, unknown>;
  readonly pem: string;
}

function ecKey(kid: string): Key {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  return { kid, privateKey, jwk: { ...publicKey.export({ format: 'jwk' }), kid, alg: 'ES256', use: 'sig' }, pem: publicKey.export({ type: 'spki', format: 'pem' }) as string };
}

function sign(key: Key, userId: string, opts: { kid?: string | null; ttlMs?: number } = {}): string {
  const kid = opts.kid === null ? undefined : (opts.kid ?? key.kid);
  return createSigner({ key: key.privateKey.export({ type: 'pkcs8', format: 'pem' }) as string, algorithm: 'ES256', expiresIn: opts.ttlMs ?? 600_000, ...(kid !== undefined && { kid }) })({ sub: userId, rooms: ['*'] });
}

/** A JWKS endpoint whose answer the test sets; counts requests. */
async function jwksServer(): Promise<{ url: string; set(body: string, status?: number, headers?: Record<string, string>): void; requests(): number; close(): void }> {
  let answer = { body: '{"keys":[]}', status: 200, headers: {} as Record<string, string> };
  let requests = 0;
  const server: Server = createServer((_req, res) => {
    requests += 1;
    res.writeHead(answer.status, { 'content-type': 'application/json', ...answer.headers });
    res.end(answer.body);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  return {
    url: `http://127.0.0.1:${port}/jwks.json`,
    set: (body, status = 200, headers = {}) => void (answer = { body, status, headers }),
    requests: () => requests,
    close: () => server.close(),
  };
}

const jwks = (...keys: Key[]): string => JSON.stringify({ keys: keys.map((k) => k.jwk) });

/** `connected`, or the close code and reason of a refused token. */
async function attempt(node: TestNode, token: string): Promise<{ client: TestClient } | { code: number; reason: string }> {
  const client = open(node.url, token);
  const outcome = await Promise.race([client.next((e) => e.type === 'connected', 10_000).then(() => ({ client })), client.closed]);
  return outcome;
}

describe('key rotation with a JWKS', () => {
  it('rotates A -> A+B -> B with clients connecting and refreshing throughout: 0 valid tokens refused', async () => {
    const a = ecKey('key-a');
    const b = ecKey('key-b');
    const server = await jwksServer();
    server.set(jwks(a));
    const node = await startTestNode({ JWT_SECRET: '', JWT_JWKS_URL: server.url, JWT_KEYS_REFRESH: '1', JWT_KEYS_UNKNOWN_KID_INTERVAL: '1' });
    let accepted = 0;
    const refused: string[] = [];
    let refreshed = 0;
    const round = async (signer: Key, phase: string): Promise<void> => {
      const result = await attempt(node, sign(signer, `u${accepted % 7}`));
      if (!('client' in result)) return void refused.push(`${phase}: ${result.reason}`);
      accepted += 1;
      result.client.send({ type: 'refresh_token', token: sign(signer, `u${(accepted - 1) % 7}`, { ttlMs: 900_000 }), id: 'r' });
      const reply = await Promise.race([result.client.next((e) => e.id === 'r'), result.client.closed.then((c) => ({ type: `closed ${c.reason}` }))]);
      if (reply.type === 'token_refreshed') refreshed += 1;
      else refused.push(`${phase} refresh: ${reply.type}`);
      result.client.close();
    };
    for (let i = 0; i < 20; i++) await round(a, 'A');
    server.set(jwks(a, b));
    await waitFor('the node loads A+B', async () => (await node.metric('wsedge_jwt_keys')) === 2);
    for (let i = 0; i < 20; i++) await round(i % 2 === 0 ? a : b, 'A+B');
    server.set(jwks(b));
    await waitFor('the node loads B', async () => (await node.metric('wsedge_jwt_keys')) === 1);
    for (let i = 0; i < 20; i++) await round(b, 'B');
    const old = await attempt(node, sign(a, 'late'));
    console.log(`rotation A -> A+B -> B: ${accepted} connects and ${refreshed} refreshes accepted, ${refused.length} valid tokens refused; A after its removal: ${'code' in old ? old.reason : 'accepted'}`);
    expect(refused).toEqual([]);
    expect(accepted).toBe(60);
    expect(old).toEqual({ code: 4401, reason: 'invalid token: kid' });
    server.close();
  });

  it('accepts B within the refetch bound of the first B token seen (unknown kid refetches once)', async () => {
    const a = ecKey('key-a');
    const b = ecKey('key-b');
    const server = await jwksServer();
    server.set(jwks(a));
    const node = await startTestNode({ JWT_SECRET: '', JWT_JWKS_URL: server.url, JWT_KEYS_REFRESH: '3600', JWT_KEYS_UNKNOWN_KID_INTERVAL: '1' });
    server.set(jwks(a, b));
    const first = Date.now();
    const refusedFirst = await attempt(node, sign(b, 'bob'));
    expect(refusedFirst).toEqual({ code: 4401, reason: 'invalid token: kid' });
    await waitFor('B is accepted', async () => {
      const result = await attempt(node, sign(b, 'bob'));
      if ('client' in result) result.client.close();
      return 'client' in result;
    });
    console.log(`B accepted ${Date.now() - first} ms after the first B token (JWT_KEYS_UNKNOWN_KID_INTERVAL 1 s)`);
    expect(Date.now() - first).toBeLessThan(5000);
    server.close();
  });

  it('refetches at most once per interval under 1,000 tokens with unknown kids, and keeps serving', async () => {
    const a = ecKey('key-a');
    const server = await jwksServer();
    server.set(jwks(a));
    const node = await startTestNode({ JWT_SECRET: '', JWT_JWKS_URL: server.url, JWT_KEYS_REFRESH: '3600', JWT_KEYS_UNKNOWN_KID_INTERVAL: '1', WS_AUTH_FAILURE_LIMIT: '0' });
    const before = server.requests();
    const started = Date.now();
    let refusedKid = 0;
    for (let batch = 0; batch < 20; batch++) {
      const results = await Promise.all(Array.from({ length: 50 }, () => attempt(node, sign(a, 'flood', { kid: randomBytes(6).toString('hex') }))));
      refusedKid += results.filter((r) => 'code' in r && r.reason === 'invalid token: kid').length;
    }
    const seconds = (Date.now() - started) / 1000;
    const fetches = server.requests() - before;
    const ok = await attempt(node, sign(a, 'alice'));
    console.log(`unknown-kid flood: 1000 tokens in ${seconds.toFixed(1)} s (${Math.round(1000 / seconds)}/s), ${refusedKid} refused "invalid token: kid", ${fetches} JWKS fetches (bound ${Math.floor(seconds) + 1}); a valid token after: ${'client' in ok ? 'accepted' : 'refused'}`);
    expect(refusedKid).toBe(1000);
    expect(fetches).toBeLessThanOrEqual(Math.floor(seconds) + 1);
    expect('client' in ok).toBe(true);
    server.close();
  });

  it('refuses bad sets whole, counts each, and keeps the last good set', async () => {
    const a = ecKey('key-a');
    const b = ecKey('key-b');
    const server = await jwksServer();
    server.set(jwks(a));
    const node = await startTestNode({ JWT_SECRET: '', JWT_JWKS_URL: server.url, JWT_KEYS_REFRESH: '1', JWT_KEYS_MAX_BYTES: '4096', JWT_KEYS_MAX: '3' });
    const { privateKey: rsaPrivate } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const bad: Array<[outcome: string, body: string, status?: number, headers?: Record<string, string>]> = [
      ['not_json', '<html>not json</html>'],
      ['too_large', JSON.stringify({ keys: [a.jwk], pad: 'x'.repeat(5000) })],
      ['symmetric', JSON.stringify({ keys: [a.jwk, { kty: 'oct', k: 'c2VjcmV0', kid: 'h' }] })],
      ['alg_none', JSON.stringify({ keys: [{ ...b.jwk, alg: 'none' }] })],
      ['mixed', JSON.stringify({ keys: [{ ...b.jwk, alg: 'RS256' }] })],
      ['duplicate_kid', JSON.stringify({ keys: [a.jwk, { ...b.jwk, kid: 'key-a' }] })],
      ['private_key', JSON.stringify({ keys: [{ ...rsaPrivate.export({ format: 'jwk' }), kid: 'p' }] })],
      ['too_many_keys', jwks(a, b, ecKey('c'), ecKey('d'))],
      ['unsupported', JSON.stringify({ keys: [{ kty: 'XYZ', kid: 'x' }] })],
      ['invalid', '{"keys": 7}'],
      ['redirect', '', 302, { location: 'http://127.0.0.1:1/keys' }],
      ['http_error', 'oops', 500],
    ];
    for (const [outcome, body, status, headers] of bad) {
      const seen = await node.metric('wsedge_jwt_key_fetches_total', { outcome });
      server.set(body, status, headers);
      await waitFor(`the ${outcome} set is refused`, async () => (await node.metric('wsedge_jwt_key_fetches_total', { outcome })) > seen);
      const still = await attempt(node, sign(a, 'alice'));
      expect('client' in still, outcome).toBe(true);
      if ('client' in still) still.client.close();
      expect(await node.metric('wsedge_jwt_keys')).toBe(1);
    }
    const logged = node.logs.filter((l) => l['event'] === 'jwt_keys_refused').length;
    console.log(`bad JWKS answers: ${bad.length} kinds refused and counted by outcome, ${logged} logged, the last good set (1 key) kept every time`);
    expect(logged).toBeGreaterThanOrEqual(bad.length);
    server.close();
  });
});

describe('JWT_SECRET current,previous and a key file of several keys', () => {
  it('accepts tokens of the current and the previous secret, and no other', async () => {
    const current = 'current-secret-that-is-long-enough-0123456789';
    const previous = 'previous-secret-that-is-long-enough-012345678';
    const node = await startTestNode({ JWT_SECRET: `${current},${previous}` });
    const hs = (key: string) => createSigner({ key, algorithm: 'HS256', expiresIn: 60_000 })({ sub: 'alice' });
    const results = await Promise.all([current, previous, 'another-secret-that-is-long-enough-0123456'].map((s) => attempt(node, hs(s))));
    console.log(`JWT_SECRET current,previous: ${results.filter((r) => 'client' in r).length} of 2 valid accepted, the third secret refused`);
    expect(results.map((r) => ('client' in r ? 'ok' : r.reason))).toEqual(['ok', 'ok', 'invalid token: signature']);
  });

  it('accepts each key of a PEM file and follows the file when it changes', async () => {
    const a = ecKey('a');
    const b = ecKey('b');
    const path = joinPath(mkdtempSync(joinPath(tmpdir(), 'wsedge-keys-')), 'keys.pem');
    writeFileSync(path, a.pem + b.pem);
    const node = await startTestNode({ JWT_SECRET: '', JWT_PUBLIC_KEY_FILE: path, JWT_KEYS_REFRESH: '1', WS_AUTH_FAILURE_LIMIT: '0' });
    const both = await Promise.all([a, b].map((k) => attempt(node, sign(k, 'alice', { kid: null }))));
    expect(both.map((r) => ('client' in r ? 'ok' : r.reason))).toEqual(['ok', 'ok']);
    for (const r of both) if ('client' in r) r.client.close();
    writeFileSync(path, b.pem);
    await waitFor('the file is re-read', async () => {
      const r = await attempt(node, sign(a, 'alice', { kid: null }));
      if ('client' in r) r.client.close();
      return 'code' in r && r.reason === 'invalid token: signature';
    });
    expect('client' in (await attempt(node, sign(b, 'alice', { kid: null })))).toBe(true);
  });
});
