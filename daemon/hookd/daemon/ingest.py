"""The ingest pipeline inside the daemon's event loop: lines in, batches out to the writer.

``Ingest`` is the server's LineSink: it frames each line (framing.Framer), collects rows,
mirror lines and rejections into the current batch, and hands a batch to the ``WriterLink``
when it reaches ``batch_size`` events or its oldest event has waited ``batch_delay``; a batch
holding an event whose sender waits for an acknowledgement goes at once (at the end of the
current loop iteration). While ``max_inflight`` batches wait for their commit, reading from
clients is paused.

Nothing here blocks: the writer process does all disk I/O, spool files are read in a thread.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from hookd import wire
from hookd.daemon.server import FlowControl
from hookd.daemon.writer_link import Batch, Replier, WriterLink, error_reply
from hookd.framing import EidClock, Framer, Peer, Rejection, preview
from hookd.settings import Settings

log = logging.getLogger("hookd.pipeline")


@dataclass
class Stats:
    """Counters since this daemon started."""

    started: float = field(default_factory=time.time)
    received: int = 0  # lines that were events (framed fine), from sockets and the spool
    spooled: int = 0  # of those, read from spool files
    committed: int = 0  # events committed to SQLite and the mirror
    duplicates: int = 0  # events not stored again because their client id was known
    acked: int = 0  # acknowledgements sent
    rejected: Counter[str] = field(default_factory=Counter)
    #: Connections refused or closed by the server, by reason: ``refused_uid``, ``idle_timeout``.
    connections: Counter[str] = field(default_factory=Counter)
    batches: int = 0
    #: events deleted by retention, by rule ("age", "size")
    deleted: Counter[str] = field(default_factory=Counter)
    #: What the writer is doing: ``ok``, or ``waiting for a database lock``, ``waiting for disk space``
    #: (its own words, with the retries so far), and since when (epoch seconds).
    writer_state: str = "ok"
    writer_state_since: float = field(default_factory=time.time)


class Ingest:
    """The server's LineSink: frames lines and batches them for the writer."""

    def __init__(self, settings: Settings, link: WriterLink, flow: FlowControl) -> None:
        self.settings = settings
        self.link = link
        self.flow = flow
        self.stats = Stats()
        self.framer = Framer(EidClock(link.max_eid), aliases=dict(settings.aliases))
        #: Spool files handed to the writer and not yet committed: a rescan must skip them.
        self.spool_inflight: set[str] = set()
        self._seq = 0
        self._rows: list[tuple] = []
        self._mirror: list[bytes] = []
        self._with_id: list[int] = []
        self._rejects: list[tuple] = []
        self._acks: list[tuple[int, int, Replier, int]] = []
        self._spool_names: list[str] = []
        self._counts: Counter[str] = Counter()  # connection counters for the next batch
        self._timer: asyncio.TimerHandle | None = None
        self._urgent: asyncio.Handle | None = None
        self._loop = asyncio.get_running_loop()
        link.on_done.append(self._done)
        link.on_state.append(self._writer_state)
        #: Called as (batch, duplicates) after each commit (followers of ``hookd tail -f``).
        self.on_commit: list[Any] = []
        #: Keep each batch's rows until it is committed, for followers.
        self.keep_events = False
        #: The highest eid committed so far by this daemon (0: none yet).
        self.committed_eid = link.max_eid
        #: While a caller sets a list here, each rejection's (reason, detail) is appended to it
        #: as it happens: the HTTP listener answers a rejected event at once (400 and why).
        self.capture: list[tuple[str, str]] | None = None

    @property
    def open_events(self) -> int:
        """Events in the batch being filled."""
        return len(self._rows)

    # -- LineSink -------------------------------------------------------------------------
    def lines(self, lines: list[bytes], peer: Peer, conn: Replier | None = None, now: float | None = None) -> None:
        """Frame complete lines. A line starting with ``?`` asks for an acknowledgement."""
        self._add(lines, peer, conn, now)
        self._schedule()

    def _add(self, lines: list[bytes], peer: Peer, conn: Replier | None, now: float | None) -> None:
        if now is None:
            now = time.time()
        frame = self.framer.frame
        rows = self._rows
        mirror = self._mirror
        before = len(rows)
        for line in lines:
            slot = -1
            if line.startswith(b"?") and conn is not None:
                line = line[1:]
                slot = conn.new_slot()
            try:
                result = frame(line, now, peer)
            except Rejection as r:
                self._reject(r.reason, r.detail, line, now, peer)
                if slot >= 0:
                    conn.reply(slot, error_reply(r.reason, r.detail))  # type: ignore[union-attr]
                continue
            except Exception as e:  # a bug in framing must cost this line only, never its neighbours
                detail = f"{type(e).__name__}: {e}"[:300]
                log.error("framing failed on a line (a bug in hookd; please report it): %s", detail, exc_info=True)
                self._reject("internal_error", detail, line, now, peer)
                if slot >= 0:
                    conn.reply(slot, error_reply("internal_error", detail))  # type: ignore[union-attr]
                continue
            if result is None:
                if slot >= 0:
                    conn.reply(slot, error_reply("empty", "an acknowledged line needs an event"))  # type: ignore[union-attr]
                continue
            row, mline = result
            if row[4] is not None:
                self._with_id.append(len(rows))
            if slot >= 0:
                self._acks.append((len(rows), row[0], conn, slot))  # type: ignore[arg-type]
            rows.append(row)
            mirror.append(mline)
        self.stats.received += len(rows) - before
        if self._acks and self._urgent is None:
            # Someone waits: commit at the end of this loop iteration, not after the deadline.
            self._urgent = self._loop.call_soon(self.flush)

    def oversized(self, size: int, head: bytes, peer: Peer) -> None:
        self._reject(
            "too_long",
            f"line of {size} bytes exceeds the limit of {self.settings.max_line}",
            head,
            time.time(),
            peer,
            size=size,
        )
        self._schedule()

    def count(self, name: str) -> None:
        """A connection refused or closed by the server; the total is kept in ``counters``
        (as ``connections.<name>``) with the next batch."""
        self.stats.connections[name] += 1
        self._counts[name] += 1
        self._schedule()

    def spooled(self, name: str, lines: list[tuple[float, bytes]], peer: Peer) -> None:
        """The (spooled_at, line) pairs of one spool file, all into the current batch, whose
        commit then deletes the file: the name must travel with the file's last line."""
        before = self.stats.received
        for spooled_at, line in lines:
            self._add([line], peer, None, spooled_at)
        self.spool_inflight.add(name)
        self._spool_names.append(name)
        self.stats.spooled += self.stats.received - before
        self._schedule()

    # -- batching -------------------------------------------------------------------------
    def _reject(self, reason: str, detail: str, line: bytes, now: float, peer: Peer, size: int | None = None) -> None:
        self.stats.rejected[reason] += 1
        if self.capture is not None:
            self.capture.append((reason, detail))
        self._rejects.append(
            (now, reason, detail[:500], len(line) if size is None else size, preview(line), peer.pid, peer.uid)
        )
        log.debug("rejected a line (%s): %s", reason, detail)

    def _schedule(self) -> None:
        n = len(self._rows) + len(self._rejects)
        if n >= self.settings.batch_size:
            self.flush()
        elif (n or self._spool_names or self._counts) and self._timer is None:
            self._timer = self._loop.call_later(self.settings.batch_delay, self.flush)

    def flush(self) -> None:
        """Hand the current batch to the writer now."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._urgent is not None:
            self._urgent.cancel()
            self._urgent = None
        if not self._rows and not self._rejects and not self._spool_names and not self._counts:
            return
        self._seq += 1
        rows, self._rows = self._rows, []
        batch = Batch(
            self._seq,
            len(rows),
            self._acks,
            self._spool_names,
            rows[-1][0] if rows else 0,
            (rows, self._mirror) if self.keep_events else None,
        )
        counts = {f"connections.{k}": v for k, v in self._counts.items()}
        self._counts.clear()
        frame = wire.pack(
            [
                "batch",
                self._seq,
                rows,
                self._mirror,
                self._with_id,
                self._rejects,
                self._spool_names,
                wire.type_summary(rows),
                counts,
            ]
        )
        self._mirror, self._with_id, self._rejects, self._acks, self._spool_names = [], [], [], [], []
        self.stats.batches += 1
        self.link.send(batch, frame)
        if self.link.inflight >= self.settings.max_inflight:
            self.flow.pause()

    def _done(self, batch: Batch, stored: int, dups: list[list[int]]) -> None:
        self.stats.committed += stored
        self.stats.duplicates += len(dups)
        if batch.acks:
            known = dict(dups) if dups else {}
            for i, eid, conn, slot in batch.acks:
                if i in known:
                    conn.reply(slot, b'{"ok":true,"eid":%d,"duplicate":true}\n' % known[i])
                else:
                    conn.reply(slot, b'{"ok":true,"eid":%d}\n' % eid)
            self.stats.acked += len(batch.acks)
        if batch.spool_names:
            self.spool_inflight.difference_update(batch.spool_names)
        if batch.last_eid > self.committed_eid:
            self.committed_eid = batch.last_eid
        for cb in self.on_commit:
            cb(batch, dups)
        if self.link.inflight < self.settings.max_inflight:
            self.flow.resume()

    def _writer_state(self, state: str, since: float) -> None:
        s = self.stats
        if state == "ok" and s.writer_state != "ok":
            log.warning(
                "the writer is back to normal: %s ended after %.1f s", s.writer_state, since - s.writer_state_since
            )
        elif state != "ok" and s.writer_state == "ok":
            log.warning(
                "the writer is %s; events wait in the pipeline (reading pauses when it is full) "
                "and clients spool beyond that",
                state,
            )
        s.writer_state = state
        s.writer_state_since = since

    async def drain(self) -> None:
        """Flush the open batch and wait until every batch is committed."""
        self.flush()
        await self.link.drained.wait()
