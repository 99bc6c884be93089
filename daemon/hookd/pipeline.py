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
import contextlib
import logging
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgspec

from . import wire
from .errors import WriterError
from .framing import EidClock, Framer, Peer, Rejection, preview
from .server import FlowControl
from .settings import Settings

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


class Replier(Protocol):
    """A connection that can answer acknowledged lines, in the order they came."""

    def new_slot(self) -> int: ...
    def reply(self, slot: int, data: bytes) -> None: ...


@dataclass(slots=True)
class Batch:
    """What the daemon remembers about a batch until the writer has committed it."""

    seq: int
    rows: int
    acks: list[tuple[int, int, Replier, int]]  # (row index, eid, connection, reply slot)
    spool_names: list[str]
    last_eid: int = 0
    #: (rows, mirror lines), kept only while someone follows (``hookd tail -f``).
    events: tuple[list[tuple], list[bytes]] | None = None


_encode_reply = msgspec.json.Encoder().encode


def error_reply(reason: str, detail: str) -> bytes:
    return _encode_reply({"ok": False, "reason": reason, "detail": detail}) + b"\n"


class WriterLink:
    """The writer process and the pipes to it. Started before the server accepts anything."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.proc: asyncio.subprocess.Process | None = None
        self.max_eid = 0
        self.replayed = 0
        self._pending: dict[int, Batch] = {}
        #: Called as (batch, stored, duplicates) when a batch is committed.
        self.on_done: list[Any] = []
        #: Called as (state, since) when the writer reports a change (a lock, a full disk, ok).
        self.on_state: list[Any] = []
        self.failed: str | None = None
        self._closing = False
        self.drained = asyncio.Event()
        self.drained.set()
        #: Called as (by_age, by_size, more) for each ``retained`` reply.
        self.on_retained: list[Any] = []
        #: Set after a large deletion: the checkpointer then truncates the WAL file.
        self.truncate_wal = False

    @property
    def inflight(self) -> int:
        return len(self._pending)

    @property
    def inflight_events(self) -> int:
        return sum(b.rows for b in self._pending.values())

    async def start(self) -> None:
        """Start the writer and wait until it has opened (and if need be recovered) the store."""
        s = self.settings
        # Real pipes, enlarged: asyncio (uvloop) would give socketpairs with 208 KiB buffers,
        # which starve the writer (measured 1.17x ingest with bigger buffers).
        to_writer_r, to_writer_w = wire.pipe()
        from_writer_r, from_writer_w = wire.pipe()
        try:
            self.proc = await asyncio.create_subprocess_exec(
                *wire.writer_command(
                    s.paths,
                    synchronous=s.synchronous,
                    log_level=logging.getLevelName(logging.getLogger("hookd").getEffectiveLevel()),
                ),
                stdin=to_writer_r,
                stdout=from_writer_w,
            )
        finally:
            os.close(to_writer_r)
            os.close(from_writer_w)
        loop = asyncio.get_running_loop()
        self._replies = asyncio.StreamReader(limit=wire.MAX_FRAME)
        # open() only wraps the pipe descriptors here: no file system access, nothing blocks.
        replies_pipe = open(from_writer_r, "rb", buffering=0)  # noqa: ASYNC230
        frames_pipe = open(to_writer_w, "wb", buffering=0)  # noqa: ASYNC230
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(self._replies), replies_pipe)
        self._frames, _ = await loop.connect_write_pipe(asyncio.Protocol, frames_pipe)
        first = await self._read_frame()
        if first is None or first[0] != "ready":
            await self.proc.wait()
            reason = first[1] if first else f"it exited with status {self.proc.returncode}"
            raise WriterError(f"the writer could not open the store: {reason}")
        _, self.max_eid, _version, self.replayed = first

    async def _read_frame(self) -> list[Any] | None:
        try:
            head = await self._replies.readexactly(4)
            (n,) = wire.HEADER.unpack(head)
            return wire.unpack(await self._replies.readexactly(n))
        except asyncio.IncompleteReadError:
            return None

    async def read_replies(self) -> None:
        """Dispatch commit replies until the writer ends. Raises WriterError if it failed."""
        while True:
            msg = await self._read_frame()
            if msg is None or msg[0] == "fatal":
                assert self.proc is not None
                code = await self.proc.wait()
                self.failed = msg[1] if msg else f"writer exited with status {code}"
                pending = list(self._pending.values())
                self._pending.clear()
                self.drained.set()
                for batch in pending:
                    for _i, _eid, conn, slot in batch.acks:
                        conn.reply(slot, error_reply("store_failed", self.failed))
                if not pending and msg is None and self._closing:
                    return  # the end we asked for
                lost = sum(b.rows for b in pending)
                detail = (
                    f"; {lost} events in {len(pending)} batches were handed to it and not confirmed "
                    "(those it had written to the mirror are replayed at the next start; waiting "
                    "senders were answered store_failed)"
                    if pending
                    else ""
                )
                raise WriterError(f"the writer process failed: {self.failed}{detail}")
            if msg[0] == "retained":
                for cb in self.on_retained:
                    cb(*msg[1:4])
                continue
            if msg[0] == "state":
                _, state, since = msg
                for cb in self.on_state:
                    cb(state, since)
                continue
            _, seq, stored, dups = msg
            batch = self._pending.pop(seq)
            if not self._pending:
                self.drained.set()
            for cb in self.on_done:
                cb(batch, stored, dups)

    def send_views(self, columns: dict[str, dict[str, str]]) -> None:
        """Tell the writer which views get configured columns (at start and on SIGHUP)."""
        if self._frames is not None and not self._closing:
            self._frames.write(wire.pack(["views", columns]))

    def send(self, batch: Batch, frame: bytes) -> None:
        if self.failed is not None:
            raise WriterError(f"the writer process failed: {self.failed}")
        self._pending[batch.seq] = batch
        self.drained.clear()
        self._frames.write(frame)

    def control(self, message: list[Any]) -> None:
        """Send a frame that is not a batch (``retain``); nothing waits for an answer."""
        if self.failed is None and not self._frames.is_closing():
            self._frames.write(wire.pack(message))

    async def close(self) -> int:
        """Ask the writer to finish (it commits all it has, checkpoints) and wait for it."""
        if self.proc is None:
            return 0
        self._closing = True
        if self.proc.returncode is None and not self._frames.is_closing():
            with contextlib.suppress(ConnectionError, RuntimeError):
                self._frames.write(wire.pack(["close"]))
                self._frames.close()  # flushes what is buffered, then closes the pipe
        return await self.proc.wait()


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
