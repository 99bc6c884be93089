"""``hookd query``: one read-only SQL statement, printed as a table or JSON lines."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import sys
from typing import Any, TextIO

from hookd.errors import HookdError
from hookd.ops.reading import open_readonly
from hookd.settings import Settings


# -- query ----------------------------------------------------------------------------------
def query(settings: Settings, sql: str, as_json: bool, out: TextIO = sys.stdout) -> int:
    with contextlib.closing(open_readonly(settings.paths.db)) as conn:
        try:
            cur = conn.execute(sql)
        except sqlite3.Error as e:
            # By SQLite's error code (SQLITE_READONLY and its extended codes), not its wording.
            readonly = getattr(e, "sqlite_errorcode", 0) & 0xFF == sqlite3.SQLITE_READONLY
            hint = " (hookd query is read-only)" if readonly else ""
            raise HookdError(f"query failed: {e}{hint}") from None
        cols = [c[0] for c in cur.description or ()]
        rows = cur.fetchall()
    if as_json:
        for row in rows:
            out.write(json.dumps(dict(zip(cols, row, strict=True)), ensure_ascii=False) + "\n")
        return 0
    if not cols:
        return 0
    text = [[_cell(v) for v in row] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in text)) if text else len(c) for i, c in enumerate(cols)]
    widths = [min(w, 80) for w in widths]
    out.write("  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)).rstrip() + "\n")
    for r in text:
        cells = [(v if len(v) <= w else v[: w - 1] + "…").ljust(w) for v, w in zip(r, widths, strict=True)]
        out.write("  ".join(cells).rstrip() + "\n")
    out.write(f"({len(rows)} row{'s' if len(rows) != 1 else ''})\n")
    return 0


def _cell(v: Any) -> str:
    if v is None:
        return "NULL"
    if isinstance(v, bytes):
        return "x'" + v.hex() + "'"
    return str(v)
