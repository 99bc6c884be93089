"""The dashboard's read-only connections to the database, each query under a time limit.

SQLite opened with ``mode=ro`` and ``PRAGMA query_only``, as ``hookd query`` opens it:
the dashboard can never write, never takes the writer's lock, and in WAL mode a reader never
blocks the writer. A few connections are kept (``POOL``): requests beyond them wait briefly,
then are answered ``503``, so a burst of refreshes cannot pile up threads and queries. A query
running past ``QUERY_LIMIT`` is interrupted by SQLite's progress handler: a slow panel answers
an error instead of holding a connection.
"""

from __future__ import annotations

import contextlib
import queue
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Final

from hookd.errors import StoreError

#: Connections kept open: at most this many panel queries run at once.
POOL: Final = 4
#: Seconds a request waits for a free connection before it is answered 503.
WAIT: Final = 2.0
#: Seconds a query may run before SQLite interrupts it.
QUERY_LIMIT: Final = 2.0
#: The progress handler runs every this many SQLite virtual machine steps (about 0.1 ms).
PROGRESS_STEPS: Final = 2000
#: The schema version whose tables the panels read (migrations 7 and 8).
NEEDS_SCHEMA: Final = 8
#: A table of each: ``event_hours`` (7), ``tool_hours`` (8).
NEEDS_TABLES: Final = ("event_hours", "tool_hours")


class Busy(Exception):
    """Every connection is in use: the request is answered 503."""


class Reader:
    """A pool of read-only connections to ``db``, opened on first use (the database may not
    exist yet when the dashboard starts)."""

    def __init__(self, db: Path, pool: int = POOL, limit: float = QUERY_LIMIT) -> None:
        self.db = db
        self.limit = limit
        self._free: queue.LifoQueue[sqlite3.Connection] = queue.LifoQueue()
        self._slots = threading.BoundedSemaphore(pool)
        self.interrupted = 0  # queries stopped by the time limit

    def _open(self) -> sqlite3.Connection:
        if not self.db.exists():
            raise StoreError(f"no database at {self.db} yet: start the daemon (`hookd run`)")
        try:
            # check_same_thread off: a connection serves one request at a time, from any thread.
            conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=5.0, check_same_thread=False)
            conn.execute("PRAGMA query_only = ON")
            conn.execute("PRAGMA cache_size = -32000")  # 32 MiB per connection
        except sqlite3.DatabaseError as e:
            raise StoreError(f"cannot read {self.db}: {e}") from None
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not tables.issuperset(NEEDS_TABLES):
            conn.close()
            raise StoreError(
                f"{self.db} has no dashboard summaries yet (schema migration {NEEDS_SCHEMA}): "
                "restart the daemon with this version of hookd, which adds them"
            )
        return conn

    @contextlib.contextmanager
    def connection(self) -> Iterator[sqlite3.Connection]:
        """A connection whose queries stop with ``interrupted`` after ``limit`` seconds."""
        if not self._slots.acquire(timeout=WAIT):
            raise Busy(f"{POOL} queries are running; try again")
        try:
            try:
                conn = self._free.get_nowait()
            except queue.Empty:
                conn = self._open()
            deadline = time.monotonic() + self.limit

            def over() -> int:
                if time.monotonic() > deadline:
                    self.interrupted += 1
                    return 1
                return 0

            conn.set_progress_handler(over, PROGRESS_STEPS)
            try:
                yield conn
            finally:
                conn.set_progress_handler(None, 0)
                if conn.in_transaction:
                    conn.rollback()
                self._free.put(conn)
        finally:
            self._slots.release()

    def close(self) -> None:
        while True:
            try:
                self._free.get_nowait().close()
            except queue.Empty:
                return
