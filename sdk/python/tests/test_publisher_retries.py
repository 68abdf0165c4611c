"""The publisher's transport against a scripted local HTTP server (a real backend process in a
thread): retries with backoff on 503 and on requests that never reached the server, none on 4xx,
an unknown outcome retried only when a repeat is harmless, and arguments refused before any
request. The routes and refusals of a real node are in test_live.py."""

from __future__ import annotations

import json
import threading
import unittest
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from _support import free_port

from wsedge import Publisher, WsEdgeError

UNAVAILABLE = (503, {"error": "unavailable", "reason": "the room is sequenced and its history is unreachable; retry"})
PUBLISHED = (200, {"status": "published", "room": "project:1", "epoch": "e1", "offset": 1})


class Scripted:
    """Answers the n-th request with script[n] (the last one again after the end): (status, body),
    or ("hang", None) to answer nothing until `release` is set."""

    def __init__(self, *script: tuple[Any, Any], headers: dict[str, str] | None = None):
        self.script = list(script)
        self.requests: list[dict[str, Any]] = []
        self.release = threading.Event()
        scripted = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                scripted.requests.append({"method": self.command, "path": self.path, "auth": self.headers.get("Authorization"), "body": json.loads(body) if body else None})
                status, answer = scripted.script[min(len(scripted.requests), len(scripted.script)) - 1]
                if status == "hang":
                    scripted.release.wait(30)
                    return
                raw = answer if isinstance(answer, bytes) else json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            do_GET = do_POST = _answer

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


