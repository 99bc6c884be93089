"""The OTLP decoding process: request bodies in, event lines out, one at a time.

The daemon (daemon/otlp_link.py) starts ``python -m hookd.otlp_worker`` with two pipes: it
writes ``otlp_wire.Decode`` frames, each followed by its body, to our stdin, and reads one
answer per request from our stdout, in order (``Lines``, ``Failed`` or ``Crashed``). Decoding
protobuf and turning 512 records into events is 10-20 ms of Python: here it takes a core of its
own instead of the GIL the daemon's event loop needs. Nothing else: no event loop, no disk, no
state between requests. The end of stdin (the daemon closed it, or died) is our stop; SIGINT
and SIGTERM are ignored so that a Ctrl-C or systemd's stop reaching the whole group lets the
daemon finish the requests in progress first.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from typing import BinaryIO

from hookd import otlp, otlp_wire
from hookd.wire import HEADER

log = logging.getLogger("hookd.otlp")


def read_exactly(stream: BinaryIO, n: int) -> bytes | None:
    """``n`` bytes from a buffered blocking stream (which reads until it has them), or None
    at its end."""
    data = stream.read(n)
    return data if len(data) == n else None


def answer(request: otlp_wire.Decode, body: bytes) -> otlp_wire.FromWorker:
    """One body to its reply; never raises (a bug becomes ``Crashed``, logged)."""
    try:
        decoded = otlp.decode(request.signal, request.fmt, request.encoding, body, request.max_line)
    except otlp.OtlpError as e:
        return otlp_wire.Failed(e.status, e.reason, e.message)
    except Exception as e:  # a bug in hookd: this request only
        log.error("decoding an OTLP request failed (a bug in hookd; please report it)", exc_info=e)
        return otlp_wire.Crashed(f"{type(e).__name__}: {e}"[:500])
    special = otlp_wire.specials(decoded.lines) if decoded.marked else []
    return otlp_wire.Lines([bytes(x) for x in decoded.lines] if special else decoded.lines, decoded.items, special)


def serve(inp: BinaryIO, out: BinaryIO) -> None:
    """Answer requests until the end of ``inp``."""
    while True:
        head = read_exactly(inp, HEADER.size)
        if head is None:
            return
        (n,) = HEADER.unpack(head)
        if n > otlp_wire.MAX_FRAME:
            raise SystemExit(f"hookd[otlp]: a frame of {n} bytes from the daemon: out of step, stopping")
        frame = read_exactly(inp, n)
        request = otlp_wire.decode_request(frame) if frame is not None else None
        body = read_exactly(inp, request.size) if request is not None else None
        if request is None or body is None:
            return
        out.write(otlp_wire.pack(answer(request, body)))
        out.flush()


def main() -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logging.basicConfig(stream=sys.stderr, format="hookd[otlp]: %(message)s", level=logging.INFO)
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # a stray print cannot corrupt the frames
    inp = os.fdopen(0, "rb", buffering=1 << 20)
    out.write(otlp_wire.pack(otlp_wire.Hello(os.getpid())))  # after the imports (150 ms of protobuf)
    out.flush()
    try:
        serve(inp, out)
    except BrokenPipeError:
        pass  # the daemon is gone
    return 0
