"""Append publish commands to ws-edge's ingestion stream (WS_STREAM, README "Ingestion: Redis
Stream"): the nodes publish each entry once, in stream order per room, with its entry id as the
idempotency key of its sequenced targets. Standard library only: a small RESP client over a socket
that speaks to one Redis server (``redis://`` or ``rediss://``, user and password, database 0).

    from wsedge import stream

    entry_id = stream.append("redis://redis:6379", "orders{ws}", type="task.created", room="project:42",
                             data={"task_id": 7}, sender="alice")

    with stream.connect("redis://redis:6379") as redis:       # one connection for many appends
        redis.append("orders{ws}", type="task.assigned", rooms=["project:42"], user_ids=[7], data={...})

The body is checked with the node's rules before anything is sent (a TypeError or ValueError, as
the Publisher raises): exactly one target form (``room``, ``user_id``, ``connection_id``, or
``rooms`` and/or ``user_ids``), an event type that is not reserved, a sender of at most 128
characters, an idempotency key of 1-128 printable characters. What only the node knows (its
WS_MESSAGE_MAX_SIZE, whether a room is sequenced) it checks, and sends what it refuses to the dead
letter ``<stream>:dead`` with the code and message the publish API would answer.

When to use it: the append is one Redis write, durable once Redis acknowledges it (with Redis
persistence on), and the nodes publish it even if this process dies right after. It is not part of
the product's SQL transaction: append after the commit (a crash between the two loses the event);
choose the PostgreSQL outbox when the event must commit with the data.

Redis Cluster or Sentinel: use the ``redis`` package with the body this module builds:
``redis.cluster.RedisCluster(...).xadd(stream_key, {"command": stream.command(type=..., room=...)})``.
"""

from __future__ import annotations

import json
import socket
import ssl
import urllib.parse
from typing import Any, Iterable, Mapping

from . import _rules

__all__ = ["append", "command", "connect", "StreamConnection", "StreamError"]

# The nodes' limit on targets of one publish (src/publish.ts MAX_TARGETS).
MAX_TARGETS = 1000


class StreamError(Exception):
    """Redis refused the append (`code` is the first word of its error, e.g. ``WRONGTYPE``,
    ``NOAUTH``, ``MOVED``), or the connection failed (``connection_lost``, ``unreachable``)."""

    def __init__(self, code: str, reason: str):
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason


def _target(room: Any, user_id: Any, connection_id: Any, rooms: Any, user_ids: Any) -> dict[str, Any]:
    listed = rooms is not None or user_ids is not None
    single = sum(t is not None for t in (room, user_id, connection_id))
    if single + (1 if listed else 0) != 1:
        raise ValueError("give exactly one of room, user_id, connection_id, or rooms and/or user_ids")
    if room is not None:
        return {"room": _rules.check_room(room)}
    if user_id is not None:
        return {"user_id": _rules.coerce_user_id(user_id)}
    if connection_id is not None:
        return {"connection_id": _rules.check_connection_id(connection_id)}
    for what, value in (("rooms", rooms), ("user_ids", user_ids)):
        if value is not None and (isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Iterable)):
            raise TypeError(f"{what} must be a list of items, not {type(value).__name__}")
    room_list = [_rules.check_room(r) for r in (rooms or ())]
    user_list = [_rules.coerce_user_id(u, "user id") for u in (user_ids or ())]
    named = room_list + [f"user:{u}" for u in user_list]
    if not 1 <= len(named) <= MAX_TARGETS:
        raise ValueError(f"rooms and user_ids name 1 to {MAX_TARGETS} targets together, not {len(named)}")
    if len(set(named)) != len(named):
        raise ValueError("targets named twice (a user id names the room user:<id>)")
    return {**({"rooms": room_list} if room_list else {}), **({"user_ids": user_list} if user_list else {})}


def command(
    *,
    type: str,
    room: str | None = None,
    user_id: str | int | None = None,
    connection_id: str | None = None,
    rooms: Iterable[str] | None = None,
    user_ids: Iterable[str | int] | None = None,
    data: Any = None,
    sender: str | None = None,
    idempotency_key: str | None = None,
    exclude_connection: str | None = None,
) -> str:
    """The JSON of one publish API body (the entry's ``command`` field), checked as the Publisher
    checks it. `idempotency_key`: a key of your own for sequenced targets (without one the nodes
    use the entry id); not with `connection_id`."""
    body = _target(room, user_id, connection_id, rooms, user_ids)
    body["type"] = _rules.check_type(type)
    _rules.check_sender(sender)
    _rules.check_data(data, bounded=False)
    body["data"] = data
    body["sender"] = sender
    if idempotency_key is not None:
        if connection_id is not None:
            raise ValueError("idempotency_key is for sequenced rooms, not a connection_id target")
        body["idempotency_key"] = _rules.check_idempotency_key(idempotency_key)
    if exclude_connection is not None:
        if connection_id is not None:
            raise ValueError("exclude_connection goes with a room or user target")
        body["exclude_connection"] = _rules.check_connection_id(exclude_connection)
    try:
        # allow_nan=False: NaN and Infinity are no JSON; the node would dead-letter the entry (invalid_json).
        return json.dumps(body, allow_nan=False, ensure_ascii=False, separators=(",", ":"))
    except (TypeError, ValueError) as err:
        raise ValueError(f"data is not JSON-serializable: {err}") from None


