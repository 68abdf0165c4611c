import { createHmac, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createSigner } from 'fast-jwt';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { createAuthenticator, ephemeralSecret, isRejection, signToken, type Identity } from '../../src/auth.js';
import { initialKeys } from '../../src/key-source.js';
import type { JwtConfig } from '../../src/config.js';
import { isCloseReason, REJECTIONS, type Rejection } from '../../src/errors.js';

const SECRET = 'unit-test-secret-of-at-least-32-bytes!';
const OTHER_SECRET = 'another-secret-of-at-least-32-bytes!!';

const EXPIRED: Rejection = { reason: 'token_expired', code: 4401, message: 'token expired' };
/** A refusal naming the check that failed: `invalid token: <check>`. */
const failed = (check: string): Rejection => ({ reason: 'token_invalid', code: 4401, message: `invalid token: ${check}` });
const FORMAT = failed('format');
const ALGORITHM = failed('algorithm');
const SIGNATURE = failed('signature');

function jwtConfig(overrides: Partial<JwtConfig> = {}): JwtConfig {
  return {
    secret: undefined,
    secrets: overrides.secrets ?? (overrides.secret === undefined ? [] : [overrides.secret]),
    publicKeyFile: undefined,
    jwksUrl: undefined,
    keySource: { refreshSeconds: 300, unknownKidSeconds: 30, maxBytes: 65_536, maxKeys: 20, timeoutMs: 5000 },
    maxLifetimeSeconds: 86_400,
    algorithms: undefined,
    issuer: undefined,
    audience: undefined,
    clockToleranceSeconds: 5,
    ...overrides,
  };
}

const b64url = (value: unknown): string => Buffer.from(JSON.stringify(value)).toString('base64url');

/** Decodes a token's payload without verifying it. */
function payloadOf(token: string): Record<string, unknown> {
  const part = token.split('.')[1] ?? '';
  return JSON.parse(Buffer.from(part, 'base64url').toString('utf8')) as Record<string, unknown>;
}

/** An HMAC token with a hand-written header and payload. */
function handSigned(header: object, payload: object, key: string, hash = 'sha256'): string {
  const input = `${b64url(header)}.${b64url(payload)}`;
  return `${input}.${createHmac(hash, key).update(input).digest('base64url')}`;
}

const nowSeconds = (): number => Math.floor(Date.now() / 1000);

function identity(result: Identity | Rejection): Identity {
  if (isRejection(result)) throw new Error(`expected an identity, got ${JSON.stringify(result)}`);
  return result;
}

