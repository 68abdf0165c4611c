/**
 * Verification keys: what a key source holds (HMAC secrets, a file of PEM public keys, a JWKS),
 * turned into checked key material. Nothing here verifies a token (auth.ts does); this module says
 * which keys exist, which algorithms each may verify, and refuses a whole set that holds anything
 * it cannot trust: a refused set is never loaded, the caller keeps the last good one.
 *
 * A set is refused (KeySetError with a fixed reason, the label of
 * `wsedge_jwt_key_fetches_total{outcome}`) for: not JSON, not `{ "keys": [...] }`, more keys than
 * JWT_KEYS_MAX, a symmetric (`oct`) key, `alg: none`, an unsupported key type or curve, an `alg`
 * that does not fit the key's type (mixed), a private key, a duplicate `kid`, a key Node cannot
 * read. A JWK with `use` other than `sig` is skipped, as RFC 7517 asks.
 */
import { createPublicKey, type KeyObject } from 'node:crypto';
import { HMAC_ALGS } from './config.js';
import type { FetchProblem } from './jwks.js';
import type { KeyFetchOutcome } from './metrics.js';

/** One key and the algorithms it may verify; `kid` undefined: tried for every token without a known `kid`. */
export interface KeyMaterial {
  readonly kid: string | undefined;
  /** A PEM public key or an HMAC secret, as fast-jwt takes it. */
  readonly key: string;
  readonly algorithms: readonly string[];
}

/** Why a key set was refused: part of the `wsedge_jwt_key_fetches_total` outcome vocabulary. */
export type KeySetProblem = Exclude<KeyFetchOutcome, 'ok' | 'unchanged' | FetchProblem>;

export class KeySetError extends Error {
  constructor(
    readonly problem: KeySetProblem,
    detail: string,
  ) {
    super(detail);
  }
}

const RSA_ALGS = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512'];
const EC_BY_CURVE: Readonly<Record<string, string>> = { prime256v1: 'ES256', secp384r1: 'ES384', secp521r1: 'ES512' };
const MAX_KID_LENGTH = 256;

/** Algorithms that fit a public key, by key type and curve. */
export function algorithmsForKey(key: KeyObject): string[] {
  switch (key.asymmetricKeyType) {
    case 'rsa':
      return RSA_ALGS;
    case 'rsa-pss':
      return ['PS256', 'PS384', 'PS512'];
    case 'ec': {
      const curve = key.asymmetricKeyDetails?.namedCurve;
      const alg = curve === undefined ? undefined : EC_BY_CURVE[curve];
      if (alg === undefined) throw new KeySetError('unsupported', `unsupported EC curve ${curve ?? 'unknown'}`);
      return [alg];
    }
    case 'ed25519':
    case 'ed448':
      return ['EdDSA'];
    default:
      throw new KeySetError('unsupported', `unsupported key type ${key.asymmetricKeyType ?? 'unknown'}`);
  }
}

/** `fitting` narrowed to JWT_ALGORITHMS (undefined: all of them). */
function allowed(fitting: readonly string[], configured: readonly string[] | undefined): string[] {
  return configured === undefined ? [...fitting] : fitting.filter((a) => configured.includes(a));
}

/** JWT_SECRET's secrets, current first; none shares an algorithm list narrower than HMAC's. */
export function hmacKeys(secrets: readonly string[], configured: readonly string[] | undefined): KeyMaterial[] {
  const algorithms = allowed(HMAC_ALGS, configured);
  return secrets.map((key) => ({ kid: undefined, key, algorithms }));
}

const PEM_BLOCK = /-----BEGIN ([A-Z ]+)-----[\s\S]+?-----END \1-----/g;

