"""The spool: where clients leave events while the daemon cannot take them.

Two kinds of spool files, both read here:

- ``append.spool``, shared by the Python clients: each event is appended as one
  ``<time_ns>\t<json>\n`` record with a single ``O_APPEND`` write, under a shared ``flock``
  taken without waiting. Appending to an existing file costs microseconds; creating a file per
  event cost up to a millisecond on some file systems.
- ``<time_ns>-<pid>-<random>.jsonl``, one per event, written by the shell client: a hidden
  ``.NAME.tmp`` first, then an atomic rename, so a file with its final name is complete.

To take ``append.spool`` the daemon renames it (new appends then create a fresh one), then
takes an exclusive ``flock`` on it: that waits for an appender that opened the file before the
rename to finish its one write. An appender that gets its lock after the rename sees that the
path no longer names its file and appends to the new one instead; one that finds the file
locked by the daemon does the same. So nothing is written into a file after it was read.

The daemon reads files in a thread (disk I/O, and cutting over-long events to fit, which is
CPU work that should not hold up the event loop), frames their lines like socket lines, and sends
the file names with the batch. The writer records the names in ``spool_done`` in the same
transaction as the events and deletes the files after the commit; at start it deletes any file
already recorded. So every spooled event is stored once, even if the daemon is killed between
the commit and the delete.
"""

from __future__ import annotations

import fcntl
import logging
import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path

from hookd.framing import LineSplitter, Peer
from hookd.oversize import Cut, TooLong, cut

log = logging.getLogger("hookd.spool")

EVENT_SUFFIX = ".jsonl"  # one event per file (shell client)
APPEND_NAME = "append.spool"  # the shared append file (Python client)
TAKEN_SUFFIX = ".spool"  # an append file the daemon has taken: <time_ns>-0-taken.spool


@dataclass(frozen=True, slots=True)
class SpoolFile:
    name: str
    #: (when the client spooled it, the line); over-long lines among them are cut already
    #: (``oversize.Cut``) or to be rejected (``oversize.TooLong``), in their place.
    lines: list[tuple[float, bytes]]
    oversized: list[tuple[int, bytes]]  # (size, head) of lines skipped as too long: none now
    peer: Peer


def waiting(directory: Path) -> int:
    """Spool files with events not yet read by a daemon (for ``hookd status``)."""
    try:
        return sum(
            1
            for e in os.scandir(directory)
            if e.name.endswith((EVENT_SUFFIX, TAKEN_SUFFIX)) and not e.name.startswith(".") and e.stat().st_size > 0
        )
    except OSError:
        return 0


def parse_name(name: str) -> tuple[float | None, int | None]:
    """``<time_ns>-<pid>-<random>.<suffix>`` -> (epoch seconds, pid); None where not readable."""
    parts = name.rsplit(".", 1)[0].split("-")
    try:
        t = int(parts[0]) / 1e9
    except (ValueError, IndexError):
        t = None
    try:
        pid = int(parts[1]) or None
    except (ValueError, IndexError):
        pid = None
    return t, pid


def _take_append_file(directory: Path) -> None:
    """Rename ``append.spool`` so that it can be read while new appends go to a new file."""
    try:
        os.rename(directory / APPEND_NAME, directory / f"{time.time_ns()}-0-taken{TAKEN_SUFFIX}")
    except FileNotFoundError:
        pass


def _read_lines(fd: int, max_line: int, cut_limit: int | None, stamped: bool) -> tuple[list[bytes], int]:
    """The lines of a file and its size, read a chunk at a time: a huge line is skipped, or
    held only up to the cutting limit, never read whole. Over-long lines are cut here, in the
    spool thread, off the event loop (``oversize.Cut``), or come out as ``oversize.TooLong``."""
    splitter = LineSplitter(max_line, cut_limit=cut_limit, in_order=True, stamped=stamped)
    lines: list[bytes] = []
    size = 0
    while chunk := os.read(fd, 1 << 20):
        size += len(chunk)
        lines += splitter.feed(chunk)
    tail = splitter.finish()
    if tail is not None:
        lines.append(tail)
    return lines, size


def _stamped(lines: list[bytes], fallback: float) -> list[tuple[float, bytes]]:
    """``<time_ns>\t<json>`` records; a record without a readable stamp keeps the whole line."""
    out = []
    for line in lines:
        stamp, tab, rest = line.partition(b"\t")
        if not (tab and stamp.isdigit()):
            out.append((fallback, line))
            continue
        kind = type(line)
        if kind is Cut:
            rest = cut(rest, line.size, line.values)  # still marked as cut
        elif kind is TooLong:
            rest = line  # to be rejected: its preview keeps the stamp
        out.append((int(stamp) / 1e9, rest))
    return out


def scan(
    directory: Path,
    skip: set[str],
    max_line: int,
    max_files: int = 2000,
    max_bytes: int = 16 << 20,
    *,
    cut_limit: int | None = None,
) -> list[SpoolFile]:
    """Read up to ``max_files`` complete spool files (oldest first), skipping ``skip``.
    Lines over ``max_line`` up to ``cut_limit`` (default: framing's) are cut to fit.

    Blocking: call it from a thread. Files that are not ours or not regular are left alone
    with a warning, never read.
    """
    _take_append_file(directory)
    try:
        names = sorted(
            e.name
            for e in os.scandir(directory)
            if e.name.endswith((EVENT_SUFFIX, TAKEN_SUFFIX)) and not e.name.startswith(".") and e.name != APPEND_NAME
        )
    except FileNotFoundError:
        return []
    out: list[SpoolFile] = []
    total = 0
    uid = os.getuid()
    for name in names:
        if name in skip:
            continue
        path = directory / name
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
        except FileNotFoundError:
            continue
        except OSError as e:
            log.warning("spool file %s cannot be opened (%s); left in place", path, e.strerror)
            continue
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_uid != uid:
                log.warning("spool file %s is not a regular file of uid %d; left in place", path, uid)
                continue
            taken = name.endswith(TAKEN_SUFFIX)
            if taken:
                fcntl.flock(fd, fcntl.LOCK_EX)  # waits for an append already under way (microseconds)
            lines, size = _read_lines(fd, max_line, cut_limit, taken)
        finally:
            os.close(fd)
        t, pid = parse_name(name)
        spooled_at = t if t is not None else st.st_mtime
        stamped = _stamped(lines, spooled_at) if taken else [(spooled_at, x) for x in lines]
        out.append(SpoolFile(name, stamped, [], Peer(pid, st.st_uid)))
        total += size
        if len(out) >= max_files or total >= max_bytes:
            break
    return out
