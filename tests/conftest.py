"""Shared fixtures: a real daemon process on a temporary HOOKD_HOME, and ways to talk to it."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHELL_CLIENT = ROOT / "clients" / "shell" / "hookd-emit"


def pytest_report_header(config: pytest.Config) -> str:
    """The real Claude Code CLI the suite runs (tests/claude_cli.py), or why it does not."""
    from claude_cli import header

    return header()


def clean_env(home: Path, **extra: str) -> dict[str, str]:
    """The environment for a daemon or client in a test: only HOOKD_HOME decides the paths."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOOKD_")}
    env["HOOKD_HOME"] = str(home)
    env.update(extra)
    return env


def wait_for(predicate: Callable[[], object], timeout: float = 60.0) -> bool:
    """Whether ``predicate`` came true within ``timeout`` (polled; asked once more at the end)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return bool(predicate())


def read_replies(s: socket.socket, n: int) -> list[dict]:
    """Up to ``n`` newline-terminated JSON replies from ``s`` (fewer if it closes first)."""
    buf = b""
    while buf.count(b"\n") < n:
        chunk = s.recv(65536)
        if not chunk:
            break
        buf += chunk
    return [json.loads(x) for x in buf.splitlines()]


def wait_until(check: Callable[[], object], timeout: float = 60.0, what: str = "a condition") -> object:
    """``check``'s first true value; AssertionError naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)


class Daemon:
    """``hookd run`` as a real subprocess; its stderr is collected line by line."""

    #: What runs after ``python``; a test may run the daemon through another entry point.
    command: tuple[str, ...] = ("-m", "hookd", "run")

    def __init__(self, home: Path, *args: str, env: dict[str, str] | None = None, wrap: tuple[str, ...] = ()) -> None:
        self.home = home
        self.args = args
        self.wrap = wrap  # a command to run the daemon under (prlimit ...)
        self.env = env or clean_env(home)
        self.proc: subprocess.Popen[str] | None = None
        self.log: list[str] = []
        self._ready = threading.Event()
        self._exited = threading.Event()
        #: Put before ``python -m hookd run`` (e.g. systemd-socket-activate and its options).
        self.prefix: list[str] = []
        #: Descriptors the daemon inherits (a listening socket, as systemd passes it).
        self.pass_fds: tuple[int, ...] = ()

    @property
    def socket(self) -> Path:
        return self.home / "hookd.sock"

    @property
    def db_path(self) -> Path:
        return self.home / "events.db"

    def start(self, wait: bool = True) -> Daemon:
        self.log = []
        self._ready.clear()
        self._exited.clear()
        self.proc = subprocess.Popen(
            [*self.prefix, *self.wrap, sys.executable, *self.command, *self.args],
            env=self.env,
            pass_fds=self.pass_fds,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        threading.Thread(target=self._pump, args=(self.proc,), daemon=True).start()
        if wait:
            self.wait_ready()
        return self

    def _pump(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            self.log.append(line.rstrip("\n"))
            if ": ready:" in line:
                self._ready.set()
        proc.stderr.close()
        self._exited.set()

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not self._ready.wait(0.05):
            assert self.proc is not None
            if self.proc.poll() is not None:
                self._exited.wait(5)
                raise AssertionError(f"hookd exited {self.proc.returncode} before ready:\n" + self.logtext)
            if time.monotonic() > deadline:
                raise AssertionError("hookd not ready in time:\n" + self.logtext)

    def wait_output_closed(self, timeout: float = 30) -> bool:
        """Whether the daemon and its writer have both exited: the stderr pipe they share is
        closed (after a kill -9 of the daemon, its writer finishes on its own)."""
        return self._exited.wait(timeout)

    @property
    def logtext(self) -> str:
        return "\n".join(self.log)

    def send_signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        """Send ``sig`` and wait for the exit status."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        code = self.proc.wait(timeout)
        self._exited.wait(5)
        return code

    def query(self, sql: str, params: tuple = ()) -> list[tuple]:
        db = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True)
        try:
            return db.execute(sql, params).fetchall()
        finally:
            db.close()

    def count(self, where: str = "1") -> int:
        return self.query(f"SELECT count(*) FROM events WHERE {where}")[0][0]

    def wait_count(self, n: int, timeout: float = 60, where: str = "1") -> int:
        deadline = time.monotonic() + timeout
        got = -1
        while time.monotonic() < deadline:
            try:
                got = self.count(where)
            except sqlite3.OperationalError:
                got = -1
            if got >= n:
                return got
            time.sleep(0.02)
        return got

    def send(self, data: bytes) -> None:
        """Raw bytes over one connection, then close."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(str(self.socket))
            s.sendall(data)

    def mirror_lines(self) -> list[bytes]:
        out: list[bytes] = []
        for p in sorted((self.home / "mirror").glob("*.jsonl*")):  # plain and compressed days
            out.extend((gzip.decompress(p.read_bytes()) if p.suffix == ".gz" else p.read_bytes()).splitlines())
        return out

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def settle(daemon: Daemon, events: int, rejected: int = 0) -> None:
    """Wait for ``events``, stop the daemon (it commits all it read) and check the exact counts."""
    assert daemon.wait_count(events) >= events
    assert daemon.stop() == 0, daemon.logtext
    assert daemon.count() == events
    assert daemon.query("SELECT count(*) FROM rejected")[0][0] == rejected
    assert len(daemon.mirror_lines()) == events


def stored(daemon: Daemon) -> list[tuple[str, str | None, dict]]:
    """(type, session, data parsed) of every stored event, in eid order."""
    rows = daemon.query("SELECT type, session, data FROM events ORDER BY eid")
    return [(t, s, json.loads(d)) for t, s, d in rows]


@pytest.fixture
def home(tmp_path: Path) -> Path:
    # Unix socket paths are limited to 108 bytes; pytest's tmp_path can be long.
    d = Path(os.environ.get("HOOKD_TEST_TMP", "/tmp")) / f"hk-{os.getpid()}-{time.monotonic_ns() % 10**9}"
    d.mkdir(mode=0o700)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def daemon(home: Path) -> Iterator[Daemon]:
    d = Daemon(home).start()
    yield d
    d.kill()


@pytest.fixture
def socat() -> str:
    path = shutil.which("socat")
    if path is None:
        pytest.skip("socat is not installed: `./dev test` installs it with apt-get when run as root")
    return path
