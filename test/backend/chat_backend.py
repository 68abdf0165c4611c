"""A product backend for the tests: answers ws-edge's publish proxy and RPC, storing chat in SQLite,
and receives its webhook events.

Standard library only. `python3 chat_backend.py <sqlite file> <bearer key> [<webhook secret>]`
listens on a free port of 127.0.0.1 and prints `listening <port>` once it accepts calls. Behaviour
by message text: `deny` is refused (code `spam`), `boom` answers 500, `garbage` answers a body that
is not JSON, `slow:<ms>` waits that long first. Everything else is stored (the idempotency key
unique per user) and allowed with the stored row's `message_id` and `stored_at`.

POST /events is the webhook (WS_WEBHOOK_URL): the signature is checked over the raw body before
anything is parsed (401 when it does not match, its timestamp is more than 300 s off, or no webhook
secret was given), each event is applied once by its id (delivery is at least once), a `signal`
named `read` is stored as a read receipt, and user.online / user.offline / room.occupied /
room.vacated set their user's or room's last state unless their `version` is below the one
applied. GET /stats answers the counts.
"""
import hashlib
import hmac
import json
import sqlite3
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DB_PATH, KEY = sys.argv[1], sys.argv[2]
WEBHOOK_SECRET = sys.argv[3].encode() if len(sys.argv) > 3 else None
# Seconds a webhook signature stays acceptable either side of this clock (a replayed request).
TOLERANCE = 300
lock = threading.Lock()
db = sqlite3.connect(DB_PATH, check_same_thread=False)
db.execute(
    "CREATE TABLE IF NOT EXISTS messages (message_id INTEGER PRIMARY KEY, room TEXT, user_id TEXT, text TEXT,"
    " idempotency_key TEXT, stored_at REAL, UNIQUE (user_id, room, idempotency_key))"
)
db.execute("CREATE TABLE IF NOT EXISTS reads (user_id TEXT, room TEXT, message_id INTEGER)")
# The ids of the webhook events applied: a repeat (a batch whose 2xx the node never read) is skipped.
db.execute("CREATE TABLE IF NOT EXISTS events (id TEXT PRIMARY KEY, type TEXT, name TEXT)")
# The last lifecycle event applied per user (`user:<id>`) or room (`room:<name>`), ordered by version.
db.execute("CREATE TABLE IF NOT EXISTS lifecycle (subject TEXT PRIMARY KEY, type TEXT, version INTEGER, last_seen INTEGER)")
db.commit()
in_flight = 0
max_in_flight = 0
duplicate_events = 0
refused_webhooks = 0


def store(body):
    data = body["data"] if isinstance(body.get("data"), dict) else {"text": body.get("data")}
    key = body.get("idempotency_key")
    with lock:
        try:
            cur = db.execute(
                "INSERT INTO messages (room, user_id, text, idempotency_key, stored_at) VALUES (?, ?, ?, ?, ?)",
                (body["room"], body["user_id"], json.dumps(data), key, time.time()),
            )
            db.commit()
            row = (cur.lastrowid, time.time())
        except sqlite3.IntegrityError:  # the same key again: the first row is the answer
            row = db.execute(
                "SELECT message_id, stored_at FROM messages WHERE user_id = ? AND room = ? AND idempotency_key = ?", (body["user_id"], body["room"], key)
            ).fetchone()
    return {"allow": True, "data": {**data, "message_id": row[0], "stored_at": row[1]}}


def rpc(body):
    method, data = body["method"], body.get("data") or {}
    if method == "messages.count":
        with lock:
            (count,) = db.execute("SELECT COUNT(*) FROM messages WHERE room = ?", (data.get("room"),)).fetchone()
        return {"data": {"count": count}}
    if method == "messages.mark_read":
        with lock:
            db.execute("INSERT INTO reads VALUES (?, ?, ?)", (body["user_id"], data.get("room"), data.get("message_id")))
            db.commit()
        return {"data": {"ok": True}}
    if method.startswith("slow"):
        time.sleep(float(data.get("ms", 1000)) / 1000)
        return {"data": None}
    return {"error": {"code": "unknown_method", "message": f"no method {method}"}}


