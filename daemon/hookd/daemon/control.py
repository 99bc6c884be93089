"""Questions to a running daemon: ``!status`` and ``!follow``.

A connection whose first byte is ``!`` is a control connection (JSON never starts with ``!``,
so no event is mistaken for one), on the control socket or the event socket; its bytes are
read by a ``ControlProtocol`` (control_protocol.py). Its first line is a command:

    !status                         one JSON object, then the daemon closes the connection
    !follow {"type": T, "session": S, "after": EID}
                                    one JSON line {"ok": true, "committed_eid": N}, then every
                                    event committed from then on that matches, as mirror lines
                                    ({"eid":..,"type":..,"ts":..,"session":..,"data":{..}}),
                                    pushed as each batch commits
    !import {"file": NAME, "type": T}  then the file's bytes: stored through the writer,
                                    answered with progress and a summary (import_stream.py)

A batch that was framed before the follower came (in flight while it connected) is not pushed:
the follower is sent {"ok": true, "gap_upto": N} instead, and reads the events up to eid N from
the database, where they are committed by then.

A follower that reads too slowly to keep up is sent {"ok": false, "reason": "lagging",
"last_eid": N} and closed, so memory stays bounded; ``hookd tail -f`` then reads the gap from
the database and follows again.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import os
import time
from typing import TYPE_CHECKING, Any

from hookd import __version__
from hookd.daemon.import_stream import Imports
from hookd.daemon.ingest import Ingest
from hookd.daemon.state import DaemonState
from hookd.daemon.writer_link import Batch
from hookd.records import EID, SESSION, TYPE
from hookd.settings import Settings

if TYPE_CHECKING:
    from hookd.daemon.control_protocol import ControlProtocol

log = logging.getLogger("hookd.control")

MAX_FOLLOWERS = 64
#: A follower whose unsent output passes this is dropped (it reconnects and catches up).
FOLLOWER_BUFFER = 8 << 20


class Follower:
    __slots__ = ("etype", "session", "last_eid")

    def __init__(self, etype: str | None, session: str | None, last_eid: int) -> None:
        self.etype = etype
        self.session = session
        self.last_eid = last_eid


class Control:
    """Answers the control connections of one daemon, on both sockets, and keeps them.

    Commits reach it through ``committed``, which app.py subscribes to ``Ingest.on_commit``.
    """

    def __init__(
        self, settings: Settings, ingest: Ingest, state: DaemonState, *, writer_pid: int | None = None
    ) -> None:
        self.settings = settings
        self.ingest = ingest
        self.state = state
        self.writer_pid = writer_pid
        #: Every open control connection, on both sockets (bounded in control_protocol.py).
        self.connections: set[ControlProtocol] = set()
        self.followers: dict[asyncio.Transport, Follower] = {}
        #: ``!import`` streams; app.py subscribes ``imports.committed`` to the commits.
        self.imports = Imports(settings, ingest)
        #: The HTTP listener, when there is one (set by app): its ``status()`` is ``http``.
        self.http: Any = None
        #: (monotonic time, committed) once a second: the rate over the last minute.
        self._samples: collections.deque[tuple[float, int]] = collections.deque(maxlen=62)

    async def sample_rates(self) -> None:
        """Owned by the daemon's TaskGroup: one sample a second."""
        while True:
            self._samples.append((time.monotonic(), self.state.committed))
            await asyncio.sleep(1.0)

    def _rate(self, window: float) -> float:
        if not self._samples:
            return 0.0
        now = time.monotonic()
        t1, c1 = now, self.state.committed
        old = [(t, c) for t, c in self._samples if now - t <= window + 0.5]
        t0, c0 = old[0] if old else self._samples[-1]
        return (c1 - c0) / (t1 - t0) if t1 > t0 else 0.0

    # -- commands -----------------------------------------------------------------------------
    def handle(self, transport: asyncio.Transport, line: bytes, rest: bytes = b"", eof: bool = False) -> None:
        """One command line (without the ``!``). Replies and closes, or starts following, or
        hands the connection to an import with ``rest``, the bytes after the command line."""
        text = line.decode("utf-8", "replace").strip()
        command, _, arg = text.partition(" ")
        try:
            params = json.loads(arg) if arg.strip() else {}
            if not isinstance(params, dict):
                raise ValueError("parameters must be a JSON object")
        except ValueError as e:
            self._reply_close(transport, {"ok": False, "reason": "bad_command", "detail": str(e)})
            return
        if command == "status":
            self._reply_close(transport, self.status())
        elif command == "follow":
            self._follow(transport, params)
        elif command == "import":
            # The connection is the import's from now on: its protocol closes it.
            self.connections.discard(transport.get_protocol())  # type: ignore[arg-type]
            self.imports.start(transport, params, rest, eof)
        else:
            known = "status, follow, import"
            detail = f"unknown command {command!r}; known: {known}"
            self._reply_close(transport, {"ok": False, "reason": "bad_command", "detail": detail})

    def _reply_close(self, transport: asyncio.Transport, obj: dict[str, Any]) -> None:
        if not transport.is_closing():
            transport.write(json.dumps(obj, separators=(",", ":")).encode() + b"\n")
            transport.close()

    def count(self, name: str) -> None:
        """A control connection closed by the daemon (``idle_timeout``): counted with the rest."""
        self.ingest.count(name)

    def status(self) -> dict[str, Any]:
        s = self.state
        p = self.settings.paths
        link = self.ingest.link
        return {
            "ok": True,
            "running": True,
            "pid": os.getpid(),
            "writer_pid": self.writer_pid,
            "version": __version__,
            "started": s.started,
            "uptime": round(time.time() - s.started, 3),
            "socket": str(p.socket),
            "control_socket": s.control_socket,
            "db": str(p.db),
            "mirror_dir": str(p.mirror_dir),
            "spool_dir": str(p.spool_dir),
            "config": str(self.settings.config_path) if self.settings.config_loaded else None,
            "since_start": {
                "received": s.received,
                "committed": s.committed,
                "rejected": sum(s.rejected.values()),
                "rejected_by_reason": dict(s.rejected),
                "duplicates": s.duplicates,
                "spooled": s.spooled,
                "truncated": s.truncated,
                "acked": s.acked,
                "batches": s.batches,
                "connections": s.accepted,
                "connections_closed": dict(s.connections),  # refused_uid, idle_timeout
                "retention_deleted": sum(s.deleted.values()),
            },
            "queue": {
                "open_batch": self.ingest.open_events,
                "inflight_batches": link.inflight,
                "inflight_events": link.inflight_events,
                "reading_paused": self.ingest.flow.paused,
            },
            "rate": {"last_10s": round(self._rate(10), 1), "last_1m": round(self._rate(60), 1)},
            "committed_eid": self.ingest.committed_eid,
            "writer": {"state": s.writer_state, "since": s.writer_state_since},
            "followers": len(self.followers),
            "imports": self.imports.status(),
            "http": self.http.status() if self.http is not None else None,
        }

    def _follow(self, transport: asyncio.Transport, params: dict[str, Any]) -> None:
        if len(self.followers) >= MAX_FOLLOWERS:
            self._reply_close(transport, {"ok": False, "reason": "busy", "detail": "too many followers"})
            return
        etype, session = params.get("type"), params.get("session")
        f = Follower(
            etype if isinstance(etype, str) else None,
            session if isinstance(session, str) else None,
            self.ingest.committed_eid,
        )
        self.followers[transport] = f
        self.ingest.keep_events = True
        transport.write(b'{"ok":true,"committed_eid":%d}\n' % f.last_eid)

    def close(self) -> None:
        """At shutdown: close every control connection; followers are told nothing more is
        coming, by the end of the stream."""
        for proto in list(self.connections):
            proto.close()
        for t in list(self.followers):
            t.close()
        self.followers.clear()
        self.imports.close()
        self.ingest.keep_events = False

    def forget(self, transport: asyncio.Transport) -> None:
        if self.followers.pop(transport, None) is not None and not self.followers:
            self.ingest.keep_events = False

    def committed(self, batch: Batch, dups: list[tuple[int, int]]) -> None:
        """A batch was committed: push its events to the followers (see the module's doc)."""
        if not self.followers:
            return
        if batch.events is None:
            # Framed before anyone followed (in flight when the follower came): tell followers
            # to read it from the database, where it now is.
            for t, f in list(self.followers.items()):
                if batch.last_eid > f.last_eid and not t.is_closing():
                    t.write(b'{"ok":true,"gap_upto":%d}\n' % batch.last_eid)
                    f.last_eid = batch.last_eid
            return
        rows, mirror = batch.events
        skip = {i for i, _ in dups} if dups else ()
        for t, f in list(self.followers.items()):
            if t.is_closing():
                self.forget(t)
                continue
            out = [
                mirror[i]
                for i, row in enumerate(rows)
                if i not in skip
                and (f.etype is None or row[TYPE] == f.etype)
                and (f.session is None or row[SESSION] == f.session)
            ]
            if rows:
                f.last_eid = rows[-1][EID]
            if out:
                t.write(b"".join(out))
            if t.get_write_buffer_size() > FOLLOWER_BUFFER:
                t.write(b'{"ok":false,"reason":"lagging","last_eid":%d}\n' % f.last_eid)
                t.close()
                self.forget(t)
