/**
 * One JWKS fetch: GET the URL with a deadline, refusing redirects (a key set is read from the one
 * configured place, never from where an answer points, and never over plain http after https),
 * answers other than 200, and bodies past the byte cap while they stream in. The caller parses.
 */
import { get as httpGet, type IncomingMessage } from 'node:http';
import { get as httpsGet } from 'node:https';
import type { KeyFetchOutcome } from './metrics.js';

/** Why a fetch gave no body: a fixed vocabulary (metric label, log field). */
export type FetchProblem = Extract<KeyFetchOutcome, 'redirect' | 'http_error' | 'too_large' | 'timeout' | 'network'>;

export class FetchError extends Error {
  constructor(
    readonly problem: FetchProblem,
    detail: string,
  ) {
    super(`${problem}: ${detail}`);
  }
}

export interface FetchLimits {
  readonly maxBytes: number;
  readonly timeoutMs: number;
}

/** Resolves the body as text; rejects with a FetchError. */
export function fetchKeySet(url: string, limits: FetchLimits): Promise<string> {
  return new Promise((resolve, reject) => {
    const get = url.startsWith('https:') ? httpsGet : httpGet;
    // One deadline for the whole answer: a server dripping bytes never holds a fetch past it.
    const timer = setTimeout(() => fail(new FetchError('timeout', `no answer within ${limits.timeoutMs} ms`)), limits.timeoutMs);
    const done = (body: string): void => {
      clearTimeout(timer);
      resolve(body);
    };
    const req = get(url, { headers: { accept: 'application/json' } }, (res) => read(res, limits.maxBytes).then(done, fail));
    function fail(err: FetchError): void {
      clearTimeout(timer);
      reject(err);
      req.destroy();
    }
    req.on('error', (err) => fail(err instanceof FetchError ? err : new FetchError('network', err.message)));
  });
}

function read(res: IncomingMessage, maxBytes: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const status = res.statusCode ?? 0;
    const refuse = (err: FetchError): void => {
      res.destroy();
      reject(err);
    };
    if (status >= 300 && status < 400) return refuse(new FetchError('redirect', `status ${status}: redirects are not followed`));
    if (status !== 200) return refuse(new FetchError('http_error', `status ${status}`));
    if (Number(res.headers['content-length'] ?? 0) > maxBytes) return refuse(new FetchError('too_large', `more than ${maxBytes} bytes`));
    const chunks: Buffer[] = [];
    let size = 0;
    res.on('data', (chunk: Buffer) => {
      size += chunk.byteLength;
      if (size > maxBytes) return refuse(new FetchError('too_large', `more than ${maxBytes} bytes`));
      chunks.push(chunk);
    });
    res.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    res.on('error', (err) => reject(new FetchError('network', err.message)));
  });
}
