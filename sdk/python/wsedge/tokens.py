"""Connection tokens and room grants for nodes that verify with a shared secret (JWT_SECRET):
HS256, HS384 or HS512, signed with the standard library. The claims are those of `ws-edge token`
(src/cli.ts, src/auth.ts):

    connection token   {"sub", "rooms"?, "username"?, "iat", "exp", "iss"?, "aud"?}
    room grant         {"sub", "room", "iat", "exp", "iss"?, "aud"?}

    from wsedge import mint_token, mint_grant

    token = mint_token(os.environ["JWT_SECRET"], user.id, rooms=["project:*", "channel:general"], username=user.name)
    grant = mint_grant(os.environ["JWT_SECRET"], user.id, "project:42")  # join_room's "grant", 5 minutes

The secret is the UTF-8 bytes of JWT_SECRET exactly as the nodes have it (not base64-decoded).
`iss` and `aud` must equal the nodes' JWT_ISSUER and JWT_AUDIENCE when those are set.

Nodes that verify with a public key (JWT_PUBLIC_KEY_FILE) need RS256, ES256, EdDSA, ...: sign with
PyJWT (``pip install pyjwt[crypto]``) and the same claims:

    import time, jwt  # PyJWT

    now = int(time.time())
    token = jwt.encode(
        {"sub": str(user.id), "rooms": ["project:*"], "username": user.name, "iat": now, "exp": now + 3600},
        private_key_pem,  # the private half of the nodes' JWT_PUBLIC_KEY_FILE
        algorithm="RS256",  # or ES256 for a P-256 key, EdDSA for Ed25519
    )
    grant = jwt.encode({"sub": str(user.id), "room": "project:42", "iat": now, "exp": now + 300}, private_key_pem, algorithm="RS256")

PyJWT works for HS256 too (``jwt.encode(claims, secret, algorithm="HS256")``): the tokens are the same.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any, Iterable, Sequence

from . import _rules

__all__ = ["mint_token", "mint_grant", "HMAC_ALGORITHMS"]

HMAC_ALGORITHMS = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _secret_bytes(secret: str | bytes) -> bytes:
    if isinstance(secret, str):
        raw = secret.encode("utf-8")
    elif isinstance(secret, (bytes, bytearray)):
        raw = bytes(secret)
    else:
        raise TypeError(f"secret must be a str (the nodes' JWT_SECRET) or bytes, not {type(secret).__name__}")
    if not raw:
        raise ValueError("secret is empty")
    return raw


def _check_ttl(ttl: Any) -> int:
    if isinstance(ttl, bool) or not isinstance(ttl, int):
        raise TypeError(f"ttl must be an int number of seconds, not {type(ttl).__name__}")
    if ttl <= 0:
        raise ValueError(f"ttl must be a positive number of seconds: {ttl}")
    return ttl


def _check_audience(audience: Any) -> str | list[str] | None:
    if audience is None or isinstance(audience, str):
        return audience
    if isinstance(audience, (list, tuple)) and audience and all(isinstance(a, str) for a in audience):
        return list(audience)
    raise TypeError("audience must be a str or a non-empty list of str")


def _sign(secret: str | bytes, claims: dict[str, Any], algorithm: str) -> str:
    digest = HMAC_ALGORITHMS.get(algorithm) if isinstance(algorithm, str) else None
    if digest is None:
        raise ValueError(f"algorithm must be one of {', '.join(HMAC_ALGORITHMS)}, not {algorithm!r} (for RS256/ES256/EdDSA use PyJWT: see this module's doc)")
    key = _secret_bytes(secret)
    header = _b64url(json.dumps({"alg": algorithm, "typ": "JWT"}, separators=(",", ":")).encode())
    payload = _b64url(json.dumps(claims, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))
    signing_input = f"{header}.{payload}".encode("ascii")
    token = f"{header}.{payload}.{_b64url(hmac.new(key, signing_input, digest).digest())}"
    if len(token) > _rules.MAX_TOKEN_LENGTH:
        raise ValueError(f"token longer than {_rules.MAX_TOKEN_LENGTH} characters: the node refuses it (4401)")
    return token


def _times(ttl: int, now: float | None) -> dict[str, int]:
    iat = int(time.time() if now is None else now)
    exp = iat + _check_ttl(ttl)
    if exp > _rules.MAX_EXP_SECONDS:
        raise ValueError("exp after year 9999: the node refuses it (4401 invalid token: exp after year 9999)")
    return {"iat": iat, "exp": exp}


def _issuer_claims(issuer: Any, audience: Any) -> dict[str, Any]:
    claims: dict[str, Any] = {}
    if issuer is not None:
        if not isinstance(issuer, str):
            raise TypeError("issuer must be a str")
        claims["iss"] = issuer
    aud = _check_audience(audience)
    if aud is not None:
        claims["aud"] = aud
    return claims


def mint_token(
    secret: str | bytes,
    user_id: str | int,
    rooms: Iterable[str] | None = ("*",),
    ttl: int = 3600,
    username: str | None = None,
    issuer: str | None = None,
    audience: str | Sequence[str] | None = None,
    algorithm: str = "HS256",
    *,
    now: float | None = None,
) -> str:
    """A connection token, as ``ws-edge token --user <id> [--rooms ...] [--username ...] [--ttl ...]``.

    `user_id` becomes `sub`: 1-64 of [A-Za-z0-9_-]; an int (a database id) is written as its decimal
    string, since the node refuses a numeric `sub`. `rooms`: the `rooms` claim, entries ``*`` (every
    room; other users' personal rooms stay forbidden), ``<kind>:*`` or a room such as
    ``project:42``, at most 1000; None leaves the claim out (the token then grants no room but the
    user's own: joins need a grant, WS_ROOM_ACCESS=open or the callback). A str is refused, not
    split: pass a list. `username`: the display name used as `sender` (1-128 characters; default
    `sub` on the node). `ttl`: seconds until `exp`. `now`: the `iat` to use (tests), default the clock.
    """
    claims: dict[str, Any] = {"sub": _rules.coerce_user_id(user_id)}
    if username is not None:
        if not isinstance(username, str):
            raise TypeError("username must be a str")
        if not 1 <= _rules.js_length(username) <= _rules.MAX_USERNAME_LENGTH:
            raise ValueError(f"username must be 1-{_rules.MAX_USERNAME_LENGTH} characters")
        claims["username"] = username
    if rooms is not None:
        if isinstance(rooms, (str, bytes)):
            raise TypeError(f"rooms must be a list of rooms or patterns, such as [{rooms!r}], not a str")
        entries = [_rules.check_grant_entry(entry) for entry in rooms]
        if len(entries) > _rules.MAX_GRANT_ENTRIES:
            raise ValueError(f"rooms holds {len(entries)} entries; the node accepts at most {_rules.MAX_GRANT_ENTRIES}")
        claims["rooms"] = entries
    claims.update(_times(ttl, now))
    claims.update(_issuer_claims(issuer, audience))
    return _sign(secret, claims, algorithm)


def mint_grant(
    secret: str | bytes,
    user_id: str | int,
    room: str,
    ttl: int = 300,
    issuer: str | None = None,
    audience: str | Sequence[str] | None = None,
    algorithm: str = "HS256",
    *,
    now: float | None = None,
) -> str:
    """A room grant, as ``ws-edge token --user <id> --grant <room>``: lets `user_id` join this one
    `room` (``join_room``'s ``grant``) although their token's `rooms` claim does not cover it. The
    membership ends at the grant's `exp` (room_left `grant_expired`) unless the client joins again
    with a fresher grant, so keep them short (default 5 minutes) and hand out new ones on request.
    """
    claims: dict[str, Any] = {"sub": _rules.coerce_user_id(user_id), "room": _rules.check_room(room)}
    claims.update(_times(ttl, now))
    claims.update(_issuer_claims(issuer, audience))
    return _sign(secret, claims, algorithm)


def token_claims(token: str) -> dict[str, Any]:
    """The payload of a JWT, NOT verified: for reading `exp` and `iat` (the client's refresh timing)."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError, AttributeError):
        return {}
    return claims if isinstance(claims, dict) else {}
