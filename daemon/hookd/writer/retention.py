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
- forwarding (``policy.forwarded`` set): events above the forwarded cursor are not in
  PostgreSQL yet. The age rule never deletes them; the size rule deletes them only once no
  forwarded event is left to delete (``max_size`` protects the disk), and counts them in
  ``retention.deleted.unforwarded`` (the writer logs a warning, ``hookd status`` shows it).

Deleted pages are reused by SQLite; the file itself only shrinks with ``hookd vacuum``.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from typing import Any

from hookd.wire import Policy
from hookd.writer import schema


@dataclass
class StepResult:
    age: int = 0  # events deleted by the age rule
    size: int = 0  # events deleted by the size rule
    more: bool = False  # whether another step has work to do
    unforwarded: int = 0  # of those, events deleted before they were forwarded (size rule only)


def data_size(db: Any) -> int:
    """Bytes of the database in use: pages minus free pages, times the page size."""
    pages = db.execute("PRAGMA page_count").fetchone()[0]
    free = db.execute("PRAGMA freelist_count").fetchone()[0]
    return (pages - free) * db.execute("PRAGMA page_size").fetchone()[0]


# The (type, ts) index finds the oldest events of a type; the subquery bounds the step; the
# eid bound spares events not forwarded yet.
DELETE_AGED = "DELETE FROM events WHERE eid IN (SELECT eid FROM events WHERE type = ? AND ts < ? AND eid <= ? LIMIT ?)"
#: No forwarding: every eid is below this.
NO_BOUND = (1 << 63) - 1
#: After deleting n events of a type: its count and oldest ts. A type whose count reaches 0
#: keeps its row (status shows when it was last seen); its first_ts is then set to last_ts.
UPDATE_TYPE = (
    "UPDATE event_types SET count = max(count - ?2, 0), "
    "first_ts = coalesce((SELECT min(ts) FROM events WHERE type = ?1), last_ts) WHERE type = ?1"
)


def deleted(db: Any) -> int:
    """Events the last DELETE removed. Not ``total_changes``: that also counts what the
    summaries' trigger changed (schema migration 7), SQL's ``changes()`` does not."""
    return db.execute("SELECT changes()").fetchone()[0]


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
        removed = _delete_aged(db, policy, now, limit, res)
        budget = limit - res.age
        if policy.max_size is not None and budget > 0:
            for etype, n in _delete_for_size(db, policy, policy.max_size, budget, res).items():
                removed[etype] = removed.get(etype, 0) + n
        _record(db, res, removed, newest)
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    return res


def _delete_aged(db: Any, policy: Policy, now: float, budget: int, res: StepResult) -> dict[str, int]:
    """The age rule, within ``budget`` rows: only types whose oldest event is past their cutoff.
    Adds to ``res.age`` (and sets ``res.more``); returns the events deleted by type."""
    removed: dict[str, int] = {}
    for etype, first_ts in db.execute("SELECT type, first_ts FROM event_types WHERE count > 0").fetchall():
        age = policy.type_max_age.get(etype, policy.max_age)  # a type's own None: forever
        if age is None or first_ts >= now - age:
            continue
        if budget <= 0:
            res.more = True
            break
        bound = NO_BOUND if policy.forwarded is None else policy.forwarded
        db.execute(DELETE_AGED, (etype, now - age, bound, budget))
        n = deleted(db)
        removed[etype] = removed.get(etype, 0) + n
        res.age += n
        budget -= n
        if budget <= 0:
            res.more = True
    return removed


def _delete_for_size(db: Any, policy: Policy, max_size: int, budget: int, res: StepResult) -> dict[str, int]:
    """The size rule, within ``budget`` rows: the oldest events by eid (time-ordered), except
    types kept forever. Sets ``res.size`` (and ``res.more``); returns the events deleted by type."""
    size = data_size(db)
    if size <= max_size:
        return {}
    res.size, by_type, res.unforwarded = _delete_oldest(db, policy, size, budget)
    res.more = res.more or (res.size > 0 and data_size(db) > max_size)
    return by_type


def _record(db: Any, res: StepResult, removed: dict[str, int], newest: int | None) -> None:
    """What a step deleted, in the same transaction: per-type counts, the deleted high-water
    mark, the lifetime counters."""
    for etype, n in removed.items():
        if n:
            db.execute(UPDATE_TYPE, (etype, n))
    if res.age + res.size and db.execute("SELECT max(eid) FROM events").fetchone()[0] != newest:
        # The newest event went: remember its eid, or recovery would bring it back from the
        # mirror (it replays what is newer than the newest stored event).
        db.execute(
            "INSERT INTO counters (name, value) VALUES (?, ?) "
            "ON CONFLICT(name) DO UPDATE SET value = max(value, excluded.value)",
            (schema.DELETED_EID_MAX, newest),
        )
    schema.bump_counters(
        db,
        {
            "retention.deleted": res.age + res.size,
            "retention.deleted.age": res.age,
            "retention.deleted.size": res.size,
            UNFORWARDED: res.unforwarded,
        },
    )


def _delete_oldest(db: Any, policy: Policy, size: int, budget: int) -> tuple[int, dict[str, int], int]:
    """Delete about enough of the oldest events to bring the data under ``max_size``: forwarded
    ones first. Returns (deleted, deleted by type, deleted that were not forwarded)."""
    total = db.execute("SELECT coalesce(sum(count), 0) FROM event_types").fetchone()[0]
    if total <= 0:
        return 0, {}, 0
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
            return 0, {}, 0
    hi = _spare_unforwarded(db, policy, row[0], spare)
    by_type = dict(
        db.execute(
            "SELECT type, count(*) FROM events WHERE eid <= ? AND type NOT IN (SELECT value FROM json_each(?)) "
            "GROUP BY type",
            (hi, spare),
        ).fetchall()
    )
    unforwarded = 0
    if policy.forwarded is not None and hi > policy.forwarded:
        unforwarded = db.execute(
            "SELECT count(*) FROM events WHERE eid > ? AND eid <= ? AND type NOT IN (SELECT value FROM json_each(?))",
            (policy.forwarded, hi, spare),
        ).fetchone()[0]
    db.execute("DELETE FROM events WHERE eid <= ? AND type NOT IN (SELECT value FROM json_each(?))", (hi, spare))
    return deleted(db), by_type, unforwarded


def _spare_unforwarded(db: Any, policy: Policy, hi: int, spare: str) -> int:
    """The size rule's upper eid, lowered to the forwarded cursor while forwarded events are
    left to delete; once none is, ``hi`` as it was (the disk's bound wins, counted)."""
    if policy.forwarded is None or hi <= policy.forwarded:
        return hi
    (forwarded_hi,) = db.execute(
        "SELECT max(eid) FROM events WHERE eid <= ? AND type NOT IN (SELECT value FROM json_each(?))",
        (policy.forwarded, spare),
    ).fetchone()
    return hi if forwarded_hi is None else forwarded_hi


#: In ``counters``: events retention deleted before they were forwarded to PostgreSQL.
UNFORWARDED = "retention.deleted.unforwarded"


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"  # pragma: no cover


# -- hookd vacuum ----------------------------------------------------------------------------
