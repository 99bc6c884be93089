"""Frames between the daemon and its OTLP decoding process (``hookd.otlp_worker``).

As in ``wire.py``: a 4-byte length, then one tagged, ``array_like`` msgspec Struct in msgpack.
A ``Decode`` request is followed on the pipe by its body's ``size`` raw bytes (the daemon writes
the chunks it received as they are, without joining them on the event loop). The worker
answers each request, in order, with ``Lines`` (the event lines to frame) or ``Failed`` (the
HTTP error the body earns, ``hookd.otlp.OtlpError``) or ``Crashed`` (a bug in hookd, logged by
the worker); its first frame is ``Hello``.

An over-long record's line is cut to fit or refused in the worker (``oversize.fit``); the
``Cut`` or ``TooLong`` it became travels as a ``Special`` beside the plain bytes, and is made
again on the daemon's side (``lines_of``), so ``Ingest`` sees exactly what a thread gave it.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

from hookd import oversize
from hookd.wire import HEADER

#: Largest frame either side accepts (a request's body travels beside its frame).
MAX_FRAME: Final = 1 << 30


# -- daemon to worker ----------------------------------------------------------------------------
class Decode(msgspec.Struct, array_like=True, tag="decode"):
    """Decode the ``size`` bytes that follow this frame (``hookd.otlp.decode``'s arguments)."""

    signal: str
    fmt: str
    encoding: bytes
    size: int
    max_line: int


# -- worker to daemon ----------------------------------------------------------------------------
class Hello(msgspec.Struct, array_like=True, tag="hello"):
    """The worker's first frame, once its decoder is imported."""

    pid: int


class Special(msgspec.Struct, array_like=True):
    """The line at ``index`` was over ``max_line``: ``cut`` to fit (``values`` say what was
    cut) or not stored (``detail`` says why); ``size`` is the record's length before."""

    index: int
    cut: bool
    size: int
    detail: str = ""
    values: list[dict[str, Any]] = []


class Lines(msgspec.Struct, array_like=True, tag="lines"):
    """A decoded body: its event lines, how many records or points it held, the special lines."""

    lines: list[bytes]
    items: int
    special: list[Special] = []


class Failed(msgspec.Struct, array_like=True, tag="failed"):
    """The body earns an HTTP error (400 malformed, 413 inflates too far)."""

    status: int
    reason: str
    message: str


class Crashed(msgspec.Struct, array_like=True, tag="crashed"):
    """Decoding raised what it should not (a bug in hookd); the traceback is on stderr."""

    message: str


FromWorker = Hello | Lines | Failed | Crashed

_encoder = msgspec.msgpack.Encoder()
decode_reply = msgspec.msgpack.Decoder(FromWorker).decode
decode_request = msgspec.msgpack.Decoder(Decode).decode


def pack(message: Decode | FromWorker) -> bytes:
    body = _encoder.encode(message)
    return HEADER.pack(len(body)) + body


def specials(lines: list[bytes]) -> list[Special]:
    """The ``Cut`` and ``TooLong`` lines among ``lines`` (in the worker)."""
    out = []
    for i, line in enumerate(lines):
        if isinstance(line, oversize.Cut):
            out.append(Special(i, True, line.size, values=line.values))
        elif isinstance(line, oversize.TooLong):
            out.append(Special(i, False, line.size, detail=line.detail))
    return out


def lines_of(reply: Lines) -> list[bytes]:
    """The lines with their ``Cut`` and ``TooLong`` made again (on the daemon's side)."""
    lines = reply.lines
    for s in reply.special:
        line = lines[s.index]
        lines[s.index] = oversize.cut(line, s.size, s.values) if s.cut else oversize.too_long(line, s.size, s.detail)
    return lines
