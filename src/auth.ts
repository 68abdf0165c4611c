/**
 * Token -> identity, or a Rejection carrying close code 4401. Verification uses fast-jwt with an
 * explicit algorithm list derived from the configured key (fast-jwt would otherwise accept any),
 * so `alg: none` and algorithm confusion are impossible. A refusal names the check that failed
 * (`invalid token: signature`), which tells a client what to fix without echoing the token.
 * Public-key results are cached by token, never past `exp`; HMAC is verified every time (cheaper
 * than the cache's own token hash).
 *
 * Several keys at once (rotation without downtime): a token whose `kid` names a key is verified
 * with that key alone; one without `kid`, or whose `kid` no key has, is tried against each key
 * without a `kid` (JWT_SECRET's secrets, a key file's keys) until one verifies its signature. A
 * `kid` the set lacks when every key has one is refused `invalid token: kid` and asks the key
 * source to refetch (at most once per JWT_KEYS_UNKNOWN_KID_INTERVAL). A token whose `exp` lies
 * further ahead than JWT_MAX_LIFETIME is refused, so a revocation (revocation.ts) kept that long
 * outlives every token it covers.
 */
import { randomBytes } from 'node:crypto';
import { createDecoder, createSigner, createVerifier, TokenError, type Algorithm } from 'fast-jwt';
import type { JwtConfig } from './config.js';
import { PUBLIC_KEY_ALGS } from './config.js';
import { isRejection, REJECTIONS, type Rejection } from './errors.js';
export { isRejection } from './errors.js';
import { fixedKeys, initialKeys, type KeySource } from './key-source.js';
import type { KeyMaterial } from './keys.js';
import { isTokenId, type RevocationCheck } from './revocation.js';
import { compileRooms, isValidId, isValidRoom, type RoomPatterns } from './rooms.js';

export interface Identity {
  readonly userId: string;
  /** Display name used as `sender`: the `username` claim, else `sub`. */
  readonly username: string;
  /** From the `rooms` claim; undefined when the token has none. */
  readonly claim: RoomPatterns | undefined;
  /** Epoch milliseconds of `exp`. */
  readonly expiresAt: number;
  /** Epoch milliseconds of `iat`; undefined without one (a revocation by issue time then covers the token). */
  readonly issuedAt: number | undefined;
  /** The `jti` claim, when it is a token id (revocation.ts isTokenId). */
  readonly tokenId: string | undefined;
}

/** A verified room grant: `sub` may join `room` until `expiresAt` (epoch ms). */
export interface RoomGrant {
  readonly userId: string;
  readonly room: string;
  readonly expiresAt: number;
}

export interface Authenticator {
  /** The algorithms of the keys in force. */
  readonly algorithms: readonly string[];
  verify(token: string): Identity | Rejection;
  /** A room grant: same keys, algorithms, `iss`/`aud`, clock tolerance and revocations as connection tokens, plus a `room` claim. */
  verifyGrant(token: string): RoomGrant | 'invalid' | 'expired' | 'revoked';
}

/**
 * Cached public-key verifications (RSA/ECDSA/EdDSA cost 50-500 us each); each entry lives at most
 * until the token's `exp`. HMAC tokens are not cached: HS256 takes about 20 us, the cache's
 * SHA-256 of the token and its entry (about 300 bytes held per connection) cost more than they save.
 */
const PUBLIC_KEY_CACHE_SIZE = 10_000;
const MAX_USERNAME_LENGTH = 128;
/**
 * The latest `exp` accepted: 9999-12-31T23:59:59Z. Later values (up to 1e308) are no real expiry,
 * and past year 275760 a JavaScript Date cannot even hold them (`expires_at` could not be written).
 */
export const MAX_EXP_SECONDS = 253_402_300_799;

const EXPIRED = REJECTIONS.token_expired;

