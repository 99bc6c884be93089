"""Who owns a database: ``<db>.daemon-lock``, held (flock) by the daemon writing it, or by an
offline command that rewrites it (``hookd vacuum``, ``hookd rebuild``), for its whole life.

Why a lock of its own, beside the socket's lock and the writer's: the socket's lock keeps a
second daemon off the same socket, not off the same database; a second daemon on another socket
with the same ``--db`` used to bind, accept events, then wait forever for the writer's lock.
The writer's lock cannot refuse either: a writer left finishing by a killed daemon holds it,
and the next daemon must wait for that one (docs/operations.md). This lock is never waited
for: whoever finds it taken refuses at once and names the holder, which the file says
(``pid``, then ``socket PATH`` or ``command NAME``, one per line).

The kernel drops the lock when its holder exits, however it exits; the file stays (an empty or
stale file means nothing: only the flock counts).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from hookd.errors import AlreadyRunning


def lock_path(db: Path) -> Path:
    return db.with_name(db.name + ".daemon-lock")


@dataclass(frozen=True)
class Holder:
    """What the lock file says about the process holding it."""

    pid: str  # "?" when it has not written its name yet (it writes right after taking the lock)
    socket: Path | None = None
    command: str | None = None

    def describe(self) -> str:
        if self.socket is not None:
            return f"hookd pid {self.pid} (socket {self.socket})"
        if self.command is not None:
            return f"`{self.command}` (pid {self.pid})"
        return f"hookd pid {self.pid}"

    @classmethod
    def parse(cls, text: str) -> Holder:
        lines = text.splitlines()
        pid = lines[0].strip() if lines and lines[0].strip() else "?"
        kind, _, value = (lines[1] if len(lines) > 1 else "").partition(" ")
        if kind == "socket" and value:
            return cls(pid, socket=Path(value))
        if kind == "command" and value:
            return cls(pid, command=value)
        return cls(pid)


class Held(Exception):
    """The lock is taken; ``holder`` says by whom. Callers turn it into their own refusal."""

    def __init__(self, holder: Holder) -> None:
        super().__init__(holder.describe())
        self.holder = holder


def take(db: Path, *, socket: Path | None = None, command: str | None = None) -> int:
    """Take the lock without waiting and write our name in it; returns the descriptor (closing
    it releases the lock). Raises ``Held`` when another process has it, OSError when the file
    cannot be opened (the caller's start-up checks say why first)."""
    fd = os.open(lock_path(db), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = Holder.parse(os.read(fd, 4096).decode(errors="replace"))
        os.close(fd)
        raise Held(holder) from None
    what = f"socket {socket}" if socket is not None else f"command {command or 'hookd'}"
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n{what}\n".encode())
    return fd


def holder(db: Path) -> Holder | None:
    """Who holds the lock of ``db`` now, or None (nobody, or no lock file yet)."""
    try:
        fd = os.open(lock_path(db), os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return Holder.parse(os.read(fd, 4096).decode(errors="replace"))
    finally:
        os.close(fd)
    return None


@contextlib.contextmanager
def for_command(db: Path, command: str) -> Iterator[None]:
    """Hold the lock while an offline command rewrites ``db``: a daemon starting meanwhile is
    refused (naming the command) instead of writing a database about to be replaced, and a
    daemon already holding it, whatever its socket, refuses the command (naming the daemon)."""
    try:
        fd = take(db, command=command)
    except Held as e:
        raise AlreadyRunning(
            f"database {db} is in use by {e.holder.describe()}; stop it first (hooks spool their events "
            f"meanwhile and nothing is lost), then run `{command}` again"
        ) from None
    try:
        yield
    finally:
        os.close(fd)
