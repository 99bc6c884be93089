"""``hookd query``: one read-only SQL statement, printed as a table or JSON lines.

Read-only three times over: the connection is opened ``mode=ro`` with ``PRAGMA query_only``
(reading.open_readonly), and an SQLite authorizer lets only reading run. The authorizer is what
refuses what the first two let through or answer badly: ``ATTACH`` (which creates the file it
names), ``PRAGMA journal_mode=DELETE`` (a "disk I/O error"), ``BEGIN``. It is an allow-list:
an action SQLite adds later is refused until someone decides it only reads.
"""

from __future__ import annotations

import contextlib
import json
import re
import sqlite3
import sys
from dataclasses import dataclass
from typing import Any, Final, TextIO

from hookd.errors import HookdError, UsageError
from hookd.ops.reading import open_readonly
from hookd.ops.show import one_line
from hookd.settings import Settings

#: Actions that only read: the statement, reading a column, calling a function, a recursive CTE.
_READ_ACTIONS: Final = frozenset(
    (sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION, sqlite3.SQLITE_RECURSIVE)
)
#: PRAGMAs whose argument names what to describe (a table, an index): reading, whatever it is.
DESCRIBING_PRAGMAS: Final = frozenset(
    (
        "table_info",
        "table_xinfo",
        "table_list",
        "index_list",
        "index_info",
        "index_xinfo",
        "foreign_key_list",
        "foreign_key_check",
        "integrity_check",
        "quick_check",
    )
)
#: PRAGMAs that read a value when given no argument (with one, most of them set it: refused).
READING_PRAGMAS: Final = frozenset(
    (
        "database_list",
        "collation_list",
        "function_list",
        "module_list",
        "pragma_list",
        "compile_options",
        "page_count",
        "page_size",
        "freelist_count",
        "user_version",
        "application_id",
        "schema_version",
        "data_version",
        "encoding",
        "journal_mode",
        "auto_vacuum",
    )
)
#: Functions refused although calling functions is reading: this one loads code.
_REFUSED_FUNCTIONS: Final = frozenset(("load_extension",))
#: Authorizer action codes that change something, by value, for messages ("CREATE TABLE").
_ACTION_NAMES: Final = {
    getattr(sqlite3, f"SQLITE_{name}"): name.replace("_", " ")
    for kind in ("INDEX", "TABLE", "TRIGGER", "VIEW", "TEMP_INDEX", "TEMP_TABLE", "TEMP_TRIGGER", "TEMP_VIEW", "VTABLE")
    for name in (f"CREATE_{kind}", f"DROP_{kind}")
} | {
    getattr(sqlite3, f"SQLITE_{name}"): name.replace("_", " ")
    for name in ("INSERT", "UPDATE", "DELETE", "ALTER_TABLE", "ANALYZE", "REINDEX", "DETACH")
}
_SCHEMA_TABLES: Final = frozenset(("sqlite_master", "sqlite_temp_master"))
#: The column that holds each event's JSON text (the events table and every view).
JSON_COLUMN: Final = "data"
_COMMENTS_AND_BLANKS = re.compile(r"--[^\n]*|/\*.*?(?:\*/|\Z)|[\s;]+", re.S)


def check_sql(sql: str) -> None:
    """An empty statement (blanks, comments, semicolons) is a usage error, exit 2."""
    if not _COMMENTS_AND_BLANKS.sub("", sql):
        raise UsageError(
            'hookd query: the SQL statement is empty; for example: hookd query "SELECT * FROM event_types"'
        )