/** The refusal of a claim fast-jwt found missing (`requiredClaims`), by claim. */
const MISSING_CLAIM: Readonly<Record<string, Rejection>> = {
  exp: REJECTIONS.token_no_exp,
  sub: REJECTIONS.token_no_sub,
  iss: REJECTIONS.token_no_iss,
  aud: REJECTIONS.token_no_aud,
};
/** The refusal of a claim fast-jwt found of the wrong type or value, by claim. */
const BAD_CLAIM: Readonly<Record<string, Rejection>> = {
  nbf: REJECTIONS.token_nbf,
  exp: REJECTIONS.token_exp,
  aud: REJECTIONS.token_aud,
  iss: REJECTIONS.token_iss,
};

const decodeHeader = createDecoder({ complete: true });

/**
 * Names the check a token failed, for the close reason and the log (never the token). fast-jwt
 * checks in this order: format, signature present, algorithm, signature, crit, required claims
 * (exp, sub, iss, aud), then nbf, exp, aud and iss; its messages name the claim ("The iss claim ...").
 */
function failedCheck(err: unknown, token: string, algorithms: readonly string[]): Rejection {
  if (!(err instanceof TokenError)) return REJECTIONS.token_format;
  const claim = /\b(\w+) claim/.exec(err.message)?.[1] ?? '';
  switch (err.code) {
    case TokenError.codes.expired:
      return EXPIRED;
    case TokenError.codes.inactive:
      return REJECTIONS.token_nbf;
    case TokenError.codes.invalidAlgorithm:
      return REJECTIONS.token_algorithm;
    case TokenError.codes.invalidSignature:
    // The key could not check this signature (say, an RSA signature of the wrong length).
    case TokenError.codes.verifyError:
      return REJECTIONS.token_signature;
    case TokenError.codes.missingSignature:
      // Checked before the algorithm: an unsigned `alg: none` token is refused for its algorithm.
      return algorithms.includes(headerAlg(token)) ? REJECTIONS.token_signature : REJECTIONS.token_algorithm;
    case TokenError.codes.invalidCritHeader:
      return REJECTIONS.token_crit;
    // Every claim fast-jwt requires or checks here has its entry; the format is the fallback.
    case TokenError.codes.missingRequiredClaim:
      return MISSING_CLAIM[claim] ?? REJECTIONS.token_format;
    case TokenError.codes.invalidClaimType:
    case TokenError.codes.invalidClaimValue:
      return BAD_CLAIM[claim] ?? REJECTIONS.token_format;
    default:
      // malformed, invalidType, invalidPayload: not three base64url parts with a JSON header and
      // payload. (fast-jwt's key and option errors cannot come from a token: both were checked at start.)
      return REJECTIONS.token_format;
  }
}

/** The `alg` of a token fast-jwt could decode; '' when it has none. */
function headerAlg(token: string): string {
  try {
    const { header } = decodeHeader(token) as { header: { alg?: unknown } };
    return typeof header.alg === 'string' ? header.alg : '';
  } catch {
    return '';
  }
}

/** The keys in force and their verifiers, rebuilt when the key source replaces its set. */
interface Verifiers {
  readonly from: readonly KeyMaterial[];
  readonly byKid: ReadonlyMap<string, KeyVerifier>;
  /** Keys without a `kid`: tried for a token whose `kid` names no key (or that has none). */
  readonly unkeyed: readonly KeyVerifier[];
  /** Tokens without `kid` are tried against each of these. */
  readonly all: readonly KeyVerifier[];
  readonly algorithms: readonly string[];
}

interface KeyVerifier {
  readonly algorithms: readonly string[];
  readonly verify: (token: string) => Record<string, unknown>;
}

/** Errors after which the next key may still verify the token: it was not signed with this one. */
const OTHER_KEY = new Set<string>([TokenError.codes.invalidSignature, TokenError.codes.verifyError, TokenError.codes.invalidAlgorithm, TokenError.codes.missingSignature]);

