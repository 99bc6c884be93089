"""Retention: deleting old events in small steps, and ``hookd vacuum``.

The daemon sends the writer a ``retain`` frame every ``retention_interval`` seconds (see
``wire``). The writer then runs ``step`` between batches, each step one short transaction
deleting at most ``STEP_ROWS`` events, until nothing more is due; ingestion waits for one step
at most (a few milliseconds, docs/performance.md). It also hands mirror upkeep (compression,
deletion by age and size) to a thread of its own.

Rules, applied to the database (the mirror is kept by its own age and size limits, as a whole):

- age: an event whose ``ts`` is older than its type's maximum age (``type_max_age[type]``,
  else ``max_age``; None is forever) is deleted;
- size: while the data in the database (pages in use, not free pages) exceeds ``max_size``,
  the oldest events are deleted, except those of types configured to be kept forever.

Deleted pages are reused by SQLite; the file itself only shrinks with ``hookd vacuum``.
"""

from __future__ import annotations

import fcntl
import json
import logging
import math
import os
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import store
from .errors import AlreadyRunning, HookdError
from .paths import Paths, daemon_running

log = logging.getLogger("hookd.retention")

#: Events deleted per step at most. One step of 2000 held the write lock ~10 ms on this machine.
STEP_ROWS = 2000


@dataclass
class Policy:
    """What the writer applies; travels in the ``retain`` frame as a dict."""

    max_age: float | None = None
    type_max_age: dict[str, float | None] = field(default_factory=dict)
    max_size: int | None = None
    mirror_max_age: float | None = None
    mirror_max_size: int | None = None
    mirror_compress: bool = True
    step_rows: int = STEP_ROWS

    @classmethod
    def from_settings(cls, s: Any) -> Policy:
        return cls(s.max_age, dict(s.type_max_age), s.max_size, s.mirror_max_age, s.mirror_max_size, s.mirror_compress)

    @property
    def db_rules(self) -> bool:
        return self.max_age is not None or self.max_size is not None or any(self.type_max_age.values())

    @property
    def mirror_rules(self) -> bool:
        return self.mirror_compress or self.mirror_max_age is not None or self.mirror_max_size is not None

    def frame(self) -> list[Any]:
        return ["retain", self.__dict__]

    @classmethod
    def from_frame(cls, frame: list[Any]) -> Policy:
        return cls(**frame[1])

    def forever(self) -> list[str]:
        """Types configured to be kept forever: the size rule spares them too."""
        return sorted(t for t, age in self.type_max_age.items() if age is None)


#: A retention run that deleted at least this many events asks for a TRUNCATE checkpoint.
LARGE_DELETION = 10_000


async def schedule(settings: Any, link: Any, stats: Any) -> None:
    """In the daemon: send the writer a ``retain`` frame now and every ``retention_interval``,
    and count what it reports (``stats.deleted``). Sends nothing while no rule is configured."""
    run = {"age": 0, "size": 0}

    def retained(by_age: int, by_size: int, more: bool) -> None:
        stats.deleted["age"] += by_age
        stats.deleted["size"] += by_size
        run["age"] += by_age
        run["size"] += by_size
        if not more:
            total = run["age"] + run["size"]
            if total:
                log.info("retention deleted %d events (%d by age, %d by size)", total, run["age"], run["size"])
            if total >= LARGE_DELETION:
                link.truncate_wal = True
            run["age"] = run["size"] = 0

    import asyncio  # here, not at the top: the writer process imports this module and needs no event loop

    link.on_retained.append(retained)
    while True:  # the policy is read again each time: SIGHUP may have changed it
        policy = Policy.from_settings(settings)
        if policy.db_rules or policy.mirror_rules:
            link.control(policy.frame())
        await asyncio.sleep(settings.retention_interval)


@dataclass
class StepResult:
    age: int = 0  # events deleted by the age rule
    size: int = 0  # events deleted by the size rule
    more: bool = False  # whether another step has work to do


def data_size(db: Any) -> int:
    """Bytes of the database in use: pages minus free pages, times the page size."""
    pages = db.execute("PRAGMA page_count").fetchone()[0]
    free = db.execute("PRAGMA freelist_count").fetchone()[0]
    return (pages - free) * db.execute("PRAGMA page_size").fetchone()[0]


# The (type, ts) index finds the oldest events of a type; the subquery bounds the step.
DELETE_AGED = "DELETE FROM events WHERE eid IN (SELECT eid FROM events WHERE type = ? AND ts < ? LIMIT ?)"
#: After deleting n events of a type: its count and oldest ts. A type whose count reaches 0
#: keeps its row (status shows when it was last seen); its first_ts is then set to last_ts.
UPDATE_TYPE = (
    "UPDATE event_types SET count = max(count - ?2, 0), "
    "first_ts = coalesce((SELECT min(ts) FROM events WHERE type = ?1), last_ts) WHERE type = ?1"
)


