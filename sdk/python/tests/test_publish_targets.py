"""One call, many targets: publish_many, publish_batch and exclude_connection. The bodies sent and
the argument checks against a scripted local server (test_publisher_retries.Scripted), then the
routes against a real node (`node dist/cli.js serve`, memory broker): every target's client gets
the event once, an excluded connection gets nothing, a batch is answered item by item."""

from __future__ import annotations

import asyncio
import socket
import unittest
from typing import Any

from _support import API_KEY, SECRET, WAIT, EdgeNode, Recorder, require_websockets
from test_publisher_retries import Scripted

from wsedge import Publisher, WsEdgeError

MANY = (200, {"status": "published", "results": []})


class BodiesTest(unittest.TestCase):
    def serve(self, *script: tuple[Any, Any]) -> Scripted:
        server = Scripted(*script)
        self.addCleanup(server.close)
        return server

    def publisher(self, url: str, **options: Any) -> Publisher:
        self.delays: list[float] = []
        return Publisher(url, "key", sleep=self.delays.append, random=lambda: 1.0, **options)

    def test_publish_many_body(self):
        server = self.serve(MANY)
        pub = self.publisher(server.url)
        pub.publish_many(rooms=("project:42", "task:7"), user_ids=[7, "bob"], type="task.assigned", data={"task_id": 7}, sender="alice", exclude_connection="a1b2c3d4.1k")
        pub.publish_many(user_ids=["carol"], type="notification.new")
        pub.publish_many(rooms=["project:1"], type="task.updated", idempotency_key="task-1-v2")
        self.assertEqual([r["path"] for r in server.requests], ["/api/v1/publish"] * 3)
        self.assertEqual(
            [r["body"] for r in server.requests],
            [
                {"rooms": ["project:42", "task:7"], "user_ids": ["7", "bob"], "type": "task.assigned", "data": {"task_id": 7}, "sender": "alice", "exclude_connection": "a1b2c3d4.1k"},
                {"user_ids": ["carol"], "type": "notification.new", "data": None, "sender": None},
                {"rooms": ["project:1"], "type": "task.updated", "data": None, "sender": None, "idempotency_key": "task-1-v2"},
            ],
        )

    def test_publish_url_takes_publishes_and_batches_only(self):
        thread, internal = self.serve(MANY, (200, {"results": [{"status": "published", "room": "task:1"}]})), self.serve((200, {"status": "disconnecting"}))
        pub = self.publisher(internal.url, publish_url=thread.url + "/api/v1/")
        pub.publish_many(rooms=["task:1"], type="task.updated")
        pub.publish_batch([{"room": "task:1", "type": "task.updated"}])
        pub.disconnect("alice")
        self.assertEqual([r["path"] for r in thread.requests], ["/api/v1/publish", "/api/v1/publish/batch"])
        self.assertEqual([r["path"] for r in internal.requests], ["/api/v1/disconnect"])
        with self.assertRaises(ValueError):
            Publisher(internal.url, "key", publish_url="ws-edge-1:9091")

    def test_a_publish_port_that_refuses_connections_falls_back_to_the_internal_port(self):
        internal = self.serve(MANY)
        closed = socket.socket()
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        closed.close()  # nothing listens there now: connection refused, nothing sent
        pub = self.publisher(internal.url, publish_url=f"http://127.0.0.1:{port}")
        pub.publish_many(rooms=["task:1"], type="task.updated")
        self.assertEqual([r["path"] for r in internal.requests], ["/api/v1/publish"])
        self.assertEqual(len(self.delays), 1)

    def test_exclude_connection_on_the_single_routes(self):
        server = self.serve((200, {"status": "published"}))
        pub = self.publisher(server.url)
        pub.publish("channel:1", "message.new", {"n": 1}, exclude_connection="n1.a")
        pub.publish_to_user(5, "notification.new", exclude_connection="n2.b")
        pub.publish_once("k1", "project:1", "task.updated", exclude_connection="n3.c")
        self.assertEqual([r["body"]["exclude_connection"] for r in server.requests], ["n1.a", "n2.b", "n3.c"])
        self.assertEqual(server.requests[1]["body"]["user_id"], "5")

    def test_publish_batch_body_and_answer(self):
        results = [{"status": "published", "room": "channel:1"}, {"error": "invalid_room", "reason": "bad"}]
        server = self.serve((200, {"results": results}))
        pub = self.publisher(server.url)
        publications = [{"room": "channel:1", "type": "message.deleted", "data": {"id": 1}}, {"room": "nope", "type": "x.y"}]
        self.assertEqual(pub.publish_batch(publications), results)
        self.assertEqual(server.requests[0]["path"], "/api/v1/publish/batch")
        self.assertEqual(server.requests[0]["body"], {"publications": publications})

    def test_a_batch_answer_without_one_result_each_is_refused(self):
        server = self.serve((200, {"results": [{"status": "published"}]}))
        with self.assertRaises(WsEdgeError) as caught:
            self.publisher(server.url).publish_batch([{"room": "channel:1", "type": "a.b"}, {"room": "channel:2", "type": "a.b"}])
        self.assertEqual(caught.exception.code, "invalid_response")

    def test_unknown_outcomes_are_retried_only_with_keys(self):
        server = self.serve(("hang", None), MANY)
        with self.assertRaises(WsEdgeError) as caught:
            self.publisher(server.url, timeout=0.3).publish_many(rooms=["channel:1"], type="a.b")
        self.assertEqual(caught.exception.code, "timeout")
        self.assertEqual(len(server.requests), 1)

        server = self.serve(("hang", None), MANY)
        self.publisher(server.url, timeout=0.3).publish_many(rooms=["project:1"], type="a.b", idempotency_key="k")
        self.assertEqual(len(server.requests), 2)

        server = self.serve(("hang", None), (200, {"results": [{}, {}]}))
        with self.assertRaises(WsEdgeError):
            self.publisher(server.url, timeout=0.3).publish_batch([{"room": "project:1", "type": "a.b", "idempotency_key": "k"}, {"room": "channel:1", "type": "a.b"}])
        self.assertEqual(len(server.requests), 1)

        server = self.serve(("hang", None), (200, {"results": [{}, {}]}))
        self.publisher(server.url, timeout=0.3).publish_batch([{"room": "project:1", "type": "a.b", "idempotency_key": "k"}, {"room": "project:2", "type": "a.b", "idempotency_key": "k"}])
        self.assertEqual(len(server.requests), 2)

    def test_arguments_are_checked_before_any_request(self):
        server = self.serve(MANY)
        pub = self.publisher(server.url)
        refused = [
            (ValueError, lambda: pub.publish_many(type="a.b")),
            (ValueError, lambda: pub.publish_many(rooms=[], user_ids=[], type="a.b")),
            (TypeError, lambda: pub.publish_many(rooms="channel:1", type="a.b")),  # a str is not a list of rooms
            (ValueError, lambda: pub.publish_many(rooms=["channel:1", "nope:1"], type="a.b")),
            (ValueError, lambda: pub.publish_many(user_ids=["a b"], type="a.b")),
            (TypeError, lambda: pub.publish_many(user_ids=[True], type="a.b")),
            (ValueError, lambda: pub.publish_many(rooms=["channel:1", "channel:1"], type="a.b")),
            (ValueError, lambda: pub.publish_many(rooms=["user:7"], user_ids=[7], type="a.b")),
            (ValueError, lambda: pub.publish_many(user_ids=[str(i) for i in range(1001)], type="a.b")),
            (ValueError, lambda: pub.publish_many(rooms=["channel:1"], type="connected")),
            (ValueError, lambda: pub.publish_many(rooms=["channel:1"], type="a.b", exclude_connection="nodot")),
            (ValueError, lambda: pub.publish_many(rooms=["channel:1"], type="a.b", idempotency_key="has space")),
            (ValueError, lambda: pub.publish("channel:1", "a.b", exclude_connection="")),
            (TypeError, lambda: pub.publish_to_user("a", "a.b", exclude_connection=5)),
            (ValueError, lambda: pub.publish_batch([])),
            (ValueError, lambda: pub.publish_batch([{"room": "channel:1", "type": "a.b"}] * 101)),
            (TypeError, lambda: pub.publish_batch({"room": "channel:1", "type": "a.b"})),
            (TypeError, lambda: pub.publish_batch(["not a mapping"])),
            (ValueError, lambda: pub.publish_batch([{"room": "channel:1", "type": "a.b", "data": {"id": 2**63}}])),
        ]
        for expected, call in refused:
            with self.assertRaises(expected):
                call()
        self.assertEqual(server.requests, [], "a refused argument must not reach the server")
        pub.publish_many(user_ids=[str(i) for i in range(1000)], type="a.b")  # exactly the limit
        self.assertEqual(len(server.requests[0]["body"]["user_ids"]), 1000)