class RetryTest(unittest.TestCase):
    def setUp(self) -> None:
        self.delays: list[float] = []

    def publisher(self, url: str, **options: Any) -> Publisher:
        # The delays are recorded instead of slept: the policy is what is tested here.
        return Publisher(url, "key", sleep=self.delays.append, random=lambda: 1.0, **options)

    def serve(self, *script: tuple[Any, Any], **options: Any) -> Scripted:
        server = Scripted(*script, **options)
        self.addCleanup(server.close)
        return server

    def test_503_is_retried_with_exponential_backoff(self):
        server = self.serve(UNAVAILABLE, UNAVAILABLE, PUBLISHED)
        answer = self.publisher(server.url).publish("project:1", "task.updated", {"n": 1})
        self.assertEqual(answer["offset"], 1)
        self.assertEqual(len(server.requests), 3)
        self.assertEqual(self.delays, [0.25, 0.5])  # random() = 1: the full delay of each step
        self.assertEqual(server.requests[0]["path"], "/api/v1/publish")
        self.assertEqual(server.requests[0]["auth"], "Bearer key")
        self.assertEqual(server.requests[0]["body"], {"room": "project:1", "type": "task.updated", "data": {"n": 1}, "sender": None})
        print(f"\n  [503 retries] {len(server.requests)} requests, delays {self.delays}", flush=True)

    def test_503_until_retries_run_out(self):
        server = self.serve(UNAVAILABLE)
        with self.assertRaises(WsEdgeError) as caught:
            self.publisher(server.url, retries=2).publish("project:1", "task.updated")
        err = caught.exception
        self.assertEqual((err.status, err.code, err.attempts, err.retryable), (503, "unavailable", 3, True))
        self.assertIn("unreachable", err.reason)
        self.assertEqual(len(server.requests), 3)

    def test_retry_after_is_honoured(self):
        server = self.serve(UNAVAILABLE, PUBLISHED, headers={"Retry-After": "2"})
        self.publisher(server.url).publish("project:1", "task.updated")
        self.assertEqual(self.delays, [2.0])

    def test_4xx_is_never_retried(self):
        for status, code in ((400, "invalid_room"), (401, "unauthorized"), (404, "api_disabled"), (413, "too_large")):
            server = self.serve((status, {"error": code, "reason": "because"}))
            with self.assertRaises(WsEdgeError) as caught:
                self.publisher(server.url).publish("project:1", "task.updated")
            self.assertEqual((caught.exception.status, caught.exception.code, caught.exception.reason, caught.exception.attempts), (status, code, "because", 1))
            self.assertFalse(caught.exception.retryable)
            self.assertEqual(len(server.requests), 1)
        self.assertEqual(self.delays, [])

    def test_an_answer_that_is_not_the_nodes(self):
        server = self.serve((502, b"<html>bad gateway</html>"))
        with self.assertRaises(WsEdgeError) as caught:
            self.publisher(server.url).publish("project:1", "task.updated")
        self.assertEqual((caught.exception.status, caught.exception.code), (502, "http_502"))
        self.assertEqual(len(server.requests), 1)

    def test_connection_refused_is_retried(self):
        url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
        with self.assertRaises(WsEdgeError) as caught:
            self.publisher(url, retries=3).publish("project:1", "task.updated")
        self.assertEqual((caught.exception.status, caught.exception.code, caught.exception.attempts), (None, "unreachable", 4))
        self.assertEqual(self.delays, [0.25, 0.5, 1.0])

    def test_a_timed_out_plain_publish_is_not_sent_again(self):
        server = self.serve(("hang", None), PUBLISHED)
        with self.assertRaises(WsEdgeError) as caught:
            self.publisher(server.url, timeout=0.3).publish("project:1", "task.updated")
        self.assertEqual((caught.exception.status, caught.exception.code), (None, "timeout"))
        self.assertEqual(len(server.requests), 1)  # at most once: the event may have gone out

    def test_a_timed_out_publish_once_is_sent_again(self):
        server = self.serve(("hang", None), (200, {**PUBLISHED[1], "duplicate": True}))
        answer = self.publisher(server.url, timeout=0.3).publish_once("task-7-v3", "project:1", "task.updated", {"n": 1})
        self.assertEqual(len(server.requests), 2)
        self.assertTrue(answer["duplicate"])
        self.assertEqual(server.requests[1]["body"]["idempotency_key"], "task-7-v3")

    def test_reads_are_retried_after_a_timeout(self):
        server = self.serve(("hang", None), (200, {"type": "presence_stats", "room": "channel:1", "data": {"users": 0, "connections": 0, "version": 1}}))
        answer = self.publisher(server.url, timeout=0.3).presence_stats("channel:1")
        self.assertEqual(answer["data"]["users"], 0)
        self.assertEqual([r["path"] for r in server.requests], ["/api/v1/rooms/channel%3A1/presence_stats"] * 2)

    def test_arguments_are_checked_before_any_request(self):
        server = self.serve(PUBLISHED)
        pub = self.publisher(server.url)
        refused = [
            (ValueError, lambda: pub.publish("room:1", "task.updated")),
            (ValueError, lambda: pub.publish("project:", "task.updated")),
            (TypeError, lambda: pub.publish(42, "task.updated")),  # type: ignore[arg-type]
            (ValueError, lambda: pub.publish("project:1", "Task.Updated")),
            (ValueError, lambda: pub.publish("project:1", "room_joined")),  # reserved
            (ValueError, lambda: pub.publish("project:1", "signal.typing")),  # reserved
            (ValueError, lambda: pub.publish("project:1", "a" * 65)),
            (ValueError, lambda: pub.publish("project:1", "task.updated", sender="x" * 129)),
            (ValueError, lambda: pub.publish("project:1", "task.updated", sender="😀" * 65)),  # 130 UTF-16 units
            (ValueError, lambda: pub.publish("project:1", "task.updated", {"x": float("nan")})),
            (ValueError, lambda: pub.publish("project:1", "task.updated", {"x": object()})),
            (ValueError, lambda: pub.publish("project:1", "task.updated", {"id": 2**63 - 1})),  # a JS number would change it
            (ValueError, lambda: pub.publish("project:1", "task.updated", [[-(2**53)]])),
            (ValueError, lambda: pub.publish_once("has space", "project:1", "task.updated")),
            (ValueError, lambda: pub.publish_once("", "project:1", "task.updated")),
            (ValueError, lambda: pub.publish_once("k" * 129, "project:1", "task.updated")),
            (ValueError, lambda: pub.publish_to_user("a.b", "notification.new")),
            (TypeError, lambda: pub.publish_to_user(True, "notification.new")),
            (ValueError, lambda: pub.send_to_connection("nodot", "sync.required")),
            (ValueError, lambda: pub.disconnect("alice", code=1000)),
            (TypeError, lambda: pub.disconnect("alice", code="4403")),  # type: ignore[arg-type]
            (ValueError, lambda: pub.disconnect("alice", reason="two\nlines")),
            (ValueError, lambda: pub.disconnect("alice", reason="é" * 62)),  # 124 bytes
            (ValueError, lambda: pub.subscribe("alice", "user:alice")),
            (ValueError, lambda: pub.unsubscribe("alice", "project:1", connection_id="x")),
            (ValueError, lambda: pub.history("project:1", limit=0)),
            (ValueError, lambda: pub.history("project:1", limit=10_001)),
            (ValueError, lambda: pub.history("project:1", since=("bad epoch", 1))),
            (TypeError, lambda: pub.history("project:1", since=5)),
            (TypeError, lambda: pub.history("project:1", reverse="yes")),  # type: ignore[arg-type]
            (ValueError, lambda: pub.presence("everyone")),
        ]
        for expected, call in refused:
            with self.assertRaises(expected):
                call()
        self.assertEqual(server.requests, [], "a refused argument must not reach the server")
        with self.assertRaises(ValueError):
            Publisher("ws-edge:9090", "key")
        with self.assertRaises(ValueError):
            Publisher("http://ws-edge:9090", "")
        print(f"\n  [validation] {len(refused)} bad calls refused, {len(server.requests)} requests sent", flush=True)

    def test_the_routes_and_bodies(self):
        server = self.serve((200, {"status": "ok"}))
        pub = self.publisher(server.url + "/api/v1/")
        pub.publish_to_user(42, "notification.new", {"title": "hi"}, sender="sys")
        pub.send_to_connection("a1b2c3d4.1k", "sync.required")
        pub.disconnect(42, 4001, "bye")
        pub.subscribe("alice", "project:1")
        pub.unsubscribe("alice", "project:1", "a1b2c3d4.1k")
        pub.history("project:1", since={"epoch": "e1", "offset": 5}, limit=10, reverse=True)
        pub.presence("channel:1")
        seen = [(r["method"], r["path"], r["body"]) for r in server.requests]
        self.assertEqual(
            seen,
            [
                ("POST", "/api/v1/publish", {"user_id": "42", "type": "notification.new", "data": {"title": "hi"}, "sender": "sys"}),
                ("POST", "/api/v1/publish", {"connection_id": "a1b2c3d4.1k", "type": "sync.required", "data": None, "sender": None}),
                ("POST", "/api/v1/disconnect", {"user_id": "42", "code": 4001, "reason": "bye"}),
                ("POST", "/api/v1/subscribe", {"user_id": "alice", "room": "project:1"}),
                ("POST", "/api/v1/unsubscribe", {"user_id": "alice", "room": "project:1", "connection_id": "a1b2c3d4.1k"}),
                ("GET", "/api/v1/rooms/project%3A1/history?since_epoch=e1&since_offset=5&limit=10&reverse=true", None),
                ("GET", "/api/v1/rooms/channel%3A1/presence", None),
            ],
        )


if __name__ == "__main__":
    unittest.main()