/** A file of one or more PEM public keys (certificates' keys are not read: export the key). */
export function pemKeys(text: string, configured: readonly string[] | undefined, maxKeys: number): KeyMaterial[] {
  const blocks = [...text.matchAll(PEM_BLOCK)];
  if (blocks.length === 0) throw new KeySetError('invalid_key', 'no PEM block');
  if (blocks.length > maxKeys) throw new KeySetError('too_many_keys', `${blocks.length} keys, at most ${maxKeys}`);
  const keys: KeyMaterial[] = [];
  for (const [pem, label] of blocks) {
    if (label !== 'PUBLIC KEY') throw new KeySetError(label?.includes('PRIVATE') ? 'private_key' : 'invalid_key', `a ${label ?? 'unknown'} block; give PUBLIC KEY blocks`);
    let key: KeyObject;
    try {
      key = createPublicKey(pem);
    } catch (err) {
      throw new KeySetError('invalid_key', (err as Error).message);
    }
    const algorithms = allowed(algorithmsForKey(key), configured);
    if (algorithms.length > 0) keys.push({ kid: undefined, key: pem, algorithms });
  }
  if (keys.length === 0) throw new KeySetError('no_usable_key', 'no key fits JWT_ALGORITHMS');
  return keys;
}

/** A JWKS document (RFC 7517) as text: every key checked, or the whole set refused. */
export function jwksKeys(text: string, configured: readonly string[] | undefined, maxKeys: number): KeyMaterial[] {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch {
    throw new KeySetError('not_json', 'the answer is not JSON');
  }
  const list = (doc as { keys?: unknown } | null)?.keys;
  if (!Array.isArray(list)) throw new KeySetError('invalid', 'not an object with a "keys" array');
  if (list.length > maxKeys) throw new KeySetError('too_many_keys', `${list.length} keys, at most ${maxKeys}`);
  const kids = new Set<string>();
  const keys: KeyMaterial[] = [];
  for (const jwk of list) {
    const material = jwkKey(jwk, configured);
    if (material === undefined) continue;
    if (material.kid !== undefined) {
      if (kids.has(material.kid)) throw new KeySetError('duplicate_kid', 'a kid appears twice');
      kids.add(material.kid);
    }
    keys.push(material);
  }
  if (keys.length === 0) throw new KeySetError('no_usable_key', 'no signing key fits JWT_ALGORITHMS');
  return keys;
}

/** One JWK: undefined for an encryption key or one no allowed algorithm fits (skipped); throws for one that spoils the set. */
function jwkKey(jwk: unknown, configured: readonly string[] | undefined): KeyMaterial | undefined {
  if (typeof jwk !== 'object' || jwk === null || Array.isArray(jwk)) throw new KeySetError('invalid', 'a key is not an object');
  const { kty, alg, kid, use, d } = jwk as Record<string, unknown>;
  if (kty === 'oct') throw new KeySetError('symmetric', 'a symmetric key in a public set');
  if (typeof alg === 'string' && alg.toLowerCase() === 'none') throw new KeySetError('alg_none', 'a key with alg none');
  if (kty !== 'RSA' && kty !== 'EC' && kty !== 'OKP') throw new KeySetError('unsupported', `key type ${String(kty).slice(0, 16)}`);
  if (d !== undefined) throw new KeySetError('private_key', 'a private key in a public set');
  if (kid !== undefined && (typeof kid !== 'string' || kid === '' || kid.length > MAX_KID_LENGTH)) throw new KeySetError('invalid', 'kid must be a string of 1-256 characters');
  if (alg !== undefined && typeof alg !== 'string') throw new KeySetError('invalid', 'alg must be a string');
  if (use !== undefined && use !== 'sig') return undefined;
  let key: KeyObject;
  try {
    key = createPublicKey({ key: jwk as import('node:crypto').JsonWebKey, format: 'jwk' });
  } catch (err) {
    throw new KeySetError('invalid_key', (err as Error).message);
  }
  const fitting = algorithmsForKey(key);
  if (alg !== undefined && !fitting.includes(alg)) throw new KeySetError('mixed', `alg ${alg.slice(0, 16)} does not fit key type ${kty}`);
  const algorithms = allowed(alg === undefined ? fitting : [alg], configured);
  if (algorithms.length === 0) return undefined;
  return { kid, key: key.export({ type: 'spki', format: 'pem' }) as string, algorithms };
}
