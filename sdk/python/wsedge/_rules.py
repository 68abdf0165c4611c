"""The node's naming rules (src/rooms.ts, src/protocol.ts, src/messages.ts, src/history.ts), checked
before anything is sent, so a bad argument is a TypeError or ValueError in the caller's own frame
instead of a 400 after a round trip. Standard library only."""

from __future__ import annotations

import re
from typing import Any

ROOM_KINDS = ("project", "channel", "task", "user")
# `\Z`, not `$`: `$` would also match before a trailing newline.
_ROOM = re.compile(r"(?:project|channel|task|user):[A-Za-z0-9_-]{1,64}\Z")
_ID = re.compile(r"[A-Za-z0-9_-]{1,64}\Z")
_EVENT_TYPE = re.compile(r"[a-z][a-z0-9_]*(?:\.[a-z][a-z0-9_]*)*\Z")
_IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,128}\Z")
# src/messages.ts RPC_METHOD: dotted lowercase, at most 64 characters.
_RPC_METHOD = re.compile(r"[a-z][a-z0-9_.]{0,63}\Z")
_CONNECTION_ID = re.compile(r"[A-Za-z0-9_-]{1,32}\.[0-9a-z]{1,16}\Z")
_EPOCH = re.compile(r"[A-Za-z0-9_-]{1,64}\Z")

MAX_EVENT_TYPE_LENGTH = 64
MAX_SENDER_LENGTH = 128
MAX_USERNAME_LENGTH = 128
MAX_CLOSE_REASON_BYTES = 123
MAX_HISTORY_LIMIT = 10_000
MAX_GRANT_ENTRIES = 1000
MAX_TOKEN_LENGTH = 8192
# 9999-12-31T23:59:59Z: a later `exp` is refused by the node (4401 `invalid token: exp after year 9999`).
MAX_EXP_SECONDS = 253_402_300_799
# Offsets are JavaScript safe integers on the node.
MAX_SAFE_INTEGER = 2**53 - 1

# Types the node owns (src/messages.ts RESERVED_TYPES): replies, membership and presence events, and
# the client message types. `signal.*` is reserved too.
RESERVED_TYPES = frozenset(
    {
        "connected", "error", "pong", "room_joined", "room_reset", "resumed", "room_history", "room_left",
        "user_joined", "user_left", "presence.join", "presence.leave", "token_refreshed", "message_sent",
        "presence", "presence_stats", "rpc_result",
        "join_room", "resume", "history", "leave_room", "send_message", "signal", "rpc", "ping", "refresh_token",
    }
)


def js_length(text: str) -> int:
    """A string's length as the node counts it: UTF-16 code units (an emoji counts 2)."""
    return len(text.encode("utf-16-le")) // 2


def _must_be_str(what: str, value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, not {type(value).__name__}")
    return value


def is_room(value: Any) -> bool:
    return isinstance(value, str) and _ROOM.match(value) is not None


def check_room(value: Any, what: str = "room") -> str:
    _must_be_str(what, value)
    if not _ROOM.match(value):
        raise ValueError(f"invalid {what} {value!r}: project:, channel:, task: or user: followed by 1-64 of [A-Za-z0-9_-]")
    return value


def check_access_room(value: Any) -> str:
    """subscribe/unsubscribe: a project:, channel: or task: room (never a personal one)."""
    check_room(value)
    if value.startswith("user:"):
        raise ValueError(f"invalid room {value!r}: subscribe and unsubscribe take a project:, channel: or task: room")
    return value


def check_id(value: Any, what: str = "user_id") -> str:
    """A user id: 1-64 of [A-Za-z0-9_-] (it names the room `user:<id>`)."""
    _must_be_str(what, value)
    if not _ID.match(value):
        raise ValueError(f"invalid {what} {value!r}: 1-64 of [A-Za-z0-9_-]")
    return value


def coerce_user_id(value: Any, what: str = "user_id") -> str:
    """Like check_id, but an int id (a database primary key) becomes its decimal string: the node
    refuses a numeric `sub` (4401 `invalid token: sub must be a string of 1-64 [A-Za-z0-9_-]`) and room names are strings anyway."""
    if isinstance(value, bool):
        raise TypeError(f"{what} must be a str or an int, not bool")
    if isinstance(value, int):
        value = str(value)
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str or an int, not {type(value).__name__}")
    return check_id(value, what)


def check_type(value: Any) -> str:
    _must_be_str("type", value)
    if len(value) > MAX_EVENT_TYPE_LENGTH or not _EVENT_TYPE.match(value):
        raise ValueError(f"invalid event type {value!r}: a dotted lowercase name of at most 64 characters, such as task.created")
    if value in RESERVED_TYPES or value.startswith("signal."):
        raise ValueError(f"reserved event type {value!r}: the node owns it")
    return value


def check_sender(value: Any) -> str | None:
    if value is None:
        return None
    _must_be_str("sender", value)
    if js_length(value) > MAX_SENDER_LENGTH:
        raise ValueError(f"sender longer than {MAX_SENDER_LENGTH} characters")
    return value


def check_idempotency_key(value: Any) -> str:
    _must_be_str("idempotency_key", value)
    if not _IDEMPOTENCY_KEY.match(value):
        raise ValueError(f"invalid idempotency key {value!r}: 1-128 printable ASCII characters without spaces")
    return value


def check_rpc_method(value: Any) -> str:
    _must_be_str("method", value)
    if not _RPC_METHOD.match(value):
        raise ValueError(f"invalid rpc method {value!r}: a lowercase letter, then at most 63 of [a-z0-9_.], such as messages.mark_read")
    return value


# src/revocation.ts: a revoked `jti` travels in a frame header.
_TOKEN_ID = re.compile(r"[\x21-\x7e]{1,128}\Z")
# src/revocation.ts issuedBeforeMs: RFC 3339 with a zone.
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})\Z")


