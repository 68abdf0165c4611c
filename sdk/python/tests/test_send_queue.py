"""The client's send bookkeeping (wsedge.client._Sends, the rules of src/client/sends.ts) without a
socket: what a lost connection keeps, what a 1009 or a close fails, the resend bound, the queue
bound, a frame that cannot go, and a caller that stops waiting. The frames it writes are collected
here; the timers are the event loop's (nothing here waits on them). The same rules against real
nodes, counted: test_sends.py."""

from __future__ import annotations

import asyncio
import json
import unittest
from typing import Any

from _support import Watched, require_websockets

require_websockets()

from wsedge.client import ClientError, _Sends  # noqa: E402


class Wire(Watched):
    """The write side: frames written, refused with `fail` while set; `ready` for the resend path."""

    def __init__(self) -> None:
        super().__init__()
        self.frames: list[dict[str, Any]] = []
        self.fail: ClientError | None = None
        self.ready = True
        self.seq = 0

    def next_id(self) -> str:
        self.seq += 1
        return str(self.seq)

    def write(self, frame: str) -> None:
        if self.fail is not None:
            raise self.fail
        self.frames.append(json.loads(frame))
        self.changed()


def sends(wire: Wire, queue_size: int = 0, resend_limit: int = 100) -> _Sends:
    return _Sends(wire.next_id, lambda: wire.ready, wire.write, 10.0, queue_size, resend_limit)


def message(n: int, room: str = "channel:q") -> dict[str, Any]:
    return {"type": "send_message", "room": room, "data": {"n": n}, "idempotency_key": f"key-{n}"}


def sent(frame: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"type": "message_sent", "id": frame["id"], "room": frame["room"], **extra}


async def settle_soon() -> None:
    """Lets the send tasks run to their first wait (no time passes)."""
    for _ in range(3):
        await asyncio.sleep(0)


