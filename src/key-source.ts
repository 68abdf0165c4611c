/**
 * Where the verification keys come from, and their refresh: JWT_SECRET's secrets (fixed for the
 * node's life), JWT_PUBLIC_KEY_FILE (re-read every JWT_KEYS_REFRESH) or JWT_JWKS_URL (fetched every
 * JWT_KEYS_REFRESH, and again for a token whose `kid` the set lacks, at most once per
 * JWT_KEYS_UNKNOWN_KID_INTERVAL, whatever the number of such tokens). A refresh that fails or
 * brings a refused set keeps the last good set; every outcome is logged and counted.
 */
import { readFileSync } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import type { JwtConfig } from './config.js';
import { fetchKeySet, FetchError } from './jwks.js';
import { hmacKeys, jwksKeys, KeySetError, pemKeys, type KeyMaterial } from './keys.js';
import type { Logger } from './log.js';
import type { KeyFetchOutcome, Metrics } from './metrics.js';

export interface KeySource {
  /** The keys in force; replaced (never edited) on a refresh, so a reader can keep what it built from it. */
  keys(): readonly KeyMaterial[];
  /** A token named a `kid` the set lacks: refetch, unless one was started within the interval. */
  unknownKid(): void;
  /** Settles once the first load ended (JWKS: fetched or failed). */
  readonly ready: Promise<void>;
  close(): void;
}

type Source = { readonly kind: 'file'; readonly path: string } | { readonly kind: 'jwks'; readonly url: string };

/**
 * The keys known at start, read synchronously: JWT_SECRET's secrets or JWT_PUBLIC_KEY_FILE's keys
 * (none for a JWKS, fetched later). Throws, naming the variable, for a configuration that cannot work.
 */
export function initialKeys(jwt: JwtConfig): KeyMaterial[] {
  if (jwt.jwksUrl !== undefined) return [];
  if (jwt.publicKeyFile !== undefined) {
    let text: string;
    try {
      text = readFileSync(jwt.publicKeyFile, 'utf8');
    } catch (err) {
      throw new Error(`JWT_PUBLIC_KEY_FILE: cannot read ${jwt.publicKeyFile}: ${(err as Error).message}`);
    }
    try {
      return pemKeys(text, jwt.algorithms, jwt.keySource.maxKeys);
    } catch (err) {
      const problem = err instanceof KeySetError ? err.problem : 'invalid_key';
      if (problem === 'no_usable_key') throw new Error(`JWT_ALGORITHMS: none of ${jwt.algorithms?.join(', ')} fits the keys of ${jwt.publicKeyFile}`);
      throw new Error(`JWT_PUBLIC_KEY_FILE: ${jwt.publicKeyFile}: ${(err as Error).message}`);
    }
  }
  if (jwt.secrets.length === 0) throw new Error('JWT_SECRET: no JWT key configured');
  const keys = hmacKeys(jwt.secrets, jwt.algorithms);
  if (keys[0]!.algorithms.length === 0) throw new Error(`JWT_ALGORITHMS: none of ${jwt.algorithms?.join(', ')} fits the configured key (HS256, HS384, HS512)`);
  return keys;
}

/** A set that never changes (JWT_SECRET, tests, the CLI). */
export function fixedKeys(keys: readonly KeyMaterial[]): KeySource {
  return { keys: () => keys, unknownKid() {}, ready: Promise.resolve(), close() {} };
}

/** The key set `jwt` names, refreshed when it comes from a file or a JWKS. Throws like initialKeys. */
export function createKeySource(jwt: JwtConfig, metrics: Metrics, log: Logger): KeySource {
  const keys = initialKeys(jwt);
  metrics.keySetLoaded(keys.length, jwt.jwksUrl !== undefined || jwt.publicKeyFile !== undefined);
  if (jwt.jwksUrl === undefined && jwt.publicKeyFile === undefined) return fixedKeys(keys);
  const source: Source = jwt.jwksUrl !== undefined ? { kind: 'jwks', url: jwt.jwksUrl } : { kind: 'file', path: jwt.publicKeyFile! };
  return refreshing(jwt, source, keys, metrics, log);
}

function refreshing(jwt: JwtConfig, source: Source, initial: KeyMaterial[], metrics: Metrics, log: Logger): KeySource {
  const limits = jwt.keySource;
  const name = source.kind === 'jwks' ? 'JWT_JWKS_URL' : 'JWT_PUBLIC_KEY_FILE';
  let keys: readonly KeyMaterial[] = initial;
  let lastText: string | undefined;
  let lastStart = 0;
  let inFlight: Promise<void> | undefined;
  let closed = false;

  const parse = (text: string): KeyMaterial[] =>
    source.kind === 'jwks' ? jwksKeys(text, jwt.algorithms, limits.maxKeys) : pemKeys(text, jwt.algorithms, limits.maxKeys);

  const read = async (): Promise<string> => {
    if (source.kind === 'jwks') return fetchKeySet(source.url, limits);
    const size = (await stat(source.path)).size;
    if (size > limits.maxBytes) throw new FetchError('too_large', `more than ${limits.maxBytes} bytes`);
    return readFile(source.path, 'utf8');
  };

  const counted = (outcome: KeyFetchOutcome, err?: Error): void => {
    metrics.keyFetch(outcome);
    if (err !== undefined) log.warn({ event: 'jwt_keys_refused', source: source.kind, outcome, err: err.message, keys_kept: keys.length }, `${name}: key set refused, the last good set is kept`);
  };

  const load = async (): Promise<void> => {
    lastStart = Date.now();
    let text: string;
    try {
      text = await read();
    } catch (err) {
      return counted(err instanceof FetchError ? err.problem : 'network', err as Error);
    }
    if (closed) return;
    if (text === lastText) {
      metrics.keySetLoaded(keys.length, true);
      return counted('unchanged');
    }
    let next: KeyMaterial[];
    try {
      next = parse(text);
    } catch (err) {
      return counted(err instanceof KeySetError ? err.problem : 'invalid', err as Error);
    }
    keys = next;
    lastText = text;
    metrics.keySetLoaded(next.length, true);
    counted('ok');
    log.info({ event: 'jwt_keys_loaded', source: source.kind, keys: next.length, kids: next.map((k) => k.kid ?? null) }, `${name}: key set loaded`);
  };

  const refresh = (): Promise<void> => {
    if (inFlight === undefined) inFlight = load().finally(() => (inFlight = undefined));
    return inFlight;
  };

  const timer = setInterval(() => void refresh(), limits.refreshSeconds * 1000);
  timer.unref();
  return {
    keys: () => keys,
    unknownKid() {
      if (closed || inFlight !== undefined || Date.now() - lastStart < limits.unknownKidSeconds * 1000) return;
      void refresh();
    },
    // A key file was read at start (initialKeys): its first refresh waits for the interval.
    ready: source.kind === 'jwks' ? refresh() : Promise.resolve(),
    close() {
      closed = true;
      clearInterval(timer);
    },
  };
}