function buildVerifiers(jwt: JwtConfig, keys: readonly KeyMaterial[]): Verifiers {
  const byKid = new Map<string, KeyVerifier>();
  const unkeyed: KeyVerifier[] = [];
  const all: KeyVerifier[] = [];
  for (const material of keys) {
    const verifier: KeyVerifier = { algorithms: material.algorithms, verify: keyVerifier(jwt, material) as KeyVerifier['verify'] };
    all.push(verifier);
    if (material.kid === undefined) unkeyed.push(verifier);
    else byKid.set(material.kid, verifier);
  }
  return { from: keys, byKid, unkeyed, all, algorithms: [...new Set(keys.flatMap((k) => k.algorithms))] };
}

function keyVerifier(jwt: JwtConfig, { key, algorithms }: KeyMaterial) {
  return createVerifier({
    key,
    algorithms: algorithms as Algorithm[],
    // fast-jwt checks iss/aud only when present; configured ones must be present.
    requiredClaims: ['exp', 'sub', ...(jwt.issuer !== undefined ? ['iss'] : []), ...(jwt.audience !== undefined ? ['aud'] : [])],
    clockTolerance: jwt.clockToleranceSeconds * 1000,
    cache: algorithms.some((a) => PUBLIC_KEY_ALGS.includes(a)) ? PUBLIC_KEY_CACHE_SIZE : false,
    ...(jwt.issuer !== undefined && { allowedIss: jwt.issuer }),
    ...(jwt.audience !== undefined && { allowedAud: jwt.audience }),
  });
}

/** The `kid` of a token's header; undefined when it has none or the header cannot be read (the verifier says why). */
function headerKid(token: string): string | undefined {
  try {
    const { header } = decodeHeader(token) as { header: { kid?: unknown } };
    return typeof header.kid === 'string' ? header.kid : undefined;
  } catch {
    return undefined;
  }
}

export interface AuthenticatorDeps {
  /** The keys (key-source.ts); default: JWT_SECRET's secrets or JWT_PUBLIC_KEY_FILE's keys, read once. */
  readonly keys?: KeySource;
  /** The revocation list (revocation.ts); default: nothing is revoked. */
  readonly revocations?: RevocationCheck;
}

export function createAuthenticator(jwt: JwtConfig, deps: AuthenticatorDeps = {}): Authenticator {
  const source = deps.keys ?? fixedKeys(initialKeys(jwt));
  const revocations = deps.revocations;
  const maxExpAhead = (jwt.maxLifetimeSeconds + jwt.clockToleranceSeconds) * 1000;
  let verifiers = buildVerifiers(jwt, source.keys());

  /** The claims of a token some key verifies; a Rejection names the check it failed. */
  const verified = (token: string): Record<string, unknown> | Rejection => {
    if (verifiers.from !== source.keys()) verifiers = buildVerifiers(jwt, source.keys());
    const { all, byKid, unkeyed } = verifiers;
    // One key without kid (a secret, a single PEM): the token's header is not read twice.
    let candidates = all;
    if (all.length !== 1 || byKid.size !== 0) {
      const kid = headerKid(token);
      const named = kid === undefined ? undefined : byKid.get(kid);
      if (named !== undefined) candidates = [named];
      else if (kid !== undefined) {
        candidates = unkeyed;
        if (unkeyed.length === 0) {
          source.unknownKid();
          return REJECTIONS.token_kid;
        }
      }
    }
    if (candidates.length === 0) return REJECTIONS.token_kid;
    let failed: unknown;
    for (const candidate of candidates) {
      try {
        return candidate.verify(token);
      } catch (err) {
        // A signature this key did not make may be another key's; any other failure is the token's.
        if (!(err instanceof TokenError) || !OTHER_KEY.has(err.code)) return failedCheck(err, token, candidate.algorithms);
        if (failed === undefined || (err.code !== TokenError.codes.invalidAlgorithm && err.code !== TokenError.codes.missingSignature)) failed = err;
      }
    }
    return failedCheck(failed, token, verifiers.algorithms);
  };

  return {
    get algorithms() {
      return verifiers.algorithms;
    },
    verify(token) {
      const claims = verified(token);
      if (isRejection(claims)) return claims;
      const identity = identityFrom(claims);
      if (isRejection(identity)) return identity;
      if (identity.expiresAt - (identity.issuedAt ?? Date.now()) > maxExpAhead) return REJECTIONS.token_lifetime;
      if (revocations?.isRevoked(identity) === true) return REJECTIONS.token_revoked;
      return identity;
    },
    verifyGrant(token) {
      const claims = verified(token);
      if (isRejection(claims)) return claims === EXPIRED ? 'expired' : 'invalid';
      const { sub, room, exp } = claims;
      if (!isValidId(sub) || !isValidRoom(room) || typeof exp !== 'number' || !Number.isFinite(exp) || exp > MAX_EXP_SECONDS) return 'invalid';
      const stamp = { userId: sub, ...stampOf(claims) };
      if (exp * 1000 - (stamp.issuedAt ?? Date.now()) > maxExpAhead) return 'invalid';
      if (revocations?.isRevoked(stamp) === true) return 'revoked';
      return { userId: sub, room, expiresAt: exp * 1000 };
    },
  };
}

