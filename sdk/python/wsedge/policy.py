"""What the client does after a close and when it refreshes its token: pure functions over the
close-code table of src/close-codes.ts (the table docs/WEBSOCKET_API.md and the JavaScript client
share), so the policy is tested without sockets or clocks. Standard library only. Times in seconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, NamedTuple

from .tokens import token_claims

__all__ = ["Backoff", "AfterClose", "RECONNECT", "reconnect_after", "after_close", "may_resend", "backoff_delay", "life_left", "frame_bound"]


@dataclass(frozen=True)
class Backoff:
    """Full-jitter exponential backoff: ``random(0, min(cap, base * factor**attempt))`` seconds."""

    base: float = 1.0
    factor: float = 2.0
    cap: float = 30.0


# 1012: a draining node's clients spread their reconnects over this window.
RESTART_SPREAD = 5.0
# 4429: at least this long before the next attempt, plus the usual jitter.
LONG_BACKOFF = 30.0
# The earliest a token refresh is tried, and the retry step when the provider failed.
MIN_REFRESH = 1.0

# Per close code (src/close-codes.ts RECONNECT); codes not listed (other 4000-4999 included) back off.
RECONNECT = {
    1000: "none",
    1006: "backoff",
    1008: "manual",
    1009: "backoff_no_resend",
    1012: "restart",
    4401: "new_token",
    4403: "never",
    4429: "long_backoff",
    4500: "backoff",
}


def reconnect_after(code: int) -> str:
    return RECONNECT.get(code, "backoff")


def backoff_delay(backoff: Backoff, attempt: int, random: Callable[[], float]) -> float:
    return random() * min(backoff.cap, backoff.base * backoff.factor**attempt)


class AfterClose(NamedTuple):
    """Stop for good (`retry` False), or try again after `delay` s, with a new token first when `new_token`."""

    retry: bool
    delay: float = 0.0
    new_token: bool = False


def after_close(code: int, attempt: int, backoff: Backoff, random: Callable[[], float]) -> AfterClose:
    jitter = backoff_delay(backoff, attempt, random)
    policy = reconnect_after(code)
    if policy in ("never", "manual"):  # 4403, 1008: a user action or a fix first
        return AfterClose(False)
    if policy == "restart":  # 1012: the node drains; any node will do, spread out
        return AfterClose(True, random() * RESTART_SPREAD)
    if policy == "long_backoff":  # 4429
        return AfterClose(True, LONG_BACKOFF + jitter)
    if policy == "new_token":  # 4401
        return AfterClose(True, jitter, True)
    # 'none' is a close the client made; a server's 1000 is retried like a lost connection.
    return AfterClose(True, jitter)


def may_resend(code: int) -> bool:
    """Whether a send in flight at a close with `code` may go out again (not after 1009: it may be the frame refused)."""
    return reconnect_after(code) != "backoff_no_resend"


def life_left(token: str, obtained_at: float, now: float) -> tuple[float, float] | None:
    """A token's life and what is left of it, in seconds; None without a numeric `exp`.

    With `iat` the life is ``exp - iat`` counted from when the client got the token, less a second
    (JWT times are whole seconds), so a client clock that is off does not matter; without it, what
    is left by the client's clock.
    """
    claims = token_claims(token)
    exp, iat = claims.get("exp"), claims.get("iat")
    if isinstance(exp, bool) or not isinstance(exp, (int, float)):
        return None
    if isinstance(iat, (int, float)) and not isinstance(iat, bool) and iat < exp:
        life = float(exp - iat)
        return life, life - (now - obtained_at) - 1.0
    left = exp - now
    return left + (now - obtained_at), left


def refresh_delay(token: str, obtained_at: float, now: float, refresh_at: float, retry: bool) -> float | None:
    """Seconds until the next in-band refresh: at `refresh_at` of the token's life, or after a
    failed one half of what is left; at least MIN_REFRESH. None without `exp`."""
    times = life_left(token, obtained_at, now)
    if times is None:
        return None
    life, left = times
    delay = left / 2 if retry else left - life * (1 - refresh_at)
    return max(MIN_REFRESH, delay)


# Around an event's `data` the node adds type (<= 64), room (<= 72), sender (<= 128 UTF-16 units,
# at most 6 bytes each once JSON-escaped), user_id (<= 64), timestamp, offset, epoch (<= 64) and
# the keys: under 2 KiB. A presence snapshot lists at most 1,000 users of at most about 900 bytes
# each (user_id, an escaped username, counts), whatever WS_MESSAGE_MAX_SIZE is. 1 MiB covers both.
FRAME_SLACK = 1 << 20


def frame_bound(max_message_size: int) -> int:
    """The largest frame a node with WS_MESSAGE_MAX_SIZE = m sends, `room_history` pages aside:
    ``22 * m / 5 + 1 MiB`` (5.4 MiB at the default 1 MiB).

    An event's `data` comes from a frame or an API body of at most m bytes, and the node encodes
    it again. Strings cannot grow (a text frame is valid UTF-8 and escapes only stay or shrink),
    but a number written with an exponent is spelled out: ``1e20`` (4 bytes) becomes
    ``100000000000000000000`` (21). A client's `send_message` holds at most 10,000 values, so it
    grows by at most 170 KB; a body of the HTTP API has no such cap, and ``[1e20,1e20,...]`` grows
    by 22/5. A `room_history` page holds up to `limit` events: it is bounded only by ``limit``
    times this (ask for small pages, or pass the client a larger `max_size`).
    """
    return (22 * max_message_size + 4) // 5 + FRAME_SLACK
