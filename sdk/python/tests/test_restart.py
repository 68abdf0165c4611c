"""A node restart under a client: Redis, node A (the client's) and node B (the backend's), both
sequencing project:* rooms. A backend publishes numbered events through B without pause; node A
is killed (SIGKILL: the client sees 1006 and backs off) or stopped (SIGTERM: it drains, the client
gets 1012 and waits random(0, 5 s)), and started again on the same ports with the same secret,
while B goes on publishing into the room's history in Redis. The client reconnects, rejoins its
rooms in ONE `resume` frame carrying each sequenced room's position, gets every missed event from
history, then the live ones: 0 lost, 0 duplicated, in order.

The client reaches A through a TCP relay, as clients reach nodes through a load balancer. On the
same ports: whichever side of a TCP connection closes first keeps it in TIME_WAIT for 60 s, and
the uws-legacy build (the one Debian 12 loads) listens without SO_REUSEADDR, so a node whose own
side closed client connections (a crash, or a drain: the server closes after the close handshake)
cannot listen on its port again for about a minute ("cannot listen on 127.0.0.1:<port>"). The
relay ends its connections to the node with a reset, which leaves no TIME_WAIT behind.
"""

from __future__ import annotations

import asyncio
import threading
import unittest
from typing import Any

from _support import API_KEY, SECRET, WAIT, EdgeNode, Frames, Numbered, RedisServer, Recorder, Relay, report, require_websockets

require_websockets()

from wsedge import Publisher, mint_token  # noqa: E402
from wsedge.client import Client  # noqa: E402
from wsedge.policy import Backoff  # noqa: E402

ROOM = "project:restart"
PLAIN = "channel:restart"
REDIS: RedisServer
A: EdgeNode
B: EdgeNode


def setUpModule() -> None:
    global REDIS, A, B
    REDIS = RedisServer().start()
    env = {
        "REDIS_URL": REDIS.url,
        "REDIS_PREFIX": "pysdk:",
        "WS_HISTORY_ROOMS": "project:*",
        # Enough history for the whole outage, however slow this machine is today.
        "WS_HISTORY_SIZE": "10000",
        "WS_HISTORY_RECOVER_MAX": "10000",
        "WS_HISTORY_TTL": "600",
    }
    A = EdgeNode("node A", **env)
    B = EdgeNode("node B", **env)
    try:
        A.start()
        B.start()
    except BaseException:
        tearDownModule()
        raise


def tearDownModule() -> None:
    for node in (A, B):
        node.stop()
    REDIS.stop()


class NumberedPublisher:
    """Publishes n = 1, 2, ... to the room through one node, one request after the other, until
    stopped; `published` is the last n the node answered 200 for."""

    def __init__(self, pub: Publisher, room: str):
        self.pub, self.room = pub, room
        self.published = 0
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self.pub.publish(self.room, "task.updated", {"n": self.published + 1})
                self.published += 1
                self._stop.wait(0.01)  # pacing, not waiting: about 100 events per second
        except BaseException as err:  # noqa: BLE001 - reported by stop()
            self.error = err

    def start(self) -> "NumberedPublisher":
        self._thread.start()
        return self

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(WAIT)
        if self.error is not None:
            raise self.error
        return self.published


class RestartTest(unittest.IsolatedAsyncioTestCase):
    async def test_a_crash_and_a_restart(self):
        await self.restart_under_a_client("project:crash", "channel:crash", A.kill, 1006)

    async def test_a_drain_and_a_restart(self):
        await self.restart_under_a_client("project:drain", "channel:drain", A.stop, 1012)

    async def restart_under_a_client(self, room: str, plain: str, take_down: Any, code: int) -> None:
        frames, states, got = Frames(), Recorder(), Numbered()
        recovered, reset = Recorder(), Recorder()
        relay = await Relay(A).start()
        self.addAsyncCleanup(relay.close)
        client = Client(relay.ws_url, lambda: mint_token(SECRET, "rita"), backoff=Backoff(0.2, 2, 2.0), trace=frames)
        client.on("state", states)
        client.start()
        self.addAsyncCleanup(client.close)
        await client.wait_for_state("connected", timeout=WAIT)
        await client.join(room, on_event=got, on_recovered=recovered, on_reset=reset)
        await client.join(plain, on_reset=reset)
        starts = A.starts

        publisher = NumberedPublisher(Publisher(B.api_url, API_KEY), room).start()
        try:
            await got.until(lambda: len(got.got) >= 20, "20 events before the restart")
            # Off the event loop, so the client answers a drain's close meanwhile.
            await asyncio.to_thread(take_down)
            await states.until(lambda: any(s.state == "disconnected" for s in states.items), "the client to see node A go")
            lost_at = publisher.published
            before = next(s for s in states.items if s.state == "disconnected")
            await asyncio.to_thread(A.start)
            await states.until(lambda: [s.state for s in states.items].count("connected") >= 2, "the reconnect to node A")
            back_at = publisher.published
            await recovered.until(lambda: len(recovered.items) == 1, "on_recovered")
            await got.until(lambda: len(got.got) >= back_at + 20, "20 live events after the resume")
        finally:
            published = publisher.stop()
        await got.until(lambda: published in got.got, f"the last event, {published}")

        attempts = [s.state for s in states.items].count("connecting") - 1
        report(f"{'crash' if code == 1006 else 'drain'} + restart + resume", published, got, outage=f"{back_at - lost_at} published while away", close=f"{before.code} {before.reason!r}", reconnect_attempts=attempts)
        self.assertEqual(before.code, code)
        self.assertEqual(A.starts, starts + 1)
        self.assertGreater(back_at - lost_at, 0, "events were published while the client was away")
        self.assertEqual(got.loss(published), (0, 0))
        self.assertEqual(got.got, list(range(1, published + 1)), "in order")
        offsets = [e["offset"] for e in got.events]
        self.assertEqual(offsets, list(range(offsets[0], offsets[0] + published)), "offsets without a gap")

        # The rejoin: one resume frame, every room in it, the sequenced one with its position.
        second = [i for i, (d, m, _) in enumerate(frames.frames) if d == "in" and m["type"] == "connected"][1]
        rejoins = [m for d, m, _ in frames.frames[second:] if d == "out" and m["type"] in ("resume", "join_room")]
        self.assertEqual([m["type"] for m in rejoins], ["resume"], "the rooms went out in one resume frame")
        rooms = {r["room"]: r for r in rejoins[0]["rooms"]}
        self.assertEqual(set(rooms), {room, plain})
        self.assertEqual(set(rooms[room]["since"]), {"epoch", "offset"})
        self.assertNotIn("since", rooms[plain])
        joined = {m["room"]: m.get("recovered") for m in frames.of("in", "room_joined") if m.get("id") == rejoins[0]["id"]}
        self.assertEqual(joined, {room: True, plain: None})
        self.assertEqual(reset.items, [None], "the plain room is reset (its events are lost), the sequenced one recovered")
        print(f"  [resume] one frame, {room} since {rooms[room]['since']}, recovered at {recovered.items[0]}", flush=True)


if __name__ == "__main__":
    unittest.main()
