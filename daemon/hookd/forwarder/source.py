"""The SQLite side of forwarding: committed events read in eid order, read-only.

The database is opened ``mode=ro`` with ``query_only``: a WAL reader never blocks the writer
(nor the writer it), and each read is one short statement, so no snapshot is held open that
would keep a checkpoint from finishing. eids are committed in increasing order (one writer,
batches in order, eids assigned by one clock), so "everything above the cursor" never misses
an event committed later with a smaller eid.
"""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path
from typing import Any, Final

from hookd.records import BASE_COLUMNS, DATA, SESSION

_SELECT: Final = f"SELECT {', '.join(BASE_COLUMNS)} FROM events WHERE eid > ? ORDER BY eid LIMIT ?"
#: What PostgreSQL's text and jsonb cannot hold: a NUL character, or a lone UTF-16 surrogate
#: (both can be written as JSON escapes, which SQLite keeps as sent).
#: The session and client id come from the JSON too, so the escapes in ``data`` find them all.
_UNSTORABLE: Final = re.compile(r"\\u(0000|d[89a-f][0-9a-f]{2})", re.IGNORECASE)
_REPLACEMENT: Final = "\ufffd"


class Source:
    """The local database, read-only."""

    def __init__(self, db: Path) -> None:
        self.path = db
        self.conn: sqlite3.Connection | None = None

    def _open(self) -> sqlite3.Connection:
        if self.conn is None:
            conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, isolation_level=None)
            conn.execute("PRAGMA busy_timeout = 5000")
            conn.execute("PRAGMA query_only = ON")
            self.conn = conn
        return self.conn

    def after(self, eid: int, limit: int) -> list[tuple[Any, ...]]:
        """Up to ``limit`` events with an eid above ``eid``, in eid order."""
        try:
            return self._open().execute(_SELECT, (eid, limit)).fetchall()
        except sqlite3.Error:
            self.close()  # opened again next time (a database replaced by `hookd rebuild`)
            raise

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def storable(rows: list[tuple[Any, ...]]) -> tuple[list[tuple[Any, ...]], int]:
    """The rows as PostgreSQL can store them, and how many had to change: NUL characters and
    lone surrogates (in the JSON's escapes or in the session and client id) become U+FFFD.
    Rows without any (nearly all) are passed through untouched, after one substring test each."""
    out = rows
    changed = 0
    for i, row in enumerate(rows):
        data = row[DATA]
        if "\\u" not in data or not _UNSTORABLE.search(data):
            continue
        if out is rows:
            out = list(rows)
        fixed = list(row)
        fixed[DATA] = json.dumps(_clean(json.loads(data)), ensure_ascii=False, separators=(",", ":"))
        for col in (SESSION, BASE_COLUMNS.index("client_id"), BASE_COLUMNS.index("type")):
            if isinstance(fixed[col], str):
                fixed[col] = _clean(fixed[col])
        out[i] = tuple(fixed)
        changed += 1
    return out, changed


def _clean(value: Any) -> Any:
    if isinstance(value, str):
        return "".join(_REPLACEMENT if c == "\x00" or "\ud800" <= c <= "\udfff" else c for c in value)
    if isinstance(value, list):
        return [_clean(v) for v in value]
    if isinstance(value, dict):
        return {_clean(k): _clean(v) for k, v in value.items()}
    return value
