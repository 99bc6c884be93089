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


# -- the cap: size accounting and drop counters (docs/protocol.md, "The spool's cap") -----------
#
# Clients must check the cap without listing the directory, so the spool keeps its size in one
# file: ``usage``, whose length in bytes times ``USAGE_UNIT`` is the spool's size. Clients only
# append to it (a shell can do no more), one byte per 4 KiB they add; the daemon, which deletes
# what it has read, sets it to what it measures whenever it finds nothing left to read.
#
# A client past the cap drops the event and counts it: Python clients in ``dropped`` (one
# fixed-width record rewritten in place under an exclusive flock: it never grows), hookd-emit in
# ``dropped.log`` (one ``.`` appended per event: POSIX sh cannot take a lock), and so does a
# Python client that finds ``dropped`` locked. The daemon takes both files by renaming them (to
# ``<time_ns>-0-<kind>.dropped``) and hands their counts to the writer with the file names, like
# spool files: recorded in ``counters`` and ``spool_done`` in one transaction, deleted after the
# commit, so each drop is counted once even if the daemon is killed in between.

USAGE_NAME = "usage"
#: Bytes one byte of ``usage`` stands for: a file system block, what a small file costs on disk.
USAGE_UNIT = 4096
DROPPED_NAME = "dropped"  # Python clients: "<count> <first_ns> <last_ns>\n", 20 digits each
DROPPED_LOG = "dropped.log"  # hookd-emit: "." per event; "<epoch s>." when it starts the file
DROPS_SUFFIX = ".dropped"  # a counter the daemon has taken: <time_ns>-0-count.dropped, -log.dropped
#: A taken ``dropped.log`` is read this long after the rename: an append that opened the file
#: just before (a single write, microseconds) has landed by then.
LOG_SETTLE = 1.0
#: A client's hidden temporary file older than this belongs to a client that was killed
#: between writing and renaming it: deleted (its event never reached the spool).
STALE_TEMP = 3600.0
_BOOKKEEPING = (USAGE_NAME, DROPPED_NAME, DROPPED_LOG)
#: The lifetime total in ``counters``; with ``.first`` and ``.last``, epoch seconds of the first
#: and last drop (the writer keeps the lowest and the highest value of those).
DROPPED_COUNTER = "spool.dropped"


@dataclass(frozen=True, slots=True)
class Drops:
    """Events clients dropped while the spool was full, from one counter file."""

    name: str  # the file (taken: its name in the spool directory; else DROPPED_NAME or DROPPED_LOG)
    events: int
    first: float | None  # epoch seconds of the first and last drop it counts
    last: float | None


def upkeep(directory: Path, skip: set[str]) -> list[Drops]:
    """Once the daemon has read everything (``skip``: read, not yet deleted): the clients'
    drop counters to collect, and ``usage`` set to what the spool holds. Blocking."""
    if not directory.is_dir():
        return []
    drops = take_drops(directory, skip)
    set_usage(directory, measure(directory, skip))
    return drops


