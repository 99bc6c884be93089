"""The ``events`` row: its columns in order, and the names allowed for configured view columns."""

from __future__ import annotations

import re

#: Names and JSON paths allowed for configured view columns (``[types.NAME] columns``).
COLUMN_RE = re.compile(r"[a-z_][a-z0-9_]{0,62}")


JSON_PATH_RE = re.compile(r"\$(\.[A-Za-z_][A-Za-z0-9_]*|\[\d+\])*")


#: The columns of ``events``, in order (also every ``<type>_events`` view's first columns).
BASE_COLUMNS = ("eid", "type", "ts", "session", "client_id", "recv_ts", "pid", "uid", "data")
