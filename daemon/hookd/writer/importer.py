"""``hookd import`` with no daemon running: backfill newline-delimited JSON from existing logs.

Lines go through the same validation as socket lines (framing.Framer) and are stored by the
same writer process, so they land in SQLite, in the mirror and in the ``<type>_events`` views
like live events, and invalid lines are recorded in ``rejected``.

Re-importing a file adds nothing: a line without an ``id`` gets one derived from its content
and its line number, and a rejected line is recorded under that key (``hookd.backfill``), so the
same line of the same file is stored once however often it is imported, while identical lines
at different places stay distinct.

The framing runs in this process and the inserts in a writer process, as in the daemon, so
both cores work. While a daemon runs, the import goes through it instead (ops/importing.py):
one writer per database.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

from hookd import wal, wire, writer_client
from hookd.backfill import ImportResult, NumberedLines, check_arguments, line_id, too_long_key
from hookd.errors import AlreadyRunning, WriterError
from hookd.framing import NO_PEER, EidClock, Framer, Rejection
from hookd.paths import Paths, daemon_running, private_dir
from hookd.writer_client import WriterClient, rejected_row

__all__ = ["ImportResult", "import_files", "render_progress"]

BATCH = 2000
CHUNK = 1 << 20


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
    numbered = NumberedLines(max_line)
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            yield from numbered.feed(chunk)
            for size, head in numbered.oversized():
                on_oversized(size, head)
    tail = numbered.finish()
    for size, head in numbered.oversized():
        on_oversized(size, head)
    yield from tail


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

        def on_oversized(size: int, head: bytes) -> None:
            detail = f"{path.name}: line of {size} bytes exceeds {self.max_line}"
            self.reject("too_long", detail, head, too_long_key(size, head), size)

        for lineno, line in _lines(path, self.max_line, on_oversized):
            self.done_bytes += len(line) + 1
            if not line.strip():
                continue
            result.lines += 1
            now = time.time()
            cid = line_id(lineno, line)
            try:
                framed = frame(line, now, NO_PEER, force_type=etype, default_id=cid)
            except Rejection as r:
                self.reject(r.reason, f"{path.name}:{lineno}: {r.detail}", line, cid)
                continue
            if framed is not None:
                row, mirror_line = framed
                self.rows.append(row)
                self.mirror.append(mirror_line)
            if len(self.rows) >= BATCH:
                self.send()
                sent(now)

    def reject(self, reason: str, detail: str, line: bytes, key: str, size: int | None = None) -> None:
        self.result.rejected[reason] += 1
        self.rejects.append(rejected_row(time.time(), reason, detail, line, size=size, key=key))

    def send(self) -> None:
        if self.rows or self.rejects:
            rows, mirror, rejects = self.rows, self.mirror, self.rejects
            self.rows, self.mirror, self.rejects = [], [], []
            self.writer.send(rows, mirror, rejects)


def _prepare(paths: Paths, files: list[Path], force_type: str | None) -> str | None:
    """Check what the import needs before starting a writer; returns the forced type."""
    etype = check_arguments(files, force_type)
    if daemon_running(paths):  # hookd import asked it first (ops/importing.py): it started since
        raise AlreadyRunning(
            f"hookd started on {paths.socket} as the import began: run `hookd import` again "
            "(it then goes through the daemon)"
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