def signed(headers, raw):
    """Whether the request carries a `v1=` HMAC-SHA256 of "<timestamp>.<raw body>" made with the
    secret, and a timestamp within TOLERANCE seconds; compared in constant time."""
    timestamp = headers.get("x-wsedge-timestamp") or ""
    if WEBHOOK_SECRET is None or not (timestamp.isascii() and timestamp.isdigit()) or abs(time.time() - int(timestamp)) > TOLERANCE:
        return False
    expected = ("v1=" + hmac.new(WEBHOOK_SECRET, timestamp.encode() + b"." + raw, hashlib.sha256).hexdigest()).encode()
    given = [part.strip().encode() for part in (headers.get("x-wsedge-signature") or "").split(",")]
    return any([hmac.compare_digest(expected, g) for g in given])  # a list: every value compared


def apply_events(events):
    """One transaction: the ids and what they change commit together, so a batch sent again after
    a failure is applied exactly once."""
    global duplicate_events
    with lock:
        repeated = 0
        try:
            for event in events:
                name = event.get("name") if event["type"] == "signal" else None
                if db.execute("INSERT OR IGNORE INTO events VALUES (?, ?, ?)", (event["id"], event["type"], name)).rowcount == 0:
                    repeated += 1
                    continue
                if name == "read":
                    db.execute("INSERT INTO reads VALUES (?, ?, ?)", (event["user_id"], event["room"], (event.get("data") or {}).get("message_id")))
                elif event["type"].startswith(("user.", "room.")):
                    subject = f"user:{event['user_id']}" if event["type"].startswith("user.") else f"room:{event['room']}"
                    db.execute(
                        "INSERT INTO lifecycle VALUES (?, ?, ?, ?) ON CONFLICT (subject) DO UPDATE SET"
                        " type = excluded.type, version = excluded.version, last_seen = excluded.last_seen WHERE excluded.version >= lifecycle.version",
                        (subject, event["type"], event["version"], event.get("last_seen")),
                    )
        except Exception:
            db.rollback()
            raise
        db.commit()
        duplicate_events += repeated


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, status, payload):
        raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def do_GET(self):
        with lock:
            (count,) = db.execute("SELECT COUNT(*) FROM messages").fetchone()
            (reads,) = db.execute("SELECT COUNT(*) FROM reads").fetchone()
            types = dict(db.execute("SELECT COALESCE(type || '.' || name, type), COUNT(*) FROM events GROUP BY 1").fetchall())
            lifecycle = {r[0]: {"type": r[1], "version": r[2], "last_seen": r[3]} for r in db.execute("SELECT * FROM lifecycle")}
        self.reply(200, {
            "rows": count,
            "reads": reads,
            "max_in_flight": max_in_flight,
            "events": sum(types.values()),
            "event_types": types,
            "duplicate_events": duplicate_events,
            "refused_webhooks": refused_webhooks,
            "lifecycle": lifecycle,
        })

    def do_POST(self):
        global in_flight, max_in_flight, refused_webhooks
        raw = self.rfile.read(int(self.headers["content-length"]))
        if self.path == "/events":
            # Checked against the bytes as they arrived, before parsing; no bearer key (the node sends none).
            if not signed(self.headers, raw):
                with lock:
                    refused_webhooks += 1
                return self.reply(401, {"error": "bad signature"})
            try:
                apply_events(json.loads(raw)["events"])
            except (ValueError, KeyError, TypeError, AttributeError) as err:  # signed, but not the events it should be
                return self.reply(400, {"error": repr(err)})
            return self.reply(200, {})
        body = json.loads(raw)
        if self.headers.get("authorization") != f"Bearer {KEY}":
            return self.reply(401, {"error": "bad key"})
        with lock:
            in_flight += 1
            max_in_flight = max(max_in_flight, in_flight)
        try:
            status, answer = self.answer(body)
        finally:
            # Out of flight before the answer leaves: the node may start its next call the moment it reads it.
            with lock:
                in_flight -= 1
        self.reply(status, answer)

    def answer(self, body):
        if self.path == "/rpc":
            return 200, rpc(body)
        text = body.get("data", {}).get("text", "") if isinstance(body.get("data"), dict) else ""
        if text.startswith("slow:"):
            time.sleep(int(text[5:]) / 1000)
        if text == "deny":
            return 200, {"allow": False, "code": "spam", "reason": "no spam here"}
        if text == "boom":
            return 500, {"allow": True}
        if text == "garbage":
            return 200, b"allow"
        return 200, store(body)

# A burst of fresh connections from the nodes (a keep-alive pool filling up) must not wait on the kernel's SYN retries (1, 3, 7 s) behind the default backlog of 5.
ThreadingHTTPServer.request_queue_size = 128
server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
server.daemon_threads = True
print(f"listening {server.server_address[1]}", flush=True)
server.serve_forever()
