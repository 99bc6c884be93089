"""Frames between the daemon and its writer process: 4-byte length, then msgpack.

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

import struct
from typing import Any, Final

import msgspec

HEADER: Final = struct.Struct("!I")
MAX_FRAME: Final = 1 << 30

_encoder = msgspec.msgpack.Encoder()
_decode = msgspec.msgpack.Decoder().decode


def pack(message: list[Any]) -> bytes:
    body = _encoder.encode(message)
    return HEADER.pack(len(body)) + body


def unpack(body: bytes) -> list[Any]:
    return _decode(body)
