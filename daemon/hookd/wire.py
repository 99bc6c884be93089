"""Frames between the daemon and its writer process: 4-byte length, then msgpack; and what
both senders (the daemon, ``hookd import``) share to start a writer: its command line
(``writer_command``), enlarged pipes (``pipe``) and per-type counts of a batch (``type_summary``).

Daemon to writer:
    ["batch", seq, rows, mirror_lines, with_id, rejects, spool_names, types?, counts?]
        types: [[type, count, first_ts, last_ts], ...] of the rows (optional: the writer counts
        the rows itself without it, or when a batch had duplicates)
        counts: optional {counter name: increment} (connections refused, timed out)
    ["views", {type: {column: json_path}}]   configured view columns (start, SIGHUP)
    ["retain", policy]
        policy: the retention.Policy fields as a map. The writer deletes what is due in steps of
        at most policy["step_rows"] events, one short transaction each, between batches, until
        nothing is due; and starts mirror upkeep (compression, deletion) in a thread. A newer
        ``retain`` replaces the policy of one still in progress.
    ["close"]
Writer to daemon:
    ["ready", max_eid, schema_version, replayed]
    ["done", seq, stored, duplicates]      duplicates: [index into rows, eid already stored]
    ["retained", by_age, by_size, more]    events one retention step deleted; more: false once
                                           nothing is left to delete for the current policy
    ["state", text, since]                 "ok", or what the writer waits for (a lock, disk space)
    ["fatal", message]
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import struct
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import msgspec

if TYPE_CHECKING:
    from hookd.paths import Paths

HEADER: Final = struct.Struct("!I")
MAX_FRAME: Final = 1 << 30
F_SETPIPE_SZ: Final = getattr(fcntl, "F_SETPIPE_SZ", 1031)
#: The default pipe-max-size: a pipe can grow to it without privileges. 64 KiB pipes starve the
#: writer (a batch is ~0.6 MB), and asyncio's socketpairs keep 208 KiB buffers that cannot grow.
PIPE_SIZE: Final = 1 << 20


def writer_command(paths: Paths, *, synchronous: str = "normal", log_level: str = "INFO") -> list[str]:
    """The command line of a writer process for ``paths`` (the daemon's, or ``hookd import``'s)."""
    return [
        sys.executable, "-m", "hookd.writer", "--db", os.fspath(paths.db),
        "--mirror-dir", os.fspath(paths.mirror_dir), "--spool-dir", os.fspath(paths.spool_dir),
        "--synchronous", synchronous, "--log-level", log_level,
    ]  # fmt: skip


def pipe() -> tuple[int, int]:
    """A pipe (read end, write end) enlarged to PIPE_SIZE where the kernel allows it."""
    r, w = os.pipe()
    with contextlib.suppress(OSError):
        fcntl.fcntl(w, F_SETPIPE_SZ, PIPE_SIZE)
    return r, w


_encoder = msgspec.msgpack.Encoder()
_decode = msgspec.msgpack.Decoder().decode


def pack(message: list[Any]) -> bytes:
    body = _encoder.encode(message)
    return HEADER.pack(len(body)) + body


def unpack(body: bytes) -> list[Any]:
    return _decode(body)


def type_summary(rows: list[tuple]) -> list[list[Any]]:
    """Per type in a batch: [type, count, first ts, last ts], for the writer's ``event_types``.

    Done by the sender (the daemon, ``hookd import``), which has spare CPU at full load while
    the writer has none: counting by reading the rows back in SQL cost the writer about a tenth
    of its time (py-spy).
    """
    out: dict[str, list[Any]] = {}
    for row in rows:
        etype, ts = row[1], row[2]
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


#: Events deleted per step at most. One step of 2000 held the write lock ~10 ms on this machine.
STEP_ROWS = 2000


@dataclass
class Policy:
    """What the writer applies; travels in the ``retain`` frame as a dict."""

    max_age: float | None = None
    type_max_age: dict[str, float | None] = field(default_factory=dict)
    max_size: int | None = None
    mirror_max_age: float | None = None
    mirror_max_size: int | None = None
    mirror_compress: bool = True
    step_rows: int = STEP_ROWS

    @classmethod
    def from_settings(cls, s: Any) -> Policy:
        return cls(s.max_age, dict(s.type_max_age), s.max_size, s.mirror_max_age, s.mirror_max_size, s.mirror_compress)

    @property
    def db_rules(self) -> bool:
        return self.max_age is not None or self.max_size is not None or any(self.type_max_age.values())

    @property
    def mirror_rules(self) -> bool:
        return self.mirror_compress or self.mirror_max_age is not None or self.mirror_max_size is not None

    def frame(self) -> list[Any]:
        return ["retain", self.__dict__]

    @classmethod
    def from_frame(cls, frame: list[Any]) -> Policy:
        return cls(**frame[1])

    def forever(self) -> list[str]:
        """Types configured to be kept forever: the size rule spares them too."""
        return sorted(t for t, age in self.type_max_age.items() if age is None)
