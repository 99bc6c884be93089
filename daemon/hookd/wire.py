"""Frames between the daemon and its writer process: 4-byte length, then msgpack.

Daemon to writer:
    ["batch", seq, rows, mirror_lines, with_id, rejects, spool_names, counts?]
                                           counts: optional {counter name: increment}
    ["close"]
Writer to daemon:
    ["ready", max_eid, schema_version]
    ["done", seq, stored, duplicates]      duplicates: [index into rows, eid already stored]
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
