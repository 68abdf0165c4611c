"""A product backend for the tests: answers ws-edge's publish proxy and RPC, storing chat in SQLite.

Standard library only. `python3 chat_backend.py <sqlite file> <bearer key>` listens on a free
port of 127.0.0.1 and prints `listening <port>` once it accepts calls. Behaviour by message text:
`deny` is refused (code `spam`), `boom` answers 500, `garbage` answers a body that is not JSON,
`slow:<ms>` waits that long first. Everything else is stored (the idempotency key unique per user)
and allowed with the stored row's `message_id` and `stored_at`. RPC `signal.read` (a forwarded
`read` signal) is stored as a read receipt. GET /stats answers the row and read counts.
"""
import json
import sqlite3
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DB_PATH, KEY = sys.argv[1], sys.argv[2]
lock = threading.Lock()
db = sqlite3.connect(DB_PATH, check_same_thread=False)
db.execute(
    "CREATE TABLE IF NOT EXISTS messages (message_id INTEGER PRIMARY KEY, room TEXT, user_id TEXT, text TEXT,"
    " idempotency_key TEXT, stored_at REAL, UNIQUE (user_id, room, idempotency_key))"
)
db.execute("CREATE TABLE IF NOT EXISTS reads (user_id TEXT, room TEXT, message_id INTEGER)")
db.commit()
in_flight = 0
max_in_flight = 0


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
    if method == "signal.read":  # WS_SIGNALS_TO_BACKEND=read: {room, data} of the signal
        with lock:
            db.execute("INSERT INTO reads VALUES (?, ?, ?)", (body["user_id"], data.get("room"), (data.get("data") or {}).get("message_id")))
            db.commit()
        return {"data": None}
    if method == "messages.mark_read":
        with lock:
            db.execute("INSERT INTO reads VALUES (?, ?, ?)", (body["user_id"], data.get("room"), data.get("message_id")))
            db.commit()
        return {"data": {"ok": True}}
    if method.startswith("slow"):
        time.sleep(float(data.get("ms", 1000)) / 1000)
        return {"data": None}
    return {"error": {"code": "unknown_method", "message": f"no method {method}"}}


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
        self.reply(200, {"rows": count, "reads": reads, "max_in_flight": max_in_flight})

    def do_POST(self):
        global in_flight, max_in_flight
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
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

server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
server.daemon_threads = True
print(f"listening {server.server_address[1]}", flush=True)
server.serve_forever()
