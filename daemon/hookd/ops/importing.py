"""``hookd import`` while a daemon runs: each file is streamed to it (``!import``, see
daemon/import_stream.py) and stored by its writer, beside live hooks.

Which way an import goes (``through_daemon``):

- a daemon holds its lock: through it, on its control socket (which answers even while
  backpressure holds the event socket back), or its event socket where there is none;
- no daemon holds the lock but something listens on the event socket: systemd's socket
  activation (``hookd.socket``), which starts the daemon for this very connection. Through it
  too, on purpose: an offline import would hold the writer lock while the next hook starts the
  daemon, whose writer would then wait for the lock (or refuse to start) with hooks queueing
  behind it; through the socket, the daemon systemd starts is the only writer, and hooks are
  served meanwhile;
- nothing listens: offline, with a writer of its own (writer/importer.py), as before.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from hookd.backfill import ImportResult
from hookd.errors import DaemonDown, HookdError, UsageError
from hookd.ops.reading import ask
from hookd.paths import Paths, daemon_running

#: Seconds to wait for the daemon's first answer: under socket activation it starts first (and
#: replays the mirror if it had crashed).
READY_TIMEOUT = 60.0
CHUNK = 1 << 20

Progress = Callable[[int, int, ImportResult], None]


def through_daemon(
    paths: Paths, files: list[Path], force_type: str | None, progress: Progress | None
) -> ImportResult | None:
    """Import ``files`` through the running (or socket-activated) daemon, one connection per
    file; None when no daemon runs or listens (then the caller imports offline)."""
    conn = _open(paths, files[0].name, force_type)
    if conn is None:
        return None
    result = ImportResult(through=str(paths.socket))
    total = sum(f.stat().st_size for f in files) or 1
    before = 0  # bytes of the files done
    started = time.monotonic()
    for i, path in enumerate(files):
        if i:
            conn = _open(paths, path.name, force_type)
            if conn is None:
                raise DaemonDown(
                    f"hookd on {paths.socket} stopped during the import: run it again (nothing is stored twice)"
                )

        def show(counts: dict[str, Any], offset: int = before) -> None:
            if progress is not None:
                progress(offset + int(counts.get("bytes", 0)), total, _plus(result, counts))

        with conn[0], conn[1]:
            result.add(_stream(*conn, path, show))
        before += path.stat().st_size
    result.seconds = time.monotonic() - started
    if progress is not None:
        progress(total, total, result)
    return result


def _plus(result: ImportResult, counts: dict[str, Any]) -> ImportResult:
    """The files done so far plus the file under way, for the progress bar."""
    out = ImportResult(result.lines, result.imported, result.duplicates, result.rejected.copy())
    out.add(counts)
    return out


def _open(paths: Paths, name: str, force_type: str | None) -> tuple[socket.socket, IO[bytes]] | None:
    """A connection (and its replies) that asked ``!import`` and was told ready, or None: no
    daemon at all."""
    command = "import " + json.dumps({"file": name, "type": force_type}, separators=(",", ":"))
    try:
        conn = ask(paths.socket, command, timeout=READY_TIMEOUT)
    except DaemonDown:
        if daemon_running(paths):
            raise DaemonDown(
                f"hookd holds its lock beside {paths.socket} but answers on neither socket: "
                "check `hookd status`, or stop it and run the import again (it then runs offline)"
            ) from None
        return None
    replies = conn.makefile("rb")
    try:
        reply = _first_reply(replies, paths.socket)
        if not reply.get("ok"):
            raise _refused(reply, paths.socket)
        _same_database(str(reply.get("db") or paths.db), paths)
    except BaseException:
        replies.close()
        conn.close()
        raise
    conn.settimeout(None)  # from now on the daemon may hold the import back (backpressure)
    return conn, replies


def _same_database(theirs: str, paths: Paths) -> None:
    """The daemon must store into the database this import names (``--db``, HOOKD_DB)."""
    if os.path.realpath(theirs) != os.path.realpath(paths.db):
        raise UsageError(
            f"hookd running on {paths.socket} stores into {theirs}, not {paths.db}: give the --socket "
            f"of the daemon that writes {paths.db}, or leave out --db to import into {theirs}"
        )


def _first_reply(replies: IO[bytes], sock_path: Path) -> dict[str, Any]:
    try:
        line = _readline(replies)
    except TimeoutError:
        raise DaemonDown(
            f"hookd on {sock_path} did not answer the import within {READY_TIMEOUT:g} s: "
            "check `hookd status` and the daemon's log"
        ) from None
    if line is None:
        raise DaemonDown(f"hookd on {sock_path} closed the connection without answering the import")
    return line


def _refused(reply: dict[str, Any], sock_path: Path) -> HookdError:
    detail = str(reply.get("detail", ""))
    if reply.get("reason") == "bad_command" and "unknown command" in detail:
        return HookdError(
            f"the hookd running on {sock_path} is older and cannot import while it runs: restart it "
            "(`systemctl --user restart hookd`, or stop and start `hookd run`) and run the import again"
        )
    return HookdError(f"hookd refused the import: {detail or reply.get('reason')}")


def _readline(replies: IO[bytes]) -> dict[str, Any] | None:
    """The next JSON reply, or None at the end of the stream."""
    line = replies.readline(1 << 20)
    if not line:
        return None
    obj = json.loads(line)
    return obj if isinstance(obj, dict) else {"ok": False, "detail": line.decode(errors="replace")}


def _stream(
    conn: socket.socket, replies: IO[bytes], path: Path, show: Callable[[dict[str, Any]], None]
) -> dict[str, Any]:
    """Send the file and read the replies meanwhile (in a thread); returns the summary."""
    last: list[dict[str, Any]] = []

    def read() -> None:
        with contextlib.suppress(OSError, ValueError):
            while (reply := _readline(replies)) is not None:
                last[:] = [reply]
                if "progress" in reply:
                    show(reply["progress"])

    reader = threading.Thread(target=read, name="hookd-import-replies", daemon=True)
    reader.start()
    try:
        with open(path, "rb") as f:
            while chunk := f.read(CHUNK):
                conn.sendall(chunk)
        conn.shutdown(socket.SHUT_WR)  # the end of the file: the daemon answers once it is committed
    except (BrokenPipeError, ConnectionResetError):
        pass  # the daemon ended the import: its last reply says why
    reader.join()
    reply = last[0] if last else {}
    if "done" in reply:
        return reply["done"]
    if reply.get("ok") is False:
        raise HookdError(f"the import of {path} through hookd stopped: {reply.get('detail') or reply.get('reason')}")
    raise DaemonDown(
        f"hookd closed the import of {path} before it finished (it stopped?): run the same import "
        "again; what it stored stays and is not added twice"
    )