describe('HMAC verification', () => {
  const auth = createAuthenticator(jwtConfig({ secret: SECRET }));

  it('derives all HMAC algorithms from a secret', () => {
    expect(auth.algorithms).toEqual(['HS256', 'HS384', 'HS512']);
  });

  it('turns a valid HS256 token into an identity with username, grant and exp', () => {
    const token = signToken({ secret: SECRET, userId: 'alice', username: 'Alice A.', rooms: ['project:*', 'channel:42'], ttlSeconds: 600 });
    const result = identity(auth.verify(token));
    expect(result).toEqual({
      userId: 'alice',
      username: 'Alice A.',
      claim: { all: false, prefixes: ['project:'], exact: new Set(['channel:42']) },
      expiresAt: (payloadOf(token)['exp'] as number) * 1000,
      issuedAt: (payloadOf(token)['iat'] as number) * 1000,
      tokenId: undefined,
    });
    expect(result.expiresAt).toBeGreaterThan(Date.now() + 590_000);
    expect(result.expiresAt).toBeLessThanOrEqual(Date.now() + 600_000);
  });

  it('falls back to sub for the username and leaves the grant undefined without a rooms claim', () => {
    const result = identity(auth.verify(signToken({ secret: SECRET, userId: 'bob_2', ttlSeconds: 60 })));
    expect(result.userId).toBe('bob_2');
    expect(result.username).toBe('bob_2');
    expect(result.claim).toBeUndefined();
  });

  it('accepts HS384 and HS512 when JWT_ALGORITHMS is unset', () => {
    expect(identity(auth.verify(signToken({ secret: SECRET, userId: 'u', ttlSeconds: 60, algorithm: 'HS384' }))).userId).toBe('u');
    expect(identity(auth.verify(signToken({ secret: SECRET, userId: 'u', ttlSeconds: 60, algorithm: 'HS512' }))).userId).toBe('u');
  });

  it('refuses an HS512 token when JWT_ALGORITHMS=HS256', () => {
    const narrow = createAuthenticator(jwtConfig({ secret: SECRET, algorithms: ['HS256'] }));
    expect(narrow.algorithms).toEqual(['HS256']);
    expect(narrow.verify(signToken({ secret: SECRET, userId: 'u', ttlSeconds: 60, algorithm: 'HS512' }))).toEqual(ALGORITHM);
    expect(identity(narrow.verify(signToken({ secret: SECRET, userId: 'u', ttlSeconds: 60 }))).userId).toBe('u');
  });

  it('refuses an expired token with token_expired', () => {
    const sign = createSigner({ key: SECRET, clockTimestamp: Date.now() - 3_600_000, expiresIn: 60_000 });
    expect(auth.verify(sign({ sub: 'alice' }))).toEqual(EXPIRED);
  });

  it('refuses an exp after year 9999 (1e308 included), and one at its last second for its lifetime', () => {
    const FAR = { reason: 'token_invalid', code: 4401, message: 'invalid token: exp after year 9999' };
    for (const exp of [1e308, 8.64e12, 253_402_300_800]) {
      expect(auth.verify(handSigned({ alg: 'HS256', typ: 'JWT' }, { sub: 'alice', exp }, SECRET))).toEqual(FAR);
    }
    expect(auth.verify(handSigned({ alg: 'HS256', typ: 'JWT' }, { sub: 'alice', exp: 253_402_300_799 }, SECRET))).toEqual(REJECTIONS.token_lifetime);
  });

  it('accepts a token expired within the clock tolerance and refuses it without tolerance', () => {
    const token = handSigned({ alg: 'HS256', typ: 'JWT' }, { sub: 'alice', exp: nowSeconds() - 2 }, SECRET);
    expect(identity(auth.verify(token)).userId).toBe('alice');
    const strict = createAuthenticator(jwtConfig({ secret: SECRET, clockToleranceSeconds: 0 }));
    expect(strict.verify(token)).toEqual(EXPIRED);
  });

  it('never serves a cached verification past exp', () => {
    vi.useFakeTimers({ toFake: ['Date'] });
    try {
      const cached = createAuthenticator(jwtConfig({ secret: SECRET, clockToleranceSeconds: 0 }));
      const token = signToken({ secret: SECRET, userId: 'alice', ttlSeconds: 10 });
      expect(identity(cached.verify(token)).userId).toBe('alice');
      expect(identity(cached.verify(token)).userId).toBe('alice');
      vi.setSystemTime(Date.now() + 11_000);
      expect(cached.verify(token)).toEqual(EXPIRED);
    } finally {
      vi.useRealTimers();
    }
  });

  it('refuses a token signed with another secret: "invalid token: signature"', () => {
    expect(auth.verify(signToken({ secret: OTHER_SECRET, userId: 'alice', ttlSeconds: 60 }))).toEqual(SIGNATURE);
  });

  it('refuses a token whose payload was changed after signing', () => {
    const token = signToken({ secret: SECRET, userId: 'alice', ttlSeconds: 60 });
    const [header, , signature] = token.split('.');
    const forged = `${header}.${b64url({ ...payloadOf(token), sub: 'mallory' })}.${signature}`;
    expect(auth.verify(forged)).toEqual(SIGNATURE);
  });

  it.each(['', 'not-a-jwt', 'a.b.c', 'a.b', '...', `${b64url({ alg: 'HS256' })}.not-base64-json.sig`])('refuses the malformed token %j: "invalid token: format"', (token) => {
    expect(auth.verify(token)).toEqual(FORMAT);
  });

  it('refuses a signed token with a crit header: "invalid token: crit" (no critical extension is understood)', () => {
    const token = handSigned({ alg: 'HS256', typ: 'JWT', crit: ['b64'], b64: true }, { sub: 'alice', exp: nowSeconds() + 600 }, SECRET);
    expect(auth.verify(token)).toEqual(failed('crit'));
  });

  it('refuses an alg: none token for its algorithm, signed or not', () => {
    const token = `${b64url({ alg: 'none', typ: 'JWT' })}.${b64url({ sub: 'alice', exp: nowSeconds() + 600 })}.`;
    expect(auth.verify(token)).toEqual(ALGORITHM);
    expect(auth.verify(`${token}c2ln`)).toEqual(ALGORITHM);
  });

  it('refuses an HS256 token without its signature: "invalid token: signature"', () => {
    const token = signToken({ secret: SECRET, userId: 'alice', ttlSeconds: 60 });
    expect(auth.verify(token.slice(0, token.lastIndexOf('.') + 1))).toEqual(SIGNATURE);
  });

  it('refuses a token without exp: "invalid token: missing exp"', () => {
    const token = handSigned({ alg: 'HS256', typ: 'JWT' }, { sub: 'alice' }, SECRET);
    expect(auth.verify(token)).toEqual(failed('missing exp'));
  });

  it('refuses a token with a non-numeric exp: "invalid token: exp must be a number"', () => {
    const token = handSigned({ alg: 'HS256', typ: 'JWT' }, { sub: 'alice', exp: 'tomorrow' }, SECRET);
    expect(auth.verify(token)).toEqual(failed('exp must be a number'));
  });

  it('refuses a token without sub: "invalid token: missing sub"', () => {
    const token = handSigned({ alg: 'HS256', typ: 'JWT' }, { exp: nowSeconds() + 600 }, SECRET);
    expect(auth.verify(token)).toEqual(failed('missing sub'));
  });

  it('refuses a token not valid yet (nbf past the clock tolerance), or with a non-numeric nbf: "invalid token: nbf"', () => {
    const early = handSigned({ alg: 'HS256', typ: 'JWT' }, { sub: 'alice', nbf: nowSeconds() + 60, exp: nowSeconds() + 600 }, SECRET);
    expect(auth.verify(early)).toEqual(failed('nbf'));
    const odd = handSigned({ alg: 'HS256', typ: 'JWT' }, { sub: 'alice', nbf: 'now', exp: nowSeconds() + 600 }, SECRET);
    expect(auth.verify(odd)).toEqual(failed('nbf'));
    // Within the tolerance (5 s) it passes.
    const soon = handSigned({ alg: 'HS256', typ: 'JWT' }, { sub: 'alice', nbf: nowSeconds() + 2, exp: nowSeconds() + 600 }, SECRET);
    expect(identity(auth.verify(soon)).userId).toBe('alice');
  });

  it('refuses an exp of JSON 1e999 (Infinity) as after year 9999', () => {
    const input = `${b64url({ alg: 'HS256', typ: 'JWT' })}.${Buffer.from('{"sub":"alice","exp":1e999}').toString('base64url')}`;
    const token = `${input}.${createHmac('sha256', SECRET).update(input).digest('base64url')}`;
    expect(auth.verify(token)).toEqual(failed('exp after year 9999'));
  });

  it.each(['alice smith', 'a:b', 'user/1', '', 'x'.repeat(65), 42, null, ['alice']])('refuses the sub %j: it must be a string of 1-64 [A-Za-z0-9_-]', (sub) => {
    const token = handSigned({ alg: 'HS256', typ: 'JWT' }, { sub, exp: nowSeconds() + 600 }, SECRET);
    expect(auth.verify(token)).toEqual({ reason: 'token_invalid', code: 4401, message: 'invalid token: sub must be a string of 1-64 [A-Za-z0-9_-]' });
  });

  it('names every failed check in one line of at most 123 bytes, the close frame\'s limit', () => {
    const texts = Object.values(REJECTIONS).map((r) => r.message);
    expect(texts.filter((t) => t.startsWith('invalid token: ')).length).toBeGreaterThanOrEqual(16);
    expect(texts).not.toContain('invalid token');
    expect(texts.filter((t) => !isCloseReason(t))).toEqual([]);
  });

  it.each([['*'], [1], 'project:*', ['room:*'], { all: true }])('refuses the malformed rooms claim %j', (rooms) => {
    const token = handSigned({ alg: 'HS256', typ: 'JWT' }, { sub: 'alice', rooms, exp: nowSeconds() + 600 }, SECRET);
    const result = auth.verify(token);
    if (Array.isArray(rooms) && rooms[0] === '*') {
      // The control: a well-formed claim passes.
      expect(identity(result).claim?.all).toBe(true);
    } else {
      expect(result).toEqual({ reason: 'token_invalid', code: 4401, message: 'invalid token: rooms' });
    }
  });

  it.each(['', 42, 'x'.repeat(129)])('refuses the username %j', (username) => {
    const token = handSigned({ alg: 'HS256', typ: 'JWT' }, { sub: 'alice', username, exp: nowSeconds() + 600 }, SECRET);
    expect(auth.verify(token)).toEqual({ reason: 'token_invalid', code: 4401, message: 'invalid token: username' });
  });
});

