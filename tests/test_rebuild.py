"""``hookd rebuild`` over databases made by older hookd versions.

The mirror holds only stored events, so what else the old database holds (``rejected`` lines,
``counters``) must be carried over by what the *old* database has: a database from before
``counters`` existed (schema version 1) keeps its rejected lines too.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from conftest import Daemon, clean_env
from hookd.writer import schema

REJECTED = "SELECT recv_ts, reason, detail, size, preview, pid, uid FROM rejected ORDER BY rid"


def make_v1_database(path: Path, events: list[tuple], rejected: list[tuple], types: list[tuple]) -> None:
    """A database as hookd with schema version 1 left it: only the first migration, run the
    way ``schema.migrate`` runs it, then its rows."""
    version, name, initial = schema.MIGRATIONS[0]
    assert version == 1
    db = sqlite3.connect(path, isolation_level=None)
    try:
        assert db.execute("PRAGMA journal_mode = WAL").fetchone()[0] == "wal"
        db.execute(
            "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)"
        )
        db.execute("BEGIN")
        initial(db)
        db.execute("INSERT INTO schema_migrations VALUES (?, ?, ?)", (version, name, time.time()))
        db.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", events)
        db.executemany(
            "INSERT INTO rejected (recv_ts, reason, detail, size, preview, pid, uid) VALUES (?, ?, ?, ?, ?, ?, ?)",
            rejected,
        )
        db.executemany("INSERT INTO event_types VALUES (?, ?, ?, ?)", types)
        db.execute("COMMIT")
        assert schema.schema_version(db) == 1
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert "counters" not in tables and "rejected" in tables
    finally:
        db.close()


def rebuild(home: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hookd", "rebuild"], env=clean_env(home), capture_output=True, text=True
    )


def test_rebuild_of_a_schema_version_1_database_keeps_its_rejected_lines(home: Path) -> None:
    # The daemon writes the mirror; the database beside it is then replaced by a version-1 one
    # holding the same rows, as if an older hookd had written both.
    d = Daemon(home).start()
    d.send(b'{"type":"a","n":1}\n{"type":"b","id":"k"}\nnot json\n[1]\n{"type":"a","n":2}\n')
    assert d.stop() == 0
    events = d.query("SELECT * FROM events ORDER BY eid")
    rejected = d.query(REJECTED)
    types = d.query("SELECT type, count, first_ts, last_ts FROM event_types ORDER BY type")
    assert len(events) == 3 and len(rejected) == 2
    for p in home.glob("events.db*"):
        p.unlink()
    make_v1_database(d.db_path, events, rejected, types)

    out = rebuild(home)
    assert out.returncode == 0, out.stderr
    assert "WARNING" not in out.stderr, out.stderr
    assert "rejected lines and counters copied from it" in out.stdout
    assert d.query(REJECTED) == rejected
    assert d.query("SELECT * FROM events ORDER BY eid") == events
    assert d.query("SELECT type, count, first_ts, last_ts FROM event_types ORDER BY type") == types
    assert d.query("SELECT max(version) FROM schema_migrations") == [(schema.SCHEMA_VERSION,)]
    assert d.query("SELECT count(*) FROM counters") == [(0,)]  # version 1 had none to carry
    # the version-1 database is kept as it was
    (backup,) = home.glob("events.db.bak-*[0-9]")
    old = sqlite3.connect(f"file:{backup}?mode=ro", uri=True)
    try:
        assert schema.schema_version(old) == 1
        assert old.execute(REJECTED).fetchall() == rejected
    finally:
        old.close()

    # and the daemon runs on the rebuilt database
    d.start()
    d.send(b'{"type":"a","n":3}\n')
    assert d.wait_count(4) == 4
    assert d.stop() == 0


def test_rebuild_of_a_current_database_keeps_its_counters(home: Path) -> None:
    d = Daemon(home).start()
    d.send(b'{"type":"a","id":"1"}\n{"type":"a","id":"1"}\nnope\n')
    assert d.stop() == 0
    counters = d.query("SELECT name, value FROM counters ORDER BY name")
    rejected = d.query(REJECTED)
    assert dict(counters)["rejected.invalid_json"] == 1

    out = rebuild(home)
    assert out.returncode == 0, out.stderr
    assert "rejected lines and counters copied from it" in out.stdout
    assert d.query("SELECT name, value FROM counters ORDER BY name") == counters
    assert d.query(REJECTED) == rejected
