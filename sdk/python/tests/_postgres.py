"""A real PostgreSQL for the outbox tests, as test/helpers/postgres.ts starts it: Debian's initdb
and postgres from /usr/lib/postgresql/<version>/bin (the newest there) in a temporary directory,
on a free loopback port, as the `postgres` user when the tests run as root (initdb refuses root).
A missing package fails the suite, never skips it."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from _support import free_port

NOT_INSTALLED = "PostgreSQL not found under /usr/lib/postgresql/<version>/bin: install it (apt-get install postgresql); .ci/run does this"


def _bin_dir() -> Path:
    root = Path("/usr/lib/postgresql")
    versions = sorted((p for p in root.glob("*") if (p / "bin" / "initdb").exists()), key=lambda p: float(p.name), reverse=True) if root.exists() else []
    if not versions:
        raise RuntimeError(NOT_INSTALLED)
    return versions[0] / "bin"


def _as_server_user(argv: list[str]) -> list[str]:
    return ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--", *argv] if os.getuid() == 0 else argv


class Postgres:
    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="wsedge-pg-"))
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> "Postgres":
        binary = _bin_dir()
        if os.getuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        data = self.dir / "data"
        subprocess.run(_as_server_user([str(binary / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync"]), check=True, capture_output=True, cwd=self.dir)
        self.port = free_port()
        argv = [str(binary / "postgres"), "-D", str(data), "-p", str(self.port), "-k", str(self.dir), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"]
        self.proc = subprocess.Popen(_as_server_user(argv), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=self.dir)
        import psycopg2  # Debian's python3-psycopg2

        deadline = time.monotonic() + 20
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited: {self.proc.stderr.read().decode() if self.proc.stderr else ''}")
            try:
                psycopg2.connect(self.url, connect_timeout=1).close()
                return self
            except psycopg2.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            self.proc.wait(timeout=20)
        shutil.rmtree(self.dir, ignore_errors=True)
