"""The JSONL mirror: the durable, human-readable log of every stored event.

One file per UTC day, ``YYYY-MM-DD.jsonl``, appended a batch at a time with a single write,
before the batch is committed to SQLite, so the mirror always holds at least what SQLite holds.
Used by the writer process only.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

import msgspec

from .errors import StoreError
from .framing import MirrorLine

log = logging.getLogger("hookd.mirror")


def day_of(t: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(t))


class Mirror:
    """Appends batches of pre-encoded lines to the file of the current UTC day."""

    def __init__(self, directory: Path, *, fsync: bool = False) -> None:
        self.dir = directory
        self.fsync = fsync
        self._day = ""
        self._fd = -1
        old = os.umask(0o077)
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        finally:
            os.umask(old)

    def path_for(self, day: str) -> Path:
        return self.dir / f"{day}.jsonl"

    def write(self, data: bytes, now: float | None = None) -> None:
        """Append ``data`` (whole lines) with one write, retried until complete."""
        if not data:
            return
        day = day_of(time.time() if now is None else now)
        if day != self._day:
            self._open(day)
        # Only the writer process appends (it holds the writer lock), so the end is ours.
        start = os.lseek(self._fd, 0, os.SEEK_END)
        view = memoryview(data)
        try:
            while view:
                n = os.write(self._fd, view)
                view = view[n:]
            if self.fsync:
                os.fsync(self._fd)
        except OSError as e:
            # A full disk can cut a write short: take the partial batch back out, so the file
            # never holds a torn line and a retry appends the batch whole, once.
            try:
                os.ftruncate(self._fd, start)
            except OSError as e2:
                raise StoreError(
                    f"{e.strerror} writing {self.path_for(day)}, and it could not be cut back ({e2.strerror}); "
                    "the next start cuts its torn tail"
                ) from e
            raise

    def _open(self, day: str) -> None:
        self.close()
        self._fd = os.open(self.path_for(day), os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self._day = day

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
            self._day = ""

    def files(self) -> list[Path]:
        """Mirror files in time order."""
        return sorted(p for p in self.dir.glob("????-??-??.jsonl"))

    def repair_torn_tail(self) -> int:
        """Cut a half-written last line (a crash mid-write) from the newest file.

        Its batch never committed to SQLite, so nothing stored refers to it. Returns the bytes cut.
        """
        files = self.files()
        if not files:
            return 0
        path = files[-1]
        size = path.stat().st_size
        if size == 0:
            return 0
        with open(path, "rb+") as f:
            f.seek(-1, os.SEEK_END)
            if f.read(1) == b"\n":
                return 0
            # Walk back to the last newline in 64 KiB steps.
            pos = size
            keep = 0
            while pos > 0:
                step = min(1 << 16, pos)
                pos -= step
                f.seek(pos)
                chunk = f.read(step)
                nl = chunk.rfind(b"\n")
                if nl >= 0:
                    keep = pos + nl + 1
                    break
            f.truncate(keep)
        log.warning("cut a torn last line (%d bytes) from %s", size - keep, path)
        return size - keep

    def records_after(self, floor: int) -> Iterator[MirrorLine]:
        """Every mirror record with eid > ``floor``, oldest file first.

        A file whose last record is not newer than ``floor`` is skipped after reading its tail
        only, so recovery after a crash reads about one file, not the whole history.
        """
        decode = msgspec.json.Decoder(MirrorLine).decode
        for path in self.files():
            last = _last_eid(path)
            if last is not None and last <= floor:
                continue
            with open(path, "rb") as f:
                for lineno, line in enumerate(f, 1):
                    if not line.endswith(b"\n"):
                        continue  # torn tail
                    try:
                        rec = decode(line)
                    except (msgspec.DecodeError, msgspec.ValidationError) as e:
                        log.warning("%s:%d: unreadable mirror line skipped: %s", path, lineno, e)
                        continue
                    if rec.eid > floor:
                        yield rec


class _Eid(msgspec.Struct):
    eid: int


def _last_eid(path: Path) -> int | None:
    """The eid of the last complete line of a mirror file, or None if it cannot be read."""
    with open(path, "rb") as f:
        size = f.seek(0, os.SEEK_END)
        f.seek(max(0, size - (1 << 16)))
        lines = f.read().split(b"\n")
    for line in reversed(lines[:-1]):  # the piece after the last newline is empty or torn
        try:
            return msgspec.json.decode(line, type=_Eid).eid
        except (msgspec.DecodeError, msgspec.ValidationError):
            return None
    return None
