/**
 * What an upgrade request asks for, read from its headers and query before any socket exists:
 * the token (query `token` or subprotocol `wsedge.bearer.<token>`, never both) and the origin check.
 */
import { CloseCode, rejection, type Rejection } from './errors.js';

/** The public WebSocket endpoint of the product contract. */
export const WS_PATH = '/api/v1/ws/connect';

/** The subprotocol clients offer next to the bearer one; the server answers with it. */
export const PROTOCOL = 'wsedge.v1';
export const BEARER_PREFIX = 'wsedge.bearer.';

export interface UpgradeRequest {
  readonly query: string;
  readonly protocols: string;
  readonly origin: string;
}

export interface TokenFound {
  readonly token: string;
  /** Subprotocol to answer ('' when the client offered none of ours). */
  readonly protocol: string;
}

/**
 * The subprotocol to answer on a refused upgrade, so a browser completes the handshake and can read
 * the close code: ours if offered, else any offered one that is not a bearer token (the socket is
 * closed at once). A client that offered only a bearer token gets none: echoing it would put the
 * token in a response header, so such a client sees a failed handshake (1006).
 */
export function refusalProtocol(protocols: string): string {
  const offered = protocols.split(',').map((p) => p.trim()).filter((p) => p !== '' && !p.startsWith(BEARER_PREFIX));
  return offered.includes(PROTOCOL) ? PROTOCOL : (offered[0] ?? '');
}

/** The longest token accepted, at the upgrade and in refresh_token: a JWT with a few hundred claims. */
export const MAX_TOKEN_LENGTH = 8192;

/**
 * Finds exactly one token; two tokens anywhere are refused, never guessed. An empty value (`?token=`
 * or a bare `wsedge.bearer.`) counts as absent.
 */
export function extractToken(req: UpgradeRequest): TokenFound | Rejection {
  const offered = req.protocols.split(',').map((p) => p.trim());
  const bearers = offered.filter((p) => p.startsWith(BEARER_PREFIX) && p.length > BEARER_PREFIX.length).map((p) => p.slice(BEARER_PREFIX.length));
  const queried = req.query === '' ? [] : new URLSearchParams(req.query).getAll('token').filter((t) => t !== '');
  const protocol = offered.includes(PROTOCOL) ? PROTOCOL : '';
  const all = [...queried, ...bearers];
  if (all.length > 1) return rejection('token_ambiguous', CloseCode.UNAUTHORIZED, 'more than one token in the request');
  const token = all[0];
  if (token === undefined) return rejection('token_missing', CloseCode.UNAUTHORIZED, 'missing token');
  if (token.length > MAX_TOKEN_LENGTH) return rejection('token_invalid', CloseCode.UNAUTHORIZED, `token longer than ${MAX_TOKEN_LENGTH} characters`);
  if (bearers.length === 1 && protocol === '') {
    return rejection('subprotocol', CloseCode.UNAUTHORIZED, `offer ${PROTOCOL} with the bearer subprotocol`);
  }
  return { token, protocol };
}

/** Requests without Origin come from non-browser clients and are allowed; an empty list allows any. */
export function checkOrigin(origin: string, allowed: readonly string[]): Rejection | undefined {
  if (origin === '' || allowed.length === 0 || allowed.includes(origin)) return undefined;
  return rejection('origin', CloseCode.FORBIDDEN, 'origin not allowed');
}
