"""Verifying the webhook requests a ws-edge node sends to a backend. Standard library only.

Each request carries two headers:

    X-WsEdge-Timestamp: 1767225600                      (unix seconds, when the node signed it)
    X-WsEdge-Signature: v1=<hex>[,v1=<hex>...]

where ``<hex>`` is the lowercase hex HMAC-SHA256, keyed with the secret's UTF-8 bytes, of the
UTF-8 bytes of ``"<timestamp>.<raw body>"``. While a secret is rotated the node sends one ``v1=``
per secret it holds; a request is authentic when any of them matches any secret the receiver
holds. The body is ``{"events": [...]}``.

    from wsedge.webhooks import WebhookError, verify_request

    @app.post("/ws-edge/webhook")
    async def webhook(request: Request):
        try:
            body = verify_request(WEBHOOK_SECRETS, await request.body(), request.headers)
        except WebhookError as err:
            return JSONResponse({"error": err.code}, status_code=err.status)
        for event in body["events"]:
            ...

Verify the raw bytes as they arrived, before any JSON parsing: a body parsed and encoded again
is not the body that was signed. The timestamp is signed too, so a request captured in transit
can be replayed only within `tolerance` seconds of its signing; a receiver that must refuse even
that keeps the ids of the events it handled (at-least-once delivery repeats them anyway).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any, Iterable, Mapping, Union

__all__ = ["WebhookError", "verify", "verify_request", "sign", "TIMESTAMP_HEADER", "SIGNATURE_HEADER", "DEFAULT_TOLERANCE"]

TIMESTAMP_HEADER = "X-WsEdge-Timestamp"
SIGNATURE_HEADER = "X-WsEdge-Signature"
# Seconds a signature stays acceptable either side of the receiver's clock.
DEFAULT_TOLERANCE = 300
SCHEME = "v1"

Secret = Union[str, bytes]
Secrets = Union[Secret, Iterable[Secret]]

# The HTTP status to answer each refusal with.
_STATUS = {"bad_signature": 401, "stale_timestamp": 401, "bad_body": 400}


class WebhookError(Exception):
    """A webhook request refused: `code` is `bad_signature` (a header missing, or no `v1=` value
    matching a secret), `stale_timestamp` (authentic, but its timestamp is not unix seconds or is
    more than `tolerance` s from the receiver's clock: a replay, or a clock off) or `bad_body`
    (authentic, but not a JSON object with an `events` list). `status` is the HTTP status to
    answer with (401, 401, 400)."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = _STATUS[code]


def _keys(secret: Secrets) -> list[bytes]:
    items = [secret] if isinstance(secret, (str, bytes)) else list(secret)
    if not items:
        raise ValueError("no webhook secret: pass a str, or a list of them while rotating")
    keys = []
    for item in items:
        if isinstance(item, str):
            item = item.encode("utf-8")
        elif not isinstance(item, bytes):
            raise TypeError(f"a webhook secret must be a str (or bytes), not {type(item).__name__}")
        if not item:
            raise ValueError("a webhook secret must not be empty")
        keys.append(item)
    return keys


def _raw(body: Any) -> bytes:
    if isinstance(body, (bytes, bytearray, memoryview)):
        return bytes(body)
    raise TypeError(
        f"body must be the raw request body as bytes, not {type(body).__name__}: Flask request.get_data(), "
        "Django request.body, Starlette/FastAPI await request.body()"
    )


def _digest(key: bytes, timestamp: str, body: bytes) -> str:
    return hmac.new(key, timestamp.encode("utf-8") + b"." + body, hashlib.sha256).hexdigest()


def sign(secret: Secrets, body: bytes, timestamp: str | int) -> str:
    """The X-WsEdge-Signature value the node sends for `body` at `timestamp`: ``v1=<hex>``, one per
    secret (comma-separated), for tests of a receiver."""
    stamp = str(timestamp)
    raw = _raw(body)
    return ",".join(f"{SCHEME}={_digest(key, stamp, raw)}" for key in _keys(secret))


def _candidates(signature: Any) -> list[bytes]:
    """The `v1=` values of a signature header; other schemes are ignored (a newer node may add one)."""
    if not isinstance(signature, str):
        return []
    found = []
    for part in signature.split(","):
        scheme, sep, value = part.strip().partition("=")
        if sep and scheme == SCHEME and value:
            found.append(value.strip().lower().encode("utf-8"))
    return found


def _check_tolerance(tolerance: Any) -> float:
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or not tolerance >= 0:
        raise ValueError(f"tolerance must be a number of seconds >= 0, not {tolerance!r}")
    return float(tolerance)


def verify(
    secret: Secrets,
    body: bytes,
    timestamp: str | None,
    signature: str | None,
    tolerance: float = DEFAULT_TOLERANCE,
    now: float | None = None,
) -> dict[str, Any]:
    """Checks a webhook request and returns its parsed body, ``{"events": [...]}``.

    `secret`: the shared secret (a str, used as its UTF-8 bytes), or a list of them while one is
    rotated (any may match). `body`: the raw request body, bytes. `timestamp` and `signature`: the
    X-WsEdge-Timestamp and X-WsEdge-Signature header values (None when absent). `tolerance`:
    seconds either side of `now` (default the clock) a signature is accepted. The signature is
    checked first (with `hmac.compare_digest`), so `stale_timestamp` only ever describes a request
    that was signed with the secret. Raises WebhookError (`bad_signature`, `stale_timestamp`,
    `bad_body`); TypeError or ValueError for arguments no request can fix (a str body, no secret).
    """
    keys = _keys(secret)
    raw = _raw(body)
    window = _check_tolerance(tolerance)
    candidates = _candidates(signature)
    if not candidates:
        raise WebhookError("bad_signature", f"no {SCHEME}= signature in {SIGNATURE_HEADER}")
    if not isinstance(timestamp, str):
        raise WebhookError("bad_signature", f"no {TIMESTAMP_HEADER}: the signature covers it")
    stamp = timestamp.strip()
    expected = [_digest(key, stamp, raw).encode("ascii") for key in keys]
    # Every pair is compared: how long this takes says nothing about which came close.
    matched = False
    for want in expected:
        for got in candidates:
            matched |= hmac.compare_digest(want, got)
    if not matched:
        raise WebhookError("bad_signature", f"no {SCHEME}= signature matches the secret" + ("s" if len(keys) > 1 else ""))
    # Digits only: int() alone would also take "+1", " 1", "1_000" and other spellings the node never sends.
    if not stamp.isascii() or not stamp.isdigit() or len(stamp) > 12:
        raise WebhookError("stale_timestamp", f"{TIMESTAMP_HEADER} is not unix seconds: {stamp[:32]!r}")
    skew = (time.time() if now is None else now) - int(stamp)
    if skew > window:
        raise WebhookError("stale_timestamp", f"signed {skew:.0f} s ago, more than the {window:g} s tolerance (a replay, or a clock off)")
    if -skew > window:
        raise WebhookError("stale_timestamp", f"signed {-skew:.0f} s in the future, more than the {window:g} s tolerance (a clock off)")
    try:
        parsed = json.loads(raw)
    except ValueError as err:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise WebhookError("bad_body", f"not JSON: {err}") from None
    if not isinstance(parsed, dict) or not isinstance(parsed.get("events"), list):
        raise WebhookError("bad_body", 'not a JSON object with an "events" list')
    return parsed


def _header(headers: Mapping[str, str] | Iterable[tuple[str, str]], name: str) -> str | None:
    """A header's value, its name matched case-insensitively (a plain dict, or the framework's own
    mapping, or (name, value) pairs as WSGI and ASGI pass them)."""
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    wanted = name.lower()
    for key, value in pairs:
        key = key.decode("latin-1") if isinstance(key, bytes) else key
        if key.lower() == wanted:
            return value.decode("latin-1") if isinstance(value, bytes) else value
    return None


def verify_request(
    secret: Secrets,
    body: bytes,
    headers: Mapping[str, str] | Iterable[tuple[str, str]],
    tolerance: float = DEFAULT_TOLERANCE,
    now: float | None = None,
) -> dict[str, Any]:
    """`verify` with the two header values read from a request's headers."""
    return verify(secret, body, _header(headers, TIMESTAMP_HEADER), _header(headers, SIGNATURE_HEADER), tolerance, now)
