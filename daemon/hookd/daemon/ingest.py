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
from collections.abc import Callable

from hookd.daemon.flow import FlowControl
from hookd.daemon.state import DaemonState
from hookd.daemon.writer_link import Batch, Replier, WriterLink, error_reply
from hookd.framing import EidClock, Framer, Peer, Rejection
from hookd.records import CLIENT_ID, EID
from hookd.settings import Settings
from hookd.spool import DROPPED_COUNTER, Drops
from hookd.writer_client import rejected_row

log = logging.getLogger("hookd.pipeline")

#: Called as (batch, duplicates) after each commit, duplicates as [row index, known eid] pairs.
CommitCallback = Callable[[Batch, list[tuple[int, int]]], None]


class Ingest:
    """The server's LineSink: frames lines and batches them for the writer.

    Reads ``batch_size``, ``batch_delay`` and ``max_inflight`` live from ``settings``; the
    framer holds the live ``aliases`` dict (a reload updates it in place, see app.reload).
    Counts into the shared ``DaemonState`` (as ``stats``).
    """

    def __init__(self, settings: Settings, link: WriterLink, flow: FlowControl, state: DaemonState) -> None:
        self.settings = settings
        self.link = link
        self.flow = flow
        self.stats = state
        self.framer = Framer(EidClock(link.max_eid))
        # The live dict, not a copy (Framer's argument would swap an empty one for its own).
        self.framer.aliases = settings.aliases
        #: Spool files handed to the writer and not yet committed: a rescan must skip them.
        self.spool_inflight: set[str] = set()
        self._rows: list[tuple] = []
        self._mirror: list[bytes] = []
        self._with_id: list[int] = []
        self._rejects: list[tuple] = []
        self._acks: list[tuple[int, int, Replier, int]] = []
        self._spool_names: list[str] = []
        self._counts: Counter[str] = Counter()  # connection counters for the next batch
        self._drops: dict[str, int] = {}  # clients' drop counts (spool.dropped*) for the next batch
        self._timer: asyncio.TimerHandle | None = None
        self._urgent: asyncio.Handle | None = None
        self._loop = asyncio.get_running_loop()
        #: Told of each commit, after the acknowledgements (app.py subscribes the followers'
        #: ``Control.committed``).
        self.on_commit: list[CommitCallback] = []
        #: Keep each batch's rows until it is committed, for followers.
        self.keep_events = False
        #: The highest eid committed so far by this daemon (0: none yet).
        self.committed_eid = link.max_eid

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
        with_id = self._with_id
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
            if row[CLIENT_ID] is not None:
                with_id.append(len(rows))
            if slot >= 0:
                self._acks.append((len(rows), row[EID], conn, slot))  # type: ignore[arg-type]
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

    def dropped(self, drops: Drops) -> None:
        """Events clients dropped while the spool was full (spool.upkeep). The count goes into
        ``counters`` with the next batch, and so does the counter file's name, like a spool
        file's: recorded with it, deleted after the commit, so each drop is counted once."""
        if drops.events:
            self.stats.dropped += drops.events
            c = self._drops
            c[DROPPED_COUNTER] = c.get(DROPPED_COUNTER, 0) + drops.events
            if drops.first is not None and drops.last is not None:
                # ``.first`` keeps the lowest value, ``.last`` the highest (the writer's rule).
                c[DROPPED_COUNTER + ".first"] = min(c.get(DROPPED_COUNTER + ".first", 1 << 62), int(drops.first))
                c[DROPPED_COUNTER + ".last"] = max(c.get(DROPPED_COUNTER + ".last", 0), int(drops.last))
            log.warning(
                "clients dropped %d event(s) while the spool was full (HOOKD_SPOOL_MAX), %s to %s",
                drops.events,
                time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(drops.first or time.time())),
                time.strftime("%H:%M:%S", time.localtime(drops.last or time.time())),
            )
        self.spool_inflight.add(drops.name)
        self._spool_names.append(drops.name)
        self._schedule()

    # -- batching -------------------------------------------------------------------------
    def _reject(self, reason: str, detail: str, line: bytes, now: float, peer: Peer, size: int | None = None) -> None:
        self.stats.rejected[reason] += 1
        self._rejects.append(rejected_row(now, reason, detail, line, peer, size))
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
        rows, mirror = self._rows, self._mirror
        batch = Batch(
            rows=len(rows),
            acks=self._acks,
            spool_names=self._spool_names,
            last_eid=rows[-1][EID] if rows else 0,
            events=(rows, mirror) if self.keep_events else None,
        )
        counts = {f"connections.{k}": v for k, v in self._counts.items()}
        counts.update(self._drops)
        self._drops = {}
        with_id, rejects = self._with_id, self._rejects
        self._counts.clear()
        self._rows, self._mirror, self._with_id, self._rejects, self._acks, self._spool_names = [], [], [], [], [], []
        self.stats.batches += 1
        self.link.send(batch, rows, mirror, with_id, rejects, counts)
        if self.link.inflight >= self.settings.max_inflight:
            self.flow.pause()

    def committed(self, batch: Batch, stored: int, dups: list[tuple[int, int]]) -> None:
        """The writer committed ``batch`` (subscribed to the WriterLink by app)."""
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

    def writer_state(self, state: str, since: float) -> None:
        """The writer waits for something (a lock, disk space), or is ``ok`` again."""
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