describe('issuer and audience', () => {
  const auth = createAuthenticator(jwtConfig({ secret: SECRET, issuer: 'https://auth.example', audience: 'ws-edge' }));
  const mint = (claims: { issuer?: string; audience?: string }): string =>
    signToken({ secret: SECRET, userId: 'alice', ttlSeconds: 60, ...claims });

  it('accepts the configured iss and aud', () => {
    expect(identity(auth.verify(mint({ issuer: 'https://auth.example', audience: 'ws-edge' }))).userId).toBe('alice');
  });

  it('refuses a wrong iss: "invalid token: iss"', () => {
    expect(auth.verify(mint({ issuer: 'https://evil.example', audience: 'ws-edge' }))).toEqual(failed('iss'));
  });

  it('refuses a wrong aud: "invalid token: aud", also as an array without it', () => {
    expect(auth.verify(mint({ issuer: 'https://auth.example', audience: 'other' }))).toEqual(failed('aud'));
    const listed = handSigned({ alg: 'HS256', typ: 'JWT' }, { sub: 'alice', iss: 'https://auth.example', aud: ['a', 'b'], exp: nowSeconds() + 600 }, SECRET);
    expect(auth.verify(listed)).toEqual(failed('aud'));
  });

  it('refuses an iss that is no string: "invalid token: iss"', () => {
    const numeric = handSigned({ alg: 'HS256', typ: 'JWT' }, { sub: 'alice', iss: 7, aud: 'ws-edge', exp: nowSeconds() + 600 }, SECRET);
    expect(auth.verify(numeric)).toEqual(failed('iss'));
  });

  it('compares plain strings, not patterns', () => {
    const dotted = createAuthenticator(jwtConfig({ secret: SECRET, issuer: 'a.b' }));
    expect(dotted.verify(signToken({ secret: SECRET, userId: 'alice', ttlSeconds: 60, issuer: 'aXb' }))).toEqual(failed('iss'));
  });

  // The contract: iss/aud are enforced when JWT_ISSUER/JWT_AUDIENCE are set. fast-jwt skips
  // allowedIss/allowedAud for a claim that is absent unless it is also in requiredClaims.
  it('refuses a token without iss when JWT_ISSUER is set: "invalid token: missing iss"', () => {
    expect(auth.verify(mint({ audience: 'ws-edge' }))).toEqual(failed('missing iss'));
  });

  it('refuses a token without aud when JWT_AUDIENCE is set: "invalid token: missing aud"', () => {
    expect(auth.verify(mint({ issuer: 'https://auth.example' }))).toEqual(failed('missing aud'));
  });

  it('names the first failed check in the documented order: missing claims, nbf, exp, aud, iss', () => {
    const claims = (extra: object) => handSigned({ alg: 'HS256', typ: 'JWT' }, { sub: 'alice', exp: nowSeconds() + 600, ...extra }, SECRET);
    expect(auth.verify(claims({ aud: 'other' }))).toEqual(failed('missing iss'));
    expect(auth.verify(claims({ iss: 'x', aud: 'y', nbf: nowSeconds() + 60 }))).toEqual(failed('nbf'));
    expect(auth.verify(claims({ iss: 'x', aud: 'y', exp: nowSeconds() - 60 }))).toEqual(EXPIRED);
    expect(auth.verify(claims({ iss: 'x', aud: 'y' }))).toEqual(failed('aud'));
    expect(auth.verify(claims({ iss: 'x', aud: 'ws-edge', sub: 42 }))).toEqual(failed('iss'));
  });

  it('ignores iss and aud when none is configured', () => {
    const plain = createAuthenticator(jwtConfig({ secret: SECRET }));
    expect(identity(plain.verify(mint({ issuer: 'anyone', audience: 'anything' }))).userId).toBe('alice');
  });
});

