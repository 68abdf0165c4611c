"""A reference product backend for ws-edge, in FastAPI, storing in SQLite.

Everything a Python/FastAPI backend does with ws-edge, in one file (examples/fastapi/README.md says
how to run it next to a node):

  for the browser (a fake login: the `X-User` header names the user)
    POST   /api/ws-token                        a short-lived connection token (wsedge.mint_token)
    POST   /api/ws-grant                        a room grant for one room the user may join (mint_grant)
    GET    /api/rooms/{room}/messages           a chat room's stored messages (the reload after a reset)
    GET    /api/rooms/{room}/reads              its read receipts
    GET    /api/users/{id}/presence             online or offline, and last_seen (from the webhook events)
    POST   /api/projects/{id}/tasks             create a task, then publish task.created (wsedge.Publisher)
    GET    /api/projects/{id}/tasks             the tasks, with the room position read before loading them
    DELETE /api/projects/{id}/members/{user}    remove a member, then take the rooms away on every node

  for the nodes (each checks its bearer key with hmac.compare_digest)
    POST   /internal/ws/authorize               WS_ROOM_AUTH_URL: may this user join this room?
    POST   /internal/ws/publish                 WS_PUBLISH_PROXY_URL: store a chat message, or refuse it
    POST   /internal/ws/rpc                     WS_RPC_URL: messages.history, messages.mark_read
  for the node delivering events (signed: wsedge.webhooks.verify with WS_WEBHOOK_SECRET)
    POST   /internal/ws/events                  WS_WEBHOOK_URL: read signals and user.online/offline, each id once

Settings come from the environment (see `Settings`); `python3 app.py` prints `listening <port>` once
it accepts connections (APP_PORT=0 picks a free port). Debian: apt-get install python3-fastapi
python3-uvicorn. The wsedge SDK is taken from this repository's sdk/python (or an installed copy).

The answers to the nodes are plain dicts, never pydantic response models: the node reads
`{"allow": true, "type": null}` or `{"data": ..., "error": null}` as a malformed answer (the client
gets `unavailable`), and every answer must fit in 4,096 bytes (docs/WEBSOCKET_API.md, Backend calls).
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import re
import sqlite3
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

# The SDK of this repository; with `pip install ./sdk/python` (or PYTHONPATH) this changes nothing.
_SDK = Path(__file__).resolve().parents[2] / "sdk" / "python"
if (_SDK / "wsedge").is_dir() and str(_SDK) not in sys.path:
    sys.path.insert(0, str(_SDK))

import uvicorn  # noqa: E402
from fastapi import Depends, FastAPI, Header, HTTPException, Request  # noqa: E402
from fastapi.concurrency import run_in_threadpool  # noqa: E402
from fastapi.responses import JSONResponse  # noqa: E402
from pydantic import BaseModel  # noqa: E402

from wsedge import Publisher, WsEdgeError, mint_grant, mint_token, webhooks  # noqa: E402

log = logging.getLogger("wsedge-example")

# What the node accepts from a backend call (src/backend.ts): a larger answer is `unavailable`.
MAX_ANSWER_BYTES = 4096
ROOM = re.compile(r"(project|channel|task|user):([A-Za-z0-9_-]{1,64})\Z")


# -- settings ------------------------------------------------------------------------------------


def _env(name: str, default: Optional[str] = None) -> Optional[str]:
    value = os.environ.get(name, "").strip()
    return value or default


def _int_env(name: str, default: int) -> int:
    raw = _env(name)
    if raw is None:
        return default
    if not raw.isdigit():
        raise SystemExit(f"wsedge-example: {name}: {raw!r} is not a whole number")
    return int(raw)


class Settings:
    """Read once at start; a missing secret stops the process with one line naming it."""

    def __init__(self) -> None:
        missing = [n for n in ("PUBLISH_API_KEY", "JWT_SECRET", "WS_BACKEND_KEY", "WS_ROOM_AUTH_KEY", "WS_WEBHOOK_SECRET") if _env(n) is None]
        if missing:
            raise SystemExit(f"wsedge-example: set {', '.join(missing)} (the same values as the ws-edge nodes')")
        # The nodes' WS_WEBHOOK_SECRET: the HMAC key of the events they POST to /internal/ws/events.
        self.webhook_secret = _env("WS_WEBHOOK_SECRET")
        if len(self.webhook_secret.encode("utf-8")) < 32:
            raise SystemExit("wsedge-example: WS_WEBHOOK_SECRET must be at least 32 bytes, as the nodes require")
        # Any node's internal port: the server API (PUBLISH_API_KEY) the Publisher talks to.
        self.edge_internal_url = _env("WS_EDGE_INTERNAL_URL", "http://127.0.0.1:9090")
        # Where browsers connect (handed out with the token; the load balancer in production).
        self.edge_public_url = _env("WS_EDGE_PUBLIC_URL", "ws://localhost:8080/api/v1/ws/connect")
        self.publish_api_key = _env("PUBLISH_API_KEY")
        self.jwt_secret = _env("JWT_SECRET")
        self.jwt_issuer = _env("JWT_ISSUER")  # the nodes' JWT_ISSUER / JWT_AUDIENCE, when they set them
        self.jwt_audience = _env("JWT_AUDIENCE")
        self.backend_key = _env("WS_BACKEND_KEY")  # the nodes' WS_BACKEND_KEY: publish proxy and RPC
        self.room_auth_key = _env("WS_ROOM_AUTH_KEY")  # the nodes' WS_ROOM_AUTH_KEY: the callback
        # The nodes' WS_HISTORY_ROOMS, same syntax: task events to these rooms get an idempotency key.
        self.history_rooms = [p.strip() for p in (_env("WS_HISTORY_ROOMS", "") or "").split(",") if p.strip()]
        self.token_ttl = _int_env("WS_TOKEN_TTL", 600)  # seconds; the client refreshes at 80% of it
        self.grant_ttl = _int_env("WS_GRANT_TTL", 300)
        self.room_auth_ttl = _int_env("WS_ROOM_AUTH_TTL", 60)  # seconds a node may cache an allow
        self.db_path = _env("APP_DB", os.path.join(tempfile.gettempdir(), "wsedge-example.db"))
        self.host = _env("APP_HOST", "127.0.0.1")
        self.port = _int_env("APP_PORT", 8000)
        self.seed = _env("APP_SEED", "1") != "0"
        self.blocked_words = [w.lower() for w in (_env("APP_BLOCKED_WORDS", "spam") or "").split(",") if w.strip()]
        self.max_text_chars = _int_env("APP_MAX_TEXT", 2000)
        self.log_level = _env("APP_LOG_LEVEL", "info")
        self.access_log = _env("APP_ACCESS_LOG", "1") != "0"

    def sequenced(self, room: str) -> bool:
        kind = room.split(":", 1)[0]
        return any(p == "*" or p == f"{kind}:*" or p == room for p in self.history_rooms)


# -- storage -------------------------------------------------------------------------------------

SCHEMA = """
CREATE TABLE IF NOT EXISTS users (id TEXT PRIMARY KEY, name TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS projects (id INTEGER PRIMARY KEY, name TEXT NOT NULL, owner TEXT NOT NULL REFERENCES users (id));
CREATE TABLE IF NOT EXISTS members (
  project_id INTEGER NOT NULL REFERENCES projects (id), user_id TEXT NOT NULL REFERENCES users (id),
  PRIMARY KEY (project_id, user_id));
CREATE TABLE IF NOT EXISTS channels (id INTEGER PRIMARY KEY, project_id INTEGER NOT NULL REFERENCES projects (id), name TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tasks (
  id INTEGER PRIMARY KEY, project_id INTEGER NOT NULL REFERENCES projects (id), title TEXT NOT NULL,
  status TEXT NOT NULL DEFAULT 'todo', created_by TEXT NOT NULL, created_at REAL NOT NULL);
-- One row per chat message. The node's idempotency scope is (user, room, key), so the store's is the
-- same: a resent message (same key) is stored once and answered with its first row. NULL keys (a
-- client that sent none) never conflict.
CREATE TABLE IF NOT EXISTS messages (
  message_id INTEGER PRIMARY KEY, room TEXT NOT NULL, user_id TEXT NOT NULL, username TEXT NOT NULL,
  text TEXT NOT NULL, idempotency_key TEXT, stored_at REAL NOT NULL,
  UNIQUE (user_id, room, idempotency_key));
CREATE INDEX IF NOT EXISTS messages_by_room ON messages (room, message_id);
-- The last message each user has read in each room (read receipts).
CREATE TABLE IF NOT EXISTS reads (
  user_id TEXT NOT NULL, room TEXT NOT NULL, message_id INTEGER NOT NULL, read_at REAL NOT NULL,
  PRIMARY KEY (user_id, room));
-- The webhook events applied, by id: delivery is at least once (a batch whose answer the node never
-- read comes again), so an id already here is skipped. Written in the same transaction as what the
-- event changes, so an event is applied exactly once. Kept EVENT_IDS_KEPT_S seconds.
CREATE TABLE IF NOT EXISTS webhook_events (id TEXT PRIMARY KEY, type TEXT NOT NULL, received_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS webhook_events_by_age ON webhook_events (received_at);
-- Each user's status from user.online / user.offline. `version` grows with every event of the
-- user: one below the stored version is older news and is dropped. Times are Unix milliseconds.
CREATE TABLE IF NOT EXISTS presence (
  user_id TEXT PRIMARY KEY, status TEXT NOT NULL, version INTEGER NOT NULL,
  online_since INTEGER, last_seen INTEGER);
"""

# A node retries an event for at most WS_WEBHOOK_RETRY_FOR seconds (600 by default, a day at most)
# after it was appended, so no repeat of an id can come later than this.
EVENT_IDS_KEPT_S = 86_400

SEED_USERS = [("alice", "Alice Archer"), ("bob", "Bob Baker"), ("carol", "Carol Clark"), ("mallory", "Mallory Moss")]
SEED_PROJECTS = [(1, "Website", "alice", ["alice", "bob", "carol"]), (2, "Payroll", "alice", ["alice"])]
SEED_CHANNELS = [(1, 1, "general"), (2, 2, "payroll")]


class Store:
    """SQLite through one connection and one lock: simple and correct for an example. A real
    backend uses its database's pool; the rules (commit, then publish; unique keys) stay the same."""

    def __init__(self, path: str, seed: bool) -> None:
        self.db = sqlite3.connect(path, check_same_thread=False)
        self.db.row_factory = sqlite3.Row
        # Reentrant: apply_events holds it for its transaction and asks may_access inside.
        self.lock = threading.RLock()
        with self.lock:
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA foreign_keys=ON")
            self.db.executescript(SCHEMA)
            if seed and self.db.execute("SELECT COUNT(*) FROM users").fetchone()[0] == 0:
                self.db.executemany("INSERT INTO users VALUES (?, ?)", SEED_USERS)
                for pid, name, owner, members in SEED_PROJECTS:
                    self.db.execute("INSERT INTO projects VALUES (?, ?, ?)", (pid, name, owner))
                    self.db.executemany("INSERT INTO members VALUES (?, ?)", [(pid, m) for m in members])
                self.db.executemany("INSERT INTO channels VALUES (?, ?, ?)", SEED_CHANNELS)
            self.db.commit()

    def _one(self, sql: str, args: tuple = ()) -> Optional[sqlite3.Row]:
        with self.lock:
            return self.db.execute(sql, args).fetchone()

    def user(self, user_id: str) -> Optional[sqlite3.Row]:
        return self._one("SELECT id, name FROM users WHERE id = ?", (user_id,))

    def project_of(self, room: str) -> Optional[int]:
        """The project a project:, channel: or task: room belongs to (None: no such room)."""
        match = ROOM.match(room)
        if match is None or not match.group(2).isdigit():
            return None
        kind, rid = match.group(1), int(match.group(2))
        if kind == "project":
            row = self._one("SELECT id FROM projects WHERE id = ?", (rid,))
        elif kind == "channel":
            row = self._one("SELECT project_id FROM channels WHERE id = ?", (rid,))
        elif kind == "task":
            row = self._one("SELECT project_id FROM tasks WHERE id = ?", (rid,))
        else:
            return None
        return None if row is None else int(row[0])

    def is_member(self, user_id: str, project_id: int) -> bool:
        return self._one("SELECT 1 FROM members WHERE project_id = ? AND user_id = ?", (project_id, user_id)) is not None

    def may_access(self, user_id: str, room: str) -> bool:
        """The one access rule, used by the callback, the grants, the proxy, RPC and REST alike."""
        if room == f"user:{user_id}":
            return True
        project_id = self.project_of(room)
        return project_id is not None and self.is_member(user_id, project_id)

    def add_message(self, room: str, user_id: str, username: str, text: str, key: Optional[str]) -> Dict[str, Any]:
        """Stores a chat message once per (user, room, key); a repeat gets the first row back."""
        with self.lock:
            try:
                cur = self.db.execute(
                    "INSERT INTO messages (room, user_id, username, text, idempotency_key, stored_at) VALUES (?, ?, ?, ?, ?, ?)",
                    (room, user_id, username, text, key, time.time()),
                )
                self.db.commit()
                message_id = cur.lastrowid
            except sqlite3.IntegrityError:  # the same key again: answer with what was stored first
                self.db.rollback()
                message_id = self.db.execute(
                    "SELECT message_id FROM messages WHERE user_id = ? AND room = ? AND idempotency_key = ?", (user_id, room, key)
                ).fetchone()[0]
            row = self.db.execute("SELECT * FROM messages WHERE message_id = ?", (message_id,)).fetchone()
        return _message(row)

    def messages(self, room: str, before: Optional[int], limit: int) -> List[Dict[str, Any]]:
        """Newest first, older than `before`."""
        with self.lock:
            rows = self.db.execute(
                "SELECT * FROM messages WHERE room = ? AND message_id < ? ORDER BY message_id DESC LIMIT ?",
                (room, before if before is not None else 2**63 - 1, limit),
            ).fetchall()
        return [_message(r) for r in rows]

    def mark_read(self, user_id: str, room: str, message_id: int) -> Optional[int]:
        """Moves the user's read mark in the room forward (never back); None: no such message there."""
        with self.lock:
            last = self._mark_read(user_id, room, message_id)
            self.db.commit()
            return last

    def _mark_read(self, user_id: str, room: str, message_id: int) -> Optional[int]:
        # The lock held; the caller commits.
        if self.db.execute("SELECT 1 FROM messages WHERE message_id = ? AND room = ?", (message_id, room)).fetchone() is None:
            return None
        self.db.execute(
            "INSERT INTO reads VALUES (?, ?, ?, ?) ON CONFLICT (user_id, room) DO UPDATE SET"
            " message_id = MAX(message_id, excluded.message_id), read_at = excluded.read_at",
            (user_id, room, message_id, time.time()),
        )
        return int(self.db.execute("SELECT message_id FROM reads WHERE user_id = ? AND room = ?", (user_id, room)).fetchone()[0])

    def reads(self, room: str) -> List[Dict[str, Any]]:
        with self.lock:
            rows = self.db.execute("SELECT user_id, message_id, read_at FROM reads WHERE room = ? ORDER BY user_id", (room,)).fetchall()
        return [dict(r) for r in rows]

    def apply_events(self, events: List[Any]) -> Dict[str, int]:
        """Applies a webhook batch in one transaction together with the ids it records, committed
        before the node gets its 2xx: a crash before the commit leaves nothing, and the node sends
        the batch again; a repeat after it finds the ids and changes nothing. Counts: `applied`
        (changed something), `ignored` (recorded, nothing to change: a room event, an older
        version, a read of a message not in that room), `duplicates` (ids seen before)."""
        counts = {"applied": 0, "ignored": 0, "duplicates": 0}
        now = time.time()
        with self.lock:
            try:
                for event in events:
                    if not isinstance(event, dict) or not isinstance(event.get("id"), str) or not isinstance(event.get("type"), str):
                        counts["ignored"] += 1  # not an event a node sends; no id to record
                        continue
                    recorded = self.db.execute("INSERT OR IGNORE INTO webhook_events VALUES (?, ?, ?)", (event["id"], event["type"], now))
                    if recorded.rowcount == 0:
                        counts["duplicates"] += 1
                        continue
                    counts["applied" if self._apply(event) else "ignored"] += 1
                self.db.execute("DELETE FROM webhook_events WHERE received_at < ?", (now - EVENT_IDS_KEPT_S,))
                self.db.commit()
            except BaseException:
                self.db.rollback()
                raise
        return counts

    def _apply(self, event: Dict[str, Any]) -> bool:
        """One new event, the lock held; True when it changed something."""
        kind = event["type"]
        user_id = event.get("user_id")
        if not isinstance(user_id, str):
            return False  # room.occupied / room.vacated: this app keeps no room state
        if kind == "signal" and event.get("name") == "read":
            # A client's `read` signal (WS_SIGNALS_TO_BACKEND=read); members got it live already.
            room, data = event.get("room"), event.get("data")
            message_id = data.get("message_id") if isinstance(data, dict) else None
            if not isinstance(room, str) or not room.startswith("channel:") or not self.may_access(user_id, room):
                return False
            if isinstance(message_id, bool) or not isinstance(message_id, int) or message_id < 1:
                return False
            return self._mark_read(user_id, room, message_id) is not None
        if kind in ("user.online", "user.offline"):
            version = event.get("version")
            if isinstance(version, bool) or not isinstance(version, int):
                return False
            online = kind == "user.online"
            changed = self.db.execute(
                "INSERT INTO presence VALUES (?, ?, ?, ?, ?) ON CONFLICT (user_id) DO UPDATE SET status = excluded.status,"
                " version = excluded.version, online_since = excluded.online_since, last_seen = COALESCE(excluded.last_seen, presence.last_seen)"
                " WHERE excluded.version >= presence.version",
                (user_id, "online" if online else "offline", version, event.get("time") if online else None, None if online else event.get("last_seen")),
            )
            return changed.rowcount > 0
        return False  # other signals, and types a newer node may add

    def presence(self, user_id: str) -> Optional[sqlite3.Row]:
        return self._one("SELECT * FROM presence WHERE user_id = ?", (user_id,))

    def add_task(self, project_id: int, title: str, user_id: str) -> Dict[str, Any]:
        """Inserts and commits: when this returns, the task exists whatever happens next."""
        with self.lock:
            cur = self.db.execute(
                "INSERT INTO tasks (project_id, title, created_by, created_at) VALUES (?, ?, ?, ?)", (project_id, title, user_id, time.time())
            )
            self.db.commit()
            return dict(self.db.execute("SELECT * FROM tasks WHERE id = ?", (cur.lastrowid,)).fetchone())

    def tasks(self, project_id: int) -> List[Dict[str, Any]]:
        with self.lock:
            return [dict(r) for r in self.db.execute("SELECT * FROM tasks WHERE project_id = ? ORDER BY id", (project_id,)).fetchall()]

    def remove_member(self, project_id: int, user_id: str) -> List[str]:
        """Deletes the membership and commits; returns the project's rooms the user must lose."""
        with self.lock:
            self.db.execute("DELETE FROM members WHERE project_id = ? AND user_id = ?", (project_id, user_id))
            self.db.commit()
            channels = [f"channel:{r[0]}" for r in self.db.execute("SELECT id FROM channels WHERE project_id = ?", (project_id,))]
            tasks = [f"task:{r[0]}" for r in self.db.execute("SELECT id FROM tasks WHERE project_id = ?", (project_id,))]
        return [f"project:{project_id}", *channels, *tasks]

    def owner(self, project_id: int) -> Optional[str]:
        row = self._one("SELECT owner FROM projects WHERE id = ?", (project_id,))
        return None if row is None else str(row[0])


def _message(row: sqlite3.Row) -> Dict[str, Any]:
    return {"message_id": row["message_id"], "room": row["room"], "user_id": row["user_id"], "username": row["username"], "text": row["text"], "stored_at": row["stored_at"]}


# -- the app -------------------------------------------------------------------------------------

settings = Settings()
store = Store(settings.db_path, settings.seed)
# Thread-safe (one HTTP request per call); retries 503s and unreachable nodes with backoff, and
# retries timeouts only where a repeat is harmless (publish_once, unsubscribe): see sdk/python.
publisher = Publisher(settings.edge_internal_url, api_key=settings.publish_api_key, timeout=5.0, retries=3)
app = FastAPI(title="ws-edge FastAPI reference backend")


def _encode(payload: Any) -> bytes:
    # What JSONResponse sends (Starlette: ensure_ascii=False, compact), so sizes computed here hold.
    return json.dumps(payload, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode("utf-8")


def answer(payload: Dict[str, Any]) -> JSONResponse:
    """An answer to a node: a plain dict, checked against the node's 4,096-byte cap."""
    if len(_encode(payload)) > MAX_ANSWER_BYTES:
        log.error("answer to a node larger than %d bytes; the node would answer unavailable", MAX_ANSWER_BYTES)
    return JSONResponse(payload)


def _bearer_check(expected: str) -> Callable[[Optional[str]], None]:
    want = f"Bearer {expected}".encode()

    def check(authorization: Optional[str] = Header(None)) -> None:
        # Constant time: the nodes' calls are the only ones that know the key.
        if authorization is None or not hmac.compare_digest(authorization.encode(), want):
            raise HTTPException(status_code=401, detail="bad key")

    return check


node_backend_key = _bearer_check(settings.backend_key)
node_room_auth_key = _bearer_check(settings.room_auth_key)


class User(BaseModel):
    id: str
    name: str


def current_user(x_user: Optional[str] = Header(None)) -> User:
    """A fake login: the `X-User` header names a user. Replace with the product's session."""
    row = store.user(x_user) if x_user else None
    if row is None:
        raise HTTPException(status_code=401, detail="log in: send X-User: alice (or bob, carol, mallory)")
    return User(id=row["id"], name=row["name"])


def _room_or_400(room: str) -> str:
    if ROOM.match(room) is None:
        raise HTTPException(status_code=400, detail=f"not a room: {room!r}")
    return room


@app.get("/healthz")
def healthz() -> Dict[str, str]:
    return {"status": "ok"}


# -- for the browser -----------------------------------------------------------------------------


@app.post("/api/ws-token")
def ws_token(user: User = Depends(current_user)) -> Dict[str, Any]:
    """A connection token for the logged-in user. It names no room (no `rooms` claim): with
    WS_ROOM_ACCESS=callback every join is asked of /internal/ws/authorize, so removing a member
    here takes effect at once instead of when a token listing the room expires. Short-lived: the
    client library calls its token provider (this endpoint) again at 80% of the token's life and
    refreshes in band; each call mints a fresh token with a later `exp`."""
    token = mint_token(
        settings.jwt_secret, user.id, rooms=None, username=user.name, ttl=settings.token_ttl, issuer=settings.jwt_issuer, audience=settings.jwt_audience
    )
    return {"token": token, "expires_at": int(time.time()) + settings.token_ttl, "user_id": user.id, "url": settings.edge_public_url}


class GrantRequest(BaseModel):
    room: str


@app.post("/api/ws-grant")
def ws_grant(body: GrantRequest, user: User = Depends(current_user)) -> Dict[str, Any]:
    """A room grant (join_room's `grant`) for a room the user may join: for nodes with
    WS_ROOM_ACCESS=token, where no callback is asked. Short: removing a member cannot recall a
    grant already handed out, only revoke the membership (DELETE .../members/...)."""
    room = _room_or_400(body.room)
    if room.startswith("user:") or not store.may_access(user.id, room):
        raise HTTPException(status_code=403, detail=f"{user.id} may not join {room}")
    grant = mint_grant(settings.jwt_secret, user.id, room, ttl=settings.grant_ttl, issuer=settings.jwt_issuer, audience=settings.jwt_audience)
    return {"grant": grant, "room": room, "expires_at": int(time.time()) + settings.grant_ttl}


@app.get("/api/rooms/{room}/messages")
def room_messages(room: str, before: Optional[int] = None, limit: int = 100, user: User = Depends(current_user)) -> Dict[str, Any]:
    """The product API a client reloads a chat room from (after `reset`, or on first load)."""
    if not store.may_access(user.id, _room_or_400(room)):
        raise HTTPException(status_code=403, detail=f"{user.id} may not read {room}")
    rows = store.messages(room, before, max(1, min(limit, 1000)))
    return {"room": room, "messages": rows[::-1], "count": len(rows)}


@app.get("/api/rooms/{room}/reads")
def room_reads(room: str, user: User = Depends(current_user)) -> Dict[str, Any]:
    if not store.may_access(user.id, _room_or_400(room)):
        raise HTTPException(status_code=403, detail=f"{user.id} may not read {room}")
    return {"room": room, "reads": store.reads(room)}


@app.get("/api/users/{user_id}/presence")
def user_presence(user_id: str, user: User = Depends(current_user)) -> Dict[str, Any]:
    """Online or offline as the nodes' webhook events said: online since `online_since`, or last
    connected at `last_seen` (Unix ms; null until an event said). A user is offline only once their
    last connection has been gone for the nodes' WS_EVENTS_GRACE, so a reload never flickers."""
    if store.user(user_id) is None:
        raise HTTPException(status_code=404, detail=f"no user {user_id}")
    row = store.presence(user_id)
    if row is None:  # no event yet: never connected since the events began
        return {"user_id": user_id, "status": "offline", "online_since": None, "last_seen": None, "version": None}
    return {"user_id": user_id, "status": row["status"], "online_since": row["online_since"], "last_seen": row["last_seen"], "version": row["version"]}


class NewTask(BaseModel):
    title: str


def publish_task_created(task: Dict[str, Any], user: User) -> Dict[str, Any]:
    """task.created to project:<id> and task:<id>, AFTER the commit (clients must never hear of a
    task that was rolled back). In a sequenced room the key `task-<id>-created` makes any repeat
    (the SDK's own retry after a timeout, a second worker, a future outbox sweep) harmless: the node
    publishes a key once per room within 5 minutes and answers a repeat with the first position.

    The gap: if this process dies after the commit and before (or while) publishing, the task
    exists and no event went out; members see it on their next reload of the project, not live.
    A failed publish (node or Redis away past the SDK's retries) is the same gap, reported in the
    answer and the log. On PostgreSQL the outbox closes it (README "On PostgreSQL: publish
    through the outbox"): wsedge.outbox.add writes the event in the task's own transaction and the
    nodes (WS_OUTBOX_URL) publish it once it commits."""
    data = {"task_id": task["id"], "project_id": task["project_id"], "title": task["title"], "status": task["status"], "created_by": task["created_by"]}
    key = f"task-{task['id']}-created"
    events: Dict[str, Any] = {}
    for room in (f"project:{task['project_id']}", f"task:{task['id']}"):
        try:
            if settings.sequenced(room):
                events[room] = publisher.publish_once(key, room, "task.created", data, sender=user.name)
            else:  # a plain room: at most once, no key (the node refuses one there)
                events[room] = publisher.publish(room, "task.created", data, sender=user.name)
        except WsEdgeError as err:
            log.warning("task.created for task %s not published to %s: %s", task["id"], room, err)
            events[room] = {"status": "not_published", "error": err.code}
    return events


@app.post("/api/projects/{project_id}/tasks", status_code=201)
def create_task(project_id: int, body: NewTask, user: User = Depends(current_user)) -> Dict[str, Any]:
    if not store.is_member(user.id, project_id):
        raise HTTPException(status_code=403, detail=f"{user.id} is not a member of project {project_id}")
    title = body.title.strip()
    if not title or len(title) > 200:
        raise HTTPException(status_code=400, detail="a title is 1-200 characters")
    task = store.add_task(project_id, title, user.id)  # committed
    return {"task": task, "events": publish_task_created(task, user)}


@app.get("/api/projects/{project_id}/tasks")
def list_tasks(project_id: int, user: User = Depends(current_user)) -> Dict[str, Any]:
    """The tasks, and the room's position read BEFORE loading them: the client joins project:<id>
    with `since` = that position and misses nothing published between this load and its join."""
    if not store.is_member(user.id, project_id):
        raise HTTPException(status_code=403, detail=f"{user.id} is not a member of project {project_id}")
    room = f"project:{project_id}"
    position = None
    if settings.sequenced(room):
        try:
            top = publisher.history(room, limit=1, reverse=True)
            position = {"epoch": top["epoch"], "offset": top["offset"]}
        except WsEdgeError as err:  # no position: the client joins without `since` and keeps this load
            log.warning("position of %s not read: %s", room, err)
    return {"tasks": store.tasks(project_id), "position": position}


@app.delete("/api/projects/{project_id}/members/{member_id}")
def remove_member(project_id: int, member_id: str, user: User = Depends(current_user)) -> Dict[str, Any]:
    """Remove a member: commit, then take the project's rooms away on every node (room_left
    `access_revoked`; the nodes' cached callback answers are dropped too, so a rejoin is asked again
    and denied). A crash between the two leaves the member in the rooms they had joined until they
    leave or reconnect; joins after the commit are already denied. Grants already handed out stay
    valid until their exp: keep them short."""
    if store.owner(project_id) != user.id:
        raise HTTPException(status_code=403, detail="only the project's owner removes members")
    revoked, failed = [], []
    for room in store.remove_member(project_id, member_id):
        try:
            publisher.unsubscribe(member_id, room)
            revoked.append(room)
        except WsEdgeError as err:  # Redis away past the retries: nothing was changed on any node
            log.warning("unsubscribe %s from %s failed: %s", member_id, room, err)
            failed.append(room)
    return {"removed": member_id, "project_id": project_id, "revoked": revoked, "failed": failed}


# -- for the nodes -------------------------------------------------------------------------------


class AuthorizeCall(BaseModel):
    user_id: str
    username: Optional[str] = None
    room: str
    connection_id: Optional[str] = None


@app.post("/internal/ws/authorize", dependencies=[Depends(node_room_auth_key)])
def authorize(call: AuthorizeCall) -> JSONResponse:
    """WS_ROOM_AUTH_URL. Always a 200 with a boolean: a 403 or 500 would be read as "unreachable"
    (the client gets the retryable `unavailable`), never as a decision."""
    if store.may_access(call.user_id, call.room):
        return answer({"allow": True, "ttl": settings.room_auth_ttl})
    return answer({"allow": False})


class ProxyCall(BaseModel):
    user_id: str
    username: Optional[str] = None
    connection_id: Optional[str] = None
    room: str
    type: str = "message.new"
    data: Any = None
    idempotency_key: Optional[str] = None


def deny(code: str, reason: str) -> JSONResponse:
    # code: [a-z0-9_.-]{1,64}; reason: at most 256 characters (else the node answers unavailable).
    return answer({"allow": False, "code": code, "reason": reason})


# A stored text must fit, with room to spare, in the proxy's answer (it carries the text back) and
# in one entry of a messages.history page (with a username of up to 128 characters).
MAX_TEXT_BYTES = 3000


@app.post("/internal/ws/publish", dependencies=[Depends(node_backend_key)])
def publish_proxy(call: ProxyCall) -> JSONResponse:
    """WS_PUBLISH_PROXY_URL: a client's send_message, before anyone receives it. Stored, then
    allowed with the stored row (its message_id and stored_at go out to every member), or refused
    with a code of ours (the sender gets `rejected`, `detail` = the code; nothing is delivered)."""
    kind = call.room.split(":", 1)[0]
    if kind != "channel":
        # project:/task: rooms carry the backend's own events (task.created...); chat is in channels.
        return deny("read_only", f"{kind} rooms take no chat messages")
    if not store.may_access(call.user_id, call.room):  # removed since the join
        return deny("not_member", "you are no longer a member of this room")
    text = call.data.get("text") if isinstance(call.data, dict) else None
    if not isinstance(text, str) or not text.strip():
        return deny("empty", 'a message is {"text": "..."} with some text')
    if len(text) > settings.max_text_chars or len(_encode(text)) > MAX_TEXT_BYTES:
        # The answer carries the text back, and a node reads at most 4,096 bytes of it.
        return deny("too_long", f"a message is at most {settings.max_text_chars} characters and {MAX_TEXT_BYTES} bytes")
    lowered = text.lower()
    if any(word in lowered for word in settings.blocked_words):
        return deny("blocked_word", "this message contains a blocked word")
    row = store.add_message(call.room, call.user_id, call.username or call.user_id, text, call.idempotency_key)
    # `data` replaces what the client sent: only what we stored goes out.
    return answer({"allow": True, "data": {"text": row["text"], "message_id": row["message_id"], "stored_at": row["stored_at"]}})


class RpcCall(BaseModel):
    user_id: str
    username: Optional[str] = None
    connection_id: Optional[str] = None
    method: str
    data: Any = None


class Refusal(Exception):
    """An RPC refused: the client gets `rejected` with `detail` = code, `error` = message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _chat_room(call: RpcCall, data: Any) -> str:
    room = data.get("room") if isinstance(data, dict) else None
    if not isinstance(room, str) or ROOM.match(room) is None or not room.startswith("channel:"):
        raise Refusal("invalid_room", "data.room must be a channel room")
    if not store.may_access(call.user_id, room):
        raise Refusal("forbidden", f"you may not read {room}")
    return room


def _message_id(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise Refusal("invalid_message_id", "message_id must be a positive integer")
    return value


def rpc_history(call: RpcCall) -> Dict[str, Any]:
    """messages.history {room, before?, limit?}: a page of stored messages, oldest first, ending
    before `before` (default: the newest). A page is as many as fit in the node's 4,096-byte answer
    cap (at most `limit`, 50): `more` says older ones exist, `before` is where the next page ends."""
    data = call.data if isinstance(call.data, dict) else {}
    room = _chat_room(call, data)
    before = data.get("before")
    if before is not None:
        before = _message_id(before)
    limit = data.get("limit", 50)
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 50:
        raise Refusal("invalid_limit", "limit must be 1-50")
    rows = store.messages(room, before, limit + 1)
    page: List[Dict[str, Any]] = []
    for row in rows[:limit]:
        entry = {k: row[k] for k in ("message_id", "user_id", "username", "text", "stored_at")}
        candidate = {"data": {"room": room, "messages": [entry, *page], "more": True, "before": entry["message_id"]}}
        if len(_encode(candidate)) > MAX_ANSWER_BYTES:
            break
        page.insert(0, entry)
    more = len(page) < len(rows)
    return {"room": room, "messages": page, "more": more, "before": page[0]["message_id"] if page else before}


def _store_read(call: RpcCall, room: str, message_id: Any) -> Dict[str, Any]:
    last = store.mark_read(call.user_id, room, _message_id(message_id))
    if last is None:
        raise Refusal("unknown_message", f"no message {message_id} in {room}")
    return {"ok": True, "room": room, "last_read": last}


def rpc_mark_read(call: RpcCall) -> Dict[str, Any]:
    """messages.mark_read {room, message_id}: the read mark moves forward, never back."""
    data = call.data if isinstance(call.data, dict) else {}
    return _store_read(call, _chat_room(call, data), data.get("message_id"))


RPC_METHODS: Dict[str, Callable[[RpcCall], Any]] = {
    "messages.history": rpc_history,
    "messages.mark_read": rpc_mark_read,
}


@app.post("/internal/ws/rpc", dependencies=[Depends(node_backend_key)])
def rpc(call: RpcCall) -> JSONResponse:
    """WS_RPC_URL: {"data": ...} comes back as rpc_result; {"error": {"code", "message"}} as
    `rejected`. Never both, and never "error": null."""
    method = RPC_METHODS.get(call.method)
    if method is None:
        return answer({"error": {"code": "unknown_method", "message": f"no method {call.method}"}})
    try:
        return answer({"data": method(call)})
    except Refusal as err:
        return answer({"error": {"code": err.code, "message": err.message[:256]}})


@app.post("/internal/ws/events")
async def webhook_events(request: Request) -> JSONResponse:
    """WS_WEBHOOK_URL: `{"events": [...]}` from the node holding the event log, in its order. The
    signature is checked against the raw bytes before anything is parsed (a body parsed and encoded
    again is not the body that was signed). Answer 2xx only once the events are committed: anything
    else makes the node send the batch again (backoff 1 s doubling to 30 s, for WS_WEBHOOK_RETRY_FOR)."""
    body = await request.body()
    try:
        batch = webhooks.verify(settings.webhook_secret, body, request.headers.get("x-wsedge-timestamp"), request.headers.get("x-wsedge-signature"))
    except webhooks.WebhookError as err:
        # bad_signature / stale_timestamp: not from a node (or replayed); bad_body: a node would never send it.
        log.warning("webhook request refused: %s", err.code)
        return JSONResponse({"error": err.code}, status_code=400 if err.code == "bad_body" else 401)
    counts = await run_in_threadpool(store.apply_events, batch["events"])
    return JSONResponse({"received": len(batch["events"]), **counts})


# -- running -------------------------------------------------------------------------------------


class Server(uvicorn.Server):
    """uvicorn's server, printing `listening <port>` once the socket accepts (the bound port when
    APP_PORT is 0)."""

    async def startup(self, sockets: Any = None) -> None:
        await super().startup(sockets=sockets)
        if self.should_exit or not self.servers:  # the bind failed; uvicorn has logged why
            return
        port = self.servers[0].sockets[0].getsockname()[1]
        print(f"listening {port}", flush=True)


def main() -> None:
    handler = logging.StreamHandler()  # stderr, beside uvicorn's own lines
    handler.setFormatter(logging.Formatter("%(levelname)s:     %(name)s: %(message)s"))
    log.addHandler(handler)
    log.setLevel(settings.log_level.upper())
    log.propagate = False
    log.info("ws-edge at %s, sequenced rooms %s, database %s", settings.edge_internal_url, settings.history_rooms or "none", settings.db_path)
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level=settings.log_level, access_log=settings.access_log)
    server = Server(config)
    server.run()
    if not server.started:
        sys.exit(1)


if __name__ == "__main__":
    main()
