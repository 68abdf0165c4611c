"""Real processes for the suites: ws-edge nodes (`node dist/cli.js serve`) and redis-server, on free
loopback ports, started and awaited by what they print (the node's `start` log line, Redis's
"Ready to accept connections"), then /readyz. Nothing here sleeps for a fixed time: every wait is
on an event with a deadline, and a deadline that passes fails with the process's output.

Importing this module puts sdk/python on sys.path, so the suites test this checkout's `wsedge`.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

SDK = Path(__file__).resolve().parents[1]
REPO = SDK.parents[1]
if str(SDK) not in sys.path:
    sys.path.insert(0, str(SDK))

SECRET = "python-sdk-suite-jwt-secret-0123456789abcdef-0123456789"
API_KEY = "python-sdk-suite-publish-api-key-0123456789abcdef"
# Generous: the suites share two cores with other test runs.
START_TIMEOUT = 60.0
WAIT = 30.0

WEBSOCKETS_HINT = (
    "the Python SDK's client tests need the websockets package (10.x or later) for this interpreter "
    f"({sys.executable}): on Debian/Ubuntu apt-get install python3-websockets (.ci/run does this), or pip install websockets"
)


def require_websockets() -> Any:
    """Imports websockets or fails (never skips) naming the package to install."""
    try:
        import websockets
    except ImportError as err:
        raise ImportError(WEBSOCKETS_HINT) from err
    return websockets


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _sockets(*ports: int) -> str:
    """The sockets on these ports (`ss`), for a node that could not listen on its old ports."""
    wanted = [f":{p}" for p in ports if p]
    if not wanted or shutil.which("ss") is None:
        return ""
    listing = subprocess.run(["ss", "-tanp"], capture_output=True, text=True).stdout.splitlines()
    lines = [line for line in listing if any(w + " " in line for w in wanted)]
    return "\nsockets on its ports:\n" + "\n".join(lines) if lines else ""


def _close_pipes(proc: subprocess.Popen[str]) -> None:
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            try:
                stream.close()
            except OSError:
                pass


class _Output:
    """Drains a process's pipes (a full pipe would block it) and keeps the last lines. `settled`
    is set by `on_line` returning True (the line awaited came) or by the end of the output (the
    process exited)."""

    def __init__(self, proc: subprocess.Popen[str], on_line: Callable[[str], bool]):
        self.lines: collections.deque[str] = collections.deque(maxlen=400)
        self.eof = threading.Event()
        self.settled = threading.Event()
        self._open = 2
        self._lock = threading.Lock()
        for stream in (proc.stdout, proc.stderr):
            threading.Thread(target=self._read, args=(stream, on_line), daemon=True).start()

    def _read(self, stream: Any, on_line: Callable[[str], bool]) -> None:
        for line in stream:
            self.lines.append(line.rstrip("\n"))
            if on_line(line):
                self.settled.set()
        with self._lock:
            self._open -= 1
            if self._open == 0:
                self.eof.set()
                self.settled.set()

    def tail(self, n: int = 60) -> str:
        return "\n".join(list(self.lines)[-n:])


def http_status(port: int, path: str) -> int:
    """GET http://127.0.0.1:<port><path>, closed with a reset: urllib's `Connection: close` makes
    the node close first, and the node's side would then sit in TIME_WAIT for 60 s, which keeps a
    uws-legacy node from listening on that port again (see test_restart.py)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        head = b""
        while b"\r\n" not in head:
            chunk = sock.recv(4096)
            if not chunk:
                break
            head += chunk
    parts = head.split(b" ", 2)
    if len(parts) < 2 or not parts[1].isdigit():
        raise OSError(f"not an HTTP answer: {head[:80]!r}")
    return int(parts[1])


