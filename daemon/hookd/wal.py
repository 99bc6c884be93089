"""WAL checkpoints from a connection of their own, off the writer's path: what the daemon (through
aiosqlite) and ``hookd import`` (in a thread) both run, written once. No I/O here: each caller
runs the statements on its own connection.

Checkpointing inside the writer cost about a fifth of its insert time in the design
measurements, so the writer's own autocheckpoint is only a safety net. Every ``INTERVAL`` a
PASSIVE checkpoint copies what it can without waiting; a TRUNCATE one follows when the WAL has
grown past ``TRUNCATE_BYTES`` or after a large retention deletion: the PASSIVE one has copied
nearly everything already, so the TRUNCATE holds off the writer only briefly (its wait for
readers is bounded by the busy timeout).
"""

from __future__ import annotations

from typing import Final

#: Seconds between checkpoints (docs/performance.md: nothing to tune).
INTERVAL: Final = 0.5
#: A checkpoint waits at most this long for a lock: it is never worth holding the writer up.
BUSY_TIMEOUT: Final = "PRAGMA busy_timeout = 100"
PAGE_SIZE: Final = "PRAGMA page_size"
#: Returns (busy, pages in the WAL, pages copied).
PASSIVE: Final = "PRAGMA wal_checkpoint(PASSIVE)"
TRUNCATE: Final = "PRAGMA wal_checkpoint(TRUNCATE)"
#: When the WAL holds more than this, the checkpointer truncates the -wal file (a PASSIVE
#: checkpoint only lets SQLite reuse it from the start).
TRUNCATE_BYTES: Final = 64 << 20


def should_truncate(wal_pages: int, page_size: int, *, asked: bool = False) -> bool:
    """After a PASSIVE checkpoint that left ``wal_pages`` in the WAL: truncate the file now?"""
    return asked or wal_pages * page_size >= TRUNCATE_BYTES
