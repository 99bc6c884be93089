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
from types import TracebackType
from typing import Any

from hookd import wal, wire, writer_client
from hookd.errors import AlreadyRunning, ConfigError, WriterError
from hookd.framing import NO_PEER, EidClock, Framer, LineSplitter, Rejection, normalize_type
from hookd.paths import Paths, daemon_running, private_dir
from hookd.writer_client import WriterClient, rejected_row

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
    """WAL checkpoints (see hookd.wal) from this process, as the daemon runs them: off the
    writer's path."""

    def __init__(self, db: Path) -> None:
        super().__init__(name="hookd-import-checkpoints", daemon=True)
        self.db = db
        self.stop = threading.Event()

    def run(self) -> None:
        conn = sqlite3.connect(self.db, check_same_thread=False)
        try:
            conn.execute(wal.BUSY_TIMEOUT)
            page_size = conn.execute(wal.PAGE_SIZE).fetchone()[0]
            while not self.stop.wait(wal.INTERVAL):
                try:
                    _busy, wal_pages, _copied = conn.execute(wal.PASSIVE).fetchone()
                    if wal.should_truncate(wal_pages, page_size):
                        conn.execute(wal.TRUNCATE)
                except sqlite3.OperationalError:
                    pass  # busy: the next round tries again
        finally:
            conn.close()


class _WriterProcess:
    """A writer process for this import, spoken to through the shared ``WriterClient`` over
    blocking pipes: replies are read in a thread while this process keeps framing. As a context
    manager it ends the writer (killed if the import failed) and raises if the writer failed."""

    def __init__(self, paths: Paths, result: ImportResult) -> None:
        self.result = result
        self.client: WriterClient[None] = WriterClient()
        self.client.subscribe(committed=self._committed)
        # Enlarged pipes, as the daemon's: with 64 KiB ones the writer reads a batch in ten pieces.
        to_writer_r, to_writer_w = wire.pipe()
        from_writer_r, from_writer_w = wire.pipe()
        try:
            self.proc = subprocess.Popen(
                writer_client.command(paths, log_level="WARNING"), stdin=to_writer_r, stdout=from_writer_w
            )
        except BaseException:
            for fd in (to_writer_w, from_writer_r):
                os.close(fd)
            raise
        finally:
            os.close(to_writer_r)
            os.close(from_writer_w)
        self._frames = open(to_writer_w, "wb")
        self._replies = open(from_writer_r, "rb")
        ready = self.client.handshake(wire.read_frame(self._replies))
        if ready is None:
            self.proc.wait()
            self._frames.close()
            self._replies.close()
            raise self.client.refused(self.proc.returncode)
        self.max_eid = ready.max_eid
        self._reader = threading.Thread(target=self._read_replies, name="hookd-import-replies", daemon=True)
        self._reader.start()
        self._checkpoints = _Checkpointer(paths.db)
        self._checkpoints.start()

    def _committed(self, _batch: None, stored: int, duplicates: list[tuple[int, int]]) -> None:
        self.result.imported += stored
        self.result.duplicates += len(duplicates)

    def _read_replies(self) -> None:
        while (body := wire.read_frame(self._replies)) is not None and self.client.receive(body):
            pass

    def send(self, rows: list[tuple], mirror_lines: list[bytes], rejects: list[tuple]) -> None:
        # Every imported row has an id: all are "with_id" for the writer's duplicate check.
        # The per-type counts spare the writer reading the rows back (it still does when some
        # turn out duplicates, as on a re-import).
        frame = self.client.batch(None, rows, mirror_lines, list(range(len(rows))), rejects, [])
        try:
            self._frames.write(frame)
        except BrokenPipeError:
            raise WriterError(f"the writer process failed: {self.client.fatal or 'it exited'}") from None

    def __enter__(self) -> _WriterProcess:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        try:
            if kind is None:
                with contextlib.suppress(BrokenPipeError):  # the writer is gone: its status says why
                    self._frames.write(writer_client.CLOSE)
                    self._frames.close()
        except BaseException:
            self.proc.kill()
            raise
        finally:
            if kind is not None:
                self.proc.kill()
            code = self.proc.wait()
            self._reader.join()
            self._checkpoints.stop.set()
            self._checkpoints.join()
            with contextlib.suppress(OSError):  # a killed writer leaves unwritten buffered frames
                self._frames.close()
            self._replies.close()
        if kind is None and (code != 0 or self.client.fatal):
            raise WriterError(f"the writer process failed: {self.client.fatal or f'exit status {code}'}")


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


