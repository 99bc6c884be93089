"""The writer process as the daemon sees it: started, fed batches, read for replies (asyncio)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from dataclasses import dataclass
from typing import Any, Protocol

import msgspec

from hookd import wire
from hookd.errors import WriterError
from hookd.settings import Settings


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
