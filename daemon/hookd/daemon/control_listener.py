"""The control socket (``<socket>.ctl``): operator questions that backpressure never holds up.

When the writer falls behind, the daemon stops accepting on its event socket so that hooks'
data waits in the kernel and, beyond that, in the clients' spool (docs/architecture.md). That
is exactly when an operator asks ``hookd status``, so control commands have a socket of their
own, accepted always and never paused. It speaks the same commands as a ``!`` line on the event
socket, through the same ``ControlProtocol`` (control_protocol.py: its bounds, the command
line, the idle timeout) and with the same peer-uid rule; it carries no events.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from pathlib import Path

from hookd.daemon.control import Control
from hookd.daemon.control_protocol import ControlProtocol
from hookd.daemon.listener import bind_unix
from hookd.daemon.peers import UidRule

log = logging.getLogger("hookd.control")


class ControlListener:
    """Binds ``path`` (mode 0600, beside the event socket, under the daemon's lock) and serves
    control connections on it until ``stop``. The connections themselves are ``Control``'s:
    ``Control.close`` ends them."""

    def __init__(self, path: Path, control: Control, uids: UidRule) -> None:
        self.path = path
        self.control = control
        self.uids = uids
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
        self._server = await loop.create_unix_server(lambda: ControlProtocol(self.control, uids=self.uids), sock=sock)
        return True

    async def stop(self) -> None:
        """Stop listening and remove the socket file (connections are closed by Control.close)."""
        if self._server is None:
            return
        self._server.close()
        with contextlib.suppress(OSError):
            if os.stat(self.path).st_ino == self._ino:
                os.unlink(self.path)
        self._server = None
        await asyncio.sleep(0)  # let connection_lost callbacks run
