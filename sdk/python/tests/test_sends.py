"""The asyncio client's keyed sends and rpc against real nodes: Redis, nodes A and B on it (project:*
sequenced, channel:* plain), and node C calling the repository's product backend
(test/backend/chat_backend.py: the publish proxy for channel:* and RPC).

Node A is reached only through a TCP relay (as through a load balancer; see _support.Relay): a
connection the node closes itself would keep its port in TIME_WAIT, and A restarts on that port.

Counted: a sender on node A (through the relay) sends numbered
messages, a window of them unanswered, to a sequenced and a plain room; a reader on node B must
get every number exactly once per room. First node A is killed (-9) with sends in flight and more
are made while it is away, then it is started again on the same port: the client rejoins, resends
what was in flight with the same keys, then what waited. Then the replies are lost for certain
(the relay drops what the node sends, then cuts the link): every send in flight was published,
and each resend is answered `duplicate: true` with the first send's position, delivered once.
"""

from __future__ import annotations

import asyncio
import collections
import json
import re
import unittest
from typing import Any

from _support import SECRET, WAIT, ChatBackend, EdgeNode, Frames, RedisServer, Recorder, Relay, Watched, require_websockets

require_websockets()

from wsedge import mint_token  # noqa: E402
from wsedge.client import Client, ClientError  # noqa: E402
from wsedge.policy import Backoff  # noqa: E402

REDIS: RedisServer
BACKEND: ChatBackend
A: EdgeNode
B: EdgeNode
C: EdgeNode
# At most this many sends unanswered at a time, as in client-sends.test.ts.
WINDOW = 16
KEY = re.compile(r"[\x21-\x7e]{1,128}\Z")


def setUpModule() -> None:
    global REDIS, BACKEND, A, B, C
    REDIS = RedisServer().start()
    BACKEND = ChatBackend()
    env = {
        "REDIS_URL": REDIS.url,
        "REDIS_PREFIX": "pysdk-sends:",
        "WS_HISTORY_ROOMS": "project:*",
        "WS_HISTORY_SIZE": "2000",
        "WS_HISTORY_RECOVER_MAX": "2000",
        "WS_RATE_LIMIT": "100000",
        "WS_RATE_BURST": "100000",
    }
    A = EdgeNode("node A", **env)
    B = EdgeNode("node B", **env)
    C = EdgeNode("node C (backend)", **{"WS_BACKEND_TIMEOUT": "2000"})
    try:
        BACKEND.start()
        C.env.update(BACKEND.node_env())
        for node in (A, B, C):
            node.start()
    except BaseException:
        tearDownModule()
        raise


def tearDownModule() -> None:
    for node in (A, B, C):
        node.stop()
    BACKEND.stop()
    REDIS.stop()


class Received(Watched):
    """A member's `message.new` events per room: (n, offset, user_id)."""

    def __init__(self, rooms: list[str]) -> None:
        super().__init__()
        self.rooms = {room: [] for room in rooms}  # type: dict[str, list[tuple[Any, Any, Any]]]

    def handler(self, room: str) -> Any:
        def take(event: dict[str, Any]) -> None:
            if event.get("type") != "message.new":  # user_joined, user_left
                return
            data = event.get("data") or {}
            self.rooms[room].append((data.get("n", data.get("done")), event.get("offset"), event.get("user_id")))
            self.changed()

        return take

    def numbers(self, room: str) -> list[int]:
        return [n for n, _, _ in self.rooms[room] if isinstance(n, int) and not isinstance(n, bool)]

    def describe(self) -> str:
        return f": got {[(room, len(got)) for room, got in self.rooms.items()]}"


