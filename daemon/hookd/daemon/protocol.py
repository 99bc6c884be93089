"""One event connection on a loop transport: lines in, acknowledgements out, in order.

Most hooks never get here: the accept loop serves a connect-send-close hook without a
transport (server.py). A connection that is still open, asks for acknowledgements or streams
is handed to an ``EventProtocol`` with the bytes already read. One whose first byte turns out
to be ``!`` is a control connection, and is handed on again, to a ``ControlProtocol``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections import deque
from typing import TYPE_CHECKING, Protocol

from hookd.daemon.peers import peer_of
from hookd.framing import NO_PEER, LineSplitter, Peer

if TYPE_CHECKING:
    from hookd.daemon.server import Server


class LineSink(Protocol):
    """Where complete lines go. Implemented by the ingest pipeline (ingest.py)."""

    def lines(self, lines: list[bytes], peer: Peer, conn: EventProtocol | None = None, *, marked: bool = False) -> None:
        """``marked``: some lines are over-long ones (oversize.Cut, oversize.TooLong)."""

    def count(self, name: str) -> None:
        """A connection refused or closed (``refused_uid``, ``idle_timeout``)."""


class EventProtocol(asyncio.Protocol):
    """One client connection: split bytes into lines, hand them on, keep the tail.

    Lines that ask for an acknowledgement get a reply slot; replies are written in the order
    the lines came, and a client that half-closes (EOF) is answered before the connection
    closes.
    """

    __slots__ = ("_server", "_transport", "_splitter", "_peer", "_pending", "_slots", "_head", "_eof", "_first", "idle")

    def __init__(self, server: Server, *, peer: Peer | None = None, pending: bytes = b"") -> None:
        self._server = server
        self._splitter = LineSplitter(
            server.max_line, cut_limit=server.cut_limit, budget=server.cut_budget, in_order=True
        )
        self._peer = peer if peer is not None else NO_PEER
        self._pending = pending  # bytes the accept loop already read
        self._transport: asyncio.Transport | None = None
        self._slots: deque[bytes | None] | None = None
        self._head = 0
        self._eof = False
        #: No byte seen yet: the first one decides between events and a control command.
        self._first = True
        #: Idle sweeps since this connection last completed a line (see Server._sweep_idle).
        self.idle = 0

    @property
    def transport(self) -> asyncio.Transport | None:
        """None before the connection is made, and once it was handed to the control side."""
        return self._transport

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._transport = transport
        if self._peer is NO_PEER:
            self._peer = peer_of(transport.get_extra_info("socket"))
        self._server.connection_opened(self)
        if self._pending:
            pending, self._pending = self._pending, b""
            self.data_received(pending)

    def data_received(self, data: bytes) -> None:
        if self._first:
            self._first = False
            if data[:1] == b"!":  # JSON never starts with "!": a control command
                self._server.to_control(self, data)
                return
        if self._server.flow.paused:
            # uvloop starts reading after connection_made returns, undoing a pause made there;
            # catch such a connection at its first read. This chunk is still handled.
            self._transport.pause_reading()  # type: ignore[union-attr]
        splitter = self._splitter
        lines = splitter.feed(data)
        if lines:
            self.idle = 0
            if splitter.marked:  # rare: an over-long line among them (cut, or to be rejected)
                splitter.marked = 0
                self._server.sink.lines(lines, self._peer, self, marked=True)
            else:
                self._server.sink.lines(lines, self._peer, self)

    def release(self) -> asyncio.Transport | None:
        """Let go of the transport (it goes to a control protocol); no callback comes here after."""
        t, self._transport = self._transport, None
        return t

    # -- acknowledgements -----------------------------------------------------------------
    def new_slot(self) -> int:
        if self._slots is None:
            self._slots = deque()
        self._slots.append(None)
        return self._head + len(self._slots) - 1

    def reply(self, slot: int, data: bytes) -> None:
        slots = self._slots
        t = self._transport
        if slots is None or t is None:
            return
        slots[slot - self._head] = data
        while slots and slots[0] is not None:
            out = slots.popleft()
            self._head += 1
            if not t.is_closing():
                t.write(out)  # type: ignore[arg-type]
        if not slots and self._eof:
            t.close()

    @property
    def awaiting_replies(self) -> bool:
        return bool(self._slots)

    @property
    def waiting_on_us(self) -> bool:
        """The daemon owes this client replies, or the client has finished sending: not idle."""
        return self._eof or bool(self._slots)

    def pause_writing(self) -> None:
        """The replies waiting to be written passed the transport's high-water mark: a client
        that asks for acknowledgements and does not read them. Read none of its requests
        until it does, or their replies would pile up in memory without bound (measured:
        +75 MB for 400,000 unread acknowledgements). Out of the flow control's set meanwhile,
        so that its resume does not resume this one; the idle timeout still applies."""
        t = self._transport
        if t is not None:
            self._server.flow.transports.discard(t)
            t.pause_reading()

    def resume_writing(self) -> None:
        t = self._transport
        if t is not None and not t.is_closing():
            self._server.flow.transports.add(t)
            if not self._server.flow.paused:
                t.resume_reading()

    def close_idle(self) -> bool:
        """Close this connection for idleness; what it sent so far is still framed."""
        t = self._transport
        if t is None or t.is_closing():
            return False
        t.close()
        return True

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def eof_received(self) -> bool:
        self._finish()
        self._eof = True
        # Keep the socket open for writing while acknowledgements are owed; otherwise close.
        return self.awaiting_replies

    def connection_lost(self, exc: Exception | None) -> None:
        self._finish()
        self._server.connection_closed(self)

    def _finish(self) -> None:
        # A last line without a newline still counts, an unfinished over-long one too (cut or
        # rejected); what the splitter held of it is given back to the budget either way.
        splitter = self._splitter
        tail = splitter.finish()
        if tail is not None:
            marked, splitter.marked = splitter.marked, 0
            self._server.sink.lines([tail], self._peer, self, marked=bool(marked))

    def read_what_is_left(self) -> None:
        """At shutdown: read whatever the kernel still holds for this connection, then close
        it (once its acknowledgements, if any, are written).

        The transport is paused first so nothing is read twice; a duplicate of the descriptor
        lets us read without going through the loop.
        """
        t = self._transport
        if t is None or t.is_closing():
            return
        t.pause_reading()
        sock = t.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                dup = socket.socket(fileno=os.dup(sock.fileno()))
                try:
                    dup.setblocking(False)
                    while self._transport is not None:  # None: it became a control connection
                        try:
                            data = dup.recv(1 << 16)
                        except (BlockingIOError, InterruptedError):
                            break
                        if not data:
                            break
                        self.data_received(data)
                finally:
                    dup.close()
        if self._transport is None:
            return  # the control side reads the rest itself
        self._finish()
        self._eof = True
        if not self.awaiting_replies:
            t.close()