/** `iat` (epoch ms) and `jti` when the token has usable ones: a revocation by issue time treats a token without `iat` as issued before any time. */
function stampOf(claims: Record<string, unknown>): { issuedAt: number | undefined; tokenId: string | undefined } {
  const { iat, jti } = claims;
  return { issuedAt: typeof iat === 'number' && Number.isFinite(iat) ? iat * 1000 : undefined, tokenId: isTokenId(jti) ? jti : undefined };
}

function identityFrom(claims: Record<string, unknown>): Identity | Rejection {
  const { sub, username, exp } = claims;
  if (!isValidId(sub)) return REJECTIONS.token_sub;
  // fast-jwt checked that exp is a number; JSON's 1e999 is Infinity, past any year.
  if (typeof exp !== 'number') return REJECTIONS.token_exp;
  if (!(exp <= MAX_EXP_SECONDS)) return REJECTIONS.token_exp_too_far;
  if (username !== undefined && (typeof username !== 'string' || username === '' || username.length > MAX_USERNAME_LENGTH)) {
    return REJECTIONS.token_username;
  }
  const claim = compileRooms(claims['rooms']);
  if (claim === null) return REJECTIONS.token_rooms;
  return { userId: sub, username: username ?? sub, claim, expiresAt: exp * 1000, ...stampOf(claims) };
}

export interface TokenRequest {
  readonly secret: string;
  readonly userId: string;
  readonly username?: string | undefined;
  readonly rooms?: readonly string[] | undefined;
  /** A room grant for this one room instead of a connection token. */
  readonly room?: string | undefined;
  readonly ttlSeconds: number;
  readonly issuer?: string | undefined;
  readonly audience?: string | undefined;
  readonly algorithm?: 'HS256' | 'HS384' | 'HS512';
}

/** Mints an HMAC token: for `ws-edge token`, the dev start banner and tests. */
export function signToken(req: TokenRequest): string {
  const sign = createSigner({
    key: req.secret,
    algorithm: req.algorithm ?? 'HS256',
    expiresIn: req.ttlSeconds * 1000,
    ...(req.issuer !== undefined && { iss: req.issuer }),
    ...(req.audience !== undefined && { aud: req.audience }),
  });
  return sign({
    sub: req.userId,
    ...(req.username !== undefined && { username: req.username }),
    ...(req.rooms !== undefined && { rooms: req.rooms }),
    ...(req.room !== undefined && { room: req.room }),
  });
}

/** A random secret for zero-config development; never used when NODE_ENV=production. */
export function ephemeralSecret(): string {
  return randomBytes(32).toString('base64url');
}