def units(size: int) -> int:
    """What a per-event file of ``size`` bytes is counted as, in ``USAGE_UNIT`` (rounded up)."""
    return -(-size // USAGE_UNIT)


def usage(directory: Path) -> int:
    """The spool's size as the clients count it, in bytes (``hookd status``)."""
    try:
        return os.stat(directory / USAGE_NAME).st_size * USAGE_UNIT
    except OSError:
        return 0


def measure(directory: Path, skip: set[str], now: float | None = None) -> int:
    """The spool's size in ``USAGE_UNIT``, measured: what clients would count for the files
    there, except ``skip`` (read and about to be deleted). Deletes stale temporaries.

    Blocking, a stat per file: call it from a thread, when the spool has been read (it is
    then nearly empty).
    """
    now = time.time() if now is None else now
    total = 0
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return 0
    for e in entries:
        name = e.name
        if name in skip or name in _BOOKKEEPING or name.endswith(DROPS_SUFFIX):
            continue
        try:
            st = e.stat(follow_symlinks=False)
            if not stat.S_ISREG(st.st_mode):
                continue
            if name.startswith(".") and name.endswith(".tmp") and now - st.st_mtime > STALE_TEMP:
                os.unlink(e.path)
                log.warning("deleted %s: a client was stopped before it finished spooling an event", e.path)
                continue
        except OSError:
            continue
        # The shared append file is counted as its clients count it (a byte per 4 KiB passed).
        total += st.st_size // USAGE_UNIT if name == APPEND_NAME else units(st.st_size)
    return total


def set_usage(directory: Path, count: int) -> None:
    """Make ``usage`` say ``count`` units. An append that races with this is lost or counted
    twice until the next measurement: the figure is an estimate that the daemon keeps true."""
    flags = os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW | (os.O_CREAT if count else 0)
    try:
        fd = os.open(directory / USAGE_NAME, flags, 0o600)
    except FileNotFoundError:
        return  # zero, and no client has counted anything yet
    except OSError as e:
        log.warning("cannot update %s (%s): clients may drop events early", directory / USAGE_NAME, e.strerror)
        return
    try:
        if os.fstat(fd).st_size != count:
            os.ftruncate(fd, count)  # a file with holes: it takes no space however large the count
    finally:
        os.close(fd)


def take_drops(directory: Path, skip: set[str], now: float | None = None) -> list[Drops]:
    """Take the drop counters (rename them, so clients start new ones) and read those that are
    settled, except ``skip`` (taken and handed over already). Blocking: call it from a thread."""
    now = time.time() if now is None else now
    stamp = int(now * 1e9)
    for live, kind in ((DROPPED_NAME, "count"), (DROPPED_LOG, "log")):
        try:
            os.rename(directory / live, directory / f"{stamp}-0-{kind}{DROPS_SUFFIX}")
        except FileNotFoundError:
            pass
        except OSError as e:
            log.warning("cannot take %s (%s); its drops are counted later", directory / live, e.strerror)
    out = []
    for name in sorted(_taken_counters(directory)):
        taken_at, _ = parse_name(name)
        if name in skip or (name.endswith("-log" + DROPS_SUFFIX) and now - (taken_at or 0) < LOG_SETTLE):
            continue
        drops = read_drops(directory, name)
        if drops is not None:
            out.append(drops)
    return out


def pending_drops(directory: Path, done: set[str]) -> list[Drops]:
    """Drop counters waiting in the spool, taken or not, except ``done`` (counted already):
    what ``hookd status`` adds to the database's totals. Read without taking anything."""
    names = [n for n in (DROPPED_NAME, DROPPED_LOG, *_taken_counters(directory)) if n not in done]
    return [d for d in (read_drops(directory, n, lock=False) for n in names) if d is not None]


def _taken_counters(directory: Path) -> list[str]:
    try:
        return [n for n in os.listdir(directory) if n.endswith(DROPS_SUFFIX) and not n.startswith(".")]
    except OSError:
        return []


def read_drops(directory: Path, name: str, *, lock: bool = True) -> Drops | None:
    """One counter file's drops; None when it is not there. ``lock``: wait for an update under
    way (the file has been taken, so nothing new can begin)."""
    try:
        fd = os.open(directory / name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except OSError as e:
        log.warning("drop counter %s cannot be opened (%s); left in place", directory / name, e.strerror)
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None
        if lock:
            fcntl.flock(fd, fcntl.LOCK_EX)  # an increment in progress (microseconds)
        data = b"".join(iter(lambda: os.read(fd, 1 << 20), b""))
    finally:
        os.close(fd)
    if name == DROPPED_NAME or name.endswith("-count" + DROPS_SUFFIX):
        return _count_record(directory / name, name, data)
    # The log: a "." per event; the time (epoch seconds) before the first of each file.
    stamps = [int(x) for x in data.replace(b".", b" ").split() if x.isdigit()]
    first = min(stamps) if stamps else st.st_mtime
    return Drops(name, data.count(b"."), min(first, st.st_mtime), st.st_mtime)


def _count_record(path: Path, name: str, data: bytes) -> Drops:
    fields = data.split()
    if len(fields) == 3 and all(f.isdigit() for f in fields):
        count, first, last = (int(f) for f in fields)
        return Drops(name, count, first / 1e9, last / 1e9)
    if data:
        log.warning("drop counter %s is unreadable (%r); its count is lost", path, data[:80])
    return Drops(name, 0, None, None)
