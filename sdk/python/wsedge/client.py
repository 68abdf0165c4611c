"""An asyncio client for ws-edge on the `websockets` package (10.x or later): the concepts of the
JavaScript client (src/client/*.ts, docs/WEBSOCKET_API.md "Client library") in Python.

    from wsedge.client import Client

    async def main():
        async with Client("wss://edge.example.com/api/v1/ws/connect", token=fetch_token) as client:
            await client.join("project:42", on_event=print, on_reset=lambda position: reload())
            await client.send_message("project:42", {"text": "hi"})
            unread = await client.rpc("messages.unread", {"room": "project:42"})
            await asyncio.Event().wait()

- **Token** in the subprotocol (`wsedge.v1`, `wsedge.bearer.<token>`), never in the URL. `token` is
  a str, or a provider (a function or coroutine function returning a str) asked for the first
  connect, after a 4401, when the token held is within 10 s of `exp`, and at `refresh_at` (80%) of
  its life, when the new token goes in band with `refresh_token` and the connection stays.
- **Reconnecting** by the close-code table (src/close-codes.ts): 1012 after random(0, 5 s); 4429
  after 30 s plus the backoff; 4401 only with a new token from the provider (a fixed str ends in
  `closed`); 4403 and 1008 end in `closed`; anything else (a lost connection, a refused
  handshake) after the full-jitter backoff random(0, min(30, 1 * 2**attempt)) s, `attempt`
  reset by each `connected`.
- **Rooms** are kept across reconnects. After a reconnect they go out in ONE `resume` frame with
  the position (epoch, offset) of the last event handed to the app in each sequenced room: missed
  events come first, then `on_recovered`; when they cannot, `on_reset(position)` says reload the
  room from the product API (plain rooms: `on_reset(None)` after every reconnect). Events of a
  sequenced room reach `on_event` once and in offset order: a duplicate by offset is dropped.
- **Requests** (join, leave, send_message, rpc, history, presence, presence_stats, ping) carry an
  id and wait for the reply with that id, at most `request_timeout` s; a refusal raises
  ClientError with the server's error code (`forbidden`, `not_joined`, `rejected` with the
  backend's own code in `detail`, ...) or the client's own (`timeout`, `disconnected`: the outcome
  is unknown, `closed`, `message_too_big`). Nothing in flight at a close is sent again, but sends.
- **Sends** (src/client/sends.ts): every `send_message` carries an idempotency key (the app's, or
  16 random bytes base64url), and the node answers a repeat of a key (same user, same room, 300 s)
  with the first result plus `duplicate: true`, never delivering it twice. So a send in flight
  when the connection is lost is kept and sent again with the same key once the next connection's
  rooms are rejoined, for up to 240 s from its first try and at most `resend_limit` of them; one
  answered `unavailable` is tried again after 1, 2, 4, 8, 8... s, up to 8 times, later sends to its
  room held behind it so that the room's order holds; any other error, a timeout, or a close with
  1009 settles it. While not connected a send fails at once (`disconnected`) unless `queue_size`
  lets it wait for the next connection.
- **RPC**: `rpc(method, data)` answers the backend's `data` (WS_RPC_URL on the node); it is never
  sent again (not idempotent).
- **Liveness**: websockets' own keepalive pings (`ping_interval`, `ping_timeout`) detect a silent
  link and count as client traffic for the node's heartbeat.
- **Frame size**: `max_size` defaults to `frame_bound(max_message_size)` (see wsedge.policy): 5.4
  MiB for a node's default WS_MESSAGE_MAX_SIZE of 1 MiB. When the `connected` message announces a
  larger `max_message_size`, the limit is raised to fit it. `room_history` pages are bounded only
  by their `limit`: keep it small, or pass `max_size`.

Handlers (`on_event` and the others, and `on(...)` listeners) are called in the reading task, in
order; a coroutine function's coroutine is started as a task. An exception in one is handed to the
event loop's exception handler and does not break the client.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import random as _random
import secrets
import time
from typing import Any, Awaitable, Callable, NamedTuple, Union

try:
    import websockets
    from websockets.exceptions import ConnectionClosed
except ImportError as err:  # pragma: no cover - depends on the environment
    raise ImportError(
        "wsedge.client needs the websockets package (10.x or later): pip install 'wsedge[client]', "
        "or on Debian/Ubuntu apt-get install python3-websockets"
    ) from err

from . import _rules
from .policy import Backoff, after_close, frame_bound, life_left, may_resend, refresh_delay

__all__ = ["Client", "ClientError", "StateChange", "PROTOCOL", "BEARER_PREFIX", "new_key"]

PROTOCOL = "wsedge.v1"
BEARER_PREFIX = "wsedge.bearer."
DEFAULT_MAX_MESSAGE_SIZE = 1_048_576
# A token this close to `exp` is replaced before a reconnect.
EXPIRY_MARGIN = 10.0
# A room refused as `unavailable`, or whose join timed out, is tried again after this long.
ROOM_RETRY = 1.0
# Room grants from a provider are renewed in band at this share of their life.
GRANT_RENEW_AT = 0.8
# A send is not sent again once its first try is this old (s): the node remembers a key for 300 s.
RESEND_WINDOW = 240.0
# A resend answered `unavailable` is tried again after 1, 2, 4, 8, 8... s, this many times (past
# the node's 30 s claim on a key a dead node held).
RESEND_RETRIES = 8

TokenSource = Union[str, Callable[[], Union[str, Awaitable[str]]]]


class ClientError(Exception):
    """A refused or failed request: `code` is the server's error code (docs/WEBSOCKET_API.md "Error
    codes") or the client's own: `timeout`, `disconnected`, `closed`, `message_too_big`. With
    `rejected` (the product backend refused a proxied send or an rpc), `detail` is the backend's
    own code and `message` its reason."""

    def __init__(self, code: str, message: str, detail: str | None = None):
        super().__init__(f"{code}: {message}" if detail is None else f"{code} ({detail}): {message}")
        self.code = code
        self.message = message
        self.detail = detail


def _reply_error(reply: dict[str, Any]) -> ClientError:
    """The ClientError of an `error` envelope, {"type":"error","id",...,"data":{"code","message","error","detail"?}}:
    `message`, or `error` from a node older than that field (during a rolling upgrade)."""
    data = reply.get("data")
    data = data if isinstance(data, dict) else {}
    detail = data.get("detail")
    message = data.get("message")
    return ClientError(str(data.get("code")), str(message if isinstance(message, str) else data.get("error")), detail if isinstance(detail, str) else None)


def new_key() -> str:
    """A send's idempotency key: 16 random bytes, base64url (22 characters), as the JavaScript client's."""
    return secrets.token_urlsafe(16)


class StateChange(NamedTuple):
    """`state`: disconnected, connecting, connected or closed (terminal). `code` and `reason`: the
    close that caused it; `delay`: seconds until the next attempt."""

    state: str
    code: int | None = None
    reason: str | None = None
    delay: float | None = None


class _Refused(Exception):
    """The provider answered a token the server refused already."""


async def _resolve(source: Any, what: str) -> str:
    value = source() if callable(source) else source
    if inspect.isawaitable(value):
        value = await value
    if not isinstance(value, str) or value == "":
        raise TypeError(f"the {what} provider returned {type(value).__name__}, not a non-empty str")
    return value


class _Tokens:
    """The token held (and when it came), the one the server refused, the one offered in band."""

    def __init__(self, source: TokenSource, refresh_at: float):
        if not (isinstance(source, str) and source) and not callable(source):
            raise TypeError("token must be a non-empty str or a callable returning one")
        self.source = source
        self.refresh_at = refresh_at
        self.held: tuple[str, float] | None = None
        self.refused: str | None = None
        self.offered: str | None = None

    async def next(self) -> str:
        """The token for the next socket: the one held while it is neither refused nor near `exp`."""
        if isinstance(self.source, str):
            token = self.source
        else:
            token = None
            if self.held is not None and self.held[0] != self.refused:
                times = life_left(self.held[0], self.held[1], time.monotonic())
                if times is None or times[1] > EXPIRY_MARGIN:
                    token = self.held[0]
            if token is None:
                token = await _resolve(self.source, "token")
        if token == self.refused:
            raise _Refused()
        if self.held is None or self.held[0] != token:
            self.held = (token, time.monotonic())
        return token

    def closed(self, code: int) -> None:
        if code == 4401:
            self.refused = self.offered or (self.held[0] if self.held else None)
        self.offered = None

    def delay(self, retry: bool) -> float | None:
        if self.held is None or isinstance(self.source, str):
            return None
        return refresh_delay(self.held[0], self.held[1], time.monotonic(), self.refresh_at, retry)

    async def refresh(self, current: Callable[[], bool], send: Callable[[str], Awaitable[Any]]) -> None:
        token = await _resolve(self.source, "token")
        if not current():
            return
        if (self.held is not None and token == self.held[0]) or token == self.refused:
            raise ClientError("unavailable", "the token provider returned no new token")
        self.offered = token
        await send(token)
        if current():
            self.offered = None
            self.held = (token, time.monotonic())


class _Room:
    __slots__ = ("handlers", "grant", "epoch", "offset", "request", "retry", "reply", "answered", "waiters")

    def __init__(self, handlers: dict[str, Any], grant: Any):
        self.handlers = handlers
        self.grant = grant
        self.epoch: str | None = None
        self.offset = 0
        # The id its join went out under on this connection; None: not sent (yet, or again).
        self.request: str | None = None
        self.retry = False
        # The reply to its join on this connection.
        self.reply: dict[str, Any] | None = None
        # Answered once before: the next answer is a rejoin after a reconnect.
        self.answered = False
        self.waiters: list[asyncio.Future[dict[str, Any]]] = []

    def position(self) -> dict[str, Any] | None:
        return None if self.epoch is None else {"epoch": self.epoch, "offset": self.offset}

    def settle(self, reply: dict[str, Any] | None = None, error: BaseException | None = None) -> None:
        for waiter in self.waiters:
            if not waiter.done():
                if error is not None:
                    waiter.set_exception(error)
                else:
                    waiter.set_result(reply)  # type: ignore[arg-type]
        self.waiters.clear()


class _Send:
    __slots__ = ("message", "future", "id", "first", "tries", "retries", "timer")

    def __init__(self, message: dict[str, Any], future: asyncio.Future[dict[str, Any]]):
        self.message = message
        self.future = future
        # The request id it went out under on this connection; None: not in flight.
        self.id: str | None = None
        # When it first went out (monotonic s); None: never sent.
        self.first: float | None = None
        self.tries = 0
        # Resends answered `unavailable` so far.
        self.retries = 0
        # In flight: the reply timeout; kept after a loss: the end of its resend window; or the next retry.
        self.timer: asyncio.TimerHandle | None = None


class _Sends:
    """send_message, each with an idempotency key, so that from the app's view every send happens
    once (src/client/sends.ts, the same rules). A send in flight when the connection is lost has
    an unknown outcome: it is kept and sent again with the same key once the next connection's
    rooms are rejoined; the node answers a repeat with the first result (`duplicate: true`) and
    delivers it only once. A send answered with an error is settled with that error and never sent
    again, but for `unavailable`: a try may still be under way (on a node that died with the key
    claimed), so its outcome is unknown and it is tried again, a few times. Sends made while not
    connected wait (never sent before) when `queue_size` allows, else fail at once. Order per room
    holds through retries: while a send to a room waits for its retry, later sends to that room
    wait behind it, and the retry sends every waiting send of the room, oldest first."""

    def __init__(
        self,
        next_id: Callable[[], str],
        ready: Callable[[], bool],
        write: Callable[[str], None],
        timeout: float,
        queue_size: int,
        resend_limit: int,
    ):
        self._next_id = next_id
        # Connected, and the rooms rejoined: a kept send may go.
        self._ready = ready
        # Starts a frame's write; raises ClientError when it cannot go (not connected, too big).
        self._write = write
        self._timeout = timeout
        self._queue_size = queue_size
        self._resend_limit = resend_limit
        # Every unsettled send, oldest first (a dict as an ordered set).
        self._sends: dict[_Send, None] = {}
        self._in_flight: dict[str, _Send] = {}

    def _count(self, sent: bool) -> int:
        return sum(1 for s in self._sends if (s.first is not None) == sent)

    def _finish(self, s: _Send, outcome: dict[str, Any] | BaseException) -> None:
        self._sends.pop(s, None)
        if s.id is not None:
            self._in_flight.pop(s.id, None)
        if s.timer is not None:
            s.timer.cancel()
            s.timer = None
        if s.future.done():  # the caller stopped waiting (cancelled)
            return
        if isinstance(outcome, BaseException):
            s.future.set_exception(outcome)
        else:
            s.future.set_result(outcome)

    def _timer(self, s: _Send, delay: float, fn: Callable[[], None]) -> None:
        if s.timer is not None:
            s.timer.cancel()
        s.timer = asyncio.get_running_loop().call_later(max(0.0, delay), fn)

    def _transmit(self, s: _Send) -> None:
        request = self._next_id()
        try:
            self._write(json.dumps({**s.message, "id": request}, separators=(",", ":"), ensure_ascii=False, allow_nan=False))
        except (ClientError, TypeError, ValueError) as err:  # TypeError, ValueError: data json cannot write (first try only)
            return self._finish(s, err)
        s.id = request
        if s.first is None:
            s.first = time.monotonic()
        s.tries += 1
        self._in_flight[request] = s
        self._timer(s, self._timeout, lambda: self._finish(s, ClientError("timeout", f"no reply to send_message within {self._timeout:g} s")))

    def _park(self, s: _Send) -> None:
        """Out of flight, to be sent again after the next rejoin, until its resend window ends."""
        if s.id is not None:
            self._in_flight.pop(s.id, None)
        s.id = None
        assert s.first is not None
        self._timer(s, s.first + RESEND_WINDOW - time.monotonic(), lambda: self._finish(s, _gone()))

    def _retry(self, room: Any) -> None:
        """Every send of `room` not in flight goes, oldest first (one waiting for its retry, and those held behind it)."""
        for s in list(self._sends):
            if s.id is None and s.message.get("room") == room and s in self._sends:
                self._transmit(s)

    async def add(self, message: dict[str, Any], now: bool) -> dict[str, Any]:
        """`now`: send at once; else wait for the next connection's rejoin, when the queue has room."""
        if not now and self._count(sent=False) >= self._queue_size:
            raise ClientError("disconnected", "not connected" if self._queue_size == 0 else f"the send queue is full ({self._queue_size})")
        s = _Send(message, asyncio.get_running_loop().create_future())
        # Behind a send of the same room waiting for its retry: it goes with that retry.
        behind = now and any(w.id is None and w.message.get("room") == message.get("room") for w in self._sends)
        self._sends[s] = None
        if now and not behind:
            self._transmit(s)
        try:
            return await s.future
        except asyncio.CancelledError:
            # Never sent: withdrawn. Sent: its outcome is the node's now; a resend stays harmless (the key).
            if s.first is None:
                self._finish(s, ClientError("closed", "cancelled"))
            raise

    def settle(self, reply: dict[str, Any]) -> bool:
        """Settles the send a reply answers; False when it answers none."""
        request = reply.get("id")
        s = self._in_flight.get(request) if isinstance(request, str) else None
        kind = reply.get("type")
        if s is None or kind not in ("message_sent", "error"):
            return False
        err = _reply_error(reply) if kind == "error" else None
        delay = min(8.0, 1.0 * 2**s.retries)
        # Every send is keyed, so any `unavailable` is tried again: a try may have been published (a Redis timeout after the script ran).
        if err is not None and err.code == "unavailable" and s.retries < RESEND_RETRIES and time.monotonic() + delay < s.first + RESEND_WINDOW:  # type: ignore[operator]
            s.retries += 1
            self._park(s)
            self._timer(s, delay, lambda: self._retry(s.message.get("room")) if self._ready() else self._park(s))
        else:
            self._finish(s, err if err is not None else reply)
        return True

    def down(self, closed: bool, resend: bool) -> None:
        """The connection is gone: sends in flight are kept for a resend, for RESEND_WINDOW from
        their first try and at most `resend_limit` of them. `closed`: every send fails with
        `closed`; `resend` False (a close with 1009): the sends in flight fail, queued ones wait."""
        for s in list(self._sends):
            if closed:
                self._finish(s, ClientError("closed", "the client is closed"))
            elif s.id is not None:
                if resend:
                    self._park(s)
                else:
                    self._finish(s, _gone())
        over = self._count(sent=True) - self._resend_limit
        for s in list(self._sends):  # the oldest beyond the bound
            if over <= 0:
                break
            if s.first is not None:
                over -= 1
                self._finish(s, _gone())

    def flush(self) -> None:
        """The connection is ready (its rooms rejoined): every waiting send goes, oldest first."""
        for s in list(self._sends):
            if s.id is None and s in self._sends:
                self._transmit(s)


