"""The JSONL mirror: the durable, human-readable log of every stored event.

One file per UTC day, ``YYYY-MM-DD.jsonl``, appended a batch at a time with a single write,
before the batch is committed to SQLite, so the mirror always holds at least what SQLite holds.
Once its day is over a file is compressed to ``YYYY-MM-DD.jsonl.gz`` (``maintain``), and old
files are deleted by age and total size; everything that reads the mirror reads both forms.
Used by the writer process (and ``hookd rebuild``) only.
"""

from __future__ import annotations

import calendar
import gzip
import logging
import os
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import msgspec

from hookd.errors import StoreError
from hookd.framing import MirrorLine

log = logging.getLogger("hookd.mirror")


DAY_FILE = re.compile(r"(\d{4}-\d{2}-\d{2})\.jsonl(\.gz)?")
#: A day's file is compressed or deleted only this long after the day ended: a batch whose
#: write began just before midnight has long finished by then.
GRACE = 300.0
GZIP_LEVEL = 6


def day_of(t: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(t))


def day_end(day: str) -> float:
    """Epoch seconds at the end of a UTC day ``YYYY-MM-DD``."""
    return calendar.timegm(time.strptime(day, "%Y-%m-%d")) + 86400.0


def mirror_files(directory: Path) -> list[Path]:
    """The mirror's day files, plain and compressed, oldest day first; for one day the
    compressed part (written earlier) comes before a plain one."""
    found = []
    for p in directory.iterdir():
        m = DAY_FILE.fullmatch(p.name)
        if m:
            found.append((m.group(1), 0 if m.group(2) else 1, p))
    return [p for _day, _gz, p in sorted(found)]


def file_day(path: Path) -> str:
    m = DAY_FILE.fullmatch(path.name)
    assert m is not None, path
    return m.group(1)


def open_read(path: Path) -> IO[bytes]:
    """A mirror file for reading lines, decompressing ``.gz`` ones."""
    if path.name.endswith(".gz"):
        return gzip.open(path, "rb")
    return open(path, "rb")


