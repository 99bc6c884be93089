"""The sending side of the writer protocol, shared by the daemon and ``hookd import``; no I/O.

Both senders start a writer process with ``command``, read its first frame with
``WriterClient.handshake``, number each batch and remember what they need at its commit
(``WriterClient.batch``), and hand every later frame to ``WriterClient.receive``, which
dispatches it to the callbacks subscribed. Moving the bytes is the caller's: blocking pipes and
a reply thread in ``hookd import`` (writer.importer), asyncio pipes in the daemon's
``WriterLink`` (daemon.writer_link).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Final, Generic, TypeVar

import msgspec

from hookd import wire
from hookd.errors import WriterError
from hookd.framing import NO_PEER, Peer, preview
from hookd.records import DETAIL_CHARS, TS, TYPE

if TYPE_CHECKING:
    from hookd.paths import Paths

B = TypeVar("B")

#: Told (what the sender remembered of the batch, events stored, duplicates) at each commit;
#: duplicates are (index into the batch's rows, eid of the event already stored).
OnCommitted = Callable[[B, int, list[tuple[int, int]]], None]
#: Told (state, since) when the writer starts waiting (a lock, a full disk) and "ok" after.
OnState = Callable[[str, float], None]
#: Told (deleted by age, deleted by size, more to do) after each retention step.
OnRetained = Callable[[int, int, bool], None]

#: The ``close`` frame, the same every time.
CLOSE: Final = wire.pack(wire.Close())

_decode = msgspec.msgpack.Decoder(wire.FromWriter).decode


def _ignore(*_args: Any) -> None:
    pass


class WriterClient(Generic[B]):
    """What a sender knows of its writer: the handshake, the batches not yet committed (each
    with the sender's own record of it, ``B``), and where replies go."""

    def __init__(self) -> None:
        self.pending: dict[int, B] = {}
        self.seq = 0
        #: The writer's first frame, once it is ready.
        self.ready: wire.Ready | None = None
        #: The writer's last word, if it sent a ``fatal`` frame.
        self.fatal: str | None = None
        #: Why the writer is gone (set by ``fail``): nothing more can be sent.
        self.failed: str | None = None
        self._committed: OnCommitted[B] = _ignore
        self._state: OnState = _ignore
        self._retained: OnRetained = _ignore

    def subscribe(
        self,
        *,
        committed: OnCommitted[B] | None = None,
        state: OnState | None = None,
        retained: OnRetained | None = None,
    ) -> None:
        """Where replies go; a reply nobody subscribed to is dropped."""
        self._committed = committed or _ignore
        self._state = state or _ignore
        self._retained = retained or _ignore

    def handshake(self, body: bytes | None) -> wire.Ready | None:
        """Read the writer's first frame (None: it ended without one). Returns ``Ready``, or
        None when the writer could not open the store: then ``refused`` says why."""
        first = _decode(body) if body is not None else None
        if isinstance(first, wire.Ready):
            self.ready = first
            return first
        if isinstance(first, wire.Fatal):
            self.fatal = first.message
        return None

    def refused(self, status: int | None) -> WriterError:
        """The error for a writer that did not become ready and exited with ``status``."""
        reason = self.fatal or f"it exited with status {status}"
        return WriterError(f"the writer could not open the store: {reason}")

    def batch(
        self,
        remember: B,
        rows: list[tuple],
        mirror_lines: list[bytes],
        with_id: list[int],
        rejects: list[tuple],
        spool_names: list[str],
        counts: dict[str, int] | None = None,
    ) -> bytes:
        """The next ``batch`` frame; ``remember`` comes back to ``committed`` with its reply."""
        if self.failed is not None:
            raise WriterError(f"the writer process failed: {self.failed}")
        self.seq += 1
        frame = wire.pack(
            wire.Batch(self.seq, rows, mirror_lines, with_id, rejects, spool_names, type_summary(rows), counts)
        )
        # Remembered before the frame can reach the writer, which may answer at once (hookd
        # import reads replies in another thread).
        self.pending[self.seq] = remember
        return frame

    def receive(self, body: bytes | memoryview) -> bool:
        """Dispatch one frame from the writer. False after ``fatal``: nothing more will come."""
        msg = _decode(body)
        if isinstance(msg, wire.Done):
            self._committed(self.pending.pop(msg.seq), msg.stored, msg.duplicates)
        elif isinstance(msg, wire.State):
            self._state(msg.text, msg.since)
        elif isinstance(msg, wire.Retained):
            self._retained(msg.by_age, msg.by_size, msg.more)
        elif isinstance(msg, wire.Fatal):
            self.fatal = msg.message
            return False
        else:
            raise WriterError(f"the writer sent an unexpected {type(msg).__name__.lower()} frame")
        return True

    def fail(self, reason: str) -> list[B]:
        """The writer is gone: refuse further batches; return (and forget) those not committed."""
        self.failed = reason
        lost = list(self.pending.values())
        self.pending.clear()
        return lost


def views(columns: dict[str, dict[str, str]]) -> bytes:
    """The ``views`` frame: configured view columns."""
    return wire.pack(wire.Views(columns))


def command(paths: Paths, *, synchronous: str = "normal", log_level: str = "INFO") -> list[str]:
    """The command line of a writer process for ``paths`` (the daemon's, or ``hookd import``'s)."""
    return [
        sys.executable, "-m", "hookd.writer", "--db", os.fspath(paths.db),
        "--mirror-dir", os.fspath(paths.mirror_dir), "--spool-dir", os.fspath(paths.spool_dir),
        "--synchronous", synchronous, "--log-level", log_level,
    ]  # fmt: skip


def type_summary(rows: Sequence[Sequence[Any]]) -> list[list[Any]]:
    """Per type in a batch: [type, count, first ts, last ts], for the writer's ``event_types``.

    Done by the sender (the daemon, ``hookd import``), which has spare CPU at full load while
    the writer has none: counting by reading the rows back in SQL cost the writer about a tenth
    of its time (py-spy).
    """
    out: dict[str, list[Any]] = {}
    type_at, ts_at = TYPE, TS  # locals: this runs for every event
    for row in rows:
        etype, ts = row[type_at], row[ts_at]
        s = out.get(etype)
        if s is None:
            out[etype] = [etype, 1, ts, ts]
        else:
            s[1] += 1
            if ts < s[2]:
                s[2] = ts
            elif ts > s[3]:
                s[3] = ts
    return list(out.values())


def rejected_row(
    now: float,
    reason: str,
    detail: str,
    line: bytes,
    peer: Peer = NO_PEER,
    size: int | None = None,
    key: str | None = None,
) -> tuple:
    """A ``rejected`` row (records.REJECTED_COLUMNS) for a line that was not stored; ``size``
    when ``line`` is only the head of an over-long one; ``key`` for a line of an imported file
    (``hookd.backfill``), recorded once however often the file is imported."""
    size = len(line) if size is None else size
    return (now, reason, detail[:DETAIL_CHARS], size, preview(line), peer.pid, peer.uid, key)
