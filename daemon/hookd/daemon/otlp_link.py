"""The OTLP decoding process as the daemon sees it: started, fed, restarted if it dies, stopped.

``OtlpLink.start`` (when the HTTP listener starts) runs ``python -m hookd.otlp_worker`` with
two pipes enlarged to 1 MiB; ``decode`` writes a request and its body's chunks as received
(``otlp_wire.Decode``) and returns a future of the reply. The worker answers in order, so the
replies are matched to a queue of futures; the loop reads them without blocking
(``connect_read_pipe``), and decoding a reply (msgpack of the lines) costs the loop about as
much as copying them. What the loop no longer does: the 10-20 ms of protobuf and conversion
per 512 records, nor does a thread of it take the GIL for that long.

A worker that dies (``kill -9``, a crash in protobuf's C code, out of memory) fails the requests
it held with ``WorkerGone`` (answered 503 with ``Retry-After``: the exporter sends them again,
and their ids make a retry of records already stored a duplicate, not a second event); it is
started again after ``RESTART_DELAYS``, and each restart is counted (``restarts``). While none
runs, requests fail at once the same way. Bounds: the bodies in the pipe or in decoding are
held within the receiver's byte budget (otlp_http.MAX_BUFFERED), and the worker holds one body
and its lines at a time.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import sys
from typing import Any, Final

import msgspec

from hookd import otlp_wire, wire
from hookd.daemon import child_pipes

log = logging.getLogger("hookd.http")

#: After an unexpected exit: wait this long before starting it again, growing up to the last.
RESTART_DELAYS: Final = (0.1, 0.5, 1.0, 2.0, 5.0)
#: A worker that ran this long was healthy: the next restart waits the shortest delay again.
HEALTHY_RUN: Final = 10.0
#: How long a stop waits for the worker to see the end of its stdin before killing it.
STOP_GRACE: Final = 2.0


class WorkerGone(Exception):
    """The decoding process died with this request, or is not running (being restarted)."""


class OtlpLink:
    """Owns the worker process; ``run`` (a task created by ``start``) supervises it."""

    def __init__(self) -> None:
        self.proc: asyncio.subprocess.Process | None = None
        self.pid: int | None = None  # from its Hello: it is ready
        self.restarts = 0
        self.died = 0  # requests answered 503 because the worker died with them
        self._out: asyncio.WriteTransport | None = None
        self._waiting: collections.deque[asyncio.Future[Any]] = collections.deque()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        #: While a worker starts (before its pipe is connected): what to write to it then.
        self._starting: list[bytes] | None = None

    def start(self) -> None:
        if self._task is None:
            self._starting = []
            self._task = asyncio.get_running_loop().create_task(self.run(), name="hookd-otlp-worker")

    def decode(self, request: otlp_wire.Decode, chunks: list[bytes]) -> asyncio.Future[Any]:
        """Send a body to the worker; the future gets its reply (``otlp_wire.Lines``,
        ``Failed``, ``Crashed``) or ``WorkerGone``."""
        fut = asyncio.get_running_loop().create_future()
        out, frames = self._out, [otlp_wire.pack(request), *chunks]
        if out is not None and not out.is_closing():
            out.writelines(frames)
        elif self._starting is not None:
            self._starting += frames
        else:
            fut.set_exception(WorkerGone("the OTLP decoding process is restarting"))
            return fut
        self._waiting.append(fut)
        return fut

    async def run(self) -> None:
        """Start the worker, and again whenever it exits without being asked to."""
        loop = asyncio.get_running_loop()
        failures = 0
        while not self._stopping:
            started = loop.time()
            try:
                code: int | str | None = await self._run_once()
            except OSError as e:  # could not even start it (no memory, no processes left)
                code = e.strerror
            self._starting = None  # until the next start, requests fail at once
            self._fail_waiting()
            if self._stopping:
                return
            failures = 0 if loop.time() - started > HEALTHY_RUN else failures + 1
            delay = RESTART_DELAYS[min(max(failures, 1), len(RESTART_DELAYS)) - 1]
            self.restarts += 1
            log.error("the OTLP decoding process exited with status %s; starting it again in %g s", code, delay)
            await asyncio.sleep(delay)

    async def _run_once(self) -> int | None:
        if self._starting is None:
            self._starting = []
        argv = [sys.executable, "-m", "hookd.otlp_worker"]
        self.proc, replies, self._out = await child_pipes.spawn(argv, otlp_wire.MAX_FRAME)
        self._out.writelines(self._starting)
        self._starting = None
        try:
            await self._read_replies(replies)
        finally:
            self._out.close()
            self._out = None
            self.pid = None
        return await self.proc.wait()

    async def _read_replies(self, replies: asyncio.StreamReader) -> None:
        """Each reply to the oldest request waiting, until the worker's stdout ends."""
        while True:
            try:
                head = await replies.readexactly(wire.HEADER.size)
                (n,) = wire.HEADER.unpack(head)
                reply = otlp_wire.decode_reply(await replies.readexactly(n))
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            except msgspec.DecodeError as e:  # out of step: a bug; start a new one
                log.error("the OTLP decoding process sent a frame hookd cannot read (%s); restarting it", e)
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()  # type: ignore[union-attr]
                return
            if isinstance(reply, otlp_wire.Hello):
                self.pid = reply.pid
            elif self._waiting:
                fut = self._waiting.popleft()
                if not fut.done():
                    fut.set_result(reply)

    def _fail_waiting(self) -> None:
        while self._waiting:
            fut = self._waiting.popleft()
            if not fut.done():
                self.died += 1
                fut.set_exception(WorkerGone("the OTLP decoding process died with this request"))

    async def stop(self) -> None:
        """After the requests in progress: close the worker's stdin (it exits), wait a
        little, then kill it."""
        self._stopping = True
        proc, out = self.proc, self._out
        if out is not None:
            out.close()
        if proc is not None and proc.returncode is None:
            try:
                await asyncio.wait_for(proc.wait(), STOP_GRACE)
            except TimeoutError:
                log.warning("the OTLP decoding process did not stop within %g s; killed", STOP_GRACE)
                self.kill()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def kill(self) -> None:
        """At exit, whatever happened: no worker outlives the daemon."""
        self._stopping = True
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
        if self._task is not None:
            self._task.cancel()

    def status(self) -> dict[str, Any]:
        return {
            "pid": self.pid,
            "restarts": self.restarts,
            "requests_failed": self.died,
            "in_decoding": len(self._waiting),
        }