class SendQueueTest(unittest.IsolatedAsyncioTestCase):
    async def test_a_loss_keeps_the_sends_in_flight_and_the_rejoin_sends_them_again_with_their_keys(self):
        wire = Wire()
        s = sends(wire)
        tasks = [asyncio.ensure_future(s.add(message(n), now=True)) for n in (1, 2)]
        await settle_soon()
        first_ids = [f["id"] for f in wire.frames]
        s.down(closed=False, resend=True)
        await settle_soon()
        self.assertFalse(any(t.done() for t in tasks), "kept, not failed")
        self.assertFalse(s.settle(sent(wire.frames[0])), "a reply to the old id answers nothing")
        s.flush()
        again = wire.frames[2:]
        self.assertEqual([f["idempotency_key"] for f in again], ["key-1", "key-2"], "oldest first, same keys")
        self.assertTrue(set(f["id"] for f in again).isdisjoint(first_ids), "new request ids")
        self.assertTrue(s.settle(sent(again[0], duplicate=True)))
        self.assertTrue(s.settle(sent(again[1])))
        self.assertFalse(s.settle(sent(again[1])), "settled once")
        self.assertEqual([(await t).get("duplicate") for t in tasks], [True, None])

    async def test_a_1009_fails_the_sends_in_flight_and_queued_ones_wait(self):
        wire = Wire()
        s = sends(wire, queue_size=5)
        in_flight = asyncio.ensure_future(s.add(message(1), now=True))
        queued = asyncio.ensure_future(s.add(message(2), now=False))
        await settle_soon()
        self.assertEqual(len(wire.frames), 1)
        s.down(closed=False, resend=False)
        with self.assertRaises(ClientError) as caught:
            await in_flight
        self.assertEqual(caught.exception.code, "disconnected")
        s.flush()
        self.assertEqual([f["idempotency_key"] for f in wire.frames], ["key-1", "key-2"])
        s.settle(sent(wire.frames[1]))
        self.assertEqual((await queued)["type"], "message_sent")

    async def test_sends_behind_one_waiting_for_its_retry_wait_with_it(self):
        """Order per room through an `unavailable` answer: a later send to that room is held and goes
        with the retry, after it; other rooms are not held. The retry comes 1 s after the answer."""
        wire = Wire()
        s = sends(wire)
        first = asyncio.ensure_future(s.add(message(1), now=True))
        await settle_soon()
        s.settle({"type": "error", "id": wire.frames[0]["id"], "room": "channel:q", "data": {"code": "unavailable", "message": "the backend is unreachable; try again"}})
        held = asyncio.ensure_future(s.add(message(2), now=True))
        other = asyncio.ensure_future(s.add(message(3, room="channel:other"), now=True))
        await settle_soon()
        self.assertEqual([f["idempotency_key"] for f in wire.frames], ["key-1", "key-3"], "key-2 is held behind key-1's retry")
        await wire.until(lambda: len(wire.frames) == 4, "the retry")
        self.assertEqual([f["idempotency_key"] for f in wire.frames[2:]], ["key-1", "key-2"], "the retry, then what waited behind it")
        for frame, task in ((wire.frames[1], other), (wire.frames[2], first), (wire.frames[3], held)):
            s.settle(sent(frame))
            self.assertEqual((await task)["id"], frame["id"])

    async def test_the_resend_bound_fails_the_oldest(self):
        wire = Wire()
        s = sends(wire, resend_limit=2)
        tasks = [asyncio.ensure_future(s.add(message(n), now=True)) for n in (1, 2, 3)]
        await settle_soon()
        s.down(closed=False, resend=True)
        await settle_soon()
        self.assertTrue(tasks[0].done())
        self.assertEqual(tasks[0].exception().code, "disconnected")
        self.assertFalse(tasks[1].done() or tasks[2].done())
        s.flush()
        self.assertEqual([f["idempotency_key"] for f in wire.frames[3:]], ["key-2", "key-3"])

    async def test_a_close_fails_every_send(self):
        wire = Wire()
        s = sends(wire, queue_size=5)
        tasks = [asyncio.ensure_future(s.add(message(1), now=True)), asyncio.ensure_future(s.add(message(2), now=False))]
        await settle_soon()
        s.down(closed=True, resend=False)
        for task in tasks:
            with self.assertRaises(ClientError) as caught:
                await task
            self.assertEqual(caught.exception.code, "closed")
        s.flush()
        self.assertEqual(len(wire.frames), 1, "nothing left to send")

    async def test_errors_settle_a_send_and_a_frame_that_cannot_go_fails_at_once(self):
        wire = Wire()
        s = sends(wire)
        refused = asyncio.ensure_future(s.add(message(1), now=True))
        await settle_soon()
        s.settle({"type": "error", "id": wire.frames[0]["id"], "data": {"code": "rejected", "error": "no spam here", "detail": "spam"}})
        with self.assertRaises(ClientError) as caught:
            await refused
        self.assertEqual((caught.exception.code, caught.exception.detail, caught.exception.message), ("rejected", "spam", "no spam here"))
        wire.fail = ClientError("message_too_big", "the message is larger than max_message_size (10 bytes)")
        with self.assertRaises(ClientError) as caught:
            await s.add(message(2), now=True)
        self.assertEqual(caught.exception.code, "message_too_big")
        wire.fail = None
        s.down(closed=False, resend=True)
        s.flush()
        self.assertEqual(len(wire.frames), 1, "neither is sent again")

    async def test_the_queue_bound_and_a_caller_that_stops_waiting(self):
        wire = Wire()
        s = sends(wire, queue_size=1)
        waiting = asyncio.ensure_future(s.add(message(1), now=False))
        await settle_soon()
        with self.assertRaises(ClientError) as caught:
            await s.add(message(2), now=False)
        self.assertEqual((caught.exception.code, caught.exception.message), ("disconnected", "the send queue is full (1)"))
        waiting.cancel()
        await settle_soon()
        # Never sent: withdrawn, and its place in the queue is free again.
        s.flush()
        self.assertEqual(wire.frames, [])
        again = asyncio.ensure_future(s.add(message(3), now=False))
        await settle_soon()
        s.flush()
        self.assertEqual([f["idempotency_key"] for f in wire.frames], ["key-3"])
        s.settle(sent(wire.frames[0]))
        await again
        no_queue = sends(Wire())
        with self.assertRaises(ClientError) as caught:
            await no_queue.add(message(4), now=False)
        self.assertEqual(caught.exception.message, "not connected")


if __name__ == "__main__":
    unittest.main()
