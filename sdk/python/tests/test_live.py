"""The SDK against a real node (`node dist/cli.js serve`, memory broker): events published with
Publisher reach the asyncio Client (numbered, each counted), publish_once, the node's typed
refusals, tokens and grants minted here accepted or refused by the node, token refresh in band,
the other routes (user, connection, subscribe, unsubscribe, disconnect, history, presence), and the
frame-size bound. The restart and resume suite is test_restart.py."""

from __future__ import annotations

import asyncio
import datetime
import json
import time
import unittest
from typing import Any

from _support import API_KEY, SECRET, WAIT, EdgeNode, Frames, Numbered, Recorder, report, require_websockets

require_websockets()

from wsedge import Publisher, WsEdgeError, mint_grant, mint_token  # noqa: E402
from wsedge.client import Client, ClientError  # noqa: E402
from wsedge.policy import Backoff, frame_bound  # noqa: E402
from wsedge.tokens import _sign  # noqa: E402

NODE: EdgeNode


def setUpModule() -> None:
    global NODE
    NODE = EdgeNode(
        "node",
        WS_HISTORY_ROOMS="project:*",
        WS_HISTORY_SIZE="1000",
        WS_PRESENCE_ROOMS="channel:*",
        # Every test connects several times; refused tokens must not block the address.
        WS_AUTH_FAILURE_LIMIT="0",
        WS_MAX_CONNECTIONS_PER_USER="50",
    ).start()


def tearDownModule() -> None:
    NODE.stop()


def client(token: Any, **options: Any) -> Client:
    return Client(NODE.ws_url, token, backoff=Backoff(0.1, 2, 1.0), **options)


async def publish(pub: Publisher, method: str, *args: Any, **kwargs: Any) -> Any:
    """A Publisher call off the event loop: it blocks (urllib)."""
    return await asyncio.to_thread(getattr(pub, method), *args, **kwargs)


