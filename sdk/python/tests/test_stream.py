"""wsedge.stream against a real node reading WS_STREAM from a real redis-server: numbered entries
appended with stream.append and on one connection reach a client of a sequenced room once each, in
order; every target form; a body the node refuses lands in the dead letter with its code; bad
arguments are refused before anything is sent; Redis's own refusal (a key that is no stream) and
an unreachable server raise StreamError with their code."""

from __future__ import annotations

import asyncio
import unittest
from typing import Any

from _support import SECRET, WAIT, EdgeNode, Numbered, RedisServer, report, require_websockets

require_websockets()

from wsedge import mint_token, stream  # noqa: E402
from wsedge.client import Client  # noqa: E402
from wsedge.policy import Backoff  # noqa: E402
from wsedge.stream import StreamError  # noqa: E402

REDIS: RedisServer
NODE: EdgeNode
STREAM = "sdk{ingest}"


def setUpModule() -> None:
    global REDIS, NODE
    REDIS = RedisServer().start()
    NODE = EdgeNode("stream node", REDIS_URL=REDIS.url, WS_STREAM=STREAM, WS_HISTORY_ROOMS="project:*", WS_MESSAGE_MAX_SIZE="4096").start()


def tearDownModule() -> None:
    NODE.stop()
    REDIS.stop()


class StreamTest(unittest.IsolatedAsyncioTestCase):
    async def connected(self, user: str) -> Client:
        c = Client(NODE.ws_url, mint_token(SECRET, user), backoff=Backoff(0.1, 2, 1.0))
        c.start()
        self.addAsyncCleanup(c.close)
        await c.wait_for_state("connected", timeout=WAIT)
        return c

    async def test_numbered_entries_reach_a_sequenced_room_once_each_in_order(self):
        c = await self.connected("alice")
        got = Numbered()
        await c.join("project:streamed", on_event=got)
        n = 100

        def produce() -> list[str]:
            ids = [stream.append(REDIS.url, STREAM, type="task.updated", room="project:streamed", data={"n": i}, sender="backend") for i in range(1, 51)]
            with stream.connect(REDIS.url) as redis:
                ids += [redis.append(STREAM, type="task.updated", room="project:streamed", data={"n": i}) for i in range(51, n + 1)]
            return ids

        ids = await asyncio.to_thread(produce)
        await got.until(lambda: len(got.got) >= n, f"{n} events")
        report("stream entries, sequenced room", n, got)
        self.assertEqual(got.got, list(range(1, n + 1)))
        self.assertEqual(len(set(ids)), n)
        self.assertEqual(got.events[0]["sender"], "backend")

    async def test_room_list_and_keyed_forms(self):
        c = await self.connected("bob")
        got = Numbered()
        await c.join("project:forms", on_event=got)
        await asyncio.to_thread(stream.append, REDIS.url, STREAM, type="task.one", room="project:forms", data={"n": 1})
        await asyncio.to_thread(stream.append, REDIS.url, STREAM, type="task.listed", rooms=["project:forms"], user_ids=["bob"], data={"n": 2})
        await asyncio.to_thread(stream.append, REDIS.url, STREAM, type="task.keyed", room="project:forms", data={"n": 4}, idempotency_key="sdk-key-4")
        await got.until(lambda: got.got == [1, 2, 4], "the room's three events")
        self.assertEqual([e["type"] for e in got.events], ["task.one", "task.listed", "task.keyed"])

    async def test_a_body_the_node_refuses_goes_to_the_dead_letter_with_its_code(self):
        big = await asyncio.to_thread(stream.append, REDIS.url, STREAM, type="task.big", room="project:dead", data="x" * 5000)

        deadline = asyncio.get_running_loop().time() + WAIT
        while True:
            entries = await asyncio.to_thread(_xrange, f"{STREAM}:dead")
            found = [fields for entry_id, fields in entries if fields.get("id") == big]
            if found or asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.05)
        print(f"\n  [dead letter] code {found[0]['code']}, message {found[0]['message']!r}, command of {len(found[0]['command'])} bytes", flush=True)
        self.assertEqual(found[0]["code"], "too_large")

    def test_bad_arguments_are_refused_before_sending(self):
        bad: list[tuple[type[Exception], dict[str, Any]]] = [
            (ValueError, {"type": "task.x"}),
            (ValueError, {"type": "task.x", "room": "project:a", "user_id": "u"}),
            (ValueError, {"type": "task.x", "room": "nope:a"}),
            (ValueError, {"type": "room_joined", "room": "project:a"}),
            (ValueError, {"type": "task.x", "rooms": [], "user_ids": []}),
            (ValueError, {"type": "task.x", "rooms": ["project:a", "project:a"]}),
            (TypeError, {"type": "task.x", "rooms": "project:a"}),
            (ValueError, {"type": "task.x", "connection_id": "n1.a", "idempotency_key": "k"}),
            (ValueError, {"type": "task.x", "room": "project:a", "idempotency_key": "has space"}),
            (ValueError, {"type": "task.x", "room": "project:a", "data": float("nan")}),
        ]
        for error, body in bad:
            with self.subTest(body=body), self.assertRaises(error):
                stream.command(**body)
        with self.assertRaises(ValueError):
            stream.append(REDIS.url, "has space", type="task.x", room="project:a")
        print(f"\n  [bad arguments] {len(bad) + 1} of {len(bad) + 1} refused before sending", flush=True)

    def test_redis_refusals_raise_stream_error_with_redis_code(self):
        with stream.connect(REDIS.url) as redis:
            redis._call("SET", "sdk-not-a-stream", "x")
            with self.assertRaises(StreamError) as caught:
                redis.append("sdk-not-a-stream", type="task.x", room="project:a")
        self.assertEqual(caught.exception.code, "WRONGTYPE")
        with self.assertRaises(StreamError) as down:
            stream.append("redis://127.0.0.1:1", STREAM, type="task.x", room="project:a", timeout=2)
        self.assertEqual(down.exception.code, "unreachable")


def _xrange(key: str) -> list[tuple[str, dict[str, str]]]:
    """XRANGE key - + as (id, fields), read with the module's own RESP reader."""
    with stream.connect(REDIS.url) as redis:
        redis._sock.sendall(stream._encode("XRANGE", key, "-", "+"))
        count = int(redis._reader.readline()[1:-2])
        entries = []
        for _ in range(count):
            redis._reader.readline()  # *2
            entry_id = redis._reply()
            size = int(redis._reader.readline()[1:-2])
            values = [redis._reply() for _ in range(size)]
            entries.append((entry_id, dict(zip(values[::2], values[1::2]))))
        return entries


if __name__ == "__main__":
    unittest.main()