@dataclass
class Maintenance:
    """What one ``Mirror.maintain`` did."""

    compressed: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    freed: int = 0  # bytes


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
        """Mirror files (``.jsonl`` and ``.jsonl.gz``) in time order."""
        return mirror_files(self.dir)

    def repair_torn_tail(self) -> int:
        """Cut a half-written last line (a crash mid-write) from the newest plain file.

        Its batch never committed to SQLite, so nothing stored refers to it. Returns the bytes cut.
        Compressed files are never appended to, so they cannot be torn.
        """
        files = [p for p in self.files() if p.name.endswith(".jsonl")]
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

        A plain file whose last record is not newer than ``floor`` is skipped after reading its
        tail only. A compressed file cannot be read from the end; it is skipped when the next
        file's first record is not newer than ``floor`` (eids grow from file to file), which
        costs one decompressed block. So recovery after a crash reads about one file, not the
        whole history.
        """
        decode = msgspec.json.Decoder(MirrorLine).decode
        files = self.files()
        for i, path in enumerate(files):
            if path.name.endswith(".gz"):
                nxt = _first_eid(files[i + 1]) if i + 1 < len(files) else None
                if nxt is not None and nxt <= floor:
                    continue
            else:
                last = _last_eid(path)
                if last is not None and last <= floor:
                    continue
            with open_read(path) as f:
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

    def maintain(
        self,
        *,
        now: float | None = None,
        compress: bool = True,
        max_age: float | None = None,
        max_size: int | None = None,
        stop: threading.Event | None = None,
    ) -> Maintenance:
        """Compress finished days, then delete the oldest files by age and by total size.

        Runs in a thread of the writer process (never the daemon's event loop). Today's file
        and the one the writer has open are never touched, nor a day that ended less than
        ``GRACE`` seconds ago. ``stop`` aborts a compression half-way (nothing is lost: the
        plain file stays until its compressed copy is complete).
        """
        now = time.time() if now is None else now
        done = Maintenance()
        for tmp in self.dir.glob("*.gz.tmp"):  # a compression cut short by a crash
            tmp.unlink(missing_ok=True)

        def settled(day: str) -> bool:
            return day != self._day and day_end(day) + GRACE <= now

        if compress:
            for path in self.files():
                if stop is not None and stop.is_set():
                    return done
                if path.name.endswith(".jsonl") and settled(file_day(path)):
                    if compress_file(path, stop):
                        done.compressed.append(path.name)
        files = [p for p in self.files() if settled(file_day(p))]
        if max_age is not None:
            for p in list(files):
                if day_end(file_day(p)) <= now - max_age:
                    done.freed += _unlink(p)
                    done.deleted.append(p.name)
                    files.remove(p)
        if max_size is not None:
            sizes = {}
            for p in self.files():
                try:
                    sizes[p] = p.stat().st_size
                except FileNotFoundError:
                    pass
            total = sum(sizes.values())
            for p in files:  # oldest first; today's and the open file are not in the list
                if total <= max_size:
                    break
                total -= sizes.get(p, 0)
                done.freed += _unlink(p)
                done.deleted.append(p.name)
        if done.compressed or done.deleted:
            _fsync_dir(self.dir)
        return done


def compress_file(path: Path, stop: threading.Event | None = None) -> bool:
    """``X.jsonl`` to ``X.jsonl.gz``: write a temporary file, fsync, rename, then unlink the
    original, so a crash leaves one complete copy or both (readers skip the repeated eids).

    If ``X.jsonl.gz`` exists already, either a crash came between its rename and the unlink
    (the plain file holds nothing newer: it is just removed) or the plain file was written
    later (the clock went back a day): its lines are appended as another gzip member.
    Returns False if stopped before the end.
    """
    gz = path.with_name(path.name + ".gz")
    tmp = path.with_name(path.name + ".gz.tmp")
    earlier = gz.exists()
    if earlier:
        last_plain = _last_eid(path)
        if last_plain is not None and last_plain <= _last_eid_gz(gz):
            path.unlink()
            return True
    try:
        with open(tmp, "wb") as raw:
            if earlier:
                with open(gz, "rb") as old:
                    while chunk := old.read(1 << 20):
                        raw.write(chunk)
            with (
                open(path, "rb") as src,
                gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=GZIP_LEVEL, mtime=0) as z,
            ):
                while chunk := src.read(1 << 20):
                    if stop is not None and stop.is_set():
                        raise _Stopped
                    z.write(chunk)
            raw.flush()
            os.fsync(raw.fileno())
    except _Stopped:
        tmp.unlink(missing_ok=True)
        return False
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, gz)
    _fsync_dir(path.parent)
    path.unlink()
    log.info("compressed mirror file %s", gz)
    return True


class _Stopped(Exception):
    pass


def _unlink(path: Path) -> int:
    try:
        size = path.stat().st_size
        path.unlink()
    except FileNotFoundError:
        return 0
    log.info("deleted mirror file %s (%d bytes): older than the mirror's retention", path, size)
    return size


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _Eid(msgspec.Struct):
    eid: int


def _first_eid(path: Path) -> int | None:
    """The eid of the first line of a mirror file (plain or compressed), or None."""
    try:
        with open_read(path) as f:
            line = f.readline()
        return msgspec.json.decode(line, type=_Eid).eid
    except (OSError, EOFError, msgspec.DecodeError, msgspec.ValidationError):
        return None


def _last_eid_gz(path: Path) -> int:
    """The largest eid in a compressed mirror file (reads it all: only for a rare case)."""
    last = 0
    with open_read(path) as f:
        for line in f:
            try:
                last = max(last, msgspec.json.decode(line, type=_Eid).eid)
            except (msgspec.DecodeError, msgspec.ValidationError):
                continue
    return last


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
