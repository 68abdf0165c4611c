import { describe, expect, it } from 'vitest';
import { checkOrigin, refusalProtocol, extractToken, type UpgradeRequest } from '../../src/handshake.js';
import { BEARER_PREFIX, PROTOCOL, WS_PATH } from '../../src/messages.js';

const request = (fields: Partial<UpgradeRequest>): UpgradeRequest => ({ query: '', protocols: '', origin: '', ...fields });

const MISSING = { reason: 'token_missing', code: 4401, message: 'missing token' };
const AMBIGUOUS = { reason: 'token_ambiguous', code: 4401, message: 'more than one token in the request' };

describe('constants', () => {
  it('uses the contract endpoint and subprotocol names', () => {
    expect(WS_PATH).toBe('/api/v1/ws/connect');
    expect(PROTOCOL).toBe('wsedge.v1');
    expect(BEARER_PREFIX).toBe('wsedge.bearer.');
  });
});

describe('extractToken', () => {
  it('takes the token from the query', () => {
    expect(extractToken(request({ query: 'token=abc.def.ghi' }))).toEqual({ token: 'abc.def.ghi', protocol: '' });
  });

  it('decodes the query and ignores other parameters', () => {
    expect(extractToken(request({ query: 'x=1&token=a%2Bb&y=2' }))).toEqual({ token: 'a+b', protocol: '' });
  });

  it('answers wsedge.v1 when the client offered it next to a query token', () => {
    expect(extractToken(request({ query: 'token=t', protocols: 'wsedge.v1' }))).toEqual({ token: 't', protocol: 'wsedge.v1' });
  });

  it('takes the token from the bearer subprotocol offered with wsedge.v1, in either order', () => {
    expect(extractToken(request({ protocols: 'wsedge.v1, wsedge.bearer.abc.def.ghi' }))).toEqual({ token: 'abc.def.ghi', protocol: 'wsedge.v1' });
    expect(extractToken(request({ protocols: 'wsedge.bearer.xyz,wsedge.v1' }))).toEqual({ token: 'xyz', protocol: 'wsedge.v1' });
  });

  it('refuses a token in both the query and the subprotocol', () => {
    expect(extractToken(request({ query: 'token=a', protocols: 'wsedge.v1, wsedge.bearer.b' }))).toEqual(AMBIGUOUS);
    expect(extractToken(request({ query: 'token=same', protocols: 'wsedge.v1, wsedge.bearer.same' }))).toEqual(AMBIGUOUS);
  });

  it('refuses two query tokens', () => {
    expect(extractToken(request({ query: 'token=a&token=b' }))).toEqual(AMBIGUOUS);
  });

  it('counts an empty token as absent, wherever it is (docs: "an empty token parameter counts as missing")', () => {
    expect(extractToken(request({ query: 'token=a&token=' }))).toEqual({ token: 'a', protocol: '' });
    expect(extractToken(request({ query: 'token=', protocols: 'wsedge.v1, wsedge.bearer.b' }))).toEqual({ token: 'b', protocol: 'wsedge.v1' });
    expect(extractToken(request({ query: 'token=a', protocols: 'wsedge.v1, wsedge.bearer.' }))).toEqual({ token: 'a', protocol: 'wsedge.v1' });
  });

  it('refuses a token longer than 8192 characters, in the query or the subprotocol, and takes one of exactly 8192', () => {
    const TOO_LONG = { reason: 'token_invalid', code: 4401, message: 'token longer than 8192 characters' };
    expect(extractToken(request({ query: `token=${'a'.repeat(8193)}` }))).toEqual(TOO_LONG);
    expect(extractToken(request({ protocols: `wsedge.v1, wsedge.bearer.${'a'.repeat(8193)}` }))).toEqual(TOO_LONG);
    expect(extractToken(request({ query: `token=${'a'.repeat(8192)}` }))).toEqual({ token: 'a'.repeat(8192), protocol: '' });
  });

  it('takes the token from an Authorization: Bearer header (non-browser clients), answering wsedge.v1 only when offered', () => {
    expect(extractToken(request({ authorization: 'Bearer abc.def.ghi' }))).toEqual({ token: 'abc.def.ghi', protocol: '' });
    expect(extractToken(request({ authorization: 'bearer   abc.def.ghi  ', protocols: 'wsedge.v1' }))).toEqual({ token: 'abc.def.ghi', protocol: 'wsedge.v1' });
  });

  it('counts the Authorization header as a third place: a token there and in the query or the subprotocol is refused', () => {
    expect(extractToken(request({ authorization: 'Bearer a', query: 'token=b' }))).toEqual(AMBIGUOUS);
    expect(extractToken(request({ authorization: 'Bearer a', protocols: 'wsedge.v1, wsedge.bearer.a' }))).toEqual(AMBIGUOUS);
    expect(extractToken(request({ authorization: 'Bearer a', query: 'token=a', protocols: 'wsedge.v1, wsedge.bearer.a' }))).toEqual(AMBIGUOUS);
  });

  it('reads no token from other Authorization schemes or an empty Bearer', () => {
    expect(extractToken(request({ authorization: 'Basic YWxpY2U6c2VjcmV0' }))).toEqual(MISSING);
    expect(extractToken(request({ authorization: 'Bearer' }))).toEqual(MISSING);
    expect(extractToken(request({ authorization: 'Bearer   ' }))).toEqual(MISSING);
    expect(extractToken(request({ authorization: 'Bearertoken' }))).toEqual(MISSING);
    // Next to a token given another way, they change nothing.
    expect(extractToken(request({ authorization: 'Basic YWxpY2U6c2VjcmV0', query: 'token=q' }))).toEqual({ token: 'q', protocol: '' });
    expect(extractToken(request({ authorization: 'Bearer ', query: 'token=q' }))).toEqual({ token: 'q', protocol: '' });
  });

  it('refuses an Authorization token longer than 8192 characters', () => {
    expect(extractToken(request({ authorization: `Bearer ${'a'.repeat(8193)}` }))).toEqual({ reason: 'token_invalid', code: 4401, message: 'token longer than 8192 characters' });
  });

  it('refuses two bearer subprotocols', () => {
    expect(extractToken(request({ protocols: 'wsedge.v1, wsedge.bearer.a, wsedge.bearer.b' }))).toEqual(AMBIGUOUS);
  });

  it('refuses a bearer subprotocol offered without wsedge.v1', () => {
    expect(extractToken(request({ protocols: 'wsedge.bearer.abc' }))).toEqual({
      reason: 'subprotocol',
      code: 4401,
      message: 'offer wsedge.v1 with the bearer subprotocol',
    });
    expect(extractToken(request({ protocols: 'chat, wsedge.bearer.abc' }))).toMatchObject({ reason: 'subprotocol', code: 4401 });
  });

  it.each([
    ['nothing', {}],
    ['only wsedge.v1', { protocols: 'wsedge.v1' }],
    ['other query parameters', { query: 'tok=abc&tokens=x' }],
    ['an empty query token', { query: 'token=' }],
    ['a bare token parameter', { query: 'token' }],
    ['an empty bearer subprotocol', { protocols: 'wsedge.v1, wsedge.bearer.' }],
  ])('answers token_missing for %s', (_what, fields) => {
    expect(extractToken(request(fields))).toEqual(MISSING);
  });
});

