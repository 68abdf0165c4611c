/**
 * What an upgrade request asks for, read from its headers and query before any socket exists:
 * the token (query `token`, subprotocol `wsedge.bearer.<token>`, or an `Authorization: Bearer`
 * header for non-browser clients; exactly one of them) and the origin check.
 */
import { REJECTIONS, type Rejection } from './errors.js';
import { BEARER_PREFIX, MAX_TOKEN_LENGTH, PROTOCOL } from './messages.js';

export interface UpgradeRequest {
  readonly query: string;
  readonly protocols: string;
  readonly origin: string;
  /** The Authorization header ('' when absent); only its Bearer scheme carries a token. */
  readonly authorization?: string;
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

/** The token of an `Authorization: Bearer <token>` header (scheme case-insensitive); other schemes carry none. */
function headerToken(authorization: string | undefined): string[] {
  const match = /^bearer(?:\s+(.*))?$/i.exec(authorization?.trim() ?? '');
  const token = match?.[1]?.trim() ?? '';
  return token === '' ? [] : [token];
}

/**
 * Finds exactly one token; two tokens anywhere (query, subprotocol, Authorization header) are
 * refused, never guessed. An empty value (`?token=`, a bare `wsedge.bearer.`, `Bearer ` alone)
 * counts as absent.
 */
export function extractToken(req: UpgradeRequest): TokenFound | Rejection {
  const offered = req.protocols.split(',').map((p) => p.trim());
  const bearers = offered.filter((p) => p.startsWith(BEARER_PREFIX) && p.length > BEARER_PREFIX.length).map((p) => p.slice(BEARER_PREFIX.length));
  const queried = req.query === '' ? [] : new URLSearchParams(req.query).getAll('token').filter((t) => t !== '');
  const protocol = offered.includes(PROTOCOL) ? PROTOCOL : '';
  const all = [...queried, ...bearers, ...headerToken(req.authorization)];
  if (all.length > 1) return REJECTIONS.token_ambiguous;
  const token = all[0];
  if (token === undefined) return REJECTIONS.token_missing;
  if (token.length > MAX_TOKEN_LENGTH) return REJECTIONS.token_too_long;
  if (bearers.length === 1 && protocol === '') {
    return REJECTIONS.subprotocol;
  }
  return { token, protocol };
}

/** Requests without Origin come from non-browser clients and are allowed; an empty list allows any. */
export function checkOrigin(origin: string, allowed: readonly string[]): Rejection | undefined {
  if (origin === '' || allowed.length === 0 || allowed.includes(origin)) return undefined;
  return REJECTIONS.origin;
}