class EdgeNode:
    """A ws-edge node, `node dist/cli.js serve`, configured through its environment. The first
    start takes free ports (PORT=0, INTERNAL_PORT=0, read back from the `start` log line);
    `start()` again after `kill()` or `stop()` reuses them, with the same environment."""

    def __init__(self, label: str, **env: str):
        self.label = label
        self.env = {
            "JWT_SECRET": SECRET,
            "PUBLISH_API_KEY": API_KEY,
            "HOST": "127.0.0.1",
            "INTERNAL_HOST": "127.0.0.1",
            "LOG_LEVEL": "info",
            "WS_DRAIN_TIMEOUT": "2",
            **env,
        }
        self.port = 0
        self.internal_port = 0
        self.proc: subprocess.Popen[str] | None = None
        self.output: _Output | None = None
        self.starts = 0

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/api/v1/ws/connect"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.internal_port}"

    def start(self) -> "EdgeNode":
        node = shutil.which("node")
        if node is None:
            raise RuntimeError("node is not on PATH: the suites run real ws-edge nodes")
        cli = REPO / "dist" / "cli.js"
        if not cli.exists():
            raise RuntimeError(f"{cli} is missing: run npm run build (npm test does)")
        env = {**os.environ, **self.env, "PORT": str(self.port), "INTERNAL_PORT": str(self.internal_port)}
        started = threading.Event()

        def on_line(line: str) -> bool:
            if not line.startswith("{"):
                return False
            try:
                entry = json.loads(line)
            except ValueError:
                return False
            if entry.get("event") != "start":
                return False
            self.port, self.internal_port = entry["port"], entry["internal_port"]
            started.set()
            return True

        self.proc = subprocess.Popen([node, str(cli), "serve"], cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.output = _Output(self.proc, on_line)
        self.output.settled.wait(START_TIMEOUT)
        if not started.is_set():
            self.kill()
            raise RuntimeError(f"{self.label} did not start within {START_TIMEOUT:g} s:\n{self.output.tail()}{_sockets(self.port, self.internal_port)}")
        self.starts += 1
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        last = ""
        while time.monotonic() < deadline:
            try:
                status = http_status(self.internal_port, "/readyz")
                if status == 200:
                    return
                last = f"/readyz answered {status}"
            except OSError as err:
                last = str(err)
            if self.output is not None and self.output.eof.wait(0.05):
                break
        raise RuntimeError(f"{self.label} is not ready ({last}):\n{self.output.tail() if self.output else ''}")

    def kill(self) -> None:
        """SIGKILL: the node vanishes without closing its sockets (clients see 1006)."""
        self._signal(signal.SIGKILL)

    def stop(self) -> None:
        """SIGTERM: the node drains (clients get 1012) and exits."""
        self._signal(signal.SIGTERM)

    def _signal(self, sig: int) -> None:
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(sig)
        try:
            proc.wait(timeout=START_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if self.output is not None:
            self.output.eof.wait(10)
        _close_pipes(proc)
        self.proc = None


class RedisServer:
    """redis-server on a free loopback port, without persistence."""

    def __init__(self) -> None:
        self.port = 0
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> "RedisServer":
        binary = shutil.which("redis-server") or ("/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server") else None)
        if binary is None:
            raise RuntimeError("redis-server not found: apt-get install redis-server (.ci/run does this); the restart suite needs it")
        for _ in range(5):
            self.port = free_port()
            self.proc = subprocess.Popen(
                [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            )
            output = _Output(self.proc, lambda line: "Ready to accept connections" in line)
            output.settled.wait(START_TIMEOUT)
            if not output.eof.is_set() and output.settled.is_set():
                return self
            self.stop()
            if "Address already in use" not in output.tail():
                raise RuntimeError(f"redis-server did not start:\n{output.tail()}")
        raise RuntimeError("redis-server found no free port")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()
            _close_pipes(self.proc)
        self.proc = None


class ChatBackend:
    """The repository's product backend for the backend-call suites, test/backend/chat_backend.py
    (standard library, SQLite in a temporary folder): the publish proxy (`deny` refused with code
    `spam`, anything else stored and answered with its `message_id`) and RPC (`messages.count`,
    `messages.mark_read`, `slow` waits `data.ms`, other methods refused with `unknown_method`).
    Started with this interpreter; awaited by its `listening <port>` line."""

    KEY = "python-sdk-suite-backend-key-0123456789abcdef"

    def __init__(self) -> None:
        self.port = 0
        self.proc: subprocess.Popen[str] | None = None
        self._dir: tempfile.TemporaryDirectory[str] | None = None

    def start(self) -> "ChatBackend":
        script = REPO / "test" / "backend" / "chat_backend.py"
        self._dir = tempfile.TemporaryDirectory(prefix="wsedge-chat-backend-")
        listening = threading.Event()

        def on_line(line: str) -> bool:
            if line.startswith("listening "):
                self.port = int(line.split()[1])
                listening.set()
                return True
            return False

        self.proc = subprocess.Popen([sys.executable, str(script), str(Path(self._dir.name) / "chat.db"), self.KEY], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        output = _Output(self.proc, on_line)
        output.settled.wait(START_TIMEOUT)
        if not listening.is_set():
            self.stop()
            raise RuntimeError(f"the chat backend did not start:\n{output.tail()}")
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def node_env(self, **extra: str) -> dict[str, str]:
        """A node's settings to call it: the publish proxy for channel:* rooms and RPC."""
        return {"WS_PUBLISH_PROXY_URL": f"{self.url}/publish", "WS_PUBLISH_PROXY_ROOMS": "channel:*", "WS_RPC_URL": f"{self.url}/rpc", "WS_BACKEND_KEY": self.KEY, **extra}

    def stop(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()
            _close_pipes(self.proc)
        self.proc = None
        if self._dir is not None:
            self._dir.cleanup()
        self._dir = None


class Relay:
    """A TCP relay to a node's public port on a port of its own (what a load balancer is to
    clients): bytes both ways, and when either side ends, a reset towards the node and a close
    towards the client. While the node is down, a connection is accepted and closed at once (the
    client sees a failed handshake, 1006).

    Why the reset: whichever side of a TCP connection closes first keeps it in TIME_WAIT for 60 s,
    and the uws-legacy build (the one Debian 12 loads) listens without SO_REUSEADDR, so a node whose
    own side closed client connections (a crash, or a drain) cannot listen on its port again for
    about a minute. A reset leaves no TIME_WAIT behind.

    `mute()` drops what the node sends on the connections open now (what the client sends still
    arrives: replies are lost, not requests); `cut()` ends them. New connections pass both ways."""

    def __init__(self, target: EdgeNode):
        self.target = target
        self.server: asyncio.AbstractServer | None = None
        self.port = 0
        self._links: dict[asyncio.StreamWriter, dict[str, Any]] = {}

    async def start(self) -> "Relay":
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/api/v1/ws/connect"

    def mute(self) -> int:
        """Replies on the open connections go nowhere from now on; returns how many connections."""
        for link in self._links.values():
            link["muted"] = True
        return len(self._links)

    def cut(self) -> None:
        for link in list(self._links.values()):
            for pipe in link["pipes"]:
                pipe.cancel()

    async def close(self) -> None:
        self.cut()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def _relay(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            node_reader, node_writer = await asyncio.open_connection("127.0.0.1", self.target.port)
        except OSError:
            client_writer.close()
            return
        link: dict[str, Any] = {"muted": False}
        link["pipes"] = [
            asyncio.ensure_future(_pipe(client_reader, node_writer, lambda: False)),
            asyncio.ensure_future(_pipe(node_reader, client_writer, lambda: link["muted"])),
        ]
        self._links[client_writer] = link
        try:
            await asyncio.wait(link["pipes"], return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._links.pop(client_writer, None)
            for pipe in link["pipes"]:
                pipe.cancel()
            try:
                node_writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass  # the node reset it already (a killed node with bytes unread): its socket is closed
            node_writer.transport.abort()
            client_writer.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, muted: Callable[[], bool]) -> None:
    try:
        while data := await reader.read(65536):
            if muted():
                continue
            writer.write(data)
            await writer.drain()
    except OSError:
        pass


class Watched:
    """Something a test waits on: `until(predicate)` wakes at each change, never on a timer."""

    def __init__(self) -> None:
        self._changed = asyncio.Event()

    def changed(self) -> None:
        self._changed.set()

    def describe(self) -> str:
        return ""

    async def until(self, predicate: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            self._changed.clear()
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out after {timeout:g} s waiting for {what}{self.describe()}")
            try:
                await asyncio.wait_for(self._changed.wait(), left)
            except asyncio.TimeoutError:
                pass


class Numbered(Watched):
    """What a room handler got: every event, and the numbered ones' `data.n`."""

    def __init__(self) -> None:
        super().__init__()
        self.got: list[int] = []
        self.events: list[dict[str, Any]] = []

    def __call__(self, event: dict[str, Any]) -> None:
        data = event.get("data")
        if isinstance(data, dict) and isinstance(data.get("n"), int):
            self.got.append(data["n"])
        self.events.append(event)
        self.changed()

    def describe(self) -> str:
        return f": got {len(self.got)} numbered events, the last {self.got[-5:]}"

    def loss(self, published: int) -> tuple[int, int]:
        """(lost, duplicated) of 1..published."""
        seen = set(self.got)
        lost = sum(1 for n in range(1, published + 1) if n not in seen)
        return lost, len(self.got) - len(seen)


class Frames(Watched):
    """A client's `trace`: every frame in and out, parsed, with its size in bytes."""

    def __init__(self) -> None:
        super().__init__()
        self.frames: list[tuple[str, dict[str, Any], int]] = []

    def __call__(self, direction: str, text: str) -> None:
        self.frames.append((direction, json.loads(text), len(text.encode("utf-8"))))
        self.changed()

    def of(self, direction: str, kind: str) -> list[dict[str, Any]]:
        return [message for d, message, _ in self.frames if d == direction and message.get("type") == kind]

    def describe(self) -> str:
        return f": the last frames {[(d, m.get('type')) for d, m, _ in self.frames[-8:]]}"


class Recorder(Watched):
    """Whatever a callback is called with (state changes, `left` reasons), in order."""

    def __init__(self) -> None:
        super().__init__()
        self.items: list[Any] = []

    def __call__(self, item: Any) -> None:
        self.items.append(item)
        self.changed()

    def describe(self) -> str:
        return f": got {self.items[-8:]}"


def report(label: str, published: int, numbered: Numbered, **extra: Any) -> None:
    lost, duplicated = numbered.loss(published)
    counts = collections.Counter(numbered.got)
    once = sum(1 for n in range(1, published + 1) if counts[n] == 1)
    details = "".join(f", {k} {v}" for k, v in extra.items())
    print(f"\n  [{label}] published {published}, received {len(numbered.got)}, exactly once {once}, lost {lost}, duplicated {duplicated}{details}", flush=True)
