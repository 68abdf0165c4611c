"""The PostgreSQL outbox from Python: ``add`` inserts one publish command into the outbox table
(sql/outbox.sql) through the caller's own DB-API cursor, so the event is published if and only if
the caller's transaction commits. The nodes with ``WS_OUTBOX_URL`` publish committed rows, in id
order per room, and delete them; the row id is the idempotency key of its sequenced rooms.

Works with any driver that takes ``%s`` parameters (psycopg2, psycopg 3, pg8000's "format"
style). Standard library otherwise: the arguments are checked by the node's rules here, so a bad
one is a ValueError in the caller's frame rather than a dead-lettered row later.

    with conn, conn.cursor() as cur:
        cur.execute("UPDATE task SET status = %s WHERE id = %s", ("done", 7))
        wsedge.outbox.add(cur, room="task:7", type="task.updated", data={"status": "done"})
"""

from __future__ import annotations

import json
import re
from typing import Any, Iterable

from . import _rules

DEFAULT_TABLE = "ws_edge_outbox"
# The node's WS_OUTBOX_TABLE rule: unquoted lower case, room for the `_dead` suffix.
_TABLE = re.compile(r"[a-z_][a-z0-9_]{0,57}\Z")
MAX_TARGETS = 1000


def _targets(room: str | None, user_id: str | int | None, rooms: Iterable[str] | None, user_ids: Iterable[str | int] | None) -> dict[str, Any]:
    single = [name for name, value in (("room", room), ("user_id", user_id)) if value is not None]
    listed = rooms is not None or user_ids is not None
    if len(single) + (1 if listed else 0) != 1:
        raise ValueError("give exactly one of room, user_id, or rooms and/or user_ids")
    if room is not None:
        return {"room": _rules.check_room(room)}
    if user_id is not None:
        return {"user_id": _rules.coerce_user_id(user_id)}
    if isinstance(rooms, str) or isinstance(user_ids, str):
        raise TypeError("rooms and user_ids are lists, not a single string")
    room_list = [_rules.check_room(r) for r in (rooms or ())]
    user_list = [_rules.coerce_user_id(u, "user id") for u in (user_ids or ())]
    named = room_list + [f"user:{u}" for u in user_list]
    if not named or len(named) > MAX_TARGETS:
        raise ValueError(f"rooms and user_ids name 1 to {MAX_TARGETS} targets together, not {len(named)}")
    if len(set(named)) != len(named):
        raise ValueError(f"targets named twice (a user id names the room user:<id>): {sorted({n for n in named if named.count(n) > 1})}")
    return {**({"rooms": room_list} if room_list else {}), **({"user_ids": user_list} if user_list else {})}


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return any(_has_nul(v) for v in value)
    return False


def add(
    cursor: Any,
    *,
    type: str,
    room: str | None = None,
    user_id: str | int | None = None,
    rooms: Iterable[str] | None = None,
    user_ids: Iterable[str | int] | None = None,
    data: Any = None,
    sender: str | None = None,
    table: str = DEFAULT_TABLE,
) -> int:
    """Inserts one publish command in the caller's transaction and returns the row id (its
    idempotency key on the node is ``outbox:<id>``). Targets as in the publish API: exactly one of
    `room`, `user_id`, or `rooms` and/or `user_ids` (1 to 1,000 together, none twice). Nothing is
    committed here: the caller's commit publishes it, a rollback drops it."""
    targets = _targets(room, user_id, rooms, user_ids)
    _rules.check_type(type)
    _rules.check_sender(sender)
    _rules.check_data(data, bounded=False)
    if not isinstance(table, str) or not _TABLE.match(table):
        raise ValueError(f"invalid table {table!r}: a lower-case name of letters, digits and _, at most 58 characters")
    # Checked here, not by PostgreSQL: jsonb refuses NaN and \u0000, and its refusal would abort the caller's transaction.
    if _has_nul(data):
        raise ValueError("data holds a NUL character (\\u0000), which PostgreSQL's jsonb refuses")
    encoded = None if data is None else json.dumps(data, allow_nan=False)
    cursor.execute(
        f"INSERT INTO {table} (targets, type, data, sender) VALUES (%s::jsonb, %s, %s::jsonb, %s) RETURNING id",
        (json.dumps(targets), type, encoded, sender),
    )
    return int(cursor.fetchone()[0])
