"""The control socket (``<socket>.ctl``): operator questions that backpressure never holds up.

When the writer falls behind, the daemon stops accepting on its event socket so that hooks'
data waits in the kernel and, beyond that, in the clients' spool (docs/architecture.md). That
is exactly when an operator asks ``hookd status``, so control commands have a socket of their
own, accepted always and never paused. It speaks the same commands as a ``!`` line on the event
socket (control.py), with the same peer-uid rule; it carries no events.

Bounded: at most ``MAX_CONNECTIONS`` open at once, a command line of at most ``MAX_COMMAND``
bytes, and a connection that has not sent its command within ``idle_timeout`` is closed (and
counted as ``idle_timeout``, as on the event socket).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import struct
from collections.abc import Callable
from pathlib import Path

from hookd.daemon.control import Control
from hookd.daemon.server import MAX_COMMAND, bind_unix
from hookd.framing import NO_PEER, Peer

log = logging.getLogger("hookd.control")

_PEERCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid
#: Open control connections at most (followers are capped lower, in control.py).
MAX_CONNECTIONS = 256
_REFUSED_REPLY = (
    b'{"ok":false,"reason":"refused_uid","detail":"this hookd does not accept connections from your user"}\n'
)
_BUSY_REPLY = b'{"ok":false,"reason":"busy","detail":"too many control connections; try again"}\n'
_NOT_A_COMMAND = (
    b'{"ok":false,"reason":"bad_command","detail":"the control socket takes commands (!status, !follow); '
    b'send events to the event socket"}\n'
)


class ControlProtocol(asyncio.Protocol):
    """One control connection: a command line, then the answer (a follower stays open)."""

    def __init__(self, listener: ControlListener) -> None:
        self._listener = listener
        self._transport: asyncio.Transport | None = None
        self._buf = b""
        self._done = False  # the command was handled
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._transport = transport
        lst = self._listener
        peer = _peer(transport)
        accepted = lst.accepted_uids()
        if accepted is not None and peer.uid not in accepted:
            self._done = True
            transport.write(_REFUSED_REPLY)
            transport.close()
            lst.refused(peer)
            return
        if len(lst.connections) >= MAX_CONNECTIONS:
            self._done = True
            transport.write(_BUSY_REPLY)
            transport.close()
            return
        lst.connections.add(self)
        self._timer = asyncio.get_running_loop().call_later(lst.idle_timeout(), self._too_slow)

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
            self._command(self._buf)  # a command without its newline
        return True  # keep writing: a follower that half-closed still gets its events

    def _command(self, buf: bytes) -> None:
        self._done = True
        self._buf = b""
        if self._timer is not None:
            self._timer.cancel()
        t = self._transport
        if t is None or t.is_closing():
            return
        line = buf.split(b"\n", 1)[0]
        if not line.startswith(b"!"):
            t.write(_NOT_A_COMMAND)
            t.close()
            return
        self._listener.control.handle(t, line[1:])

    def _too_slow(self) -> None:
        if not self._done and self._transport is not None:
            self._done = True
            self._transport.close()
            self._listener.count("idle_timeout")

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._listener.connections.discard(self)
        if self._transport is not None:
            self._listener.control.forget(self._transport)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


def _peer(transport: asyncio.Transport) -> Peer:
    sock = transport.get_extra_info("socket")
    if sock is None:
        return NO_PEER
    try:
        pid, uid, _gid = _PEERCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size))
    except OSError:
        return NO_PEER
    return Peer(pid, uid)


class ControlListener:
    """Binds ``path`` (mode 0600, beside the event socket, under the daemon's lock) and serves
    control connections on it until ``stop``."""

    def __init__(
        self,
        path: Path,
        control: Control,
        *,
        accepted_uids: Callable[[], frozenset[int] | None],
        refused: Callable[[Peer], None],
        count: Callable[[str], None],
        idle_timeout: Callable[[], float],
    ) -> None:
        self.path = path
        self.control = control
        self.accepted_uids = accepted_uids
        self.refused = refused
        self.count = count
        self.idle_timeout = idle_timeout
        self.connections: set[ControlProtocol] = set()
        self._server: asyncio.AbstractServer | None = None
        self._ino: int | None = None

    async def start(self) -> bool:
        """Start serving; False (logged) when the path cannot be used: status then reaches the
        daemon through the event socket only, as before the control socket existed."""
        try:
            sock = bind_unix(self.path, 64)
        except (OSError, ValueError) as e:
            log.warning(
                "no control socket at %s (%s): `hookd status` and `hookd tail -f` will ask on the "
                "event socket, which does not answer while the daemon is flooded",
                self.path,
                getattr(e, "strerror", None) or e,
            )
            return False
        self._ino = os.stat(self.path).st_ino
        loop = asyncio.get_running_loop()
        self._server = await loop.create_unix_server(lambda: ControlProtocol(self), sock=sock)
        return True

    async def stop(self) -> None:
        """Close the socket and every control connection (followers see the end of the stream)."""
        if self._server is None:
            return
        self._server.close()
        with contextlib.suppress(OSError):
            if os.stat(self.path).st_ino == self._ino:
                os.unlink(self.path)
        for proto in list(self.connections):
            proto.close()
        self._server = None
        await asyncio.sleep(0)  # let connection_lost callbacks run
