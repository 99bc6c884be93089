"""Questions to a running daemon, on its own socket: ``!status`` and ``!follow``.

A connection whose first byte is ``!`` is a control connection (JSON never starts with ``!``,
so no event is mistaken for one). Its first line is a command:

    !status                         one JSON object, then the daemon closes the connection
    !follow {"type": T, "session": S, "after": EID}
                                    one JSON line {"ok": true, "committed_eid": N}, then every
                                    event committed from then on that matches, as mirror lines
                                    ({"eid":..,"type":..,"ts":..,"session":..,"data":{..}}),
                                    pushed as each batch commits

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
from typing import Any

from hookd import __version__
from hookd.daemon.ingest import Ingest
from hookd.daemon.writer_link import Batch
from hookd.settings import Settings

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
    """Answers control connections for one daemon."""

    def __init__(self, settings: Settings, ingest: Ingest, *, writer_pid: int | None = None) -> None:
        self.settings = settings
        self.ingest = ingest
        self.writer_pid = writer_pid
        self.started = time.time()
        self.followers: dict[asyncio.Transport, Follower] = {}
        self.server: Any = None  # set by app: connection counts
        #: The control socket serving these commands, once it listens (set by app).
        self.control_socket: str | None = None
        #: The HTTP listener, when there is one (set by app): its ``status()`` is ``http``.
        self.http: Any = None
        #: (monotonic time, committed) once a second: the rate over the last minute.
        self._samples: collections.deque[tuple[float, int]] = collections.deque(maxlen=62)
        ingest.on_commit.append(self._committed)

    async def sample_rates(self) -> None:
        """Owned by the daemon's TaskGroup: one sample a second."""
        while True:
            self._samples.append((time.monotonic(), self.ingest.stats.committed))
            await asyncio.sleep(1.0)

    def _rate(self, window: float) -> float:
        if not self._samples:
            return 0.0
        now = time.monotonic()
        t1, c1 = now, self.ingest.stats.committed
        old = [(t, c) for t, c in self._samples if now - t <= window + 0.5]
        t0, c0 = old[0] if old else self._samples[-1]
        return (c1 - c0) / (t1 - t0) if t1 > t0 else 0.0

    # -- commands -----------------------------------------------------------------------------
    def handle(self, transport: asyncio.Transport, line: bytes) -> None:
        """One command line (without the ``!``). Replies and closes, or starts following."""
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
        else:
            self._reply_close(
                transport,
                {"ok": False, "reason": "bad_command", "detail": f"unknown command {command!r}; known: status, follow"},
            )

    def _reply_close(self, transport: asyncio.Transport, obj: dict[str, Any]) -> None:
        if not transport.is_closing():
            transport.write(json.dumps(obj, separators=(",", ":")).encode() + b"\n")
            transport.close()

    def status(self) -> dict[str, Any]:
        s = self.ingest.stats
        p = self.settings.paths
        link = self.ingest.link
        return {
            "ok": True,
            "running": True,
            "pid": os.getpid(),
            "writer_pid": self.writer_pid,
            "version": __version__,
            "started": self.started,
            "uptime": round(time.time() - self.started, 3),
            "socket": str(p.socket),
            "control_socket": self.control_socket,
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
                "acked": s.acked,
                "batches": s.batches,
                "connections": getattr(self.server, "accepted", 0),
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
        """At shutdown: followers are told nothing more is coming, by the end of the stream."""
        for t in list(self.followers):
            t.close()
        self.followers.clear()
        self.ingest.keep_events = False

    def forget(self, transport: asyncio.Transport) -> None:
        if self.followers.pop(transport, None) is not None and not self.followers:
            self.ingest.keep_events = False

    def _committed(self, batch: Batch, dups: list[list[int]]) -> None:
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
                and (f.etype is None or row[1] == f.etype)
                and (f.session is None or row[3] == f.session)
            ]
            if rows:
                f.last_eid = rows[-1][0]
            if out:
                t.write(b"".join(out))
            if t.get_write_buffer_size() > FOLLOWER_BUFFER:
                t.write(b'{"ok":false,"reason":"lagging","last_eid":%d}\n' % f.last_eid)
                t.close()
                self.forget(t)
