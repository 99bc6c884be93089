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
from typing import Any

from hookd.daemon.flow import FlowControl
from hookd.daemon.state import DaemonState
from hookd.daemon.writer_link import Batch, Replier, WriterLink, error_reply
from hookd.framing import EidClock, Framer, Peer, Rejection
from hookd.oversize import Cut, TooLong, limits
from hookd.records import CLIENT_ID, EID, REJECTED_REASON
from hookd.settings import Settings
from hookd.spool import DROPPED_COUNTER, Drops
from hookd.writer_client import rejected_row

log = logging.getLogger("hookd.pipeline")

#: An open batch holding this many bytes of events cut to fit goes to the writer at once.
CUT_BATCH_BYTES = 4 << 20

#: Called as (batch, duplicates) after each commit, duplicates as [row index, known eid] pairs.
CommitCallback = Callable[[Batch, list[tuple[int, int]]], None]


class _CutReply:
    """Stands in for the connection in the acknowledgement of an event that was cut to fit:
    its ``ok`` reply also lists what was cut (``"truncated":[...]``)."""

    __slots__ = ("conn", "extra")

    def __init__(self, conn: Replier, extra: bytes) -> None:
        self.conn = conn
        self.extra = extra

    def new_slot(self) -> int:
        return self.conn.new_slot()

    def reply(self, slot: int, data: bytes) -> None:
        if data.startswith(b'{"ok":true') and b'"duplicate"' not in data:
            data = data[:-2] + self.extra + b"}\n"  # before the closing brace and newline
        self.conn.reply(slot, data)


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
        self._imports: list[tuple[Any, int, int, int]] = []  # see ``imported``
        self._counts: Counter[str] = Counter()  # connection counters for the next batch
        self._truncated = 0  # events of the open batch stored cut to fit
        self._cut_bytes = 0  # and their bytes
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
        #: While a caller sets a list here, each rejection's (reason, detail) is appended to it
        #: as it happens: the HTTP listener answers a rejected event at once (400 and why).
        self.capture: list[tuple[str, str]] | None = None

    @property
    def open_events(self) -> int:
        """Events in the batch being filled."""
        return len(self._rows)

    # -- LineSink -------------------------------------------------------------------------
    def lines(self, lines: list[bytes], peer: Peer, conn: Replier | None = None, *, marked: bool = False) -> None:
        """Frame complete lines. A line starting with ``?`` asks for an acknowledgement.

        ``marked``: the splitter put over-long lines among them (rare), which take the slower
        ``_add_marked``; the others go straight to ``_add``, whose loop is the hot path.
        """
        if marked:
            self._add_marked(lines, peer, conn, time.time())
        else:
            self._add(lines, peer, conn, None)
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

    def _add_marked(self, lines: list[bytes], peer: Peer, conn: Replier | None, now: float) -> None:
        """Lines among which are over-long ones: each in order, so that replies stay in order."""
        for line in lines:
            kind = type(line)
            if kind is Cut:
                self._add_cut(line, peer, conn, now)  # type: ignore[arg-type]
            elif kind is TooLong:
                self._too_long(line, peer, conn, now)  # type: ignore[arg-type]
            else:
                self._add([line], peer, conn, now)

    def _add_cut(self, line: Cut, peer: Peer, conn: Replier | None, now: float) -> None:
        """An event cut to fit: framed as any line, then counted, and its sender (if waiting)
        told what was cut."""
        rows, acks = len(self._rows), len(self._acks)
        self._add([line], peer, conn, now)
        if len(self._rows) == rows:
            return  # rejected for another reason (a bad ts, say): recorded as such
        self.stats.truncated += 1
        self._truncated += 1
        self._cut_bytes += len(line)
        log.debug("stored an event of %d bytes with %d value(s) cut to fit", line.size, len(line.values))
        if len(self._acks) > acks:
            i, eid, replier, slot = self._acks[-1]
            self._acks[-1] = (i, eid, _CutReply(replier, line.ack_extra()), slot)

    def _too_long(self, line: TooLong, peer: Peer, conn: Replier | None, now: float) -> None:
        """An over-long line that could not be cut: rejected, and a waiting sender told why."""
        slot = conn.new_slot() if conn is not None and line.startswith(b"?") else -1
        self._reject("too_long", line.detail, line, now, peer, size=line.size)
        if slot >= 0:
            conn.reply(slot, error_reply("too_long", line.detail))  # type: ignore[union-attr]

    def oversized(self, size: int, head: bytes, peer: Peer) -> None:
        """A line the caller skipped as too long (app.py, for spool files read without
        ``in_order``)."""
        detail = f"line too long ({limits(size, self.settings.max_line)})"
        self._reject("too_long", detail, head, time.time(), peer, size=size)
        self._schedule()

    def refused(self, reason: str, detail: str, head: bytes, peer: Peer, size: int) -> None:
        """A request body the caller could not turn into events (an OTLP body that is not
        OTLP, or too large: daemon/otlp_http.py), recorded as one rejection."""
        self._reject(reason, detail, head, time.time(), peer, size=size)
        self._schedule()

    def imported(self, rows: list[tuple], mirror: list[bytes], rejects: list[tuple], session: Any) -> None:
        """Lines of an ``!import`` (daemon/import_stream.py), framed with this ``framer`` and
        keyed (every row has an id): into the current batch beside live lines, so eids stay in
        order and the same backpressure applies; ``session`` hears of their commit."""
        base = len(self._rows)
        self._rows += rows
        self._mirror += mirror
        self._with_id += range(base, base + len(rows))
        self._rejects += rejects
        self._imports.append((session, base, len(self._rows), len(rejects)))
        self.stats.received += len(rows)
        for r in rejects:
            self.stats.rejected[r[REJECTED_REASON]] += 1
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
            if type(line) is bytes:
                self._add([line], peer, None, spooled_at)
            else:  # cut, or too long, in the spool thread (spool.scan)
                self._add_marked([line], peer, None, spooled_at)
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
        if self.capture is not None:
            self.capture.append((reason, detail))
        self._rejects.append(rejected_row(now, reason, detail, line, peer, size))
        log.debug("rejected a line (%s): %s", reason, detail)

    def _schedule(self) -> None:
        n = len(self._rows) + len(self._rejects)
        # Batches are sized in events; cut events are close to max_line each, so a batch of
        # them goes at once rather than grow to megabytes times batch_size. (Called between
        # spool files, never inside one: a file's events share one batch.)
        if n >= self.settings.batch_size or self._cut_bytes >= CUT_BATCH_BYTES:
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
            imports=self._imports or None,
        )
        self._imports = []
        counts = {f"connections.{k}": v for k, v in self._counts.items()}
        counts.update(self._drops)
        self._drops = {}
        with_id, rejects = self._with_id, self._rejects
        self._counts.clear()
        if self._truncated:
            counts["truncated"] = self._truncated
            self._truncated = self._cut_bytes = 0
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