describe('public-key verification', () => {
  let dir: string;
  const keyFile = (name: string, key: KeyObject): string => {
    const path = join(dir, name);
    writeFileSync(path, key.export({ type: 'spki', format: 'pem' }));
    return path;
  };
  const privatePem = (key: KeyObject): string => key.export({ type: 'pkcs8', format: 'pem' }) as string;

  const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const otherRsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const ec = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  const ed = generateKeyPairSync('ed25519');
  let rsaFile: string;
  let ecFile: string;
  let edFile: string;

  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'ws-edge-auth-'));
    rsaFile = keyFile('rsa.pem', rsa.publicKey);
    ecFile = keyFile('ec.pem', ec.publicKey);
    edFile = keyFile('ed.pem', ed.publicKey);
  });

  afterAll(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  const sign = (key: KeyObject, algorithm: 'RS256' | 'ES256' | 'EdDSA' | 'PS256', payload: object = { sub: 'alice' }): string =>
    createSigner({ key: privatePem(key), algorithm, expiresIn: 60_000 })(payload);

  it('verifies RS256 with an RSA public key and derives the RSA algorithms', () => {
    const auth = createAuthenticator(jwtConfig({ publicKeyFile: rsaFile }));
    expect(auth.algorithms).toEqual(['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512']);
    expect(identity(auth.verify(sign(rsa.privateKey, 'RS256', { sub: 'alice', username: 'Alice' })))).toMatchObject({
      userId: 'alice',
      username: 'Alice',
    });
    expect(identity(auth.verify(sign(rsa.privateKey, 'PS256'))).userId).toBe('alice');
  });

  it('narrows the RSA algorithms with JWT_ALGORITHMS', () => {
    const auth = createAuthenticator(jwtConfig({ publicKeyFile: rsaFile, algorithms: ['RS256'] }));
    expect(auth.algorithms).toEqual(['RS256']);
    expect(auth.verify(sign(rsa.privateKey, 'PS256'))).toEqual(ALGORITHM);
  });

  it('refuses an RS256 token signed with another key', () => {
    const auth = createAuthenticator(jwtConfig({ publicKeyFile: rsaFile }));
    expect(auth.verify(sign(otherRsa.privateKey, 'RS256'))).toEqual(SIGNATURE);
  });

  it('verifies ES256 with a P-256 public key', () => {
    const auth = createAuthenticator(jwtConfig({ publicKeyFile: ecFile }));
    expect(auth.algorithms).toEqual(['ES256']);
    expect(identity(auth.verify(sign(ec.privateKey, 'ES256'))).userId).toBe('alice');
  });

  it('verifies EdDSA with an Ed25519 public key', () => {
    const auth = createAuthenticator(jwtConfig({ publicKeyFile: edFile }));
    expect(auth.algorithms).toEqual(['EdDSA']);
    expect(identity(auth.verify(sign(ed.privateKey, 'EdDSA'))).userId).toBe('alice');
  });

  it('refuses a token of another key type', () => {
    const auth = createAuthenticator(jwtConfig({ publicKeyFile: ecFile }));
    expect(auth.verify(sign(rsa.privateKey, 'RS256'))).toEqual(ALGORITHM);
    expect(auth.verify(sign(ed.privateKey, 'EdDSA'))).toEqual(ALGORITHM);
  });

  it('refuses an HS256 token signed with the public key as HMAC secret (algorithm confusion)', () => {
    const auth = createAuthenticator(jwtConfig({ publicKeyFile: rsaFile }));
    const publicPem = rsa.publicKey.export({ type: 'spki', format: 'pem' }) as string;
    const token = handSigned({ alg: 'HS256', typ: 'JWT' }, { sub: 'mallory', exp: nowSeconds() + 600 }, publicPem);
    expect(auth.verify(token)).toEqual(ALGORITHM);
  });

  it('refuses an alg: none token with a public key configured', () => {
    const auth = createAuthenticator(jwtConfig({ publicKeyFile: edFile }));
    const token = `${b64url({ alg: 'none', typ: 'JWT' })}.${b64url({ sub: 'alice', exp: nowSeconds() + 600 })}.`;
    expect(auth.verify(token)).toEqual(ALGORITHM);
  });

  it('refuses an expired ES256 token with token_expired', () => {
    const auth = createAuthenticator(jwtConfig({ publicKeyFile: ecFile }));
    const token = createSigner({ key: privatePem(ec.privateKey), algorithm: 'ES256', clockTimestamp: Date.now() - 3_600_000, expiresIn: 60_000 })({
      sub: 'alice',
    });
    expect(auth.verify(token)).toEqual(EXPIRED);
  });

  describe('initialKeys', () => {
    it('returns each secret, current first, with the HMAC family narrowed by JWT_ALGORITHMS', () => {
      expect(initialKeys(jwtConfig({ secret: SECRET }))).toEqual([{ kid: undefined, key: SECRET, algorithms: ['HS256', 'HS384', 'HS512'] }]);
      expect(initialKeys(jwtConfig({ secrets: [SECRET, 'b'.repeat(32)], algorithms: ['HS512', 'HS256'] }))).toEqual([
        { kid: undefined, key: SECRET, algorithms: ['HS256', 'HS512'] },
        { kid: undefined, key: 'b'.repeat(32), algorithms: ['HS256', 'HS512'] },
      ]);
    });

    it('throws, naming the variable, for a key file that does not exist', () => {
      const missing = join(dir, 'missing.pem');
      expect(() => initialKeys(jwtConfig({ publicKeyFile: missing }))).toThrow(`JWT_PUBLIC_KEY_FILE: cannot read ${missing}`);
    });

    it('throws for JWT_ALGORITHMS that fit no key', () => {
      expect(() => initialKeys(jwtConfig({ secret: SECRET, algorithms: ['RS256'] }))).toThrow(
        'JWT_ALGORITHMS: none of RS256 fits the configured key (HS256, HS384, HS512)',
      );
      expect(() => initialKeys(jwtConfig({ publicKeyFile: ecFile, algorithms: ['RS256', 'ES384'] }))).toThrow(`JWT_ALGORITHMS: none of RS256, ES384 fits the keys of ${ecFile}`);
      expect(() => createAuthenticator(jwtConfig({ publicKeyFile: rsaFile, algorithms: ['HS256'] }))).toThrow(/^JWT_ALGORITHMS: /);
    });

    it('throws when no key is configured', () => {
      expect(() => initialKeys(jwtConfig())).toThrow('JWT_SECRET: no JWT key configured');
    });

    it('throws for an EC curve without a JWT algorithm', () => {
      const path = keyFile('k1.pem', generateKeyPairSync('ec', { namedCurve: 'secp256k1' }).publicKey);
      expect(() => initialKeys(jwtConfig({ publicKeyFile: path }))).toThrow(`JWT_PUBLIC_KEY_FILE: ${path}: unsupported EC curve secp256k1`);
    });

    // Start-up errors name the variable (issue 2: "one line naming the variable and what is wrong").
    it('throws, naming the variable, for a key file that is not a PEM key', () => {
      const path = join(dir, 'garbage.pem');
      writeFileSync(path, 'this is not a key\n');
      expect(() => initialKeys(jwtConfig({ publicKeyFile: path }))).toThrow(/^JWT_PUBLIC_KEY_FILE: /);
    });
  });
});