def _gone() -> ClientError:
    return ClientError("disconnected", "the connection was lost before the reply")


_REPLIES = frozenset({"resumed", "message_sent", "room_history", "presence", "presence_stats", "pong", "token_refreshed", "rpc_result"})
_EVENTS = ("state", "connected", "message", "error", "presence", "signal")


class Client:
    """One logical connection over successive sockets. Create it inside a running event loop (or
    call `start()` from one); `async with Client(...)` starts and closes it."""

    def __init__(
        self,
        url: str,
        token: TokenSource,
        *,
        backoff: Backoff = Backoff(),
        request_timeout: float = 10.0,
        connect_timeout: float = 15.0,
        refresh_at: float = 0.8,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        max_size: int | None = None,
        queue_size: int = 0,
        resend_limit: int = 100,
        ping_interval: float | None = 20.0,
        ping_timeout: float | None = 20.0,
        random: Callable[[], float] = _random.random,
        trace: Callable[[str, str], None] | None = None,
    ):
        if not isinstance(url, str) or not url.startswith(("ws://", "wss://")):
            raise ValueError(f"url must be ws:// or wss://.../api/v1/ws/connect, not {url!r}")
        if not 0 < refresh_at < 1:
            raise ValueError("refresh_at must be between 0 and 1")
        for name, value in (("queue_size", queue_size), ("resend_limit", resend_limit)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an int >= 0")
        self.url = url
        self._tokens = _Tokens(token, refresh_at)
        self._backoff = backoff
        self._request_timeout = request_timeout
        self._connect_timeout = connect_timeout
        self._max_message_size = max_message_size
        self._max_size = max_size
        self._ping = (ping_interval, ping_timeout)
        self._random = random
        self._trace = trace
        self._listeners: dict[str, list[Callable[[Any], Any]]] = {name: [] for name in _EVENTS}
        self._state = "disconnected"
        self._change = StateChange("disconnected")
        self._state_waiters: list[tuple[frozenset[str], asyncio.Future[StateChange]]] = []
        self._info: dict[str, Any] | None = None
        self._ws: Any = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._attempt = 0
        # Bumped whenever a socket is dropped: a token refresh that answers later is ignored.
        self._generation = 0
        self._seq = 0
        self._pending: dict[str, tuple[asyncio.Future[dict[str, Any]], str]] = {}
        self._rooms: dict[str, _Room] = {}
        self._flush_scheduled = False
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._queue_size = queue_size
        # Connected, and every wanted room answered on this connection: kept and queued sends may go.
        self._ready = False
        self._sends = _Sends(self._next_id, lambda: self._ready, self._write_now, request_timeout, queue_size, resend_limit)

    # -- the app's side ------------------------------------------------------------------------

    @property
    def state(self) -> str:
        return self._state

    @property
    def connection(self) -> dict[str, Any] | None:
        """The `connected` data of the current (or last) connection: connection_id, user_id, ..."""
        return self._info

    def on(self, event: str, fn: Callable[[Any], Any]) -> Callable[[], None]:
        """Listens to `state` (StateChange), `connected` (its data), `message` (events no room
        handler took: to this connection, or rooms not joined through join), `error` (ClientError
        answering no request), `presence`, `signal`. Returns a function that stops listening."""
        if event not in self._listeners:
            raise ValueError(f"unknown event {event!r}: one of {', '.join(_EVENTS)}")
        self._listeners[event].append(fn)
        return lambda: self._listeners[event].remove(fn) if fn in self._listeners[event] else None

    def start(self) -> None:
        """Opens the connection (again, after `close` or a terminal close code)."""
        if self._task is not None and not self._task.done():
            return
        self._closing = False
        self._attempt = 0
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        """Closes for good (1000): requests in flight and waiting joins fail with `closed`."""
        if self._task is None or self._state == "closed":
            return
        self._closing = True
        task, self._task = self._task, None
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        self._down(ClientError("closed", "the client is closed"))
        self._set_state("closed", 1000, "closed by the client")

    async def __aenter__(self) -> "Client":
        self.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    async def wait_for_state(self, *states: str, timeout: float | None = None) -> StateChange:
        """Waits until the client is in one of `states`; returns the StateChange that put it there."""
        if self._state in states:
            return self._change
        future: asyncio.Future[StateChange] = asyncio.get_running_loop().create_future()
        entry = (frozenset(states), future)
        self._state_waiters.append(entry)
        try:
            return await asyncio.wait_for(future, timeout)
        finally:
            if entry in self._state_waiters:
                self._state_waiters.remove(entry)

    async def join(
        self,
        room: str,
        *,
        on_event: Callable[[dict[str, Any]], Any] | None = None,
        on_recovered: Callable[[dict[str, Any]], Any] | None = None,
        on_reset: Callable[[dict[str, Any] | None], Any] | None = None,
        on_left: Callable[[str], Any] | None = None,
        on_presence: Callable[[dict[str, Any]], Any] | None = None,
        on_signal: Callable[[dict[str, Any]], Any] | None = None,
        grant: str | Callable[[], str | Awaitable[str]] | None = None,
    ) -> dict[str, Any]:
        """Joins `room` now (or once connected) and after every reconnect; returns the first
        `room_joined` (with the position in a sequenced room). `grant`: a room grant, or a provider
        asked at every (re)join whose grants are renewed in band at 80% of their life. Joins made in
        one loop iteration go out in one frame. A refusal raises ClientError (`forbidden`, ...) and
        forgets the room; `unavailable` and timeouts are retried after 1 s."""
        _rules.check_room(room)
        if self._state == "closed":
            raise ClientError("closed", "the client is closed: start() it again first")
        handlers = {"event": on_event, "recovered": on_recovered, "reset": on_reset, "left": on_left, "presence": on_presence, "signal": on_signal}
        entry = self._rooms.get(room)
        if entry is None:
            entry = self._rooms[room] = _Room(handlers, grant)
        entry.handlers, entry.grant = handlers, grant
        if entry.reply is not None:
            return entry.reply
        waiter: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        entry.waiters.append(waiter)
        if self._state == "connected" and not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush_joins)
        return await waiter

    async def leave(self, room: str) -> None:
        """Stops the room's handlers at once and leaves it."""
        self._cancel_timer(f"grant:{room}")
        entry = self._rooms.pop(room, None)
        if entry is None:
            return
        entry.settle(error=ClientError("closed", f"left {room}"))
        if entry.request is None or self._state != "connected":
            return
        try:
            await self._request({"type": "leave_room", "room": room}, "room_left")
        except ClientError as err:
            if err.code not in ("not_joined", "disconnected"):
                raise

    async def send_message(self, room: str, data: Any, idempotency_key: str | None = None) -> dict[str, Any]:
        """send_message with an idempotency key (`idempotency_key`, 1-128 printable ASCII
        characters without spaces, else a random one); returns `message_sent` once (the position in
        a sequenced room; `duplicate: True` when it was a repeat; `data` as the publish proxy
        stored it). A send whose reply a lost connection took is sent again with the same key
        after the rejoin, and delivered once; one answered `unavailable` is tried again. Raises
        ClientError: the node's refusal, `timeout` (never resent: retry with your own key),
        `disconnected` (not connected and no `queue_size`; or kept past 240 s, beyond
        `resend_limit`, or in flight at a 1009), `closed`, `message_too_big`.

        An invalid key, and `data` the node would refuse (deeper than 32 levels, more than 10,000
        values) or change (integers beyond 2**53 - 1), are a ValueError here: refused frames count
        towards the node's invalid-message close (1008)."""
        key = new_key() if idempotency_key is None else _rules.check_idempotency_key(idempotency_key)
        _rules.check_data(data, bounded=True)
        if self._state == "closed":
            raise ClientError("closed", "the client is closed")
        now = self._ready or (self._connected() and self._queue_size == 0)
        return await self._sends.add({"type": "send_message", "room": room, "data": data, "idempotency_key": key}, now)

    # The JavaScript client's name for it.
    send = send_message

    async def rpc(self, method: str, data: Any = None, timeout: float | None = None) -> Any:
        """A call to the product backend through the node (its WS_RPC_URL); returns the `data` of
        the `rpc_result`. Raises ClientError: `rejected` (the backend's code in `detail`, its
        reason in `message`), `unavailable` (the backend was slow or down: retryable),
        `unknown_type` (no WS_RPC_URL on the node), `rate_limited`, `timeout` (after `timeout` s,
        default `request_timeout`), `disconnected`. Never sent again: an rpc is not idempotent. A
        method other than ``[a-z][a-z0-9_.]{0,63}``, and `data` beyond the node's bounds, are a
        ValueError here."""
        _rules.check_rpc_method(method)
        _rules.check_data(data, bounded=True)
        reply = await self._request({"type": "rpc", "method": method, "data": data}, "rpc_result", timeout)
        return reply.get("data")

    async def history(self, room: str, since: Any = None, limit: int | None = None, reverse: bool = False) -> dict[str, Any]:
        """The kept events of a joined sequenced room: `room_history`."""
        if not isinstance(reverse, bool):
            raise TypeError("reverse must be a bool")
        message: dict[str, Any] = {"type": "history", "room": room, "reverse": reverse}
        position = _rules.check_position(since)
        if position is not None:
            message["since"] = position
        if _rules.check_limit(limit) is not None:
            message["limit"] = limit
        return await self._request(message, "room_history")

    async def presence(self, room: str) -> dict[str, Any]:
        return await self._request({"type": "presence", "room": room}, "presence")

    async def presence_stats(self, room: str) -> dict[str, Any]:
        return await self._request({"type": "presence_stats", "room": room}, "presence_stats")

    async def signal(self, room: str, name: str, data: Any = None) -> bool:
        """An ephemeral event to the room's other members; False when not connected. Refusals come to `error`."""
        if self._state != "connected":
            return False
        try:
            await self._transmit(json.dumps({"type": "signal", "room": room, "name": name, "data": data}, separators=(",", ":")))
        except ClientError:
            return False
        return True

    async def ping(self) -> float:
        """An application-level round trip, in seconds."""
        started = time.monotonic()
        await self._request({"type": "ping"}, "pong")
        return time.monotonic() - started

    def position(self, room: str) -> dict[str, Any] | None:
        """The position of the last event handed to the app in a sequenced room."""
        entry = self._rooms.get(room)
        return None if entry is None else entry.position()

    # -- the connection ------------------------------------------------------------------------

    async def _run(self) -> None:
        while not self._closing:
            code, reason = await self._session()
            if self._closing:
                return
            self._generation += 1
            self._cancel_timers()
            self._tokens.closed(code)
            decision = after_close(code, self._attempt, self._backoff, self._random)
            if not decision.retry or (decision.new_token and isinstance(self._tokens.source, str)):
                self._closing = True
                self._down(ClientError("closed", f"closed by the server ({code} {reason})"))
                self._set_state("closed", code, reason)
                return
            self._down(ClientError("disconnected", "the connection was lost"), resend=may_resend(code))
            self._attempt += 1
            self._set_state("disconnected", code, reason, decision.delay)
            await asyncio.sleep(decision.delay)

    async def _session(self) -> tuple[int, str]:
        """One socket, from the token to its close: returns the close code and reason."""
        self._set_state("connecting")
        deadline = time.monotonic() + self._connect_timeout
        try:
            token = await asyncio.wait_for(self._tokens.next(), self._connect_timeout)
        except _Refused:
            return 4401, "the token was refused"
        except asyncio.TimeoutError:
            return 1006, "connect timeout (token provider)"
        except Exception as err:  # noqa: BLE001 - a provider may raise anything
            return 4401, f"token provider failed: {err}"
        limit = self._max_size or frame_bound(self._max_message_size)
        try:
            ws = await asyncio.wait_for(
                websockets.connect(
                    self.url,
                    subprotocols=[PROTOCOL, BEARER_PREFIX + token],  # type: ignore[list-item]
                    max_size=limit,
                    ping_interval=self._ping[0],
                    ping_timeout=self._ping[1],
                    close_timeout=5,
                ),
                max(0.001, deadline - time.monotonic()),
            )
        except asyncio.TimeoutError:
            return 1006, "connect timeout"
        except Exception as err:  # noqa: BLE001 - a refused handshake (HTTP 503, 429) or a network error
            return 1006, f"connect failed: {err}"
        self._ws = ws
        try:
            while True:
                if self._state == "connected":
                    text = await ws.recv()
                else:
                    text = await asyncio.wait_for(ws.recv(), max(0.001, deadline - time.monotonic()))
                if isinstance(text, str):
                    try:
                        self._frame(text)
                    except Exception as err:  # noqa: BLE001 - a frame this client cannot read must not end it
                        asyncio.get_running_loop().call_exception_handler({"message": "wsedge: unreadable frame", "exception": err})
        except ConnectionClosed as closed:
            rcvd = closed.rcvd
            return (rcvd.code, rcvd.reason) if rcvd is not None else (1006, "connection lost")
        except asyncio.TimeoutError:
            return 1006, "connect timeout (no connected message)"
        finally:
            self._ws = None
            self._ready = False
            await self._close_socket(ws)

    @staticmethod
    async def _close_socket(ws: Any) -> None:
        try:
            await asyncio.shield(ws.close(1000))
        except (Exception, asyncio.CancelledError):  # noqa: BLE001 - already closing
            pass

    def _set_state(self, state: str, code: int | None = None, reason: str | None = None, delay: float | None = None) -> None:
        self._state = state
        change = self._change = StateChange(state, code, reason, delay)
        for states, future in list(self._state_waiters):
            if state in states and not future.done():
                future.set_result(change)
        self._emit("state", change)

    def _down(self, err: ClientError, resend: bool = False) -> None:
        """The socket is gone: fail the requests in flight and keep the sends (unless `resend` is
        False, or for good); rooms are joined again on the next one (a close for good fails the
        waiting joins too)."""
        self._ready = False
        self._sends.down(err.code == "closed", resend)
        self._cancel_timers()
        for future, _ in self._pending.values():
            if not future.done():
                future.set_exception(err)
        self._pending.clear()
        for entry in self._rooms.values():
            entry.request, entry.retry, entry.reply = None, False, None
            if err.code == "closed":
                entry.settle(error=err)

    def _established(self, data: dict[str, Any]) -> None:
        self._info = data
        self._attempt = 0
        announced = data.get("max_message_size")
        if isinstance(announced, int) and announced > self._max_message_size:
            self._max_message_size = announced
            if self._max_size is None:
                self._raise_limit(frame_bound(announced))
        self._schedule_refresh(retry=False)
        self._set_state("connected")
        self._emit("connected", data)
        self._flush_joins()

    def _raise_limit(self, limit: int) -> None:
        """The current socket's max_size (websockets 10-13 keep it on the connection, 14+ on its protocol)."""
        protocol = getattr(self._ws, "protocol", None)
        if protocol is not None and hasattr(protocol, "max_size"):
            protocol.max_size = limit
        elif self._ws is not None and hasattr(self._ws, "max_size"):
            self._ws.max_size = limit

    # -- frames ------------------------------------------------------------------------------

    def _frame(self, text: str) -> None:
        if self._trace is not None:
            self._trace("in", text)
        message = json.loads(text)
        kind = message.get("type")
        if kind == "connected":
            return self._established(message["data"])
        if kind == "room_joined":
            self._joined(message)
        elif kind == "room_reset":
            return self._reset(message)
        elif kind == "room_left":
            self._left(message)
        elif kind == "error":
            err = _reply_error(message)
            room = message.get("room")
            if isinstance(room, str) and room in self._rooms:
                self._refused(room, err, message.get("id"))
            if not self._settle(message) and not (isinstance(room, str) and room in self._rooms):
                self._emit("error", err)
            return
        elif kind not in _REPLIES:
            family = "presence" if str(kind).startswith("presence.") else "signal" if str(kind).startswith("signal.") else None
            if not self._event(message, family):
                self._emit("message", message)
            elif family is not None:
                self._emit(family, message)
            return
        self._settle(message)

    def _event(self, event: dict[str, Any], family: str | None) -> bool:
        """Hands an event to its room's handler; False when no wanted room has it."""
        room = event.get("room")
        entry = self._rooms.get(room) if isinstance(room, str) else None
        if entry is None:
            return False
        offset = event.get("offset")
        if family is not None:
            _call(entry.handlers[family], event)
        elif offset is None:
            _call(entry.handlers["event"], event)
        elif event.get("epoch") != entry.epoch or offset > entry.offset:
            entry.epoch, entry.offset = event.get("epoch"), offset
            _call(entry.handlers["event"], event)
        # else: had it already (a rejoin replays from `since`): dropped by offset
        return True

    def _joined(self, reply: dict[str, Any]) -> None:
        """A `room_joined` that answers a wanted room's join on this connection."""
        entry = self._rooms.get(reply.get("room"))  # type: ignore[arg-type]
        if entry is None or entry.request is None or reply.get("id") != entry.request or entry.reply is not None:
            return
        rejoin, entry.answered, entry.reply = entry.answered, True, reply
        if "epoch" in reply:
            entry.epoch, entry.offset = reply["epoch"], reply["offset"]
            if reply.get("recovered") is True:
                _call(entry.handlers["recovered"], entry.position())
            elif reply.get("recovered") is False or rejoin:
                _call(entry.handlers["reset"], entry.position())
        elif rejoin:
            _call(entry.handlers["reset"], None)
        entry.settle(reply)
        self._after_joins()

    def _reset(self, message: dict[str, Any]) -> None:
        entry = self._rooms.get(message.get("room"))  # type: ignore[arg-type]
        if entry is not None:
            entry.epoch, entry.offset = message["epoch"], message["offset"]
            _call(entry.handlers["reset"], entry.position())

    def _left(self, message: dict[str, Any]) -> None:
        """A `room_left` with a reason: the server took the room away (a join under way included)."""
        room, reason = message.get("room"), message.get("reason")
        entry = self._rooms.get(room)  # type: ignore[arg-type]
        if entry is None or reason is None:
            return
        self._drop(room, entry, reason, ClientError("forbidden", f"{room}: {reason}"), tell=True)  # type: ignore[arg-type]

    def _drop(self, room: str, entry: _Room, reason: str, err: ClientError, tell: bool = False) -> None:
        self._rooms.pop(room, None)
        self._cancel_timer(f"grant:{room}")
        entry.settle(error=err)
        if entry.answered or tell:
            _call(entry.handlers["left"], reason)

    def _refused(self, room: str, err: ClientError, request: Any) -> None:
        """A join refused: retried after ROOM_RETRY when `unavailable` or timed out, else forgotten."""
        entry = self._rooms.get(room)
        if entry is None or entry.reply is not None or (request is not None and request != entry.request):
            return
        if err.code in ("disconnected", "closed"):
            return
        if err.code in ("unavailable", "timeout"):
            entry.request, entry.retry = None, True
            if "joins" not in self._timers:
                self._timers["joins"] = asyncio.get_running_loop().call_later(ROOM_RETRY, self._retry_joins)
            return
        self._drop(room, entry, err.code, err)

    def _retry_joins(self) -> None:
        self._timers.pop("joins", None)
        self._flush_joins()

    # -- joins ---------------------------------------------------------------------------------

    def _flush_joins(self) -> None:
        """The rooms not joined on this connection go out in one frame."""
        self._flush_scheduled = False
        if self._state != "connected":
            return
        request = self._next_id()
        wanted = [(name, entry) for name, entry in self._rooms.items() if entry.request is None and entry.reply is None]
        for _, entry in wanted:
            entry.request = request
        if wanted:
            self._spawn(self._send_joins(request, wanted))
        else:
            self._after_joins()

    def _after_joins(self) -> None:
        """Every wanted room answered on this connection: the kept and queued sends go, after the
        rejoin (the order the JavaScript client keeps: a resend reaches a room the sender is in)."""
        if self._ready or not self._connected() or any(entry.reply is None for entry in self._rooms.values()):
            return
        self._ready = True
        self._sends.flush()

    async def _send_joins(self, request: str, wanted: list[tuple[str, _Room]]) -> None:
        try:
            grants = [None if entry.grant is None else await _resolve(entry.grant, "grant") for _, entry in wanted]
        except Exception as err:  # noqa: BLE001 - a grant provider may raise anything
            for name, _ in wanted:
                self._refused(name, ClientError("unavailable", f"grant provider failed: {err}"), request)
            return
        # A connection lost while a grant provider answered: the next one sends its own frame.
        still = [(name, entry, grant) for (name, entry), grant in zip(wanted, grants) if self._rooms.get(name) is entry and entry.request == request]
        if self._state != "connected" or not still:
            return
        personal = f"user:{self._info['user_id']}" if self._info else None
        name, entry, grant = still[0]
        try:
            if len(still) == 1 and entry.epoch is None and not entry.retry and name != personal:
                await self._request({"type": "join_room", "room": name, "id": request, **({"grant": grant} if grant else {})}, "room_joined")
            else:
                rooms = [{"room": n, **({"since": e.position()} if e.epoch is not None else {}), **({"grant": g} if g else {})} for n, e, g in still]
                await self._request({"type": "resume", "rooms": rooms, "id": request}, "resumed")
        except ClientError as err:
            for name, _, _ in still:
                self._refused(name, err, request)
        self._after_joins()
        for name, entry, grant in still:
            if grant is not None and callable(entry.grant) and self._rooms.get(name) is entry:
                self._schedule_grant(name, grant)

    def _schedule_grant(self, room: str, grant: str) -> None:
        """Renews a provider's grant in band (join_room again) at 80% of its life."""
        delay = refresh_delay(grant, time.monotonic(), time.monotonic(), GRANT_RENEW_AT, retry=False)
        if delay is None:
            return

        async def renew() -> None:
            entry = self._rooms.get(room)
            if entry is None or not callable(entry.grant):
                return
            try:
                fresh = await _resolve(entry.grant, "grant")
                await self._request({"type": "join_room", "room": room, "grant": fresh}, "room_joined")
            except Exception:  # noqa: BLE001 - not renewed: at its exp the server sends room_left grant_expired
                return
            self._schedule_grant(room, fresh)

        self._set_timer(f"grant:{room}", delay, lambda: self._spawn(renew()))

    # -- token refresh -------------------------------------------------------------------------

    def _schedule_refresh(self, retry: bool) -> None:
        delay = self._tokens.delay(retry)
        if delay is None:
            return
        generation = self._generation

        async def refresh() -> None:
            current = lambda: generation == self._generation  # noqa: E731
            try:
                await self._tokens.refresh(current, lambda token: self._request({"type": "refresh_token", "token": token}, "token_refreshed"))
            except Exception:  # noqa: BLE001 - at exp the server closes with 4401 and the reconnect asks for a new token
                if current():
                    self._schedule_refresh(retry=True)
                return
            if current():
                self._schedule_refresh(retry=False)

        self._set_timer("refresh", delay, lambda: self._spawn(refresh()))

    # -- requests ------------------------------------------------------------------------------

    def _next_id(self) -> str:
        self._seq += 1
        return str(self._seq)

    def _connected(self) -> bool:
        return self._ws is not None and self._state == "connected"

    def _socket_for(self, frame: str) -> Any:
        """The socket to write `frame` to; raises ClientError when it cannot go."""
        limit = (self._info or {}).get("max_message_size")
        # A code point is 1-4 bytes: the frame is encoded only when its length could pass the limit.
        if isinstance(limit, int) and (len(frame) > limit or (len(frame) * 4 > limit and len(frame.encode("utf-8")) > limit)):
            raise ClientError("message_too_big", f"the message is larger than max_message_size ({limit} bytes)")
        ws = self._ws
        if ws is None or self._state != "connected":
            raise ClientError("disconnected", "not connected")
        if self._trace is not None:
            self._trace("out", frame)
        return ws

    async def _transmit(self, frame: str) -> None:
        ws = self._socket_for(frame)
        try:
            await ws.send(frame)
        except ConnectionClosed:
            raise ClientError("disconnected", "the connection was lost") from None

    def _write_now(self, frame: str) -> None:
        """Starts a send's write: writes started in one order leave in that order (websockets
        writes an open socket's frame before its first suspension)."""
        ws = self._socket_for(frame)

        async def write() -> None:
            try:
                await ws.send(frame)
            except ConnectionClosed:
                pass  # the close keeps the send for its resend (or fails it): _down decides

        self._spawn(write())

    async def _request(self, message: dict[str, Any], until: str, timeout: float | None = None) -> dict[str, Any]:
        """Sends `message` with its id and waits for the reply of type `until` (or an error) with
        that id, at most `timeout` s (default `request_timeout`)."""
        wait = self._request_timeout if timeout is None else timeout
        request = message.get("id") or self._next_id()
        frame = json.dumps({**message, "id": request}, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[request] = (future, until)
        try:
            await self._transmit(frame)
            return await asyncio.wait_for(future, wait)
        except asyncio.TimeoutError:
            raise ClientError("timeout", f"no reply to {message['type']} within {wait:g} s") from None
        finally:
            if self._pending.get(request, (None,))[0] is future:
                del self._pending[request]

    def _settle(self, reply: dict[str, Any]) -> bool:
        """Settles the request or send a reply answers; False when it answers none."""
        return self._settle_request(reply) or self._sends.settle(reply)

    def _settle_request(self, reply: dict[str, Any]) -> bool:
        request = reply.get("id")
        entry = self._pending.get(request) if isinstance(request, str) else None
        if entry is None:
            return False
        future, until = entry
        kind = reply.get("type")
        if kind != until and kind != "error":
            return False
        # A resume's refusal of one room names the room; only a refusal of the whole frame settles it.
        if kind == "error" and until == "resumed" and "room" in reply:
            return False
        del self._pending[request]  # type: ignore[arg-type]
        if not future.done():
            if kind == "error":
                future.set_exception(_reply_error(reply))
            else:
                future.set_result(reply)
        return True

    # -- plumbing ------------------------------------------------------------------------------

    def _emit(self, event: str, arg: Any) -> None:
        for fn in list(self._listeners[event]):
            _call(fn, arg)

    def _spawn(self, coroutine: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(_finished(self._tasks))

    def _set_timer(self, name: str, delay: float, fn: Callable[[], None]) -> None:
        self._cancel_timer(name)

        def fire() -> None:
            self._timers.pop(name, None)
            fn()

        self._timers[name] = asyncio.get_running_loop().call_later(delay, fire)

    def _cancel_timer(self, name: str) -> None:
        handle = self._timers.pop(name, None)
        if handle is not None:
            handle.cancel()

    def _cancel_timers(self) -> None:
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()


# Tasks of coroutine handlers: referenced until they finish (the loop keeps only weak references).
_HANDLER_TASKS: set[asyncio.Task[Any]] = set()


def _finished(tasks: set[asyncio.Task[Any]]) -> Callable[[asyncio.Task[Any]], None]:
    def done(task: asyncio.Task[Any]) -> None:
        tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            task.get_loop().call_exception_handler({"message": "wsedge client task failed", "exception": task.exception(), "task": task})

    return done


def _call(fn: Callable[[Any], Any] | None, arg: Any) -> None:
    """An app callback that raises must not break the client: the error goes to the loop's handler."""
    if fn is None:
        return
    loop = asyncio.get_running_loop()
    try:
        result = fn(arg)
        if inspect.isawaitable(result):
            task = asyncio.ensure_future(result)
            _HANDLER_TASKS.add(task)
            task.add_done_callback(_finished(_HANDLER_TASKS))
    except Exception as err:  # noqa: BLE001
        loop.call_exception_handler({"message": f"wsedge handler {getattr(fn, '__name__', fn)!r} failed", "exception": err})
