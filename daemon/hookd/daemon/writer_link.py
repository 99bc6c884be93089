"""The writer process as the daemon sees it: started, fed batches, read for replies (asyncio).

The protocol itself (handshake, numbering, pending batches, dispatch) is ``writer_client``'s,
shared with ``hookd import``; this module moves its bytes over asyncio pipes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any, Protocol

import msgspec

from hookd import wire, writer_client
from hookd.daemon import child_pipes
from hookd.errors import WriterError
from hookd.settings import Settings
from hookd.writer_client import OnCommitted, OnRetained, OnState, WriterClient


class Replier(Protocol):
    """A connection that can answer acknowledged lines, in the order they came."""

    def new_slot(self) -> int: ...
    def reply(self, slot: int, data: bytes) -> None: ...


@dataclass(slots=True)
class Batch:
    """What the daemon remembers about a batch until the writer has committed it."""

    rows: int
    acks: list[tuple[int, int, Replier, int]]  # (row index, eid, connection, reply slot)
    spool_names: list[str]
    last_eid: int = 0
    #: (rows, mirror lines), kept only while someone follows (``hookd tail -f``).
    events: tuple[list[tuple], list[bytes]] | None = None
    #: (import session, first row, end row, rejections) per run of imported lines in the batch
    #: (daemon/import_stream.py), told of their commit.
    imports: list[tuple[Any, int, int, int]] | None = None


_encode_reply = msgspec.json.Encoder().encode


def error_reply(reason: str, detail: str) -> bytes:
    return _encode_reply({"ok": False, "reason": reason, "detail": detail}) + b"\n"


class WriterLink:
    """The writer process and the pipes to it, around the shared ``WriterClient``. Started
    before the server accepts anything; replies go to the callbacks given to ``subscribe``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.proc: asyncio.subprocess.Process | None = None
        self.client: WriterClient[Batch] = WriterClient()
        self.max_eid = 0
        self.replayed = 0
        self._closing = False
        self.drained = asyncio.Event()
        self.drained.set()
        self._committed: OnCommitted[Batch] | None = None
        #: Set after a large deletion: the checkpointer then truncates the WAL file.
        self.truncate_wal = False

    def subscribe(self, *, committed: OnCommitted[Batch], state: OnState, retained: OnRetained) -> None:
        """Where the writer's replies go: each commit, each change of its state (a lock, a full
        disk, ok), each retention step."""
        self._committed = committed
        self.client.subscribe(committed=self._done, state=state, retained=retained)

    def _done(self, batch: Batch, stored: int, duplicates: list[tuple[int, int]]) -> None:
        if not self.client.pending:
            self.drained.set()
        if self._committed is not None:
            self._committed(batch, stored, duplicates)

    @property
    def failed(self) -> str | None:
        return self.client.failed

    @property
    def inflight(self) -> int:
        return len(self.client.pending)

    @property
    def inflight_events(self) -> int:
        return sum(b.rows for b in self.client.pending.values())

    async def start(self) -> None:
        """Start the writer and wait until it has opened (and if need be recovered) the store."""
        s = self.settings
        level = logging.getLevelName(logging.getLogger("hookd").getEffectiveLevel())
        argv = writer_client.command(s.paths, synchronous=s.synchronous, log_level=level)
        self.proc, self._replies, self._frames = await child_pipes.spawn(argv, wire.MAX_FRAME)
        ready = self.client.handshake(await self._read_frame())
        if ready is None:
            raise self.client.refused(await self.proc.wait())
        self.max_eid, self.replayed = ready.max_eid, ready.replayed

    async def _read_frame(self) -> bytes | None:
        try:
            head = await self._replies.readexactly(wire.HEADER.size)
            (n,) = wire.HEADER.unpack(head)
            return await self._replies.readexactly(n)
        except asyncio.IncompleteReadError:
            return None

    async def read_replies(self) -> None:
        """Dispatch the writer's replies until it ends. Raises WriterError if it failed."""
        while (body := await self._read_frame()) is not None and self.client.receive(body):
            pass
        assert self.proc is not None
        code = await self.proc.wait()
        pending = self.client.fail(self.client.fatal or f"writer exited with status {code}")
        self.drained.set()
        for batch in pending:
            for _i, _eid, conn, slot in batch.acks:
                conn.reply(slot, error_reply("store_failed", self.client.failed))
        if not pending and self.client.fatal is None and self._closing:
            return  # the end we asked for
        lost = sum(b.rows for b in pending)
        detail = (
            f"; {lost} events in {len(pending)} batches were handed to it and not confirmed "
            "(those it had written to the mirror are replayed at the next start; waiting "
            "senders were answered store_failed)"
            if pending
            else ""
        )
        raise WriterError(f"the writer process failed: {self.client.failed}{detail}")

    def send_views(self, columns: dict[str, dict[str, str]]) -> None:
        """Tell the writer which views get configured columns (at start and on SIGHUP)."""
        if self._frames is not None and not self._closing:
            self._frames.write(writer_client.views(columns))

    def send(
        self,
        batch: Batch,
        rows: list[tuple],
        mirror_lines: list[bytes],
        with_id: list[int],
        rejects: list[tuple],
        counts: dict[str, int],
    ) -> None:
        """Hand a batch to the writer; ``batch`` comes back to ``committed`` with its reply."""
        frame = self.client.batch(batch, rows, mirror_lines, with_id, rejects, batch.spool_names, counts)
        self.drained.clear()
        self._frames.write(frame)

    def retain(self, policy: wire.Policy) -> None:
        """Ask for a retention run; nothing waits for an answer (``retained`` hears the steps)."""
        if self.client.failed is None and not self._frames.is_closing():
            self._frames.write(wire.pack(wire.Retain(policy)))

    async def close(self) -> int:
        """Ask the writer to finish (it commits all it has, checkpoints) and wait for it."""
        if self.proc is None:
            return 0
        self._closing = True
        if self.proc.returncode is None and not self._frames.is_closing():
            with contextlib.suppress(ConnectionError, RuntimeError):
                self._frames.write(writer_client.CLOSE)
                self._frames.close()  # flushes what is buffered, then closes the pipe
        return await self.proc.wait()