describe('signToken and ephemeralSecret', () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it('mints a token with sub, username, rooms, iss, aud and exp', () => {
    vi.useFakeTimers({ toFake: ['Date'] });
    vi.setSystemTime(1_700_000_000_000);
    const token = signToken({
      secret: SECRET,
      userId: 'alice',
      username: 'Alice',
      rooms: ['*'],
      ttlSeconds: 3600,
      issuer: 'iss',
      audience: 'aud',
      algorithm: 'HS384',
    });
    expect(JSON.parse(Buffer.from(token.split('.')[0] ?? '', 'base64url').toString())).toMatchObject({ alg: 'HS384' });
    expect(payloadOf(token)).toEqual({
      sub: 'alice',
      username: 'Alice',
      rooms: ['*'],
      iss: 'iss',
      aud: 'aud',
      iat: 1_700_000_000,
      exp: 1_700_003_600,
    });
  });

  it('omits optional claims that were not asked for', () => {
    expect(Object.keys(payloadOf(signToken({ secret: SECRET, userId: 'alice', ttlSeconds: 60 }))).sort()).toEqual(['exp', 'iat', 'sub']);
  });

  it('generates a fresh 32-byte secret each time', () => {
    const a = ephemeralSecret();
    expect(Buffer.from(a, 'base64url')).toHaveLength(32);
    expect(ephemeralSecret()).not.toBe(a);
  });
});
