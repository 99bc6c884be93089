"""OTLP/HTTP on the HTTP listener: ``POST /v1/logs`` and ``POST /v1/metrics``.

``http_protocol.py`` routes a request here by its path and hands over the body's chunks; this
module buffers them within bounds, has the body decoded by the OTLP decoding process
(``hookd.otlp_worker``, driven by ``otlp_link.py``: protobuf decoding and conversion are CPU
work, about 10-20 ms for 512 records, which must cost hooks on the event loop nothing, not even
the GIL), feeds the event lines to ``Ingest`` like any other lines, and builds the answer the
OTLP specification asks for:

- ``200`` with an ``Export<signal>ServiceResponse`` in the request's encoding, with
  ``partial_success`` (rejected count and why) only when some records were rejected;
- ``400`` (malformed: not protobuf, not JSON, not OTLP, bad gzip), ``413`` (over ``MAX_BODY``
  as sent, or ``MAX_INFLATED`` inflated), ``415`` (another Content-Type or Content-Encoding),
  ``503`` with ``Retry-After`` when ``MAX_BUFFERED`` bytes of OTLP bodies are already held
  (``busy``) or the decoding process died with the request or is being restarted
  (``decoder_restarting``): a ``google.rpc.Status`` body. 400 and 413 are recorded in ``rejected`` (the body's first
  bytes), all are counted per reason by the listener.

Bounds: one request's body at most ``MAX_BODY`` bytes as sent and ``MAX_INFLATED`` inflated;
all OTLP bodies held at once (received, in the pipe to the decoder or in decoding) at most
``MAX_BUFFERED``; one decoding process, so one inflated body and its records at a time.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from hookd import otlp_wire
from hookd.daemon.otlp_link import OtlpLink, WorkerGone
from hookd.framing import PREVIEW_BYTES, Peer
from hookd.oversize import Budget

if TYPE_CHECKING:
    from types import ModuleType

    from hookd.daemon.http_listener import HttpListener
    from hookd.daemon.http_protocol import Request

log = logging.getLogger("hookd.http")

#: Request paths -> signal (``hookd.otlp.LOGS``, ``METRICS``).
PATHS: Final = {b"/v1/logs": "logs", b"/v1/metrics": "metrics"}
#: ``hookd.otlp`` and the protobuf classes it loads take about 150 ms to import: not at the
#: daemon's start (a socket-activated start answers its first hook sooner), but in a thread
#: once the listener runs (``OtlpReceiver.preload``), or at the first OTLP request. The daemon
#: uses only its light parts (media types, limits, the answers' bodies); the decoding process
#: runs ``decode``.
_MODULE = "hookd.otlp"


def _otlp() -> ModuleType:
    return importlib.import_module(_MODULE)


#: Bytes of OTLP bodies held at once over all connections; a request past it is answered 503.
MAX_BUFFERED: Final = 64 << 20
#: Seconds an exporter is asked to wait before it sends again after a 503.
RETRY_AFTER: Final = 1
#: Errors quoted in a partial success's message.
MAX_QUOTED: Final = 3


class OtlpReceiver:
    """What the OTLP routes share on one listener: the decoding process, the byte budget, the
    counts for ``!status``, and the decodings in progress (awaited at stop)."""

    def __init__(self, listener: HttpListener) -> None:
        self.listener = listener
        self.budget = Budget(MAX_BUFFERED)
        self.jobs: set[asyncio.Future[Any]] = set()
        self.counts: dict[str, Counter[str]] = {signal: Counter() for signal in PATHS.values()}
        self.link = OtlpLink()

    def preload(self) -> None:
        """Start the decoding process, and import the answers' side in a thread, off the loop
        (see ``_MODULE``)."""
        self.link.start()
        loop = asyncio.get_running_loop()
        self._track(loop.run_in_executor(None, importlib.import_module, _MODULE))

    def submit(self, request: otlp_wire.Decode, chunks: list[bytes]) -> asyncio.Future[Any]:
        return self._track(self.link.decode(request, chunks))

    def _track(self, fut: asyncio.Future[Any]) -> asyncio.Future[Any]:
        self.jobs.add(fut)
        fut.add_done_callback(self.jobs.discard)
        return fut

    async def drain(self) -> None:
        """Wait for the decodings in progress (their records go into the last batches), then
        stop the decoding process."""
        if self.jobs:
            await asyncio.gather(*list(self.jobs), return_exceptions=True)
        await self.link.stop()

    def close(self) -> None:
        self.link.kill()

    def reject(self, reason: str, detail: str, head: bytes, size: int, peer: Peer) -> None:
        """A body that holds no record hookd can store: one row of ``rejected``."""
        self.listener.ingest.refused(reason, detail, head[:PREVIEW_BYTES], peer, size)

    def status(self) -> dict[str, Any]:
        """The ``otlp`` part of the listener's ``!status``: per signal, requests answered
        200, records (or points) received, records rejected, errors by reason; and the bytes of
        OTLP bodies held now (``buffered_bytes``, at most ``MAX_BUFFERED``)."""
        out: dict[str, Any] = {signal: dict(sorted(c.items())) for signal, c in self.counts.items()}
        out["buffered_bytes"] = self.budget.used
        out["decoder"] = self.link.status()
        return out


class OtlpRequest:
    """One ``POST /v1/logs`` or ``/v1/metrics``: set as ``Request.otlp`` by the protocol,
    which then calls ``feed`` with each body chunk, ``complete`` at its end and ``answer``."""

    __slots__ = ("rx", "signal", "fmt", "encoding", "chunks", "size", "held", "rejected", "message")

    def __init__(self, rx: OtlpReceiver, signal: str, headers: dict[bytes, bytes]) -> None:
        self.rx = rx
        self.signal = signal
        self.fmt = _otlp().media(headers.get(b"content-type", b""))
        self.encoding = headers.get(b"content-encoding", b"")
        self.chunks: list[bytes] = []
        self.size = 0  # bytes received
        self.held = 0  # bytes taken from the budget
        self.rejected = 0
        self.message = ""

    @property
    def ctype(self) -> bytes:
        """The answer's Content-Type: the request's (JSON when it had none we know)."""
        return _otlp().RESPONSE_TYPES[self.fmt or _otlp().JSON]

    def begin(self, req: Request, length: bytes | None, peer: Peer) -> str | None:
        """Decide what can be decided from the headers. Returns why the request is too large
        (the caller answers 413 at once and closes), else None."""
        if self.fmt is None:
            req.fail(415, "unsupported_media_type", "send Content-Type: application/x-protobuf or application/json")
            return None
        try:
            _otlp().check_encoding(self.encoding)
        except _otlp().OtlpError as e:
            req.fail(e.status, e.reason, e.message)
            return None
        if length is not None and length.isdigit() and int(length) > _otlp().MAX_BODY:
            return self._too_long(int(length), b"", peer)
        return None

    def feed(self, req: Request, data: bytes, peer: Peer) -> str | None:
        """One chunk of the body. Returns why the body is too large, else None."""
        self.size += len(data)
        if self.size > _otlp().MAX_BODY:
            head = self.chunks[0] if self.chunks else data
            self._release()
            return self._too_long(self.size, head, peer)
        if not self.rx.budget.take(len(data)):
            self._release()
            self.rx.counts[self.signal]["busy"] += 1
            req.fail(503, "busy", f"hookd holds {MAX_BUFFERED >> 20} MiB of OTLP bodies already; retry later")
            return None
        self.held += len(data)
        self.chunks.append(data)
        return None

    def _too_long(self, size: int, head: bytes, peer: Peer) -> str:
        over = f"over {_otlp().MAX_BODY}" if head else f"of {size}"
        detail = f"an OTLP body {over} bytes exceeds the limit of {_otlp().MAX_BODY} (export fewer records at once)"
        self.rx.reject("too_long", detail, head, size, peer)
        self.rx.counts[self.signal]["too_long"] += 1
        return detail

    def abandon(self) -> None:
        """The client went away mid-body: give its bytes back (called by the protocol)."""
        self._release()

    def _release(self) -> None:
        self.rx.budget.give(self.held)
        self.held = 0
        self.chunks = []

    def complete(self, req: Request, peer: Peer, finish: Callable[[Request], None]) -> None:
        """The whole body is here: send it to the decoding process; ``finish`` answers once
        its reply is here."""
        req.pending = 1
        body, self.chunks = self.chunks, []
        assert self.fmt is not None  # begin() answered 415 otherwise
        size = sum(map(len, body))
        request = otlp_wire.Decode(self.signal, self.fmt, self.encoding, size, self.rx.listener.max_line)
        fut = self.rx.submit(request, body)
        fut.add_done_callback(lambda f: self._decoded(f, req, body, peer, finish))

    def _decoded(self, fut: asyncio.Future[Any], req: Request, body: list[bytes], peer: Peer, finish: Callable) -> None:
        """On the loop, with the decoder's reply: the lines into Ingest, the answer decided."""
        self._release()
        counts = self.rx.counts[self.signal]
        req.pending = 0
        try:
            reply = fut.result()
        except WorkerGone as e:
            req.fail(503, "decoder_restarting", f"{e}; send it again")
            counts["decoder_restarting"] += 1
            reply = None
        if isinstance(reply, otlp_wire.Failed):
            req.fail(reply.status, reply.reason, reply.message)
            counts[reply.reason] += 1
            if reply.status in (400, 413):
                self.rx.reject(reply.reason, reply.message, body[0] if body else b"", sum(map(len, body)), peer)
        elif isinstance(reply, otlp_wire.Crashed):  # a bug in hookd: this request only, never the daemon
            log.error("decoding an OTLP request failed (a bug in hookd; please report it): %s", reply.message)
            req.fail(500, "internal_error", "hookd failed on this request (logged); please report it")
            counts["internal_error"] += 1
        elif isinstance(reply, otlp_wire.Lines):
            self._ingest(reply, peer)
            counts["requests"] += 1
            counts["records" if self.signal == "logs" else "points"] += reply.items
            counts["rejected"] += self.rejected
        finish(req)

    def _ingest(self, decoded: otlp_wire.Lines, peer: Peer) -> None:
        if not decoded.lines:
            return
        ingest = self.rx.listener.ingest
        cap: list[tuple[str, str]] = []
        ingest.capture = cap
        try:
            ingest.lines(otlp_wire.lines_of(decoded), peer, marked=bool(decoded.special))
        finally:
            ingest.capture = None
        if cap:
            self.rejected = len(cap)
            quoted = "; ".join(f"{reason}: {detail}" for reason, detail in cap[:MAX_QUOTED])
            self.message = f"{len(cap)} of {decoded.items} rejected ({quoted})"

    def answer(self, req: Request) -> tuple[int, bytes, bytes]:
        """(status, body, extra headers) of the answer."""
        fmt = self.fmt or _otlp().JSON
        if req.status:
            extra = b"Retry-After: %d\r\n" % RETRY_AFTER if req.status == 503 else b""
            return req.status, _otlp().status(fmt, req.detail), extra
        return 200, _otlp().success(self.signal, fmt, self.rejected, self.message), b""
