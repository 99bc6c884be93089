"""``hookd import``: backfill newline-delimited JSON from existing logs.

Lines go through the same validation as socket lines (framing.Framer) and are stored by the
same writer process, so they land in SQLite, in the mirror and in the ``<type>_events`` views
like live events, and invalid lines are recorded in ``rejected``.

Re-importing a file adds nothing: a line without an ``id`` gets one derived from its content
and its line number (``import:<line>:<hash>``), so the same line of the same file is stored
once however often it is imported, while identical lines at different places stay distinct.

The framing runs in this process and the inserts in a writer process, as in the daemon, so
both cores work. The daemon must be stopped (hooks spool meanwhile): one writer per database.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from hookd import wire
from hookd.errors import AlreadyRunning, ConfigError, WriterError
from hookd.framing import NO_PEER, EidClock, Framer, LineSplitter, Rejection, normalize_type, preview
from hookd.paths import Paths, daemon_running, private_dir

BATCH = 2000
CHUNK = 1 << 20


@dataclass
class ImportResult:
    lines: int = 0  # non-blank lines read
    imported: int = 0  # stored now
    duplicates: int = 0  # already stored (an earlier import, or the same id)
    rejected: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0


class _Checkpointer(threading.Thread):
    """PASSIVE WAL checkpoints from this process, as the daemon does: off the writer's path."""

    def __init__(self, db: Path, interval: float = 0.5) -> None:
        super().__init__(name="hookd-import-checkpoints", daemon=True)
        self.db = db
        self.interval = interval
        self.stop = threading.Event()

    def run(self) -> None:
        conn = sqlite3.connect(self.db, check_same_thread=False)
        try:
            conn.execute("PRAGMA busy_timeout = 100")
            while not self.stop.wait(self.interval):
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
                except sqlite3.OperationalError:
                    pass
        finally:
            conn.close()


class _Replies(threading.Thread):
    """Reads the writer's answers while this process keeps framing."""

    def __init__(self, out: IO[bytes], result: ImportResult) -> None:
        super().__init__(name="hookd-import-replies", daemon=True)
        self.out = out
        self.result = result
        self.fatal: str | None = None

    def run(self) -> None:
        while True:
            head = self.out.read(4)
            if len(head) < 4:
                return
            (n,) = wire.HEADER.unpack(head)
            msg = wire.unpack(self.out.read(n))
            if msg[0] == "done":
                self.result.imported += msg[2]
                self.result.duplicates += len(msg[3])
            elif msg[0] == "fatal":
                self.fatal = msg[1]
                return


def _lines(path: Path, max_line: int, on_oversized: Callable[[int, bytes], None]) -> Iterator[tuple[int, bytes]]:
    """(line number, line) for every line of a file, skipping over-long ones in bounded memory."""
    splitter = LineSplitter(max_line)
    lineno = 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            for line in splitter.feed(chunk):
                lineno += 1
                yield lineno, line
            for size, head in splitter.oversized:
                on_oversized(size, head)
            splitter.oversized.clear()
    tail = splitter.finish()
    for size, head in splitter.oversized:
        on_oversized(size, head)
    if tail is not None:
        yield lineno + 1, tail


