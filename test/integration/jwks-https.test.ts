/**
 * JWT_JWKS_URL over HTTPS (issue 26): the test serves a JWKS from node:https with a throwaway
 * self-signed certificate for 127.0.0.1 (openssl, in a temp dir). A `ws-edge serve` process told to
 * trust it (NODE_EXTRA_CA_CERTS, read by Node at start; the node fetches with node:https and the
 * default CAs) loads the set in production mode and accepts a token signed with its key; a node
 * without the certificate refuses the TLS connection, counts the fetch as `network`, and refuses
 * the token with 4401 `invalid token: kid` (it has no keys).
 */
import { execFileSync } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createSigner } from 'fast-jwt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { open } from '../helpers/client.js';
import { startNodeProcess, stopAllProcesses } from '../helpers/processes.js';
import { waitFor } from '../helpers/wait.js';

const dir = mkdtempSync(join(tmpdir(), 'wsedge-jwks-tls-'));
const pair = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const KID = 'tls-key-1';
let server: Server;
let url: string;
let fetches = 0;

beforeAll(async () => {
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '1', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1', '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem')], { stdio: 'pipe' });
  const body = JSON.stringify({ keys: [{ ...pair.publicKey.export({ format: 'jwk' }), kid: KID, alg: 'ES256', use: 'sig' }] });
  server = createServer({ key: readFileSync(join(dir, 'key.pem')), cert: readFileSync(join(dir, 'cert.pem')) }, (_req, res) => {
    fetches++;
    res.writeHead(200, { 'content-type': 'application/json' }).end(body);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  url = `https://127.0.0.1:${(server.address() as { port: number }).port}/.well-known/jwks.json`;
});

afterAll(async () => {
  await stopAllProcesses();
  await new Promise((resolve) => server.close(resolve));
  rmSync(dir, { recursive: true, force: true });
});

const token = () => createSigner({ key: pair.privateKey.export({ format: 'pem', type: 'pkcs8' }) as string, algorithm: 'ES256', kid: KID, expiresIn: 600_000 })({ sub: 'tls-user', rooms: ['*'] });
const production = { NODE_ENV: 'production', JWT_SECRET: '', PUBLISH_API_KEY: 'jwks-https-test-api-key-0123456789abcdef-0123' };

describe('JWKS over HTTPS with a throwaway certificate', () => {
  it('a production node that trusts the certificate loads the set and accepts its tokens; one that does not refuses them', async () => {
    const trusting = await startNodeProcess({ ...production, JWT_JWKS_URL: url, NODE_EXTRA_CA_CERTS: join(dir, 'cert.pem') });
    await waitFor('the key set loaded', async () => (await trusting.metric('wsedge_jwt_keys')) === 1, 10_000);
    const client = open(trusting.url, token());
    const hello = await client.next((e) => e.type === 'connected', 10_000);
    expect(hello.data.user_id).toBe('tls-user');
    client.close();
    expect(await trusting.metric('wsedge_jwt_key_fetches_total', { outcome: 'ok' })).toBe(1);

    const before = fetches;
    const untrusting = await startNodeProcess({ ...production, JWT_JWKS_URL: url });
    await waitFor('the fetch refused at TLS', async () => (await untrusting.metric('wsedge_jwt_key_fetches_total', { outcome: 'network' })) >= 1, 10_000);
    expect(fetches).toBe(before); // no request got past the handshake
    expect(await open(untrusting.url, token()).closed).toEqual({ code: 4401, reason: 'invalid token: kid' });
    console.log(`JWKS over https with a self-signed certificate: trusted via NODE_EXTRA_CA_CERTS: 1 key loaded, token accepted; not trusted: fetch counted network, 0 requests reached the server, token refused 4401 invalid token: kid`);
  });
});
