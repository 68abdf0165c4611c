"""wsedge.outbox.add: the row it inserts (targets, type, data, sender as sql/outbox.sql has them)
and its argument checks against a recording cursor; then against a real PostgreSQL (_postgres.py)
and a real node consuming it (WS_OUTBOX_URL): rows added in committed transactions reach a member
once each, in order, and those of rolled-back transactions never exist."""

from __future__ import annotations

import json
import unittest
from pathlib import Path
from typing import Any

from _postgres import Postgres
from _support import SECRET, WAIT, EdgeNode, Numbered, require_websockets

from wsedge import mint_token, outbox

MIGRATION = Path(__file__).resolve().parents[3] / "sql" / "outbox.sql"


class Recording:
    """A DB-API cursor that keeps what it was asked to execute and answers id 7."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def execute(self, sql: str, params: tuple[Any, ...]) -> None:
        self.calls.append((sql, params))

    def fetchone(self) -> tuple[int]:
        return (7,)


class ArgumentsTest(unittest.TestCase):
    def row(self, **kwargs: Any) -> tuple[str, dict[str, Any], str, Any, Any]:
        cur = Recording()
        self.assertEqual(outbox.add(cur, **kwargs), 7)
        sql, (targets, type_, data, sender) = cur.calls[0]
        return sql, json.loads(targets), type_, None if data is None else json.loads(data), sender

    def test_rows_carry_the_publish_body(self):
        sql, targets, type_, data, sender = self.row(room="task:7", type="task.updated", data={"status": "done"}, sender="backend")
        self.assertEqual(sql, "INSERT INTO ws_edge_outbox (targets, type, data, sender) VALUES (%s::jsonb, %s, %s::jsonb, %s) RETURNING id")
        self.assertEqual((targets, type_, data, sender), ({"room": "task:7"}, "task.updated", {"status": "done"}, "backend"))
        self.assertEqual(self.row(user_id=42, type="a.b")[1:4], ({"user_id": "42"}, "a.b", None))
        self.assertEqual(self.row(rooms=["task:1", "project:2"], user_ids=["bob"], type="a.b")[1], {"rooms": ["task:1", "project:2"], "user_ids": ["bob"]})
        self.assertEqual(self.row(user_ids=["bob"], type="a.b", table="my_outbox")[0].split(" (")[0], "INSERT INTO my_outbox")

    def test_bad_arguments_raise_before_any_sql(self):
        bad: list[tuple[type[Exception], dict[str, Any]]] = [
            (ValueError, {"type": "a.b"}),
            (ValueError, {"room": "task:1", "user_id": "bob", "type": "a.b"}),
            (ValueError, {"room": "nowhere:1", "type": "a.b"}),
            (ValueError, {"room": "task:1", "type": "connected"}),
            (ValueError, {"room": "task:1", "type": "Bad Type"}),
            (ValueError, {"rooms": [], "type": "a.b"}),
            (ValueError, {"rooms": ["user:bob"], "user_ids": ["bob"], "type": "a.b"}),
            (TypeError, {"rooms": "task:1", "type": "a.b"}),
            (ValueError, {"room": "task:1", "type": "a.b", "data": {"id": 2**63 - 1}}),
            (ValueError, {"room": "task:1", "type": "a.b", "table": "outbox; DROP TABLE task"}),
            # jsonb refuses them, which would abort the caller's whole transaction.
            (ValueError, {"room": "task:1", "type": "a.b", "data": {"x": float("nan")}}),
            (ValueError, {"room": "task:1", "type": "a.b", "data": {"text": "a\x00b"}}),
        ]
        for error, kwargs in bad:
            cur = Recording()
            with self.subTest(kwargs=kwargs), self.assertRaises(error):
                outbox.add(cur, **kwargs)
            self.assertEqual(cur.calls, [])


class LiveTest(unittest.IsolatedAsyncioTestCase):
    @classmethod
    def setUpClass(cls) -> None:
        import psycopg2  # Debian's python3-psycopg2: missing, this suite fails

        cls.psycopg2 = psycopg2
        cls.db = Postgres().start()
        with psycopg2.connect(cls.db.url) as conn, conn.cursor() as cur:
            cur.execute(MIGRATION.read_text())
        conn.close()
        cls.node = EdgeNode("outbox", WS_OUTBOX_URL=cls.db.url, WS_HISTORY_ROOMS="task:*", WS_OUTBOX_POLL="200").start()

    @classmethod
    def tearDownClass(cls) -> None:
        cls.node.stop()
        cls.db.stop()

    async def test_committed_rows_are_published_once_and_rolled_back_ones_never(self):
        require_websockets()
        from wsedge.client import Client

        c = Client(self.node.ws_url, mint_token(SECRET, "alice"))
        c.start()
        self.addAsyncCleanup(c.close)
        await c.wait_for_state("connected", timeout=WAIT)
        got = Numbered()
        await c.join("task:py", on_event=got)
        conn = self.psycopg2.connect(self.db.url)
        self.addCleanup(conn.close)
        n = 60
        ids = []
        for i in range(1, n + 1):
            with conn.cursor() as cur:
                row = outbox.add(cur, room="task:py", type="task.updated", data={"n": i}, sender="backend")
            if i % 3 == 0:
                conn.rollback()
            else:
                conn.commit()
                ids.append(row)
        committed = [i for i in range(1, n + 1) if i % 3 != 0]
        await got.until(lambda: len(got.got) >= len(committed), f"{len(committed)} events")
        # A marker row behind them, same room (same partition, published in id order): once it has
        # arrived, anything published twice would have arrived before it.
        with conn.cursor() as cur:
            outbox.add(cur, room="task:py", type="test.done", data={"marker": True})
        conn.commit()
        await got.until(lambda: any(e["type"] == "test.done" for e in got.events), "the marker")
        rolled_back_received = sum(1 for i in got.got if i % 3 == 0)
        print(f"\n  [outbox via wsedge.outbox.add] {n} transactions: committed {len(committed)}, rolled back {n - len(committed)}; received {len(got.got)}, distinct {len(set(got.got))}, rolled-back received {rolled_back_received}", flush=True)
        self.assertEqual(got.got, committed)
        self.assertEqual(ids, sorted(ids))
        self.assertEqual((got.events[0]["room"], got.events[0]["sender"]), ("task:py", "backend"))
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM ws_edge_outbox")
            self.assertEqual(cur.fetchone()[0], 0)
        conn.commit()
