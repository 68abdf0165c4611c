"""Publish from a Python backend through a node's server API (the internal port, README "Server API
for backends"). Standard library only.

    from wsedge import Publisher, WsEdgeError

    pub = Publisher("http://ws-edge-1:9090", api_key=os.environ["PUBLISH_API_KEY"])
    pub.publish("project:42", "task.updated", {"task_id": 7, "changes": {"title": "Ship it"}}, sender="alice")
    pub.publish_once(f"task-7-v{version}", "project:42", "task.updated", {...})  # sequenced rooms: at most once per key
    pub.publish_many(rooms=["project:42", "task:7"], user_ids=[7, 9], type="task.assigned", data={...},
                     exclude_connection=tab_id)  # one call, one result per target

Every call is one request (a few retries aside) and returns the node's JSON answer as a dict. The
routes and their checks are those of src/api.ts:

    POST /api/v1/publish       publish, publish_once, publish_to_user, publish_many, send_to_connection
    POST /api/v1/publish/batch publish_batch
    POST /api/v1/disconnect    disconnect
    POST /api/v1/subscribe     subscribe
    POST /api/v1/unsubscribe   unsubscribe
    POST /api/v1/revoke        revoke_user, revoke_token
    GET  /api/v1/rooms/<room>/history | presence | presence_stats

Arguments are checked before anything is sent, with the node's own rules: a TypeError for a wrong
type, a ValueError for a bad value. A refusal by the node raises WsEdgeError carrying the HTTP
status and the catalogue code of the answer's `error` field (`invalid_room`, `unauthorized`,
`unavailable`, ...): match on `code`, never on `reason`.

Retries: a 503 (the node's "nothing was done, retry": Redis unreachable for a sequenced room, an
access change or presence) and a request that never reached the node whole (connection refused,
name not resolved, no connection within the timeout) are tried again, `retries` times, after a full-jitter exponential backoff. A request
whose outcome is unknown (a timeout or a connection lost after it was sent) is retried only when
repeating it cannot do harm: reads, disconnect/subscribe/unsubscribe, and publishes with an
idempotency key. A plain publish is at most once: it raises WsEdgeError(code="timeout" or
"connection_lost") instead, and the event may or may not have gone out. 4xx answers are never
retried.
"""

from __future__ import annotations

import http.client
import json
import random
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Callable, Iterable, Mapping, Sequence

from . import _rules


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A 3xx is answered as it is (an error), never followed."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: D401 - urllib's hook
        return None

__all__ = ["Publisher", "WsEdgeError"]

# An HTTP status the node answers with "nothing was done, try again".
_RETRY_STATUSES = frozenset({503})

# The node's limits for one request (src/publish.ts): targets of a publish, or of a batch's
# publications together, and publications in a batch.
MAX_TARGETS = 1000
MAX_PUBLICATIONS = 100


class WsEdgeError(Exception):
    """A request the node refused, or one that could not be completed.

    `status`: the HTTP status, or None when no answer came. `code`: the answer's `error` field (the
    node's catalogue: `unauthorized`, `invalid_room`, `invalid_idempotency_key`, `unavailable`,
    `no_history`, ...), or the publisher's own for requests without an answer: `unreachable` (never
    reached the node), `timeout` and `connection_lost` (sent; the outcome is unknown),
    `invalid_response` (an answer that is not the node's JSON). `reason`: human text, may change.
    """

    def __init__(self, status: int | None, code: str, reason: str | None = None, *, body: Any = None, attempts: int = 1, retry_after: float | None = None):
        self.status = status
        self.code = code
        self.reason = reason
        self.body = body
        self.attempts = attempts
        self.retry_after = retry_after
        where = f"HTTP {status}" if status is not None else "no answer"
        super().__init__(f"{where} {code}" + (f": {reason}" if reason else "") + (f" (after {attempts} attempts)" if attempts > 1 else ""))

    @property
    def retryable(self) -> bool:
        """Whether the same call may succeed later: a 503, or no answer at all."""
        return self.status is None or self.status in _RETRY_STATUSES


class _Unsent(Exception):
    """The request never reached the node: always safe to send again."""


class _Unknown(Exception):
    """The request may have reached the node: its outcome is unknown."""

    def __init__(self, code: str, reason: str):
        super().__init__(reason)
        self.code = code


