/**
 * Token -> identity, or a Rejection carrying close code 4401. Verification uses fast-jwt with an
 * explicit algorithm list derived from the configured key (fast-jwt would otherwise accept any),
 * so `alg: none` and algorithm confusion are impossible. A refusal names the check that failed
 * (`invalid token: signature`), which tells a client what to fix without echoing the token.
 * Public-key results are cached by token, never past `exp`; HMAC is verified every time (cheaper
 * than the cache's own token hash).
 */
import { createPublicKey, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createDecoder, createSigner, createVerifier, TokenError, type Algorithm } from 'fast-jwt';
import type { JwtConfig } from './config.js';
import { HMAC_ALGS, PUBLIC_KEY_ALGS } from './config.js';
import { REJECTIONS, type Rejection } from './errors.js';
export { isRejection } from './errors.js';
import { compileRooms, isValidId, isValidRoom, type RoomPatterns } from './rooms.js';

export interface Identity {
  readonly userId: string;
  /** Display name used as `sender`: the `username` claim, else `sub`. */
  readonly username: string;
  /** From the `rooms` claim; undefined when the token has none. */
  readonly claim: RoomPatterns | undefined;
  /** Epoch milliseconds of `exp`. */
  readonly expiresAt: number;
}

/** A verified room grant: `sub` may join `room` until `expiresAt` (epoch ms). */
export interface RoomGrant {
  readonly userId: string;
  readonly room: string;
  readonly expiresAt: number;
}

export interface Authenticator {
  readonly algorithms: readonly string[];
  verify(token: string): Identity | Rejection;
  /** A room grant: same keys, algorithms, `iss`/`aud` and clock tolerance as connection tokens, plus a `room` claim. */
  verifyGrant(token: string): RoomGrant | 'invalid' | 'expired';
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

/** Algorithms that fit a PEM public key, by key type and curve. */
function algorithmsForPublicKey(pem: string): string[] {
  const key = createPublicKey(pem);
  switch (key.asymmetricKeyType) {
    case 'rsa':
      return ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512'];
    case 'rsa-pss':
      return ['PS256', 'PS384', 'PS512'];
    case 'ec': {
      const curve = key.asymmetricKeyDetails?.namedCurve;
      const byCurve: Record<string, string> = { prime256v1: 'ES256', secp384r1: 'ES384', secp521r1: 'ES512' };
      const alg = curve === undefined ? undefined : byCurve[curve];
      if (alg === undefined) throw new Error(`JWT_PUBLIC_KEY_FILE: unsupported EC curve ${curve ?? 'unknown'}`);
      return [alg];
    }
    case 'ed25519':
    case 'ed448':
      return ['EdDSA'];
    default:
      throw new Error(`JWT_PUBLIC_KEY_FILE: unsupported key type ${key.asymmetricKeyType ?? 'unknown'}`);
  }
}

/** The key and algorithm list the verifier uses; throws (start-up failure) on a config that cannot work. */
export function resolveKey(jwt: JwtConfig): { key: string; algorithms: string[] } {
  let key: string;
  let fitting: string[];
  if (jwt.publicKeyFile !== undefined) {
    try {
      key = readFileSync(jwt.publicKeyFile, 'utf8');
    } catch (err) {
      throw new Error(`JWT_PUBLIC_KEY_FILE: cannot read ${jwt.publicKeyFile}: ${(err as Error).message}`);
    }
    try {
      fitting = algorithmsForPublicKey(key);
    } catch (err) {
      const message = (err as Error).message;
      throw new Error(message.startsWith('JWT_PUBLIC_KEY_FILE:') ? message : `JWT_PUBLIC_KEY_FILE: ${jwt.publicKeyFile} is not a PEM public key: ${message}`);
    }
  } else if (jwt.secret !== undefined) {
    key = jwt.secret;
    fitting = [...HMAC_ALGS];
  } else {
    throw new Error('JWT_SECRET: no JWT key configured');
  }
  const algorithms = jwt.algorithms === undefined ? fitting : fitting.filter((a) => jwt.algorithms?.includes(a));
  if (algorithms.length === 0) {
    throw new Error(`JWT_ALGORITHMS: none of ${jwt.algorithms?.join(', ')} fits the configured key (${fitting.join(', ')})`);
  }
  if (algorithms.some((a) => !HMAC_ALGS.includes(a) && !PUBLIC_KEY_ALGS.includes(a))) {
    throw new Error('JWT_ALGORITHMS: unsupported algorithm');
  }
  return { key, algorithms };
}

export function createAuthenticator(jwt: JwtConfig): Authenticator {
  const { key, algorithms } = resolveKey(jwt);
  const verifier = createVerifier({
    key,
    algorithms: algorithms as Algorithm[],
    // fast-jwt checks iss/aud only when present; configured ones must be present.
    requiredClaims: ['exp', 'sub', ...(jwt.issuer !== undefined ? ['iss'] : []), ...(jwt.audience !== undefined ? ['aud'] : [])],
    clockTolerance: jwt.clockToleranceSeconds * 1000,
    cache: algorithms.some((a) => PUBLIC_KEY_ALGS.includes(a)) ? PUBLIC_KEY_CACHE_SIZE : false,
    ...(jwt.issuer !== undefined && { allowedIss: jwt.issuer }),
    ...(jwt.audience !== undefined && { allowedAud: jwt.audience }),
  });

  return {
    algorithms,
    verify(token) {
      let claims: Record<string, unknown>;
      try {
        claims = verifier(token) as Record<string, unknown>;
      } catch (err) {
        return failedCheck(err, token, algorithms);
      }
      return identityFrom(claims);
    },
    verifyGrant(token) {
      let claims: Record<string, unknown>;
      try {
        claims = verifier(token) as Record<string, unknown>;
      } catch (err) {
        return err instanceof TokenError && err.code === TokenError.codes.expired ? 'expired' : 'invalid';
      }
      const { sub, room, exp } = claims;
      if (!isValidId(sub) || !isValidRoom(room) || typeof exp !== 'number' || !Number.isFinite(exp) || exp > MAX_EXP_SECONDS) return 'invalid';
      return { userId: sub, room, expiresAt: exp * 1000 };
    },
  };
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
  return { userId: sub, username: username ?? sub, claim, expiresAt: exp * 1000 };
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
