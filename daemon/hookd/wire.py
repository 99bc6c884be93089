"""Frames between the daemon and its writer process: a 4-byte length, then one message in
msgpack. Each message is a tagged, ``array_like`` msgspec Struct defined here, so the sender and
the writer encode and decode through one definition; on the wire a message is the array
``[tag, field, field, ...]`` (trailing optional fields may be left out).

Daemon (or ``hookd import``) to writer, ``ToWriter``: ``Batch``, ``Views``, ``Retain``, ``Close``.
Writer to sender, ``FromWriter``: ``Ready``, ``Done``, ``Retained``, ``State``, ``Fatal``.

Rows inside a batch stay plain tuples, in ``records.BASE_COLUMNS`` order (``records.EID``...),
and rejections in ``records.REJECTED_COLUMNS`` order: decoding them as Structs would cost per
event. What starts a writer and speaks to it from the sending side is ``writer_client``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import struct
from typing import IO, Any, Final

import msgspec

HEADER: Final = struct.Struct("!I")
MAX_FRAME: Final = 1 << 30
F_SETPIPE_SZ: Final = getattr(fcntl, "F_SETPIPE_SZ", 1031)
#: The default pipe-max-size: a pipe can grow to it without privileges. 64 KiB pipes starve the
#: writer (a batch is ~0.6 MB), and asyncio's socketpairs keep 208 KiB buffers that cannot grow.
PIPE_SIZE: Final = 1 << 20
#: Events deleted per step at most. One step of 2000 held the write lock ~10 ms on this machine.
STEP_ROWS = 2000


class Policy(msgspec.Struct):
    """The retention rules the writer applies (see ``writer.retention``). Inside a ``Retain``
    message it is a map keyed by field name (not array_like): the layout it always had."""

    max_age: float | None = None
    type_max_age: dict[str, float | None] = {}
    max_size: int | None = None
    mirror_max_age: float | None = None
    mirror_max_size: int | None = None
    mirror_compress: bool = True
    step_rows: int = STEP_ROWS
    #: Forwarding (forward.url): None when off; else the eid up to which events are in
    #: PostgreSQL. Retention keeps the events above it: the age rule always, the size rule
    #: unless nothing forwarded is left to delete (then it deletes them too, and counts them
    #: as ``retention.deleted.unforwarded``).
    forwarded: int | None = None

    @classmethod
    def from_settings(cls, s: Any, forwarded: int | None = None) -> Policy:
        return cls(
            s.max_age,
            dict(s.type_max_age),
            s.max_size,
            s.mirror_max_age,
            s.mirror_max_size,
            s.mirror_compress,
            forwarded=forwarded,
        )

    @property
    def db_rules(self) -> bool:
        return self.max_age is not None or self.max_size is not None or any(self.type_max_age.values())

    @property
    def mirror_rules(self) -> bool:
        return self.mirror_compress or self.mirror_max_age is not None or self.mirror_max_size is not None

    def forever(self) -> list[str]:
        """Types configured to be kept forever: the size rule spares them too."""
        return sorted(t for t, age in self.type_max_age.items() if age is None)


# -- daemon to writer ---------------------------------------------------------------------


class Batch(msgspec.Struct, array_like=True, tag="batch"):
    """Events to store, and what goes with them into the same transaction."""

    seq: int
    #: ``events`` rows, records.BASE_COLUMNS order.
    rows: list[tuple]
    #: The JSONL mirror's line of each row (same index).
    mirror_lines: list[bytes]
    #: Indexes of the rows that carry a client id: only those can be duplicates.
    with_id: list[int]
    #: ``rejected`` rows, records.REJECTED_COLUMNS order.
    rejects: list[tuple]
    #: Spool files whose last line is in this batch: deleted once it is committed.
    spool_names: list[str]
    #: Per type: (type, count, first ts, last ts) of the rows (``writer_client.type_summary``).
    #: Without it (or when a batch had duplicates) the writer counts the stored rows itself.
    types: list[tuple[str, int, float, float]] | None = None
    #: {counter name: increment} (connections refused, timed out) for ``counters``.
    counts: dict[str, int] | None = None


class Views(msgspec.Struct, array_like=True, tag="views"):
    """The configured view columns, {type: {column: json_path}} (at start and on SIGHUP)."""

    columns: dict[str, dict[str, str]]


class Retain(msgspec.Struct, array_like=True, tag="retain"):
    """Apply this policy: the writer deletes what is due in steps of at most
    ``policy.step_rows`` events, one short transaction each, between batches, until nothing is
    due; and starts mirror upkeep (compression, deletion) in a thread. A newer ``Retain``
    replaces the policy of one still in progress."""

    policy: Policy


class Close(msgspec.Struct, array_like=True, tag="close"):
    """Commit what has come, checkpoint, exit."""


ToWriter = Batch | Views | Retain | Close

# -- writer to daemon ---------------------------------------------------------------------


class Ready(msgspec.Struct, array_like=True, tag="ready"):
    """The store is open (and recovered): new eids start above ``max_eid``."""

    max_eid: int
    #: Events replayed from the mirror into SQLite at this start (after a crash).
    replayed: int


class Done(msgspec.Struct, array_like=True, tag="done"):
    """Batch ``seq`` is committed."""

    seq: int
    stored: int
    #: (index into the batch's rows, eid of the event already stored with that client id)
    duplicates: list[tuple[int, int]]


class Retained(msgspec.Struct, array_like=True, tag="retained"):
    """Events one retention step deleted; ``more`` is false once nothing is left to delete for
    the current policy."""

    by_age: int
    by_size: int
    more: bool


class State(msgspec.Struct, array_like=True, tag="state"):
    """``ok``, or what the writer waits for (a lock, disk space), and since when."""

    text: str
    since: float


class Fatal(msgspec.Struct, array_like=True, tag="fatal"):
    """The writer cannot go on; it exits after this."""

    message: str


FromWriter = Ready | Done | Retained | State | Fatal

# -- frames -------------------------------------------------------------------------------

_encoder = msgspec.msgpack.Encoder()


def pack(message: ToWriter | FromWriter) -> bytes:
    """One frame: the length, then the message."""
    body = _encoder.encode(message)
    return HEADER.pack(len(body)) + body


def read_frame(stream: IO[bytes]) -> bytes | None:
    """The body of the next frame from a blocking stream; None at its end."""
    head = stream.read(HEADER.size)
    if len(head) < HEADER.size:
        return None
    (n,) = HEADER.unpack(head)
    body = stream.read(n)
    return body if len(body) == n else None


def pipe() -> tuple[int, int]:
    """A pipe (read end, write end) enlarged to PIPE_SIZE where the kernel allows it."""
    r, w = os.pipe()
    with contextlib.suppress(OSError):
        fcntl.fcntl(w, F_SETPIPE_SZ, PIPE_SIZE)
    return r, w
