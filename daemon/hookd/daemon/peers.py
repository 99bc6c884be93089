"""Who is at the other end: peer credentials, and the rule on whose connections are served.

Both sockets (events, control) apply the same rule, answer a refusal with the same line and
count and log it the same way; so the rule is one object, shared.
"""

from __future__ import annotations

import logging
import os
import socket
import struct
from collections.abc import Callable

from hookd.daemon.limits import LogThrottle
from hookd.framing import NO_PEER, Peer
from hookd.settings import Settings

#: struct ucred: pid, uid, gid (SO_PEERCRED).
PEERCRED = struct.Struct("3i")
REFUSED_REPLY = (
    b'{"ok":false,"reason":"refused_uid","detail":"this hookd does not accept connections from your user"}\n'
)


def peer_of(sock: socket.socket | None) -> Peer:
    """The pid and uid of the process that connected ``sock`` (NO_PEER when unknown)."""
    if sock is None:
        return NO_PEER
    try:
        pid, uid, _gid = PEERCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, PEERCRED.size))
    except OSError:
        return NO_PEER
    return Peer(pid, uid)


class UidRule:
    """Serve the daemon's own uid and ``allowed_uids``; refuse (count, log) everyone else.

    ``allowed_uids`` is read from the live Settings at each check (SIGHUP may change it); the
    common case, our own uid, is one comparison.
    """

    def __init__(self, settings: Settings, count: Callable[[str], None]) -> None:
        self.own_uid = os.getuid()
        self.settings = settings
        self._count = count
        self._throttle = LogThrottle()

    def allows(self, uid: int | None) -> bool:
        return uid == self.own_uid or uid in self.settings.allowed_uids

    def refused(self, peer: Peer) -> None:
        """Count and log (throttled) a connection refused for its uid, on either socket."""
        self._count("refused_uid")
        self._throttle(
            ("uid", peer.uid),
            logging.WARNING,
            "refused a connection from uid %s (pid %s): this daemon accepts uid(s) %s; "
            "to accept that user, run hookd with --allow-uid %s (or HOOKD_ALLOWED_UIDS)",
            peer.uid,
            peer.pid,
            ",".join(map(str, sorted(self.settings.accepted_uids))),
            peer.uid,
        )
