"""The spool: where clients leave events while the daemon cannot take them.

Clients write each event to its own file: ``.<name>.tmp`` first, then an atomic rename to
``<time_ns>-<pid>-<random>.jsonl``. A file with a final name is therefore complete, and no two
clients ever write the same file, so no locks are needed and concurrent hooks cannot interleave.

The daemon scans the directory (in a thread: this is disk I/O), frames the files' lines like
socket lines, and sends the file names with the batch. The writer records the names in
``spool_done`` in the same transaction as the events and deletes the files after the commit;
at start it deletes any file already recorded. So a file is ingested once, even if the daemon
is killed between the commit and the delete.
"""

from __future__ import annotations

import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from .framing import Peer

log = logging.getLogger("hookd.spool")

SUFFIX = ".jsonl"


@dataclass(frozen=True, slots=True)
class SpoolFile:
    name: str
    data: bytes
    spooled_at: float  # when the client wrote it: the events' default ts and recv_ts
    peer: Peer


def parse_name(name: str) -> tuple[float | None, int | None]:
    """``<time_ns>-<pid>-<random>.jsonl`` -> (epoch seconds, pid); None where not readable."""
    parts = name[: -len(SUFFIX)].split("-")
    try:
        t = int(parts[0]) / 1e9
    except (ValueError, IndexError):
        t = None
    try:
        pid = int(parts[1])
    except (ValueError, IndexError):
        pid = None
    return t, pid


def scan(directory: Path, skip: set[str], max_files: int = 2000, max_bytes: int = 16 << 20) -> list[SpoolFile]:
    """Read up to ``max_files`` complete spool files (oldest first), skipping ``skip``.

    Blocking: call it from a thread. Files that are not ours or not regular are left alone
    with a warning, never read.
    """
    try:
        names = sorted(e.name for e in os.scandir(directory) if e.name.endswith(SUFFIX) and not e.name.startswith("."))
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
            chunks = []
            while chunk := os.read(fd, 1 << 20):
                chunks.append(chunk)
            data = b"".join(chunks)
        finally:
            os.close(fd)
        t, pid = parse_name(name)
        out.append(SpoolFile(name, data, t if t is not None else st.st_mtime, Peer(pid, st.st_uid)))
        total += len(data)
        if len(out) >= max_files or total >= max_bytes:
            break
    return out