@dataclass
class ReadOnly:
    """The authorizer (``sqlite3.Connection.set_authorizer``): reading passes, the rest is
    refused, and the first refusal is kept for the message."""

    refused: str | None = None
    #: A write of the schema table, kept apart: SQLite asks it before the action that explains
    #: it (CREATE TABLE, ANALYZE), which makes the better message.
    schema_write: str | None = None

    def __call__(self, action: int, arg1: str | None, arg2: str | None, db: str | None, source: str | None) -> int:
        why = self._why_not(action, arg1, arg2)
        if why is None:
            return sqlite3.SQLITE_OK
        if arg1 in _SCHEMA_TABLES:
            self.schema_write = self.schema_write or why
        else:
            self.refused = self.refused or why
        return sqlite3.SQLITE_DENY

    @property
    def message(self) -> str | None:
        return self.refused or self.schema_write

    @staticmethod
    def _why_not(action: int, arg1: str | None, arg2: str | None) -> str | None:
        if action in _READ_ACTIONS:
            if action == sqlite3.SQLITE_FUNCTION and (arg2 or "").lower() in _REFUSED_FUNCTIONS:
                return f"the function {arg2}() is not allowed"
            return None
        if action == sqlite3.SQLITE_PRAGMA:
            name = (arg1 or "").lower()
            if name in DESCRIBING_PRAGMAS or (name in READING_PRAGMAS and arg2 is None):
                return None
            setting = f" = {arg2}" if arg2 is not None else ""
            return (
                f"PRAGMA {name}{setting} is not allowed (pragmas that only read are allowed: "
                "table_info(T), table_list, index_list(T) and others; see docs/operations.md)"
            )
        if arg1 in _SCHEMA_TABLES:
            if action == sqlite3.SQLITE_UPDATE:
                # SQLite asks this while it sets up a table-valued function (json_each, pragma_*)
                # the first time: no write. A real UPDATE of it fails anyway (read-only connection).
                return None
            return "changing the schema (CREATE, DROP, ALTER) is not allowed"
        if action == sqlite3.SQLITE_ATTACH:
            return "ATTACH (and VACUUM INTO) is not allowed: it opens or creates another database file"
        if action in (sqlite3.SQLITE_TRANSACTION, sqlite3.SQLITE_SAVEPOINT):
            return f"{arg1 or 'a transaction'} is not allowed: each query is one statement in its own transaction"
        what = _ACTION_NAMES.get(action, f"action {action}").replace("_", " ")
        target = arg2 if action == sqlite3.SQLITE_ALTER_TABLE else arg1  # ALTER's arg1 is the database
        on = f" (on {target})" if target and action != sqlite3.SQLITE_DETACH else ""
        return f"{what}{on} is not allowed"


def query(settings: Settings, sql: str, as_json: bool, out: TextIO = sys.stdout) -> int:
    check_sql(sql)
    with contextlib.closing(open_readonly(settings.paths.db)) as conn:
        guard = ReadOnly()
        conn.set_authorizer(guard)
        try:
            cur = conn.execute(sql)
            cols = [c[0] for c in cur.description or ()]
            rows = cur.fetchall()
        except (sqlite3.Error, sqlite3.Warning) as e:
            if guard.message is not None:
                raise HookdError(f"hookd query is read-only: {guard.message}") from None
            # By SQLite's error code (SQLITE_READONLY and its extended codes), not its wording.
            readonly = getattr(e, "sqlite_errorcode", 0) & 0xFF == sqlite3.SQLITE_READONLY
            hint = " (hookd query is read-only)" if readonly else ""
            raise HookdError(f"query failed: {e}{hint}") from None
    if as_json:
        for row in rows:
            out.write(json.dumps(json_row(cols, row), ensure_ascii=False) + "\n")
        return 0
    if cols:
        write_table(cols, rows, out)
    return 0


def json_row(cols: list[str], row: tuple) -> dict[str, Any]:
    """One row as a JSON object. ``data`` holding a JSON object or array is that object, not a
    string of it (the events' payload, as ``hookd tail --json`` gives it); blobs are hex text."""
    obj: dict[str, Any] = {}
    for col, v in zip(cols, row, strict=True):
        if isinstance(v, bytes):
            v = "x'" + v.hex() + "'"
        elif col.lower() == JSON_COLUMN and isinstance(v, str) and v.lstrip()[:1] in ("{", "["):
            with contextlib.suppress(ValueError):
                v = json.loads(v)
        obj[col] = v
    return obj


def write_table(cols: list[str], rows: list[tuple], out: TextIO) -> None:
    """Aligned columns, one line per row (control characters escaped), cells cut at 80."""
    text = [[_cell(v) for v in row] for row in rows]
    heads = [one_line(c) for c in cols]
    widths = [max(len(c), *(len(r[i]) for r in text)) if text else len(c) for i, c in enumerate(heads)]
    widths = [min(w, 80) for w in widths]
    out.write("  ".join(c.ljust(w) for c, w in zip(heads, widths, strict=True)).rstrip() + "\n")
    for r in text:
        cells = [(v if len(v) <= w else v[: w - 1] + "…").ljust(w) for v, w in zip(r, widths, strict=True)]
        out.write("  ".join(cells).rstrip() + "\n")
    out.write(f"({len(rows)} row{'s' if len(rows) != 1 else ''})\n")


def _cell(v: Any) -> str:
    if v is None:
        return "NULL"
    if isinstance(v, bytes):
        return "x'" + v.hex() + "'"
    return one_line(str(v))