def _sequence(what: str, value: Any) -> Sequence[Any]:
    """A list or tuple (or other iterable) of items; a str or a mapping is refused, not iterated."""
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Iterable):
        raise TypeError(f"{what} must be a list of items, not {type(value).__name__}")
    return list(value)


def _json_body(body: Mapping[str, Any]) -> bytes:
    try:
        # allow_nan=False: NaN and Infinity are no JSON; the node would refuse the body (invalid_json).
        return json.dumps(body, allow_nan=False, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    except (TypeError, ValueError) as err:
        raise ValueError(f"data is not JSON-serializable: {err}") from None


def _api_base(url: Any, name: str, what: str) -> str:
    """``http(s)://host:port`` (a trailing ``/api/v1`` accepted) as the API's base URL."""
    if not isinstance(url, str):
        raise TypeError(f"{name} must be a str")
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ValueError(f"{name} must be http(s)://host:port of {what}, not {url!r}")
    base = url.rstrip("/")
    return base if base.endswith("/api/v1") else base + "/api/v1"


class Publisher:
    """A node's server API. Thread-safe: every call is its own HTTP request (no shared connection).

    `url`: the internal port's base URL, e.g. ``http://ws-edge-1:9090`` (a trailing ``/api/v1`` is
    accepted too). `api_key`: the nodes' PUBLISH_API_KEY. `timeout`: seconds per attempt (connect,
    and each read). `retries`: further attempts after a retryable failure (see the module's doc).
    `backoff`: (base, cap) seconds of the full-jitter delay ``random(0, min(cap, base * 2**n))``.
    `publish_url`: a node's PUBLISH_PORT (the publish thread, answered off the node's socket loop):
    publishes and batches go there, every other call to `url`; a publish that cannot reach it
    (refused, unreachable: nothing was sent) is retried on `url`.
    """

    def __init__(
        self,
        url: str,
        api_key: str,
        timeout: float = 5.0,
        retries: int = 3,
        *,
        backoff: tuple[float, float] = (0.25, 5.0),
        opener: urllib.request.OpenerDirector | None = None,
        sleep: Callable[[float], None] = time.sleep,
        random: Callable[[], float] = random.random,
        publish_url: str | None = None,
    ):
        self._base = _api_base(url, "url", "a node's internal port")
        self._publish_base = self._base if publish_url is None else _api_base(publish_url, "publish_url", "a node's PUBLISH_PORT")
        if not isinstance(api_key, str):
            raise TypeError("api_key must be a str")
        if api_key == "" or any(c in api_key for c in "\r\n"):
            raise ValueError("api_key must be a non-empty single-line string (the nodes' PUBLISH_API_KEY)")
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
            raise ValueError("timeout must be a positive number of seconds")
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ValueError("retries must be a non-negative int")
        self._key = api_key
        self._timeout = float(timeout)
        self._retries = retries
        self._backoff = backoff
        # No redirects (urllib would carry the bearer key to wherever one points) and no proxy from the
        # environment (the key would cross it): pass an opener to choose otherwise.
        self._opener = opener or urllib.request.build_opener(_NoRedirects(), urllib.request.ProxyHandler({}))
        self._sleep = sleep
        self._random = random

    def __repr__(self) -> str:
        return f"Publisher({self._base!r})"

    # -- publishing ---------------------------------------------------------------------------

    def publish(self, room: str, type: str, data: Any = None, sender: str | None = None, *, idempotency_key: str | None = None, exclude_connection: str | None = None) -> dict[str, Any]:
        """Publishes one event to every member of `room`, on every node.

        Answer: ``{"status": "published", "room": ...}``; in a sequenced room (WS_HISTORY_ROOMS) also
        ``epoch`` and ``offset``, the event's position (and it means Redis numbered and kept it).
        With `idempotency_key` see publish_once. `exclude_connection`: a connection id (from its
        `connected` message) that does not receive the event, e.g. the tab of the user the backend
        posts for; one that names no live connection excludes nobody. A task event for
        ``project:<id>`` and ``task:<id>`` is one publish_many.
        """
        _rules.check_room(room)
        return self._publish({"room": room}, type, data, sender, idempotency_key, exclude_connection)

    def publish_once(self, idempotency_key: str, room: str, type: str, data: Any = None, sender: str | None = None, *, exclude_connection: str | None = None) -> dict[str, Any]:
        """Publishes to a sequenced room at most once per `idempotency_key` (1-128 printable ASCII
        characters, no spaces) within 5 minutes, like ws-edge/publisher's publishOnce: a repeat (a
        retry after a timeout, a job run twice) publishes nothing and answers the first publish's
        position with ``"duplicate": True``. The answer always has ``duplicate`` (False for the
        first). A plain room (not in WS_HISTORY_ROOMS) is refused: WsEdgeError(400,
        "invalid_idempotency_key"). Retried on timeouts too, since a repeat is harmless.

        Derive the key from what happened, not from the attempt: ``f"task-{task.id}-v{task.version}"``.
        """
        _rules.check_idempotency_key(idempotency_key)
        _rules.check_room(room)
        answer = self._publish({"room": room}, type, data, sender, idempotency_key, exclude_connection)
        answer.setdefault("duplicate", False)
        return answer

    def publish_to_user(self, user_id: str | int, type: str, data: Any = None, sender: str | None = None, *, idempotency_key: str | None = None, exclude_connection: str | None = None) -> dict[str, Any]:
        """Publishes to every connection of the user, on every node: their personal room
        ``user:<id>`` (the envelope's `room`). The answer's ``connections`` is how many connections
        the user holds on every node (the excluded one not counted). `idempotency_key` as for
        publish_once, when the personal rooms are sequenced. An int id is sent as its decimal string."""
        user = _rules.coerce_user_id(user_id)
        answer = self._publish({"user_id": user}, type, data, sender, idempotency_key, exclude_connection)
        if idempotency_key is not None:
            answer.setdefault("duplicate", False)
        return answer

    def send_to_connection(self, connection_id: str, type: str, data: Any = None, sender: str | None = None) -> dict[str, Any]:
        """Sends to one connection, wherever it lives (`connection_id` from its `connected`
        message); it arrives with ``"room": null``. A 200 is no delivery receipt: a connection id
        that no longer exists is answered 200 too."""
        _rules.check_connection_id(connection_id)
        return self._publish({"connection_id": connection_id}, type, data, sender, None)

    def publish_many(
        self,
        *,
        type: str,
        rooms: Iterable[str] = (),
        user_ids: Iterable[str | int] = (),
        data: Any = None,
        sender: str | None = None,
        idempotency_key: str | None = None,
        exclude_connection: str | None = None,
    ) -> dict[str, Any]:
        """Publishes one event to every room in `rooms` and every user in `user_ids` (their personal
        rooms ``user:<id>``) in one request: 1 to 1,000 targets together, none named twice. The node
        encodes the envelope once per room and sends every Redis publish before awaiting any.

        Answer: ``{"status": "published" | "partial", "results": [...]}``, one result per target,
        rooms first, in the order given: ``{"status": "published", "room": ...}`` (with ``epoch``
        and ``offset`` in a sequenced room), ``{"status": "published", "user_id": ...,
        "connections": n}``, or for a target that failed (a sequenced room whose history was
        unreachable) ``{"room": ..., "error": "unavailable", "reason": ...}``; ``partial`` when
        any did. When every target failed nothing was published: WsEdgeError(503, "unavailable"),
        retried. `idempotency_key`: every target must be sequenced (else WsEdgeError(400,
        "invalid_idempotency_key")); each room keeps it, so a repeat answers ``"duplicate": true``
        per target. `exclude_connection` as for publish. Int user ids are sent as decimal strings.
        """
        room_list = [_rules.check_room(r) for r in _sequence("rooms", rooms)]
        user_list = [_rules.coerce_user_id(u, "user id") for u in _sequence("user_ids", user_ids)]
        count = len(room_list) + len(user_list)
        if count == 0:
            raise ValueError("publish_many needs at least one room or user id")
        if count > MAX_TARGETS:
            raise ValueError(f"publish_many takes at most {MAX_TARGETS} targets, not {count}")
        named = room_list + [f"user:{u}" for u in user_list]
        if len(set(named)) != count:
            twice = sorted({n for n in named if named.count(n) > 1})
            raise ValueError(f"targets named twice (a user id names the room user:<id>): {twice}")
        target: dict[str, Any] = {}
        if room_list:
            target["rooms"] = room_list
        if user_list:
            target["user_ids"] = user_list
        return self._publish(target, type, data, sender, idempotency_key, exclude_connection)

    def publish_batch(self, publications: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Sends up to 100 publish bodies in one request (``POST /api/v1/publish/batch``), their
        targets together at most 1,000. Each is a mapping with the node's field names, as POST
        /api/v1/publish takes it: one of ``room``, ``user_id``, ``connection_id``, or ``rooms``
        and/or ``user_ids``; ``type``; optionally ``data``, ``sender``, ``idempotency_key``,
        ``exclude_connection``.

        Returns one dict per publication, in order: what a publish of it answers, or its own
        refusal ``{"error": code, "reason": ...}`` (`invalid_room`, `unavailable`, ...): a bad
        publication does not stop the others, so check each for ``"error"``. Only the batch's
        shape is checked here (the node checks each publication); a malformed batch is
        WsEdgeError(400, "invalid_batch" or "too_many_targets"). An unknown outcome (a timeout) is
        retried only when every publication has an idempotency_key.
        """
        items = list(_sequence("publications", publications))
        if not 1 <= len(items) <= MAX_PUBLICATIONS:
            raise ValueError(f"a batch holds 1 to {MAX_PUBLICATIONS} publications, not {len(items)}")
        for item in items:
            if not isinstance(item, Mapping):
                raise TypeError(f"each publication must be a mapping, not {type(item).__name__}")
            _rules.check_data(item.get("data"), bounded=False)
        body = {"publications": [dict(item) for item in items]}
        idempotent = all(item.get("idempotency_key") is not None for item in items)
        answer = self._request("POST", "publish/batch", body, idempotent=idempotent)
        results = answer.get("results")
        if not isinstance(results, list) or len(results) != len(items):
            raise WsEdgeError(200, "invalid_response", f"a batch answer without one result per publication: {str(answer)[:200]}", body=answer)
        return results

    def _publish(self, target: dict[str, Any], type: str, data: Any, sender: str | None, key: str | None, exclude: str | None = None) -> dict[str, Any]:
        _rules.check_type(type)
        _rules.check_sender(sender)
        _rules.check_data(data, bounded=False)
        body = {**target, "type": type, "data": data, "sender": sender}
        if key is not None:
            body["idempotency_key"] = _rules.check_idempotency_key(key)
        if exclude is not None:
            body["exclude_connection"] = _rules.check_connection_id(exclude)
        # With a key a repeat is harmless; without one an unknown outcome must not be sent again.
        return self._request("POST", "publish", body, idempotent=key is not None)

    # -- users and access ---------------------------------------------------------------------

    def disconnect(self, user_id: str | int, code: int = 4403, reason: str = "disconnected") -> dict[str, Any]:
        """Closes every connection of the user on every node with `code` (4000-4999; 4403: the
        client does not reconnect) and `reason` (one line, at most 123 bytes). A user whose token is
        still valid can reconnect: revoke access in the product too."""
        user = _rules.coerce_user_id(user_id)
        _rules.check_close(code, reason)
        return self._request("POST", "disconnect", {"user_id": user, "code": code, "reason": reason}, idempotent=True)

    def subscribe(self, user_id: str | int, room: str) -> dict[str, Any]:
        """Joins every connection of the user to `room` (project:, channel: or task:), on every
        node, without an access check. 503 `unavailable` (retried) while the node cannot reach Redis."""
        user = _rules.coerce_user_id(user_id)
        _rules.check_access_room(room)
        return self._request("POST", "subscribe", {"user_id": user, "room": room}, idempotent=True)

    def unsubscribe(self, user_id: str | int, room: str, connection_id: str | None = None) -> dict[str, Any]:
        """Takes `room` away from every connection of the user (or the one connection): each gets
        ``room_left`` with ``reason: "access_revoked"`` and keeps its connection."""
        user = _rules.coerce_user_id(user_id)
        _rules.check_access_room(room)
        body: dict[str, Any] = {"user_id": user, "room": room}
        if connection_id is not None:
            body["connection_id"] = _rules.check_connection_id(connection_id)
        return self._request("POST", "unsubscribe", body, idempotent=True)

    def revoke_user(self, user_id: str | int, issued_before: Any) -> dict[str, Any]:
        """Revokes every token of the user issued before `issued_before` (epoch seconds like `iat`,
        an RFC 3339 str, or an aware datetime; at most 60 s ahead of the node's clock): refused at
        connect, at refresh_token and for room grants, and the user's live connections holding one
        close with 4401 ``token revoked`` on every node (the official clients then ask their token
        provider for a new token). Kept in Redis until no such token can be accepted
        (JWT_MAX_LIFETIME after `issued_before`), so it survives node restarts. Answer:
        ``{"status": "revoked", "user_id", "issued_before", "expires_at"}`` (ISO 8601). Refusals:
        400 `invalid_issued_before`, 503 `revocations_full` (WS_REVOCATIONS_MAX kept), 503
        `unavailable` (Redis unreachable; nothing revoked). Repeating it is harmless (retried)."""
        user = _rules.coerce_user_id(user_id)
        before = _rules.check_issued_before(issued_before)
        return self._request("POST", "revoke", {"user_id": user, "issued_before": before}, idempotent=True)

    def revoke_token(self, jti: str) -> dict[str, Any]:
        """Revokes the one token whose `jti` claim is `jti` (1-128 printable ASCII, no spaces), as
        revoke_user; kept JWT_MAX_LIFETIME from now. Answer: ``{"status": "revoked", "jti", "expires_at"}``."""
        return self._request("POST", "revoke", {"jti": _rules.check_jti(jti)}, idempotent=True)

    def users_status(self, user_ids: Iterable[str | int]) -> list[dict[str, Any]]:
        """Whether each user is connected anywhere: ``[{"user_id", "online", "connections",
        "last_seen"}]`` in the order asked (1 to 500 ids, none twice). ``last_seen`` (ISO 8601) is
        when an offline user's last connection closed; None while online or never seen. 503
        `unavailable` (retried) while the node cannot reach Redis."""
        users = [_rules.coerce_user_id(u) for u in user_ids]
        if not 1 <= len(users) <= 500 or len(set(users)) != len(users):
            raise ValueError("user_ids: 1 to 500 user ids, none twice")
        return self._request("POST", "users/status", {"user_ids": users}, idempotent=True)["users"]

    # -- rooms --------------------------------------------------------------------------------

    def history(self, room: str, since: Any = None, limit: int | None = None, reverse: bool = False) -> dict[str, Any]:
        """A sequenced room's position and kept events: ``{"type": "room_history", "room", "epoch",
        "offset", "data": {"events": [...]}}``, the events as clients received them. `since`
        ({"epoch", "offset"} or (epoch, offset)): the events after it (another epoch than the
        room's: none); `reverse`: newest first, before it. To load a room's state, read the
        position first (``limit=1, reverse=True``), load, and let the client join with that position.
        400 `no_history` for a plain room."""
        _rules.check_room(room)
        position = _rules.check_position(since)
        count = _rules.check_limit(limit)
        if not isinstance(reverse, bool):
            raise TypeError("reverse must be a bool")
        query: dict[str, str] = {}
        if position is not None:
            query["since_epoch"] = position["epoch"]
            query["since_offset"] = str(position["offset"])
        if count is not None:
            query["limit"] = str(count)
        if reverse:
            query["reverse"] = "true"
        return self._request("GET", self._room_path(room, "history"), None, query=query)

    def presence(self, room: str) -> dict[str, Any]:
        """Who is in a presence room (WS_PRESENCE_ROOMS): ``{"type": "presence", "room", "data":
        {"users": [{"user_id", "username", "connections"}], "count", "truncated", "version"}}``, at
        most 1,000 users listed. 400 `no_presence` for another room or a personal one."""
        _rules.check_room(room)
        return self._request("GET", self._room_path(room, "presence"), None)

    def presence_stats(self, room: str) -> dict[str, Any]:
        """``{"type": "presence_stats", "room", "data": {"users", "connections", "version"}}``: cheap for any size."""
        _rules.check_room(room)
        return self._request("GET", self._room_path(room, "presence_stats"), None)

    @staticmethod
    def _room_path(room: str, endpoint: str) -> str:
        return f"rooms/{urllib.parse.quote(room, safe='')}/{endpoint}"

    # -- any route ----------------------------------------------------------------------------

    def post(self, endpoint: str, body: Mapping[str, Any], *, idempotent: bool = False) -> dict[str, Any]:
        """POST /api/v1/<endpoint> with `body` as it is, unchecked: for a field or route this class
        does not wrap yet. Same auth, errors and retries; `idempotent`: whether a request whose
        outcome is unknown may be sent again."""
        if not isinstance(endpoint, str) or not endpoint or endpoint.startswith("/"):
            raise ValueError("endpoint is a path below /api/v1, such as 'publish'")
        if not isinstance(body, Mapping):
            raise TypeError("body must be a mapping")
        return self._request("POST", endpoint, body, idempotent=idempotent)

    # -- transport ----------------------------------------------------------------------------

    def _request(self, method: str, path: str, body: Mapping[str, Any] | None, *, query: Mapping[str, str] | None = None, idempotent: bool | None = None) -> dict[str, Any]:
        """One call with its retries. GETs are idempotent."""
        if idempotent is None:
            idempotent = method == "GET"
        base = self._publish_base if path in ("publish", "publish/batch") else self._base
        url = f"{base}/{path}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
        data = None if body is None else _json_body(body)
        attempt = 0
        while True:
            attempt += 1
            retry_after: float | None = None
            try:
                return self._once(method, url, data)
            except WsEdgeError as err:
                err.attempts = attempt
                if err.status not in _RETRY_STATUSES or attempt > self._retries:
                    raise
                retry_after = err.retry_after
            except _Unsent as err:
                if attempt > self._retries:
                    raise WsEdgeError(None, "unreachable", str(err), attempts=attempt) from None
                # PUBLISH_PORT not answering (its thread down, the node restarting): the internal port publishes too.
                url = url.replace(self._publish_base, self._base, 1)
            except _Unknown as err:
                if not idempotent or attempt > self._retries:
                    raise WsEdgeError(None, err.code, f"{err}; the request may or may not have been carried out", attempts=attempt) from None
            base, cap = self._backoff
            delay = self._random() * min(cap, base * 2 ** (attempt - 1))
            if retry_after is not None:
                delay = max(delay, min(retry_after, cap))
            self._sleep(delay)

    def _once(self, method: str, url: str, data: bytes | None) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {self._key}", "Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(url, data=data, headers=headers, method=method)
        try:
            with self._opener.open(request, timeout=self._timeout) as response:
                status, raw = response.status, response.read()
        except urllib.error.HTTPError as err:
            with err:
                status, raw = err.code, err.read()
            raise self._refusal(status, raw, err.headers.get("Retry-After")) from None
        except urllib.error.URLError as err:
            # urllib wraps what fails while connecting and sending the request: the node cannot
            # have acted on a request it did not receive whole.
            raise _Unsent(f"cannot reach the node: {err.reason}") from None
        except (OSError, http.client.HTTPException) as err:
            # Raised while waiting for or reading the answer (socket.timeout, RemoteDisconnected,
            # ConnectionResetError, IncompleteRead): the request went out, its outcome is unknown.
            if isinstance(err, (TimeoutError, socket.timeout)):
                raise _Unknown("timeout", f"no answer within {self._timeout:g} s") from None
            raise _Unknown("connection_lost", f"the connection failed before the answer: {err!r}") from None
        try:
            answer = json.loads(raw)
        except ValueError:
            raise WsEdgeError(status, "invalid_response", f"not JSON: {raw[:200]!r}") from None
        if not isinstance(answer, dict):
            raise WsEdgeError(status, "invalid_response", f"not a JSON object: {raw[:200]!r}")
        return answer

    @staticmethod
    def _refusal(status: int, raw: bytes, retry_after: str | None) -> WsEdgeError:
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        if isinstance(body, dict) and isinstance(body.get("error"), str):
            err = WsEdgeError(status, body["error"], body.get("reason"), body=body)
        else:
            # Not the node's answer (a proxy's error page, say): the status is all there is.
            err = WsEdgeError(status, f"http_{status}", raw[:200].decode("utf-8", "replace") or None, body=body)
        if retry_after is not None and retry_after.strip().isdigit():
            err.retry_after = float(retry_after)
        return err