NODE: EdgeNode | None = None


def setUpModule() -> None:
    global NODE
    NODE = EdgeNode("targets node", WS_HISTORY_ROOMS="project:*", WS_AUTH_FAILURE_LIMIT="0", WS_MAX_CONNECTIONS_PER_USER="50").start()


def tearDownModule() -> None:
    if NODE is not None:
        NODE.stop()


class Events(Recorder):
    """Every event a client got, by (type, room)."""

    def count(self, kind: str, room: str) -> int:
        return sum(1 for e in self.items if e.get("type") == kind and e.get("room") == room)


class LiveTest(unittest.IsolatedAsyncioTestCase):
    async def asyncSetUp(self) -> None:
        require_websockets()
        self.pub = Publisher(NODE.api_url, API_KEY)

    async def client(self, user: str, rooms: list[str]) -> tuple[Any, Events]:
        from wsedge import mint_token
        from wsedge.client import Client
        from wsedge.policy import Backoff

        got = Events()
        c = Client(NODE.ws_url, mint_token(SECRET, user), backoff=Backoff(0.1, 2, 1.0))
        c.on("message", got)
        c.start()
        self.addAsyncCleanup(c.close)
        await c.wait_for_state("connected", timeout=WAIT)
        for room in rooms:
            await c.join(room, on_event=got)
        await c.join(f"user:{user}", on_event=got)
        return c, got

    async def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return await asyncio.to_thread(getattr(self.pub, method), *args, **kwargs)

    async def test_users_status(self):
        await self.client("py-status", [])
        users = await self.call("users_status", ["py-status", "py-never"])
        self.assertEqual([(u["user_id"], u["online"], u["connections"], u["last_seen"]) for u in users], [("py-status", True, 1, None), ("py-never", False, 0, None)])
        with self.assertRaises(ValueError):
            self.pub.users_status([])
        with self.assertRaises(ValueError):
            self.pub.users_status(["a", "a"])

    async def test_publish_many_and_exclude_connection(self):
        tab1, got1 = await self.client("py-sender", ["channel:py-a", "project:py-s"])
        _tab2, got2 = await self.client("py-sender", ["channel:py-a"])
        _other, got3 = await self.client("py-other", ["project:py-s"])
        _outsider, got4 = await self.client("py-out", [])
        answer = await self.call(
            "publish_many",
            rooms=["channel:py-a", "project:py-s"],
            user_ids=["py-sender", "py-other"],
            type="py.event",
            data={"n": 1},
            exclude_connection=tab1.connection["connection_id"],
        )
        self.assertEqual(answer["status"], "published")
        self.assertEqual([r.get("room", r.get("user_id")) for r in answer["results"]], ["channel:py-a", "project:py-s", "py-sender", "py-other"])
        self.assertEqual(answer["results"][1]["offset"], 1)
        self.assertEqual([r.get("connections") for r in answer["results"][2:]], [1, 1])
        # A marker to every room: once it is there, the events before it are too.
        await self.call("publish_many", rooms=["channel:py-a", "project:py-s"], user_ids=["py-sender", "py-other", "py-out"], type="py.done")
        for got, rooms in ((got1, ["channel:py-a", "project:py-s", "user:py-sender"]), (got2, ["channel:py-a", "user:py-sender"]), (got3, ["project:py-s", "user:py-other"]), (got4, ["user:py-out"])):
            await got.until(lambda got=got, rooms=rooms: all(got.count("py.done", r) == 1 for r in rooms), f"the marker in {rooms}")
        counts = {
            name: {room: got.count("py.event", room) for room in ("channel:py-a", "project:py-s", "user:py-sender", "user:py-other", "user:py-out")}
            for name, got in (("tab1 (excluded)", got1), ("tab2", got2), ("other", got3), ("outsider", got4))
        }
        print(f"\n  [publish_many] events per client by room: {counts}", flush=True)
        self.assertEqual(counts["tab1 (excluded)"], {"channel:py-a": 0, "project:py-s": 0, "user:py-sender": 0, "user:py-other": 0, "user:py-out": 0})
        self.assertEqual(counts["tab2"], {"channel:py-a": 1, "project:py-s": 0, "user:py-sender": 1, "user:py-other": 0, "user:py-out": 0})
        self.assertEqual(counts["other"], {"channel:py-a": 0, "project:py-s": 1, "user:py-sender": 0, "user:py-other": 1, "user:py-out": 0})
        self.assertEqual(counts["outsider"], {"channel:py-a": 0, "project:py-s": 0, "user:py-sender": 0, "user:py-other": 0, "user:py-out": 0})

        with self.assertRaises(WsEdgeError) as caught:
            await self.call("publish_many", rooms=["channel:py-a"], type="py.event", idempotency_key="k")  # not sequenced
        self.assertEqual((caught.exception.status, caught.exception.code), (400, "invalid_idempotency_key"))

    async def test_publish_batch_item_by_item(self):
        _c, got = await self.client("py-batch", ["channel:py-b"])
        results = await self.call(
            "publish_batch",
            [
                {"room": "channel:py-b", "type": "py.event", "data": {"i": 0}},
                {"room": "nope:1", "type": "py.event", "data": {"i": 1}},
                {"user_ids": ["py-batch"], "type": "py.event", "data": {"i": 2}},
                {"rooms": ["channel:py-b"], "type": "py.event", "exclude_connection": "bad"},
            ],
        )
        self.assertEqual(results[0], {"status": "published", "room": "channel:py-b"})
        self.assertEqual(results[1]["error"], "invalid_room")
        self.assertEqual(results[2], {"status": "published", "results": [{"status": "published", "user_id": "py-batch", "connections": 1}]})
        self.assertEqual(results[3]["error"], "invalid_exclude_connection")
        await self.call("publish_many", rooms=["channel:py-b"], user_ids=["py-batch"], type="py.done")
        await got.until(lambda: got.count("py.done", "channel:py-b") == 1 and got.count("py.done", "user:py-batch") == 1, "the markers")
        self.assertEqual(sorted((e["room"], e["data"]["i"]) for e in got.items if e.get("type") == "py.event"), [("channel:py-b", 0), ("user:py-batch", 2)])
        with self.assertRaises(WsEdgeError) as caught:
            await self.call("publish_batch", [{"user_ids": [str(i) for i in range(600)], "type": "a.b"}, {"user_ids": [str(i) for i in range(401)], "type": "a.b"}])
        self.assertEqual((caught.exception.status, caught.exception.code), (400, "too_many_targets"))