def import_files(
    paths: Paths,
    files: list[Path],
    *,
    force_type: str | None = None,
    max_line: int = 1 << 20,
    aliases: dict[str, str] | None = None,
    progress: Callable[[int, int, ImportResult], None] | None = None,
) -> ImportResult:
    for f in files:
        if not f.is_file():
            raise ConfigError(f"{f}: no such file")
    etype = None
    if force_type is not None:
        etype = normalize_type(force_type)
        if etype is None:
            raise ConfigError(f"--type {force_type!r} does not normalize to [a-z][a-z0-9_]{{0,62}}")
    if daemon_running(paths):
        raise AlreadyRunning(
            f"hookd is running on {paths.socket}; stop it for the import (hooks spool their events "
            "meanwhile and nothing is lost), then start it again"
        )
    private_dir(paths.db.parent)
    private_dir(paths.mirror_dir)
    # Enlarged pipes, as the daemon's: with 64 KiB ones the writer reads a batch in ten pieces.
    to_writer_r, to_writer_w = wire.pipe()
    from_writer_r, from_writer_w = wire.pipe()
    try:
        writer = subprocess.Popen(
            wire.writer_command(paths, log_level="WARNING"), stdin=to_writer_r, stdout=from_writer_w
        )
    except BaseException:
        for fd in (to_writer_w, from_writer_r):
            os.close(fd)
        raise
    finally:
        os.close(to_writer_r)
        os.close(from_writer_w)
    frames_out = open(to_writer_w, "wb")
    replies_in = open(from_writer_r, "rb")
    head = replies_in.read(4)
    first = wire.unpack(replies_in.read(wire.HEADER.unpack(head)[0])) if len(head) == 4 else None
    if first is None or first[0] != "ready":
        writer.wait()
        frames_out.close()
        replies_in.close()
        raise WriterError(f"the writer could not open the store: {first[1] if first else writer.returncode}")
    result = ImportResult()
    replies = _Replies(replies_in, result)
    replies.start()
    checkpoints = _Checkpointer(paths.db)
    checkpoints.start()
    framer = Framer(EidClock(first[1]), aliases=aliases)
    total_bytes = sum(f.stat().st_size for f in files) or 1
    done_bytes = 0
    started = time.monotonic()
    last_progress = 0.0
    seq = 0
    rows: list[tuple] = []
    mirror: list[bytes] = []
    rejects: list[tuple] = []

    def send() -> None:
        nonlocal seq, rows, mirror, rejects
        if not rows and not rejects:
            return
        seq += 1
        # Every imported row has an id: all are "with_id" for the writer's duplicate check.
        # The per-type counts spare the writer reading the rows back (it still does when some
        # turn out duplicates, as on a re-import).
        frame = wire.pack(["batch", seq, rows, mirror, list(range(len(rows))), rejects, [], wire.type_summary(rows)])
        rows, mirror, rejects = [], [], []
        try:
            frames_out.write(frame)
        except BrokenPipeError:
            raise WriterError(f"the writer process failed: {replies.fatal or 'it exited'}") from None

    def reject(reason: str, detail: str, line: bytes, size: int | None = None) -> None:
        result.rejected[reason] += 1
        size = len(line) if size is None else size
        rejects.append((time.time(), reason, detail[:500], size, preview(line), None, None))

    try:
        for path in files:
            on_oversized = lambda n, h: reject("too_long", f"line of {n} bytes exceeds {max_line}", h, n)  # noqa: E731
            for lineno, line in _lines(path, max_line, on_oversized):
                done_bytes += len(line) + 1
                if not line.strip():
                    continue
                result.lines += 1
                now = time.time()
                # Line number first: ids then grow through a file, and the unique index on them
                # takes in-order inserts instead of random ones (measured 4x faster).
                cid = f"import:{lineno:010d}:{hashlib.blake2b(line, digest_size=8).hexdigest()}"
                try:
                    framed = framer.frame(line, now, NO_PEER, force_type=etype, default_id=cid)
                except Rejection as r:
                    reject(r.reason, f"{path.name}:{lineno}: {r.detail}", line)
                    continue
                if framed is not None:
                    rows.append(framed[0])
                    mirror.append(framed[1])
                if len(rows) >= BATCH:
                    send()
                    if progress is not None and now - last_progress > 0.25:
                        last_progress = now
                        progress(done_bytes, total_bytes, result)
        send()
        frames_out.write(wire.pack(["close"]))
        frames_out.close()
    except BaseException:
        writer.kill()
        raise
    finally:
        code = writer.wait()
        replies.join()
        checkpoints.stop.set()
        checkpoints.join()
        with contextlib.suppress(OSError):  # a killed writer leaves unwritten buffered frames
            frames_out.close()
        replies_in.close()
    if code != 0 or replies.fatal:
        raise WriterError(f"the writer process failed: {replies.fatal or f'exit status {code}'}")
    result.seconds = time.monotonic() - started
    if progress is not None:
        progress(total_bytes, total_bytes, result)
    return result


def render_progress(stream: Any) -> Callable[[int, int, ImportResult], None]:
    """A one-line progress bar for a terminal."""

    def show(done: int, total: int, r: ImportResult) -> None:
        frac = min(1.0, done / total)
        bar = "#" * int(frac * 30)
        stream.write(f"\rimporting [{bar:<30}] {frac:4.0%}  {r.lines:,} lines read, {r.imported:,} stored")
        if done >= total:
            stream.write("\n")
        stream.flush()

    return show