def check_jti(value: Any) -> str:
    """A token id to revoke: 1-128 printable ASCII characters without spaces."""
    _must_be_str("jti", value)
    if not _TOKEN_ID.match(value):
        raise ValueError(f"invalid jti {value!r}: 1-128 printable ASCII characters without spaces")
    return value


def check_issued_before(value: Any) -> int | float | str:
    """`issued_before` as the node takes it: epoch seconds (like `iat`), an RFC 3339 string, or an
    aware datetime (sent as epoch seconds). Whether it lies more than 60 s ahead is the node's
    check (its clock decides): 400 `invalid_issued_before`."""
    import datetime

    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:
            raise ValueError("issued_before: a datetime needs a tzinfo (datetime.now(timezone.utc)), a naive one would be read in local time")
        return value.timestamp()
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise TypeError(f"issued_before must be epoch seconds, an RFC 3339 str or an aware datetime, not {type(value).__name__}")
    if isinstance(value, str):
        if not _RFC3339.match(value):
            raise ValueError(f"issued_before {value!r} is not an RFC 3339 time such as 2026-01-31T12:00:00Z")
        return value
    if not value > 0 or value != value or value == float("inf"):
        raise ValueError(f"issued_before must be positive epoch seconds, not {value!r}")
    return value


def check_connection_id(value: Any) -> str:
    _must_be_str("connection_id", value)
    if not _CONNECTION_ID.match(value):
        raise ValueError(f"invalid connection id {value!r}: <node id>.<base36 counter>, as in the `connected` message")
    return value


def check_close(code: Any, reason: Any) -> tuple[int, str]:
    if isinstance(code, bool) or not isinstance(code, int):
        raise TypeError(f"code must be an int, not {type(code).__name__}")
    if not 4000 <= code <= 4999:
        raise ValueError(f"close code must be 4000-4999: {code}")
    _must_be_str("reason", reason)
    if len(reason.encode("utf-8")) > MAX_CLOSE_REASON_BYTES or "\r" in reason or "\n" in reason:
        raise ValueError(f"reason must be one line of at most {MAX_CLOSE_REASON_BYTES} UTF-8 bytes")
    return code, reason


def check_position(since: Any) -> dict[str, Any] | None:
    """A stream position: None, a mapping {"epoch", "offset"} or a pair (epoch, offset)."""
    if since is None:
        return None
    if isinstance(since, dict):
        epoch, offset = since.get("epoch"), since.get("offset")
    elif isinstance(since, (tuple, list)) and len(since) == 2:
        epoch, offset = since
    else:
        raise TypeError("since must be None, {'epoch': str, 'offset': int} or (epoch, offset)")
    _must_be_str("since epoch", epoch)
    if not _EPOCH.match(epoch):
        raise ValueError(f"invalid epoch {epoch!r}: 1-64 of [A-Za-z0-9_-]")
    if isinstance(offset, bool) or not isinstance(offset, int):
        raise TypeError("since offset must be an int")
    if not 0 <= offset <= MAX_SAFE_INTEGER:
        raise ValueError(f"since offset out of range: {offset}")
    return {"epoch": epoch, "offset": offset}


def check_limit(limit: Any) -> int | None:
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, int):
        raise TypeError("limit must be an int")
    if not 1 <= limit <= MAX_HISTORY_LIMIT:
        raise ValueError(f"limit must be 1-{MAX_HISTORY_LIMIT}: {limit}")
    return limit


def check_grant_entry(entry: Any) -> str:
    """One entry of a token's `rooms` claim: `*`, `<kind>:*` or an exact room."""
    _must_be_str("rooms entry", entry)
    if entry == "*" or (entry.endswith(":*") and entry[:-2] in ROOM_KINDS) or _ROOM.match(entry):
        return entry
    raise ValueError(f"invalid rooms entry {entry!r}: *, <kind>:* (project, channel, task, user) or a room such as project:42")


MAX_DATA_DEPTH = 32
MAX_DATA_VALUES = 10_000


def check_data(data: Any, bounded: bool) -> None:
    """What the node would corrupt or refuse in a `data` value, as a ValueError before sending.

    Integers beyond 2**53 - 1: the node parses JSON into JavaScript numbers, so 2**63 - 1 would
    arrive as 9223372036854775808 (send large ids as strings). `bounded` (a client's
    send_message): at most 32 levels deep and 10,000 values (array items and object members,
    counted recursively); past that the node answers `invalid_message`, and ten of those within a
    minute close the connection with 1008. Serializability itself is left to json.dumps.
    """
    stack: list[tuple[Any, int]] = [(data, 1)]
    values = 0
    while stack:
        node, depth = stack.pop()
        if isinstance(node, int) and not isinstance(node, bool):
            if abs(node) > MAX_SAFE_INTEGER:
                raise ValueError(f"integer {node} is beyond 2**53 - 1: the node's JSON numbers would change it; send it as a string")
            continue
        if isinstance(node, dict):
            children = list(node.values())
        elif isinstance(node, (list, tuple)):
            children = list(node)
        else:
            continue
        if bounded:
            if depth > MAX_DATA_DEPTH:
                raise ValueError(f"data nests deeper than {MAX_DATA_DEPTH} levels: the node refuses it (invalid_message)")
            values += len(children)
            if values > MAX_DATA_VALUES:
                raise ValueError(f"data holds more than {MAX_DATA_VALUES} values: the node refuses it (invalid_message)")
        stack.extend((child, depth + 1) for child in children)
