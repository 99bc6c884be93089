"""One control connection, on either socket: a command line in, the answer out.

A control connection starts with ``!`` (JSON never does). On the control socket every
connection is one (control_listener.py); on the event socket the accept loop or an
``EventProtocol`` hands one over when it sees the ``!`` (server.py). Both get this protocol,
so the bounds are the same everywhere: a command line of at most ``MAX_COMMAND`` bytes, sent
within ``idle_timeout`` (or the connection is closed and counted as ``idle_timeout``), at most
``MAX_CONNECTIONS`` open at once. The command itself is answered by ``Control`` (control.py);
a follower stays open and is written to as batches commit.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from hookd.daemon.peers import REFUSED_REPLY, UidRule, peer_of

if TYPE_CHECKING:
    from hookd.daemon.control import Control

#: Longest command line of a control connection (``!status``, ``!follow {...}``).
MAX_COMMAND = 64 << 10
#: Open control connections at most, on both sockets together (followers are capped lower,
#: in control.py).
MAX_CONNECTIONS = 256
_BUSY_REPLY = b'{"ok":false,"reason":"busy","detail":"too many control connections; try again"}\n'
_NOT_A_COMMAND = (
    b'{"ok":false,"reason":"bad_command","detail":"the control socket takes commands (!status, !follow, !import); '
    b'send events to the event socket"}\n'
)


class ControlProtocol(asyncio.Protocol):
    """One control connection: a command line, then the answer (a follower stays open).

    ``uids``: check the peer's uid first (the control socket); None where the accept loop has
    checked it already (the event socket). ``pending``: bytes read before this protocol took
    the connection over.
    """

    def __init__(self, control: Control, *, uids: UidRule | None = None, pending: bytes = b"") -> None:
        self._control = control
        self._uids = uids
        self._transport: asyncio.Transport | None = None
        self._buf = pending
        self._done = False  # the command was handled (or the connection refused)
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._transport = transport
        if self._uids is not None:
            peer = peer_of(transport.get_extra_info("socket"))
            if not self._uids.allows(peer.uid):
                self._refuse(REFUSED_REPLY)
                self._uids.refused(peer)
                return
        if len(self._control.connections) >= MAX_CONNECTIONS:
            self._refuse(_BUSY_REPLY)
            return
        self._control.connections.add(self)
        self._timer = asyncio.get_running_loop().call_later(self._control.settings.idle_timeout, self._too_slow)
        if self._buf:
            pending, self._buf = self._buf, b""
            self.data_received(pending)

    def _refuse(self, reply: bytes) -> None:
        self._done = True
        self._buf = b""
        assert self._transport is not None
        self._transport.write(reply)
        self._transport.close()

    def data_received(self, data: bytes) -> None:
        if self._done:
            return  # the command was taken; anything more is ignored
        buf = self._buf + data
        if len(buf) <= MAX_COMMAND and b"\n" not in buf:
            self._buf = buf
            return
        self._command(buf)

    def eof_received(self) -> bool:
        if not self._done:
            self._command(self._buf, eof=True)  # a command without its newline
        return True  # keep writing: a follower that half-closed still gets its events

    def _command(self, buf: bytes, eof: bool = False) -> None:
        self._done = True
        self._buf = b""
        if self._timer is not None:
            self._timer.cancel()
        t = self._transport
        if t is None or t.is_closing():
            return
        line, _, rest = buf.partition(b"\n")
        if not line.startswith(b"!"):
            t.write(_NOT_A_COMMAND)
            t.close()
            return
        self._control.handle(t, line[1:], rest, eof)  # rest: the file of an !import

    def _too_slow(self) -> None:
        if not self._done and self._transport is not None:
            self._done = True
            self._transport.close()
            self._control.count("idle_timeout")

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._control.connections.discard(self)
        if self._transport is not None:
            self._control.forget(self._transport)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
