"""``hookd vacuum``: retention now, then VACUUM, with the daemon stopped."""

from __future__ import annotations

import fcntl
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from hookd import db_lock
from hookd.errors import AlreadyRunning, HookdError
from hookd.paths import Paths, daemon_running
from hookd.wire import Policy
from hookd.writer import schema
from hookd.writer.retention import step


@dataclass
class VacuumResult:
    before: int  # bytes: the database file and its -wal
    after: int
    deleted: int  # events deleted by --max-age / --max-size


def _on_disk(db: Path) -> int:
    total = 0
    for p in (db, db.with_name(db.name + "-wal")):
        try:
            total += p.stat().st_size
        except FileNotFoundError:
            pass
    return total


def vacuum(
    paths: Paths, *, max_age: float | None = None, max_size: int | None = None, forwarded: int | None = None
) -> VacuumResult:
    """Optionally delete events by age and size once, then rewrite the file without free pages.

    ``forwarded``: with forwarding on, the forwarded cursor (events above it are kept, see
    writer/retention.py). The daemon must be stopped: VACUUM rewrites the whole database in one transaction, which
    would hold up every commit for as long (seconds for a large file).
    """
    if daemon_running(paths):
        raise AlreadyRunning(
            f"hookd is running on {paths.socket}; `hookd vacuum` rewrites the whole database and would "
            "hold up ingestion meanwhile. Stop it first (hooks spool their events and nothing is lost), "
            "e.g. `systemctl --user stop hookd`, then run `hookd vacuum` again. While it runs, retention "
            "(max_age, max_size) deletes old events by itself and SQLite reuses the freed space"
        )
    if not paths.db.exists():
        raise HookdError(f"no database at {paths.db}: nothing to vacuum")
    with db_lock.for_command(paths.db, "hookd vacuum"):  # a daemon on another socket, too
        return _vacuum(paths, max_age, max_size, forwarded)


def _vacuum(paths: Paths, max_age: float | None, max_size: int | None, forwarded: int | None) -> VacuumResult:
    lock = schema.writer_lock(paths.db)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise AlreadyRunning(
                f"another process writes {paths.db} (a writer still finishing, or `hookd import`); "
                "wait for it to end, then run `hookd vacuum` again"
            ) from None
        before = _on_disk(paths.db)
        db = schema.connect(paths.db)
        deleted = 0
        try:
            schema.migrate(db)
            if max_age is not None or max_size is not None:
                policy = Policy(max_age=max_age, max_size=max_size, step_rows=50_000, forwarded=forwarded)
                while True:
                    r = step(db, policy)
                    deleted += r.age + r.size
                    if not r.more:
                        break
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            db.execute("VACUUM")
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.DatabaseError as e:
            raise HookdError(f"cannot vacuum {paths.db}: {e}") from None
        finally:
            db.close()
        return VacuumResult(before, _on_disk(paths.db), deleted)
    finally:
        os.close(fd)
