"""The client's reconnect and refresh policy as pure functions: the close-code table of
src/close-codes.ts, full-jitter backoff, the refresh point at 80% of a token's life, and the
frame-size bound."""

from __future__ import annotations

import unittest

import _support  # noqa: F401 - puts sdk/python on sys.path

from wsedge import mint_token
from wsedge.policy import LONG_BACKOFF, RESTART_SPREAD, AfterClose, Backoff, after_close, backoff_delay, frame_bound, life_left, refresh_delay

ONE = lambda: 1.0  # noqa: E731 - the full delay of each step
HALF = lambda: 0.5  # noqa: E731


class PolicyTest(unittest.TestCase):
    def test_the_close_code_table(self):
        backoff = Backoff()
        self.assertEqual(after_close(4403, 0, backoff, ONE), AfterClose(False))  # never
        self.assertEqual(after_close(1008, 0, backoff, ONE), AfterClose(False))  # manual
        self.assertEqual(after_close(1012, 3, backoff, HALF), AfterClose(True, RESTART_SPREAD / 2))  # 0-5 s, whatever the attempt
        self.assertEqual(after_close(4429, 0, backoff, ONE), AfterClose(True, LONG_BACKOFF + 1.0))  # 30 s and more
        self.assertEqual(after_close(4401, 1, backoff, ONE), AfterClose(True, 2.0, True))  # a new token first
        for code in (1006, 1009, 4500, 1000, 4000, 4999, 1011):
            self.assertEqual(after_close(code, 2, backoff, ONE), AfterClose(True, 4.0), code)

    def test_full_jitter_backoff(self):
        backoff = Backoff()
        self.assertEqual([backoff_delay(backoff, n, ONE) for n in range(7)], [1, 2, 4, 8, 16, 30, 30])
        self.assertEqual(backoff_delay(backoff, 4, lambda: 0.0), 0)

    def test_refresh_at_80_percent_of_the_life(self):
        token = mint_token("s", "alice", ttl=100, now=1000)
        # Life 100 s from when the client got it (less a second for whole-second iat): 80 s then, minus a second.
        self.assertEqual(life_left(token, obtained_at=50.0, now=50.0), (100.0, 99.0))
        self.assertEqual(refresh_delay(token, 50.0, 50.0, 0.8, retry=False), 79.0)
        self.assertEqual(refresh_delay(token, 50.0, 60.0, 0.8, retry=False), 69.0)
        self.assertEqual(refresh_delay(token, 50.0, 60.0, 0.8, retry=True), 44.5)  # half of what is left
        self.assertEqual(refresh_delay(token, 50.0, 200.0, 0.8, retry=False), 1.0)  # at least a second
        self.assertIsNone(refresh_delay("not.a.token", 0.0, 0.0, 0.8, retry=False))

    def test_frame_bound(self):
        self.assertEqual(frame_bound(1_048_576), 4_613_735 + 1_048_576)
        self.assertGreater(frame_bound(1024), 900_000)  # a presence snapshot, whatever the frame limit


if __name__ == "__main__":
    unittest.main()