class SendLog(Watched):
    """Every send's outcome by (room, n): its reply or its error, each counted when it settles."""

    def __init__(self) -> None:
        super().__init__()
        self.issued = 0
        self.settles: collections.Counter[tuple[str, int]] = collections.Counter()
        self.replies: dict[tuple[str, int], dict[str, Any]] = {}
        self.errors: list[str] = []
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def settled(self) -> int:
        return sum(self.settles.values())

    def track(self, client: Client, room: str, n: int) -> None:
        self.issued += 1
        task = asyncio.ensure_future(client.send_message(room, {"n": n}))
        self._tasks.add(task)

        def done(t: asyncio.Task[Any]) -> None:
            self._tasks.discard(t)
            self.settles[(room, n)] += 1
            if t.exception() is not None:
                err = t.exception()
                self.errors.append(f"{room}#{n}: {getattr(err, 'code', type(err).__name__)} {err}")
            else:
                self.replies[(room, n)] = t.result()
            self.changed()

        task.add_done_callback(done)

    async def send(self, client: Client, rooms: list[str], ns: range, window: int | None = WINDOW) -> None:
        """Sends n to every room for each n, at most `window` unanswered (None: all at once); the last ones are not waited for."""
        for n in ns:
            for room in rooms:
                self.track(client, room, n)
            if window is not None:
                await self.until(lambda: self.issued - self.settled < window, f"fewer than {window} sends unanswered")

    def counts(self, rooms: list[str], ns: range) -> dict[str, int]:
        keys = [(room, n) for room in rooms for n in ns]
        return {
            "sends": len(keys),
            "settled_once": sum(1 for k in keys if self.settles[k] == 1),
            "resolved": sum(1 for k in keys if k in self.replies),
            "rejected": len(self.errors),
            "duplicate_replies": sum(1 for k in keys if self.replies.get(k, {}).get("duplicate") is True),
        }

    def describe(self) -> str:
        return f": issued {self.issued}, settled {self.settled}, errors {self.errors[:3]}"


def delivery(got: Received, rooms: list[str], total: int, sender: str) -> dict[str, Any]:
    """What the reader got of 1..total per room: lost, duplicated, from another user, in order."""
    lost = duplicated = 0
    in_order = True
    for room in rooms:
        ns = got.numbers(room)
        counts = collections.Counter(ns)
        lost += sum(1 for n in range(1, total + 1) if counts[n] == 0)
        duplicated += len(ns) - len(counts)
        in_order = in_order and ns == sorted(ns)
    wrong = sum(1 for room in rooms for _, _, user in got.rooms[room] if user != sender)
    return {"lost": lost, "duplicated": duplicated, "wrong_sender": wrong, "in_order": in_order}


def positions_matching(log: SendLog, got: Received, room: str, ns: range) -> int:
    """Sends to the sequenced room whose reply carries the offset the reader saw the number at (a repeat's included)."""
    seen = {n: offset for n, offset, _ in got.rooms[room] if not isinstance(n, bool)}  # the last send's True is 1 as a key
    return sum(1 for n in ns if (room, n) in log.replies and log.replies[(room, n)].get("offset") == seen.get(n))


