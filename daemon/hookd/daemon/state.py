"""The daemon's shared state: counters and conditions since it started (as uvicorn's ServerState).

One object, made where the daemon is assembled (app.py) and handed to every part that counts
or reports: each field has one writer, named beside it, and anyone may read it (``!status``,
systemd's STATUS=, the stop log line). Nothing reads another part's attributes for its figures.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field


@dataclass
class DaemonState:
    """Counters since this daemon started."""

    started: float = field(default_factory=time.time)

    # -- connections on the event socket (server.py) -------------------------------------------
    accepted: int = 0  # connections accepted
    quick: int = 0  # of those, served in the accept loop without a transport
    #: Connections refused or closed, on either socket, by reason: ``refused_uid``,
    #: ``idle_timeout`` (ingest.py's ``count``, which also stores the totals in ``counters``).
    connections: Counter[str] = field(default_factory=Counter)

    # -- events (ingest.py) ----------------------------------------------------------------------
    received: int = 0  # lines that were events (framed fine), from sockets and the spool
    spooled: int = 0  # of those, read from spool files
    truncated: int = 0  # of those, over max_line and stored with values cut to fit (oversize.py)
    committed: int = 0  # events committed to SQLite and the mirror
    duplicates: int = 0  # events not stored again because their client id was known
    acked: int = 0  # acknowledgements sent
    rejected: Counter[str] = field(default_factory=Counter)
    batches: int = 0
    #: events clients dropped while the spool was full, collected from their counters
    dropped: int = 0

    # -- the writer process (ingest.py, retention_schedule.py) ----------------------------------
    #: events deleted by retention, by rule ("age", "size")
    deleted: Counter[str] = field(default_factory=Counter)
    #: What the writer is doing: ``ok``, or ``waiting for a database lock``, ``waiting for disk space``
    #: (its own words, with the retries so far), and since when (epoch seconds).
    writer_state: str = "ok"
    writer_state_since: float = field(default_factory=time.time)

    # -- the control socket (app.py) -------------------------------------------------------------
    #: Its path once it listens; None when it could not be bound (status then reports null).
    control_socket: str | None = None