class _Batches:
    """Frames the lines of the files and sends them to the writer every BATCH events."""

    def __init__(self, writer: _WriterProcess, framer: Framer, etype: str | None, max_line: int) -> None:
        self.writer = writer
        self.framer = framer
        self.etype = etype
        self.max_line = max_line
        self.result = writer.result
        self.done_bytes = 0  # of the files, read so far
        self.rows: list[tuple] = []
        self.mirror: list[bytes] = []
        self.rejects: list[tuple] = []

    def read(self, path: Path, sent: Callable[[float], None]) -> None:
        """Every line of one file into batches; ``sent`` is called after each batch sent."""
        result, frame, etype = self.result, self.framer.frame, self.etype
        on_oversized = lambda n, h: self.reject("too_long", f"line of {n} bytes exceeds {self.max_line}", h, n)  # noqa: E731
        for lineno, line in _lines(path, self.max_line, on_oversized):
            self.done_bytes += len(line) + 1
            if not line.strip():
                continue
            result.lines += 1
            now = time.time()
            # Line number first: ids then grow through a file, and the unique index on them
            # takes in-order inserts instead of random ones (measured 4x faster).
            cid = f"import:{lineno:010d}:{hashlib.blake2b(line, digest_size=8).hexdigest()}"
            try:
                framed = frame(line, now, NO_PEER, force_type=etype, default_id=cid)
            except Rejection as r:
                self.reject(r.reason, f"{path.name}:{lineno}: {r.detail}", line)
                continue
            if framed is not None:
                row, mirror_line = framed
                self.rows.append(row)
                self.mirror.append(mirror_line)
            if len(self.rows) >= BATCH:
                self.send()
                sent(now)

    def reject(self, reason: str, detail: str, line: bytes, size: int | None = None) -> None:
        self.result.rejected[reason] += 1
        self.rejects.append(rejected_row(time.time(), reason, detail, line, size=size))

    def send(self) -> None:
        if self.rows or self.rejects:
            rows, mirror, rejects = self.rows, self.mirror, self.rejects
            self.rows, self.mirror, self.rejects = [], [], []
            self.writer.send(rows, mirror, rejects)


def _prepare(paths: Paths, files: list[Path], force_type: str | None) -> str | None:
    """Check what the import needs before starting a writer; returns the forced type."""
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
    return etype


def import_files(
    paths: Paths,
    files: list[Path],
    *,
    force_type: str | None = None,
    max_line: int = 1 << 20,
    aliases: dict[str, str] | None = None,
    progress: Callable[[int, int, ImportResult], None] | None = None,
) -> ImportResult:
    etype = _prepare(paths, files, force_type)
    result = ImportResult()
    total_bytes = sum(f.stat().st_size for f in files) or 1
    started = time.monotonic()
    with _WriterProcess(paths, result) as writer:
        batches = _Batches(writer, Framer(EidClock(writer.max_eid), aliases=aliases), etype, max_line)
        last_progress = 0.0

        def sent(now: float) -> None:
            nonlocal last_progress
            if progress is not None and now - last_progress > 0.25:
                last_progress = now
                progress(batches.done_bytes, total_bytes, result)

        for path in files:
            batches.read(path, sent)
        batches.send()
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