class KeyedSendsTest(unittest.IsolatedAsyncioTestCase):
    async def client(self, url: str, user: str, start: bool = True, **options: Any) -> Client:
        c = Client(url, lambda: mint_token(SECRET, user), backoff=Backoff(0.1, 2, 1.0), **options)
        self.addAsyncCleanup(c.close)
        if start:
            c.start()
            await c.wait_for_state("connected", timeout=WAIT)
        return c

    async def pair(self, name: str, url: str, rooms: list[str], **options: Any) -> tuple[Client, Client, Received, Recorder]:
        """A sender at `url` and a reader on node B, both in `rooms`; the sender's state changes."""
        states = Recorder()
        sender = await self.client(url, f"{name}-sender", start=False, **options)
        sender.on("state", states)
        sender.start()
        await sender.wait_for_state("connected", timeout=WAIT)
        reader = await self.client(B.ws_url, f"{name}-reader")
        got = Received(rooms)
        for room in rooms:
            await sender.join(room)
            await reader.join(room, on_event=got.handler(room))
        return sender, reader, got, states

    async def finish(self, sender: Client, got: Received, rooms: list[str]) -> None:
        """A last send per room, waited for at the reader: every earlier send was answered, so published, before it."""
        for room in rooms:
            await sender.send_message(room, {"done": True})
        await got.until(lambda: all(any(n is True for n, _, _ in got.rooms[room]) for room in rooms), "the last send in every room")

    async def test_every_send_carries_a_key_and_a_repeat_is_answered_with_the_first_result(self):
        frames = Frames()
        rooms = ["project:keys", "channel:keys"]
        sender, _, got, _ = await self.pair("keys", B.ws_url, rooms, trace=frames)
        first = await sender.send_message("project:keys", {"n": 1})
        out = frames.of("out", "send_message")[-1]
        self.assertRegex(out["idempotency_key"], r"\A[A-Za-z0-9_-]{22}\Z", "16 random bytes, base64url")
        self.assertEqual((first["type"], first.get("duplicate", False)), ("message_sent", False))
        await sender.send_message("channel:keys", {"n": 1})
        self.assertNotEqual(frames.of("out", "send_message")[-1]["idempotency_key"], out["idempotency_key"], "a fresh key per send")

        # The app's own key: a repeat (a retry after a timeout, a job run twice) is answered with the first result.
        for room in rooms:
            once = await sender.send_message(room, {"n": 2}, idempotency_key="order-17-paid")
            again = await sender.send(room, {"n": 2}, idempotency_key="order-17-paid")
            self.assertEqual((once.get("duplicate", False), again.get("duplicate")), (False, True), room)
            self.assertEqual((again.get("epoch"), again.get("offset")), (once.get("epoch"), once.get("offset")), room)
        await self.finish(sender, got, rooms)
        self.assertEqual([got.numbers(room) for room in rooms], [[1, 2], [1, 2]], "the repeat is never delivered")
        keys = [m["idempotency_key"] for m in frames.of("out", "send_message")]
        self.assertTrue(all(KEY.match(k) for k in keys), keys)

        # Refused here, nothing sent: the node's IDEMPOTENCY_KEY_PATTERN, and a key is a str.
        before = len(frames.frames)
        for bad in ("", "has space", "x" * 129, "clé", "tab\t"):
            with self.assertRaises(ValueError):
                await sender.send_message("project:keys", {"n": 3}, idempotency_key=bad)
        with self.assertRaises(TypeError):
            await sender.send_message("project:keys", {"n": 3}, idempotency_key=17)
        self.assertEqual(len(frames.frames), before)
        await sender.send_message("project:keys", {"n": 3}, idempotency_key="~" * 128)

        # A refusal settles the send: it is never sent again.
        with self.assertRaises(ClientError) as caught:
            await sender.send_message("channel:not-joined", {"n": 4}, idempotency_key="refused-once")
        self.assertEqual(caught.exception.code, "not_joined")
        self.assertEqual([m["idempotency_key"] for m in frames.of("out", "send_message")].count("refused-once"), 1)

    async def test_not_connected_queued_and_closed(self):
        c = await self.client(B.ws_url, "queue", start=False, queue_size=2)
        joined = asyncio.ensure_future(c.join("project:queue"))
        # Made before the connection (the tasks run in this order, before the client's): two wait
        # for the rejoin, the third finds the queue full.
        sends = [asyncio.ensure_future(c.send_message("project:queue", {"n": n})) for n in (1, 2, 3)]
        c.start()
        with self.assertRaises(ClientError) as caught:
            await sends[2]
        self.assertEqual((caught.exception.code, caught.exception.message), ("disconnected", "the send queue is full (2)"))
        await joined
        first, second = await asyncio.gather(*sends[:2])
        self.assertEqual(second["offset"], first["offset"] + 1, "in the order they were made")

        plain = await self.client(B.ws_url, "no-queue", start=False)
        with self.assertRaises(ClientError) as caught:
            await plain.send_message("project:queue", {"n": 4})
        self.assertEqual((caught.exception.code, caught.exception.message), ("disconnected", "not connected"))

        await c.close()
        with self.assertRaises(ClientError) as caught:
            await c.send_message("project:queue", {"n": 5})
        self.assertEqual(caught.exception.code, "closed")

    async def test_rpc_answers_refusals_and_limits(self):
        frames = Frames()
        c = await self.client(C.ws_url, "rpc-user", trace=frames)
        await c.join("channel:rpc")
        self.assertEqual(await c.rpc("messages.count", {"room": "channel:rpc"}), {"count": 0})
        # Through the publish proxy: the backend stored it and answered its row.
        sent = await c.send_message("channel:rpc", {"text": "stored"})
        self.assertIsInstance(sent["data"]["message_id"], int)
        self.assertEqual(await c.rpc("messages.count", {"room": "channel:rpc"}), {"count": 1})
        self.assertEqual(await c.rpc("messages.mark_read", {"room": "channel:rpc", "message_id": sent["data"]["message_id"]}), {"ok": True})
        rpc_frame = frames.of("out", "rpc")[0]
        self.assertEqual(set(rpc_frame), {"type", "method", "data", "id"})

        # The backend's refusal: `rejected`, its own code in `detail`, for an rpc and for a proxied send.
        with self.assertRaises(ClientError) as caught:
            await c.rpc("nope")
        self.assertEqual((caught.exception.code, caught.exception.detail, caught.exception.message), ("rejected", "unknown_method", "no method nope"))
        self.assertIsNone(frames.of("out", "rpc")[-1]["data"], "data defaults to null")
        with self.assertRaises(ClientError) as caught:
            await c.send_message("channel:rpc", {"text": "deny"}, idempotency_key="denied-once")
        self.assertEqual((caught.exception.code, caught.exception.detail, caught.exception.message), ("rejected", "spam", "no spam here"))
        self.assertEqual([m.get("idempotency_key") for m in frames.of("out", "send_message")].count("denied-once"), 1, "a refusal is never resent")

        # Refused here, nothing sent.
        before = len(frames.frames)
        for bad in ("Bad Method", "", "1count", "a" * 65, "messages/count"):
            with self.assertRaises(ValueError):
                await c.rpc(bad)
        with self.assertRaises(ValueError):
            await c.rpc("messages.count", {"id": 2**53})
        self.assertEqual(len(frames.frames), before)

        # A backend slower than WS_BACKEND_TIMEOUT (2 s): `unavailable`; a caller's shorter timeout: `timeout`.
        with self.assertRaises(ClientError) as caught:
            await c.rpc("slow", {"ms": 60_000})
        self.assertEqual(caught.exception.code, "unavailable")
        with self.assertRaises(ClientError) as caught:
            await c.rpc("slow", {"ms": 60_000}, timeout=0.2)
        self.assertEqual((caught.exception.code, caught.exception.message), ("timeout", "no reply to rpc within 0.2 s"))

        # A node without WS_RPC_URL.
        other = await self.client(B.ws_url, "rpc-user")
        with self.assertRaises(ClientError) as caught:
            await other.rpc("messages.count")
        self.assertEqual(caught.exception.code, "unknown_type")

    async def test_a_send_answered_unavailable_is_tried_again(self):
        """Through the publish proxy a key is claimed before the backend is asked: the same key
        again while the first is with the (slow) backend is answered `unavailable`, and the client
        tries it again after 1 s (2 s, ...) until the node answers the repeat with the first result."""
        frames = Frames()
        sender = await self.client(C.ws_url, "retry-sender", trace=frames)
        reader = await self.client(C.ws_url, "retry-reader")
        got = Received(["channel:retry"])
        await sender.join("channel:retry")
        await reader.join("channel:retry", on_event=got.handler("channel:retry"))
        data = {"text": "slow:800", "n": 1}
        first = asyncio.ensure_future(sender.send_message("channel:retry", data, idempotency_key="retry-17"))
        await frames.until(lambda: len(frames.of("out", "send_message")) == 1, "the first try sent")
        second = await sender.send_message("channel:retry", data, idempotency_key="retry-17")
        first = await first
        refused = [m for m in frames.of("in", "error") if m["data"]["code"] == "unavailable"]
        tries = [m["id"] for m in frames.of("out", "send_message") if m["idempotency_key"] == "retry-17"]
        print(f"\n  [unavailable, tried again] tries {len(tries)}, answered unavailable {len(refused)}: {refused[0]['data']['error'] if refused else None!r}", flush=True)
        self.assertEqual((first.get("duplicate", False), second.get("duplicate")), (False, True))
        self.assertEqual(second["data"]["message_id"], first["data"]["message_id"], "the first result")
        self.assertGreaterEqual(len(refused), 1)
        self.assertEqual(len(tries), 2 + len(refused), "each unavailable answer tried again once, each try under a new request id")
        self.assertEqual(len(set(tries)), len(tries))
        await self.finish(sender, got, ["channel:retry"])
        self.assertEqual(got.numbers("channel:retry"), [1], "delivered once")

    async def test_an_rpc_in_flight_at_a_loss_is_never_resent(self):
        relay = await Relay(C).start()
        self.addAsyncCleanup(relay.close)
        frames, states = Frames(), Recorder()
        c = await self.client(relay.ws_url, "rpc-lost", start=False, trace=frames)
        c.on("state", states)
        c.start()
        await c.wait_for_state("connected", timeout=WAIT)
        call = asyncio.ensure_future(c.rpc("slow", {"ms": 60_000}))
        await frames.until(lambda: len(frames.of("out", "rpc")) == 1, "the rpc sent")
        relay.cut()
        with self.assertRaises(ClientError) as caught:
            await call
        self.assertEqual(caught.exception.code, "disconnected")
        await states.until(lambda: [s.state for s in states.items].count("connected") >= 2, "the reconnect")
        self.assertEqual(await c.rpc("messages.count", {"room": "channel:none"}), {"count": 0})
        self.assertEqual([m["method"] for m in frames.of("out", "rpc")], ["slow", "messages.count"], "the lost rpc was not sent again")

    async def test_numbered_sends_across_a_crash_and_a_restart(self):
        """kill -9 of the sender's node with sends in flight, more sends while it is away (queued),
        the node started again on its port: every send resolves once, every number arrives once.
        `duplicate_replies` counts the sends in flight the node had published before it died: half
        the burst for certain, the rest by chance."""
        rooms = ["project:sends-crash", "channel:sends-crash"]
        relay = await Relay(A).start()
        self.addAsyncCleanup(relay.close)
        sender, _, got, states = await self.pair("crash", relay.ws_url, rooms, queue_size=10_000)
        log = SendLog()
        fault_at, burst, away, total = 60, 8, 20, 200
        half = fault_at + burst // 2
        await log.send(sender, rooms, range(1, fault_at + 1))
        await log.until(lambda: log.settled == log.issued, f"the first {fault_at} answered")
        # From here the node's replies are held back: the burst is in flight when the node dies.
        # Its first half is published for certain (the reader has it: each resend is a repeat, on
        # the restarted node); the second half goes out as the node is killed (chance).
        relay.mute()
        await log.send(sender, rooms, range(fault_at + 1, half + 1), window=None)
        await got.until(lambda: all(len(got.numbers(room)) == half for room in rooms), "the burst's first half published")
        await log.send(sender, rooms, range(half + 1, fault_at + burst + 1), window=None)
        starts = A.starts
        await asyncio.to_thread(A.kill)
        in_flight = log.issued - log.settled
        await states.until(lambda: any(s.state == "disconnected" for s in states.items), "the sender to see node A go")
        await log.send(sender, rooms, range(fault_at + burst + 1, fault_at + burst + away + 1), window=None)
        await asyncio.to_thread(A.start)
        await states.until(lambda: [s.state for s in states.items].count("connected") >= 2, "the sender back on node A")
        await log.send(sender, rooms, range(fault_at + burst + away + 1, total + 1))
        await log.until(lambda: log.settled == log.issued, "every send settled", timeout=60)
        await self.finish(sender, got, rooms)

        counts = log.counts(rooms, range(1, total + 1))
        received = delivery(got, rooms, total, "crash-sender")
        positions = positions_matching(log, got, rooms[0], range(1, total + 1))
        close = next(s for s in states.items if s.state == "disconnected")
        print(f"\n  [keyed sends, kill -9 + restart] {json.dumps({'sent_per_room': total, 'fault_at': fault_at, 'in_flight_at_kill': in_flight, 'made_while_away': 2 * away, **counts, **received, 'sequenced_positions_matching': positions, 'close': close.code, 'errors': log.errors[:5]})}", flush=True)
        self.assertEqual(A.starts, starts + 1)
        self.assertEqual(close.code, 1006)
        self.assertEqual(in_flight, 2 * burst)
        self.assertGreaterEqual(counts["duplicate_replies"], 2 * (half - fault_at), "the published half is answered as repeats")
        self.assertEqual(counts, {**counts, "sends": 2 * total, "settled_once": 2 * total, "resolved": 2 * total, "rejected": 0})
        self.assertEqual(received, {**received, "lost": 0, "duplicated": 0, "wrong_sender": 0})
        self.assertEqual(positions, total)

    async def test_numbered_sends_when_the_replies_are_lost(self):
        """The relay drops what the node sends, then cuts the link: every send in flight was
        published, so each resend is a repeat, answered `duplicate` with the first position."""
        rooms = ["project:sends-lost", "channel:sends-lost"]
        relay = await Relay(A).start()
        self.addAsyncCleanup(relay.close)
        sender, _, got, states = await self.pair("lost", relay.ws_url, rooms)
        log = SendLog()
        before, muted, total = 5, 8, 18
        await log.send(sender, rooms, range(1, before + 1))
        await log.until(lambda: log.settled == log.issued, "the first sends answered")
        self.assertEqual(relay.mute(), 1)
        await log.send(sender, rooms, range(before + 1, before + muted + 1), window=None)  # 16 sends, all in flight
        await got.until(lambda: all(len(got.numbers(room)) >= before + muted for room in rooms), "the muted sends published")
        self.assertEqual(log.settled, 2 * before, "their replies went nowhere")
        relay.cut()
        await log.until(lambda: log.settled == log.issued, "the muted sends answered after the reconnect")
        await log.send(sender, rooms, range(before + muted + 1, total + 1))
        await log.until(lambda: log.settled == log.issued, "every send settled")
        await self.finish(sender, got, rooms)

        counts = log.counts(rooms, range(1, total + 1))
        repeats = log.counts(rooms, range(before + 1, before + muted + 1))
        received = delivery(got, rooms, total, "lost-sender")
        positions = positions_matching(log, got, rooms[0], range(1, total + 1))
        reconnects = [s.state for s in states.items].count("connected") - 1
        print(f"\n  [keyed sends, replies lost] {json.dumps({'sent_per_room': total, 'muted_sends': repeats['sends'], 'muted_duplicate_replies': repeats['duplicate_replies'], **counts, **received, 'sequenced_positions_matching': positions, 'reconnects': reconnects, 'errors': log.errors[:5]})}", flush=True)
        self.assertEqual(counts, {"sends": 2 * total, "settled_once": 2 * total, "resolved": 2 * total, "rejected": 0, "duplicate_replies": 2 * muted})
        self.assertEqual(repeats["duplicate_replies"], 2 * muted, "exactly the muted sends are repeats")
        self.assertEqual(received, {"lost": 0, "duplicated": 0, "wrong_sender": 0, "in_order": True})
        self.assertEqual(positions, total, "a repeat carries the first send's position")
        self.assertEqual(reconnects, 1)


if __name__ == "__main__":
    unittest.main()