class LiveTest(unittest.IsolatedAsyncioTestCase):
    def setUp(self) -> None:
        self.pub = Publisher(NODE.api_url, API_KEY)

    async def connected(self, token: Any, **options: Any) -> Client:
        c = client(token, **options)
        c.start()
        self.addAsyncCleanup(c.close)
        await c.wait_for_state("connected", timeout=WAIT)
        return c

    async def drain(self, pub_room: str, got: Numbered, kind: str = "test.done") -> None:
        """Publishes a marker and waits for it: whatever came before it (same publisher, same room) has arrived."""
        await publish(self.pub, "publish", pub_room, kind, {"marker": True})
        await got.until(lambda: any(e["type"] == kind for e in got.events), f"{kind} in {pub_room}")

    async def test_numbered_events_reach_the_client_once_each(self):
        c = await self.connected(mint_token(SECRET, "alice"))
        got = Numbered()
        await c.join("channel:numbers", on_event=got)
        n = 200
        for i in range(1, n + 1):
            await publish(self.pub, "publish", "channel:numbers", "task.updated", {"n": i}, sender="backend")
        await got.until(lambda: len(got.got) >= n, f"{n} events")
        await self.drain("channel:numbers", got)
        report("plain room", n, got)
        self.assertEqual(sorted(got.got), list(range(1, n + 1)))
        self.assertEqual(got.got, list(range(1, n + 1)), "one publisher, one room: in publish order")
        event = got.events[0]
        self.assertEqual((event["type"], event["room"], event["sender"]), ("task.updated", "channel:numbers", "backend"))

    async def test_sequenced_room_offsets(self):
        c = await self.connected(mint_token(SECRET, "alice"))
        got = Numbered()
        joined = await c.join("project:numbers", on_event=got)
        start = joined["offset"]
        n = 100
        answers = [await publish(self.pub, "publish", "project:numbers", "task.updated", {"n": i}) for i in range(1, n + 1)]
        self.assertEqual([a["offset"] for a in answers], list(range(start + 1, start + n + 1)))
        await got.until(lambda: len(got.got) >= n, f"{n} events")
        await self.drain("project:numbers", got)
        report("sequenced room", n, got)
        self.assertEqual(got.got, list(range(1, n + 1)))
        self.assertEqual([e["offset"] for e in got.events[:n]], list(range(start + 1, start + n + 1)))
        self.assertEqual(c.position("project:numbers")["offset"], start + n + 1)  # the marker
        page = await c.history("project:numbers", limit=3, reverse=True)
        self.assertEqual([e["data"] for e in page["data"]["events"]], [{"marker": True}, {"n": n}, {"n": n - 1}])
        backend = await publish(self.pub, "history", "project:numbers", since=(joined["epoch"], start), limit=5)
        self.assertEqual([e["data"]["n"] for e in backend["data"]["events"]], [1, 2, 3, 4, 5])

    async def test_publish_once_delivers_once(self):
        c = await self.connected(mint_token(SECRET, "alice"))
        got = Numbered()
        await c.join("project:once", on_event=got)
        first = await publish(self.pub, "publish_once", "order-17-paid", "project:once", "order.paid", {"n": 1})
        again = await publish(self.pub, "publish_once", "order-17-paid", "project:once", "order.paid", {"n": 1})
        other = await publish(self.pub, "publish", "project:once", "order.paid", {"n": 2}, idempotency_key="order-18-paid")
        self.assertFalse(first["duplicate"])
        self.assertTrue(again["duplicate"])
        self.assertEqual((again["epoch"], again["offset"]), (first["epoch"], first["offset"]))
        self.assertEqual(other["offset"], first["offset"] + 1)
        await self.drain("project:once", got)
        report("publish_once", 2, got, calls=3)
        self.assertEqual(got.got, [1, 2])
        with self.assertRaises(WsEdgeError) as caught:
            await publish(self.pub, "publish_once", "k1", "channel:plain", "order.paid")  # not sequenced
        self.assertEqual((caught.exception.status, caught.exception.code), (400, "invalid_idempotency_key"))

    async def test_typed_errors(self):
        with self.assertRaises(WsEdgeError) as caught:
            await publish(Publisher(NODE.api_url, "wrong-key"), "publish", "channel:x", "task.updated")
        self.assertEqual((caught.exception.status, caught.exception.code, caught.exception.attempts), (401, "unauthorized", 1))
        with self.assertRaises(ValueError):
            await publish(self.pub, "publish", "chanel:x", "task.updated")  # refused here, before a request
        with self.assertRaises(WsEdgeError) as caught:
            await publish(self.pub, "post", "publish", {"room": "chanel:x", "type": "task.updated"})  # the node's own check
        self.assertEqual((caught.exception.status, caught.exception.code), (400, "invalid_room"))
        self.assertIn("project:", caught.exception.reason)
        expected = [
            (("post", "publish", {"room": "channel:x", "user_id": "a", "type": "task.updated"}), (400, "invalid_target")),
            (("post", "publish", {"room": "channel:x", "type": "connected"}), (400, "invalid_type")),
            (("post", "disconnect", {"user_id": "a", "code": 1000}), (400, "invalid_code")),
            (("history", "channel:x"), (400, "no_history")),
            (("presence", "project:x"), (400, "no_presence")),
            (("post", "no-such-route", {}), (404, "not_found")),
        ]
        for (method, *args), (status, code) in expected:
            with self.assertRaises(WsEdgeError) as caught:
                await publish(self.pub, method, *args)
            self.assertEqual((caught.exception.status, caught.exception.code), (status, code), args)

    async def test_tokens_minted_here_are_accepted(self):
        for alg in ("HS256", "HS384", "HS512"):
            c = await self.connected(mint_token(SECRET, 4242, username="Ada", algorithm=alg))
            self.assertEqual((c.connection["user_id"], c.connection["username"]), ("4242", "Ada"))
            await c.close()

    async def test_a_token_with_the_wrong_secret_is_refused_with_4401(self):
        c = client(mint_token(SECRET + "-not", "alice"))
        c.start()
        self.addAsyncCleanup(c.close)
        closed = await c.wait_for_state("closed", timeout=WAIT)
        # A fixed token the node refused is never offered again: the client stops.
        self.assertEqual((closed.code, closed.reason), (4401, "invalid token: signature"))

        # With a provider the client asks for a new token after the 4401, and gets in with it.
        tokens = iter([mint_token(SECRET + "-not", "alice"), mint_token(SECRET, "alice")])
        states = Recorder()
        c = client(lambda: next(tokens))
        c.on("state", states)
        c.start()
        self.addAsyncCleanup(c.close)
        await c.wait_for_state("connected", timeout=WAIT)
        self.assertEqual([(s.state, s.code, s.reason) for s in states.items], [("connecting", None, None), ("disconnected", 4401, "invalid token: signature"), ("connecting", None, None), ("connected", None, None)])

    async def test_a_grant_lets_a_join_through_a_narrow_rooms_claim(self):
        c = await self.connected(mint_token(SECRET, "carol", rooms=["channel:lobby"]))
        await c.join("channel:lobby")
        with self.assertRaises(ClientError) as caught:
            await c.join("project:secret")
        self.assertEqual(caught.exception.code, "forbidden")
        with self.assertRaises(ClientError) as caught:
            await c.join("project:secret", grant=mint_grant(SECRET, "carol", "project:other"))
        self.assertEqual(caught.exception.code, "forbidden")
        with self.assertRaises(ClientError) as caught:
            await c.join("project:secret", grant=mint_grant(SECRET, "mallory", "project:secret"))
        self.assertEqual(caught.exception.code, "forbidden")
        got = Numbered()
        joined = await c.join("project:secret", on_event=got, grant=lambda: mint_grant(SECRET, "carol", "project:secret"))
        self.assertEqual(joined["room"], "project:secret")
        await publish(self.pub, "publish", "project:secret", "task.updated", {"n": 1})
        await got.until(lambda: got.got == [1], "the event of the granted room")

    async def test_token_refresh_in_band(self):
        minted: list[str] = []

        def provider() -> str:
            minted.append(mint_token(SECRET, "dave", ttl=3))
            return minted[-1]

        frames = Frames()
        c = await self.connected(provider, trace=frames)
        first = c.connection["connection_id"]
        states = Recorder()
        c.on("state", states)  # a reconnect would show here
        await frames.until(lambda: len(frames.of("in", "token_refreshed")) >= 2, "two token_refreshed")
        sent = frames.of("out", "refresh_token")
        print(f"\n  [refresh] 3 s tokens: minted {len(minted)}, refresh_token sent {len(sent)}, token_refreshed {len(frames.of('in', 'token_refreshed'))}, state changes {len(states.items)}", flush=True)
        self.assertEqual(c.state, "connected")
        self.assertEqual(c.connection["connection_id"], first, "refreshed in band, never reconnected")
        self.assertEqual([m["token"] for m in sent], minted[1 : len(sent) + 1])
        self.assertEqual(states.items, [], "no state change while refreshing")

    async def test_user_connection_and_access_routes(self):
        c = await self.connected(mint_token(SECRET, 77, rooms=["channel:*"]))
        messages = Numbered()
        c.on("message", messages)
        personal = Numbered()
        await c.join("user:77", on_event=personal)
        await publish(self.pub, "publish_to_user", 77, "notification.new", {"n": 1})
        await personal.until(lambda: personal.got == [1], "the personal event")
        self.assertEqual(personal.events[0]["room"], "user:77")

        await publish(self.pub, "send_to_connection", c.connection["connection_id"], "sync.required", {"n": 2})
        await messages.until(lambda: 2 in messages.got, "the connection's event")
        self.assertIsNone(next(e for e in messages.events if e["type"] == "sync.required")["room"])

        answer = await publish(self.pub, "subscribe", 77, "project:given")
        self.assertEqual(answer, {"status": "subscribed", "user_id": "77", "room": "project:given"})
        await publish(self.pub, "publish", "project:given", "task.updated", {"n": 3})
        await messages.until(lambda: 3 in messages.got, "an event of the room the backend subscribed")

        left = Recorder()
        await c.join("channel:revoked", on_left=left)
        await publish(self.pub, "unsubscribe", 77, "channel:revoked")
        await left.until(lambda: left.items == ["access_revoked"], "room_left access_revoked")
        self.assertIsNone(c.position("channel:revoked"))

        presence = await publish(self.pub, "presence", "channel:revoked")
        self.assertEqual(presence["data"]["count"], 0)
        await c.join("channel:present")
        presence = await publish(self.pub, "presence", "channel:present")
        self.assertEqual([u["user_id"] for u in presence["data"]["users"]], ["77"])
        stats = await publish(self.pub, "presence_stats", "channel:present")
        self.assertEqual((stats["data"]["users"], stats["data"]["connections"]), (1, 1))
        self.assertGreater(await c.ping(), 0)

        answer = await publish(self.pub, "disconnect", 77, reason="account suspended")
        self.assertEqual(answer, {"status": "disconnecting", "user_id": "77", "code": 4403})
        closed = await c.wait_for_state("closed", timeout=WAIT)
        self.assertEqual((closed.code, closed.reason), (4403, "account suspended"))

    async def test_revoke_user_and_token(self):
        now = time.time()
        old = mint_token(SECRET, "rita", now=now - 5)
        fixed = client(old)
        fixed.start()
        self.addAsyncCleanup(fixed.close)
        await fixed.wait_for_state("connected", timeout=WAIT)
        # With a provider the client asks for a new token after 4401 `token revoked`, and gets in with it.
        minted = [old]
        states = Recorder()
        renewing = client(lambda: minted[-1])
        renewing.on("state", states)
        renewing.start()
        self.addAsyncCleanup(renewing.close)
        await renewing.wait_for_state("connected", timeout=WAIT)
        marked = await self.connected(_sign(SECRET, {"sub": "ravi", "rooms": ["*"], "jti": "ravi-session-1", "iat": int(now), "exp": int(now) + 600}, "HS256"))
        kept = await self.connected(_sign(SECRET, {"sub": "ravi", "rooms": ["*"], "jti": "ravi-session-2", "iat": int(now), "exp": int(now) + 600}, "HS256"))

        minted.append(mint_token(SECRET, "rita"))
        answer = await publish(self.pub, "revoke_user", "rita", now - 2)
        self.assertEqual((answer["status"], answer["user_id"]), ("revoked", "rita"))
        self.assertRegex(answer["expires_at"], r"^\d{4}-\d\d-\d\dT")
        closed = await fixed.wait_for_state("closed", timeout=WAIT)
        self.assertEqual((closed.code, closed.reason), (4401, "token revoked"))
        await states.until(lambda: len(states.items) >= 5, "reconnected with a new token")
        self.assertEqual([(s.state, s.code, s.reason) for s in states.items], [("connecting", None, None), ("connected", None, None), ("disconnected", 4401, "token revoked"), ("connecting", None, None), ("connected", None, None)])
        self.assertEqual(renewing.connection["user_id"], "rita")

        answer = await publish(self.pub, "revoke_token", "ravi-session-1")
        self.assertEqual((answer["status"], answer["jti"]), ("revoked", "ravi-session-1"))
        closed = await marked.wait_for_state("closed", timeout=WAIT)
        self.assertEqual((closed.code, closed.reason), (4401, "token revoked"))
        self.assertEqual(kept.state, "connected")

        # The node's refusals come back typed; bad arguments never leave.
        with self.assertRaises(WsEdgeError) as caught:
            await publish(self.pub, "revoke_user", "rita", now + 3600)
        self.assertEqual((caught.exception.status, caught.exception.code), (400, "invalid_issued_before"))
        bad = [("revoke_user", ("no spaces", now), ValueError), ("revoke_user", ("rita", "yesterday"), ValueError), ("revoke_user", ("rita", -5), ValueError),
               ("revoke_user", ("rita", True), TypeError), ("revoke_user", ("rita", datetime.datetime.now()), ValueError), ("revoke_token", ("has space",), ValueError),
               ("revoke_token", ("",), ValueError), ("revoke_token", ("x" * 129,), ValueError), ("revoke_token", (42,), TypeError)]
        for method, args, error in bad:
            with self.assertRaises(error, msg=(method, args)):
                getattr(self.pub, method)(*args)
        answer = await publish(self.pub, "revoke_user", "rita", datetime.datetime.fromtimestamp(now - 2, datetime.timezone.utc))
        self.assertEqual(answer["status"], "revoked")
        print(f"\n  [revoke] user: 1 fixed-token client closed 4401 token revoked, 1 provider client reconnected with a new token; jti: 1 closed, the other kept; {len(bad)} of {len(bad)} bad arguments refused before sending; 1 node refusal typed (400 invalid_issued_before)", flush=True)

    async def test_requests_and_their_refusals(self):
        c = await self.connected(mint_token(SECRET, "erin", rooms=["channel:*", "project:*"]))
        got = Numbered()
        await c.join("project:talk", on_event=got)
        sent = await c.send("project:talk", {"n": 1})
        self.assertEqual(sent["type"], "message_sent")
        self.assertEqual(got.got, [1], "the event reaches the sender before message_sent")
        self.assertEqual(got.events[0]["offset"], sent["offset"])
        for call, code in (
            (c.send("channel:nowhere", {}), "not_joined"),
            (c.history("project:nowhere"), "not_joined"),
            (c.history("channel:nowhere"), "no_history"),
            (c.join("task:forbidden"), "forbidden"),
            (c.presence("project:talk"), "no_presence"),
        ):
            with self.assertRaises(ClientError) as caught:
                await call
            self.assertEqual(caught.exception.code, code)
        def nest(levels: int) -> Any:
            value: Any = 1
            for _ in range(levels):
                value = [value]
            return value

        for data in (nest(33), list(range(10_001)), {"id": 2**53}):
            with self.assertRaises(ValueError):
                await c.send("project:talk", data)  # refused here: the node would refuse or change it
        # At the limits: 32 levels, 10,000 values (3 members, 31 nested lists, 9,966 items), 2**53 - 1.
        await c.send("project:talk", {"deep": nest(31), "many": list(range(9_966)), "id": 2**53 - 1})
        await got.until(lambda: len(got.events) == 2, "the send at the limits")
        self.assertEqual(got.events[1]["data"]["id"], 2**53 - 1)
        await c.leave("project:talk")
        with self.assertRaises(ClientError) as caught:
            await c.send("project:talk", {"n": 2})
        self.assertEqual(caught.exception.code, "not_joined")
        with self.assertRaises(ClientError) as caught:
            await c.send("channel:x", "x" * (c.connection["max_message_size"] + 1))
        self.assertEqual(caught.exception.code, "message_too_big")

    async def test_the_largest_event_fits_max_size(self):
        """A Python backend's floats: json.dumps writes 1e20 as `1e+20` (5 bytes), the node writes
        it back as `100000000000000000000` (21): an API body within WS_MESSAGE_MAX_SIZE becomes a
        frame far above it. The client's default max_size (frame_bound) takes it."""
        frames = Frames()
        c = await self.connected(mint_token(SECRET, "frank"), trace=frames)
        m = c.connection["max_message_size"]
        got = Numbered()
        await c.join("channel:big", on_event=got)
        data = [1e20] * ((m - 200) // 6)
        body = len(json.dumps({"room": "channel:big", "type": "big.event", "data": data, "sender": None}, separators=(",", ":")).encode())
        self.assertLessEqual(body, m)
        await publish(self.pub, "publish", "channel:big", "big.event", data)
        await got.until(lambda: len(got.events) == 1, "the big event")
        sizes = [size for direction, _, size in frames.frames if direction == "in"]
        print(f"\n  [frame size] body {body} bytes, frame {max(sizes)} bytes, max_message_size {m}, max_size {frame_bound(m)}", flush=True)
        self.assertGreater(max(sizes), 3 * m)
        self.assertLessEqual(max(sizes), frame_bound(m))
        self.assertEqual(len(got.events[0]["data"]), len(data))
        self.assertEqual(c.state, "connected")


if __name__ == "__main__":
    unittest.main()
