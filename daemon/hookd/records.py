"""The rows hookd stores, as plain tuples: the positions of their columns, named once, and the
names allowed for configured view columns.

Rows stay tuples (not Structs or NamedTuples) because millions go through the hot path and
straight into ``executemany``; code reads them by the names below, never by bare numbers.
"""

from __future__ import annotations

import re
from typing import Final

#: Names and JSON paths allowed for configured view columns (``[types.NAME] columns``).
COLUMN_RE = re.compile(r"[a-z_][a-z0-9_]{0,62}")


JSON_PATH_RE = re.compile(r"\$(\.[A-Za-z_][A-Za-z0-9_]*|\[\d+\])*")


#: The columns of ``events``, in order (also every ``<type>_events`` view's first columns).
BASE_COLUMNS = ("eid", "type", "ts", "session", "client_id", "recv_ts", "pid", "uid", "data")
#: Positions in an ``events`` row (framing builds it, the writer inserts it, readers select
#: ``BASE_COLUMNS``): ``row[CLIENT_ID]``.
EID, TYPE, TS, SESSION, CLIENT_ID, RECV_TS, PID, UID, DATA = range(len(BASE_COLUMNS))

#: The columns a ``rejected`` row carries, in order (``rid`` is assigned by SQLite).
REJECTED_COLUMNS: Final = ("recv_ts", "reason", "detail", "size", "preview", "pid", "uid", "line_key")
#: Position of the reason in a ``rejected`` row (the writer counts rejections by it).
REJECTED_REASON: Final = REJECTED_COLUMNS.index("reason")
#: Position of the key of a rejected line of an imported file (None for live lines).
LINE_KEY: Final = REJECTED_COLUMNS.index("line_key")
#: Bytes of a rejection's detail kept in ``rejected``.
DETAIL_CHARS: Final = 500
