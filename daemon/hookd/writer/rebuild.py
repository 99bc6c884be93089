"""``hookd rebuild``: recreate the database from the mirror files alone.

The mirror is the durable log and SQLite its index, so a lost or corrupt database can always be
rebuilt. The new database is built beside the old one and swapped in by rename; the old files
are kept as ``<db>.bak-<time>`` (with their -wal/-shm) for the user to delete. ``rejected`` rows
and ``counters`` are copied over from the old database when it can still be read (the mirror
holds only stored events).

Compressed day files (``.jsonl.gz``) are read like plain ones. Only what the mirror still holds
can be rebuilt: the mirror is kept by its own retention (``mirror_max_age``,
``mirror_max_size``), as a whole, so events of a type the database keeps forever are lost to a
rebuild once their mirror files have been deleted.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from hookd import db_lock
from hookd.errors import AlreadyRunning, HookdError
from hookd.paths import Paths, daemon_running, private_dir
from hookd.writer import schema
from hookd.writer.mirror import mirror_files
from hookd.writer.writer import Writer

log = logging.getLogger("hookd.rebuild")


@dataclass
class RebuildResult:
    events: int
    files: int
    backup: Path | None
    carried_over: bool


def _sidecars(db: Path) -> list[Path]:
    return [db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")]


def rebuild(paths: Paths) -> RebuildResult:
    if daemon_running(paths):
        raise AlreadyRunning(f"hookd is running on {paths.socket}; stop it before rebuilding its database")
    files = mirror_files(paths.mirror_dir) if paths.mirror_dir.is_dir() else []
    if not files:
        raise HookdError(f"no mirror files in {paths.mirror_dir}: nothing to rebuild from")
    private_dir(paths.db.parent)
    # Held until the new database is in place: a daemon started meanwhile (on any socket) would
    # write the old file, which the swap below replaces.
    with db_lock.for_command(paths.db, "hookd rebuild"):
        return _rebuild(paths, files)


def _rebuild(paths: Paths, files: list[Path]) -> RebuildResult:
    tmp = paths.db.with_name(paths.db.name + f".rebuild-{os.getpid()}")
    for p in _sidecars(tmp):
        p.unlink(missing_ok=True)
    writer = Writer(tmp, paths.mirror_dir)
    try:
        writer.mirror.repair_torn_tail()
        events = writer.load(writer.mirror.records_after(0))
        writer.summarize_all()  # the dashboard's summaries, before the file is put in place
        carried = _carry_over(writer.db, paths.db)
    finally:
        writer.close()
        schema.writer_lock(tmp).unlink(missing_ok=True)
    backup = None
    if paths.db.exists():
        backup = paths.db.with_name(paths.db.name + time.strftime(".bak-%Y%m%dT%H%M%S"))
        for old, new in zip(_sidecars(paths.db), _sidecars(backup), strict=True):
            with contextlib.suppress(FileNotFoundError):
                os.rename(old, new)
    for old, new in zip(_sidecars(tmp), _sidecars(paths.db), strict=True):
        with contextlib.suppress(FileNotFoundError):
            os.rename(old, new)
    return RebuildResult(events, len(files), backup, carried)


def _carry_over(new: sqlite3.Connection, old_path: Path) -> bool:
    """Copy ``rejected`` and ``counters`` from the old database, if it is readable.

    What to copy is decided by the tables the *old* database has: one made by an older hookd
    (schema version 1) has ``rejected`` but no ``counters`` yet, and its rejected lines must
    still come over.
    """
    if not old_path.exists():
        return False
    try:
        new.execute("ATTACH DATABASE ? AS old", (os.fspath(old_path),))
    except sqlite3.DatabaseError as e:
        log.warning("old database not readable (%s): rejected lines and counters start empty", e)
        return False
    try:
        # The first read of the old file: a corrupt one fails here, not at ATTACH.
        tables = {row[0] for row in new.execute("SELECT name FROM old.sqlite_master WHERE type = 'table'")}
        new.execute("BEGIN")
        if "rejected" in tables:
            # An old database from before ``line_key`` (schema 4) has none: NULL then.
            old_columns = {row[1] for row in new.execute("PRAGMA old.table_info(rejected)")}
            key = "line_key" if "line_key" in old_columns else "NULL"
            new.execute(
                "INSERT OR IGNORE INTO rejected (recv_ts, reason, detail, size, preview, pid, uid, line_key) "
                f"SELECT recv_ts, reason, detail, size, preview, pid, uid, {key} FROM old.rejected ORDER BY rid"
            )
        if "counters" in tables:
            new.execute("INSERT OR REPLACE INTO counters SELECT name, value FROM old.counters")
        new.execute("COMMIT")
        return True
    except sqlite3.DatabaseError as e:
        if new.in_transaction:
            new.execute("ROLLBACK")
        log.warning("could not copy rejected lines and counters from the old database: %s", e)
        return False
    finally:
        new.execute("DETACH DATABASE old")