describe('refusalProtocol', () => {
  it('answers wsedge.v1 when offered, trimmed, among others', () => {
    expect(refusalProtocol('wsedge.v1')).toBe('wsedge.v1');
    expect(refusalProtocol('chat,  wsedge.v1 ,wsedge.bearer.x')).toBe('wsedge.v1');
  });

  it('answers the first offered non-bearer protocol so a browser can read the close code', () => {
    expect(refusalProtocol('chat, superchat')).toBe('chat');
    expect(refusalProtocol('wsedge.bearer.abc, chat')).toBe('chat');
    expect(refusalProtocol('WSEDGE.V1')).toBe('WSEDGE.V1');
  });

  it('never echoes a bearer token, and answers nothing when nothing else was offered', () => {
    expect(refusalProtocol('')).toBe('');
    expect(refusalProtocol('wsedge.bearer.secret-token')).toBe('');
    expect(refusalProtocol('wsedge.bearer.wsedge.v1')).toBe('');
  });
});

describe('checkOrigin', () => {
  const FORBIDDEN = { reason: 'origin', code: 4403, message: 'origin not allowed' };
  const allowed = ['https://app.example.com', 'http://localhost:3000'];

  it('allows any origin when the list is empty', () => {
    expect(checkOrigin('https://anything.example', [])).toBeUndefined();
  });

  it('allows requests without an Origin header (non-browser clients)', () => {
    expect(checkOrigin('', allowed)).toBeUndefined();
  });

  it('allows a listed origin', () => {
    expect(checkOrigin('https://app.example.com', allowed)).toBeUndefined();
    expect(checkOrigin('http://localhost:3000', allowed)).toBeUndefined();
  });

  it.each(['https://evil.example', 'http://app.example.com', 'https://app.example.com.evil.example', 'https://app.example.com:443', 'http://localhost:3001', 'null'])(
    'refuses %s with 4403',
    (origin) => {
      expect(checkOrigin(origin, allowed)).toEqual(FORBIDDEN);
    },
  );
});