def step(db: Any, policy: Policy, now: float | None = None, limit: int | None = None) -> StepResult:
    """Delete at most ``limit`` events that the policy says are due, in one transaction.

    ``db`` is the writer's connection (apsw wrapper or sqlite3 in autocommit mode).
    """
    now = time.time() if now is None else now
    limit = policy.step_rows if limit is None else limit
    res = StepResult()
    db.execute("BEGIN IMMEDIATE")
    try:
        newest = db.execute("SELECT max(eid) FROM events").fetchone()[0]
        budget = limit
        removed: dict[str, int] = {}
        # Age: only types whose oldest event is past their cutoff.
        for etype, first_ts in db.execute("SELECT type, first_ts FROM event_types WHERE count > 0").fetchall():
            age = policy.type_max_age.get(etype, policy.max_age)  # a type's own None: forever
            if age is None or first_ts >= now - age:
                continue
            if budget <= 0:
                res.more = True
                break
            before = db.total_changes
            db.execute(DELETE_AGED, (etype, now - age, budget))
            n = db.total_changes - before
            removed[etype] = removed.get(etype, 0) + n
            res.age += n
            budget -= n
            if budget <= 0:
                res.more = True
        # Size: the oldest events by eid (time-ordered), except types kept forever.
        if policy.max_size is not None and budget > 0:
            size = data_size(db)
            if size > policy.max_size:
                res.size, by_type = _delete_oldest(db, policy, size, budget)
                for etype, n in by_type.items():
                    removed[etype] = removed.get(etype, 0) + n
                res.more = res.more or (res.size > 0 and data_size(db) > policy.max_size)
        for etype, n in removed.items():
            if n:
                db.execute(UPDATE_TYPE, (etype, n))
        if res.age + res.size and db.execute("SELECT max(eid) FROM events").fetchone()[0] != newest:
            # The newest event went: remember its eid, or recovery would bring it back from the
            # mirror (it replays what is newer than the newest stored event).
            db.execute(
                "INSERT INTO counters (name, value) VALUES (?, ?) "
                "ON CONFLICT(name) DO UPDATE SET value = max(value, excluded.value)",
                (store.DELETED_EID_MAX, newest),
            )
        store.bump_counters(
            db,
            {
                "retention.deleted": res.age + res.size,
                "retention.deleted.age": res.age,
                "retention.deleted.size": res.size,
            },
        )
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    return res


def _delete_oldest(db: Any, policy: Policy, size: int, budget: int) -> tuple[int, dict[str, int]]:
    """Delete about enough of the oldest events to bring the data under ``max_size``."""
    total = db.execute("SELECT coalesce(sum(count), 0) FROM event_types").fetchone()[0]
    if total <= 0:
        return 0, {}
    per_row = size / total  # bytes per event, indexes included
    want = min(budget, max(100, math.ceil((size - policy.max_size) / per_row)))
    spare = json.dumps(policy.forever())
    row = db.execute(
        "SELECT eid FROM events WHERE type NOT IN (SELECT value FROM json_each(?)) ORDER BY eid LIMIT 1 OFFSET ?",
        (spare, want - 1),
    ).fetchone()
    if row is None:
        row = db.execute(
            "SELECT max(eid) FROM events WHERE type NOT IN (SELECT value FROM json_each(?))", (spare,)
        ).fetchone()
        if row is None or row[0] is None:
            return 0, {}
    hi = row[0]
    by_type = dict(
        db.execute(
            "SELECT type, count(*) FROM events WHERE eid <= ? AND type NOT IN (SELECT value FROM json_each(?)) "
            "GROUP BY type",
            (hi, spare),
        ).fetchall()
    )
    before = db.total_changes
    db.execute("DELETE FROM events WHERE eid <= ? AND type NOT IN (SELECT value FROM json_each(?))", (hi, spare))
    return db.total_changes - before, by_type


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"  # pragma: no cover


# -- hookd vacuum ----------------------------------------------------------------------------


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


def vacuum(paths: Paths, *, max_age: float | None = None, max_size: int | None = None) -> VacuumResult:
    """Optionally delete events by age and size once, then rewrite the file without free pages.

    The daemon must be stopped: VACUUM rewrites the whole database in one transaction, which
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
    lock = store.writer_lock(paths.db)
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
        db = store.connect(paths.db)
        deleted = 0
        try:
            store.migrate(db)
            if max_age is not None or max_size is not None:
                policy = Policy(max_age=max_age, max_size=max_size, step_rows=50_000)
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
