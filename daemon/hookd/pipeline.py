"""The ingest pipeline inside the daemon's event loop: lines in, batches out to the writer.

``Ingest`` is the server's LineSink: it frames each line (framing.Framer), collects rows,
mirror lines and rejections into the current batch, and hands a batch to the ``WriterLink``
when it reaches ``batch_size`` events or its oldest event has waited ``batch_delay``. While
``max_inflight`` batches wait for their commit, reading from clients is paused.

Nothing here blocks: the writer process does all disk I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from . import wire
from .errors import WriterError
from .framing import EidClock, Framer, Peer, Rejection, preview
from .server import FlowControl
from .settings import Settings

log = logging.getLogger("hookd.pipeline")

F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
PIPE_SIZE = 1 << 20  # the default pipe-max-size; 64 KiB pipes starve the writer


@dataclass
class Stats:
    """Counters since this daemon started."""

    started: float = field(default_factory=time.time)
    received: int = 0  # lines that were events (framed fine)
    committed: int = 0  # events committed to SQLite and the mirror
    duplicates: int = 0  # events not stored again because their client id was known
    rejected: Counter[str] = field(default_factory=Counter)
    batches: int = 0


class WriterLink:
    """The writer process and the pipes to it. Started before the server accepts anything."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.proc: asyncio.subprocess.Process | None = None
        self.max_eid = 0
        self.replayed = 0
        self._pending: dict[int, int] = {}  # seq -> rows in that batch
        #: Called as (seq, rows, stored, duplicate_indexes) when a batch is committed.
        self.on_done: list[Any] = []
        self.failed: str | None = None
        self.drained = asyncio.Event()
        self.drained.set()

    @property
    def inflight(self) -> int:
        return len(self._pending)

    async def start(self) -> None:
        """Start the writer and wait until it has opened (and if need be recovered) the store."""
        s = self.settings
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "hookd.writer",
            "--db", os.fspath(s.paths.db),
            "--mirror-dir", os.fspath(s.paths.mirror_dir),
            "--synchronous", s.synchronous,
            "--log-level", logging.getLevelName(logging.getLogger("hookd").getEffectiveLevel()),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        for pipe in (self.proc.stdin.transport.get_extra_info("pipe"), self.proc.stdout._transport.get_extra_info("pipe")):  # type: ignore[attr-defined]
            with contextlib.suppress(OSError, AttributeError):
                fcntl.fcntl(pipe.fileno(), F_SETPIPE_SZ, PIPE_SIZE)
        first = await self._read_frame()
        if first is None or first[0] != "ready":
            await self.proc.wait()
            reason = first[1] if first else f"it exited with status {self.proc.returncode}"
            raise WriterError(f"the writer could not open the store: {reason}")
        _, self.max_eid, _version, self.replayed = first

    async def _read_frame(self) -> list[Any] | None:
        assert self.proc is not None and self.proc.stdout is not None
        try:
            head = await self.proc.stdout.readexactly(4)
            (n,) = wire.HEADER.unpack(head)
            return wire.unpack(await self.proc.stdout.readexactly(n))
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
                if self._pending or msg is not None:
                    raise WriterError(f"the writer process failed: {self.failed}")
                return
            _, seq, stored, dups = msg
            rows = self._pending.pop(seq)
            if not self._pending:
                self.drained.set()
            for cb in self.on_done:
                cb(seq, rows, stored, dups)

    def send(self, seq: int, rows: int, frame: bytes) -> None:
        if self.failed is not None:
            raise WriterError(f"the writer process failed: {self.failed}")
        assert self.proc is not None and self.proc.stdin is not None
        self._pending[seq] = rows
        self.drained.clear()
        self.proc.stdin.write(frame)

    async def close(self) -> int:
        """Ask the writer to finish (it commits all it has, checkpoints) and wait for it."""
        if self.proc is None:
            return 0
        if self.proc.returncode is None and self.proc.stdin is not None:
            with contextlib.suppress(ConnectionError, RuntimeError):
                self.proc.stdin.write(wire.pack(["close"]))
                await self.proc.stdin.drain()
                self.proc.stdin.close()
        return await self.proc.wait()


class Ingest:
    """The server's LineSink: frames lines and batches them for the writer."""

    def __init__(self, settings: Settings, link: WriterLink, flow: FlowControl) -> None:
        self.settings = settings
        self.link = link
        self.flow = flow
        self.stats = Stats()
        self.framer = Framer(EidClock(link.max_eid))
        self._seq = 0
        self._rows: list[tuple] = []
        self._mirror: list[bytes] = []
        self._with_id: list[int] = []
        self._rejects: list[tuple] = []
        self._timer: asyncio.TimerHandle | None = None
        self._loop = asyncio.get_running_loop()
        link.on_done.append(self._done)

    # -- LineSink -------------------------------------------------------------------------
    def lines(self, lines: list[bytes], peer: Peer) -> None:
        now = time.time()
        frame = self.framer.frame
        rows = self._rows
        mirror = self._mirror
        before = len(rows)
        for line in lines:
            try:
                result = frame(line, now, peer)
            except Rejection as r:
                self._reject(r.reason, r.detail, line, now, peer)
                continue
            if result is None:
                continue
            row, mline = result
            if row[4] is not None:
                self._with_id.append(len(rows))
            rows.append(row)
            mirror.append(mline)
        self.stats.received += len(rows) - before
        self._schedule()

    def oversized(self, size: int, head: bytes, peer: Peer) -> None:
        self._reject(
            "too_long", f"line of {size} bytes exceeds the limit of {self.settings.max_line}",
            head, time.time(), peer, size=size,
        )
        self._schedule()

    # -- batching -------------------------------------------------------------------------
    def _reject(self, reason: str, detail: str, line: bytes, now: float, peer: Peer, size: int | None = None) -> None:
        self.stats.rejected[reason] += 1
        self._rejects.append((now, reason, detail[:500], len(line) if size is None else size, preview(line), peer.pid, peer.uid))
        log.debug("rejected a line (%s): %s", reason, detail)

    def _schedule(self) -> None:
        n = len(self._rows) + len(self._rejects)
        if n >= self.settings.batch_size:
            self.flush()
        elif n and self._timer is None:
            self._timer = self._loop.call_later(self.settings.batch_delay, self.flush)

    def flush(self) -> None:
        """Hand the current batch to the writer now."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._rows and not self._rejects:
            return
        self._seq += 1
        rows, self._rows = self._rows, []
        frame = wire.pack(["batch", self._seq, rows, self._mirror, self._with_id, self._rejects])
        self._mirror, self._with_id, self._rejects = [], [], []
        self.stats.batches += 1
        self.link.send(self._seq, len(rows), frame)
        if self.link.inflight >= self.settings.max_inflight:
            self.flow.pause()

    def _done(self, seq: int, rows: int, stored: int, dups: list[int]) -> None:
        self.stats.committed += stored
        self.stats.duplicates += len(dups)
        if self.link.inflight < self.settings.max_inflight:
            self.flow.resume()

    async def drain(self) -> None:
        """Flush the open batch and wait until every batch is committed."""
        self.flush()
        await self.link.drained.wait()