def _encode(*args: str | bytes) -> bytes:
    parts = [f"*{len(args)}\r\n".encode()]
    for arg in args:
        raw = arg.encode("utf-8") if isinstance(arg, str) else arg
        parts.append(b"$%d\r\n%s\r\n" % (len(raw), raw))
    return b"".join(parts)


class StreamConnection:
    """One connection to one Redis server; not thread-safe (one per thread). `timeout`: seconds
    for the connect and for each reply."""

    def __init__(self, url: str = "redis://127.0.0.1:6379", *, timeout: float = 5.0):
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("redis", "rediss"):
            raise ValueError("url must start with redis:// or rediss://")
        if parsed.path not in ("", "/", "/0"):
            raise ValueError("only database 0: ws-edge reads the stream there")
        host, port = parsed.hostname or "127.0.0.1", parsed.port or 6379
        try:
            sock = socket.create_connection((host, port), timeout=timeout)
        except OSError as err:
            raise StreamError("unreachable", str(err)) from None
        if parsed.scheme == "rediss":
            sock = ssl.create_default_context().wrap_socket(sock, server_hostname=host)
        self._sock = sock
        self._reader = sock.makefile("rb")
        if parsed.password is not None:
            user = urllib.parse.unquote(parsed.username or "default")
            self._call("AUTH", user, urllib.parse.unquote(parsed.password))

    def __enter__(self) -> "StreamConnection":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self._reader.close()
        self._sock.close()

    def append(self, stream: str, *, maxlen: int | None = None, **body: Any) -> str:
        """Appends one command (the keyword arguments of `command`) to `stream`; returns the entry
        id. `maxlen`: trims the stream to about that many entries (``MAXLEN ~``): entries the nodes
        have not read yet may go, so leave it None unless losing the oldest is better than growing."""
        if not isinstance(stream, str) or not 1 <= len(stream) <= 256 or any(not 0x21 <= ord(c) <= 0x7E for c in stream):
            raise ValueError("stream must be a Redis key of 1-256 printable ASCII characters without spaces")
        trim: list[str] = []
        if maxlen is not None:
            if not isinstance(maxlen, int) or maxlen < 1:
                raise ValueError("maxlen must be a positive int")
            trim = ["MAXLEN", "~", str(maxlen)]
        reply = self._call("XADD", stream, *trim, "*", "command", command(**body))
        if not isinstance(reply, str):
            raise StreamError("invalid_response", f"XADD answered {reply!r}")
        return reply

    def _call(self, *args: str) -> Any:
        try:
            self._sock.sendall(_encode(*args))
            return self._reply()
        except OSError as err:
            raise StreamError("connection_lost", str(err)) from None

    def _reply(self) -> Any:
        line = self._reader.readline()
        if not line.endswith(b"\r\n"):
            raise StreamError("connection_lost", "the connection closed mid-reply")
        kind, rest = line[:1], line[1:-2].decode("utf-8", "replace")
        if kind == b"+":
            return rest
        if kind == b"-":
            code, _, reason = rest.partition(" ")
            raise StreamError(code, reason)
        if kind == b":":
            return int(rest)
        if kind == b"$":
            size = int(rest)
            return None if size < 0 else self._reader.read(size + 2)[:-2].decode("utf-8")
        raise StreamError("invalid_response", f"unexpected reply {line[:40]!r}")


def connect(url: str = "redis://127.0.0.1:6379", *, timeout: float = 5.0) -> StreamConnection:
    """A connection for many appends (a context manager)."""
    return StreamConnection(url, timeout=timeout)


def append(url: str, stream: str, *, timeout: float = 5.0, maxlen: int | None = None, **body: Any) -> str:
    """Appends one command on a connection of its own; returns the entry id. An append whose reply
    was lost (StreamError ``connection_lost``) may have been written: appending again may publish
    twice (sequenced rooms dedupe only by `idempotency_key`, so give one where that matters)."""
    with StreamConnection(url, timeout=timeout) as redis:
        return redis.append(stream, maxlen=maxlen, **body)
