"""Who is at the other end of a loopback TCP connection: the owner uid of the peer's socket.

A Unix socket carries the peer's credentials (SO_PEERCRED); TCP carries none. On loopback the
peer's socket lives in this kernel, which knows its owner, as identd has always used:

1. **NETLINK_SOCK_DIAG** (``ss`` uses it): one ``inet_diag_req_v2`` for the exact 4-tuple of the
   peer's socket (its local address is our remote one and the other way round). The kernel looks
   the socket up in its hash table and answers ``inet_diag_msg`` with ``idiag_uid`` and
   ``idiag_inode``. One netlink socket, reused: about 3 µs per lookup here, answered within the
   ``send`` (sock_diag replies synchronously), so it never waits on the event loop.
2. ``/proc/net/tcp`` and ``/proc/net/tcp6`` (column ``uid``), when netlink is not available (a
   kernel without inet_diag, a seccomp or ``RestrictAddressFamilies=`` without ``AF_NETLINK``).
   The kernel formats the whole table for every read: about 1.6 ms here even when nearly empty,
   so it is only the fallback.

A socket whose inode is 0 has no owning process any more (closed, orphaned, or a time-wait
socket, which the kernel reports with uid 0): its owner is unknown, never "root". Unknown
owners are refused by the caller, so a client that closes before it is looked up is refused
rather than trusted.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import socket
import struct
from typing import Final

log = logging.getLogger("hookd.peer_uid")

NETLINK_SOCK_DIAG: Final = 4
SOCK_DIAG_BY_FAMILY: Final = 20
NLM_F_REQUEST: Final = 0x01
NLMSG_ERROR: Final = 2
_NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
# inet_diag_req_v2: family, protocol, ext, pad, states; then inet_diag_sockid: sport, dport
# (big-endian), src[4], dst[4] (network order, 16 bytes each), interface, cookie[2].
_REQ_HEAD = struct.Struct("=BBBxI")
_PORTS = struct.Struct("!HH")
_IF_COOKIE = struct.Struct("=III")
_NO_COOKIE: Final = 0xFFFFFFFF  # INET_DIAG_NOCOOKIE: do not match on the cookie
# inet_diag_msg: family, state, timer, retrans, sockid (48 bytes), expires, rqueue, wqueue, uid, inode
_MSG_UID_INODE = struct.Struct("=II")
_MSG_UID_OFFSET: Final = _NLMSGHDR.size + 4 + 48 + 12
_ERRNO = struct.Struct("=i")

Address = tuple  # (host, port) or (host, port, flowinfo, scope_id), as getsockname() gives


def _unmapped(host: str) -> tuple[int, str]:
    """(family, address) with an IPv4-mapped IPv6 address (``::ffff:127.0.0.1``) as IPv4: a
    client that connected over IPv4 to a dual-stack listener has an IPv4 socket."""
    ip = ipaddress.ip_address(host.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return socket.AF_INET, str(ip.ipv4_mapped)
    return (socket.AF_INET6 if ip.version == 6 else socket.AF_INET), str(ip)


def _packed(family: int, host: str) -> bytes:
    return socket.inet_pton(family, host).ljust(16, b"\0")


class PeerUids:
    """Looks up the owner uid of a TCP peer on this machine. One per listener."""

    def __init__(self) -> None:
        self._nl: socket.socket | None = None
        self._seq = 0
        self.method = "netlink"
        try:
            self._nl = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_SOCK_DIAG)
            self._nl.setblocking(False)
        except OSError as e:
            self.method = "proc"
            log.info("NETLINK_SOCK_DIAG unavailable (%s): reading /proc/net/tcp for peer uids", e.strerror)

    def owner(self, local: Address, remote: Address) -> int | None:
        """The uid owning the peer's socket of the connection (``local`` is our end), or None
        when no live socket on this machine matches (a remote peer, or a client already gone)."""
        try:
            family, peer_host = _unmapped(remote[0])
            _, our_host = _unmapped(local[0])
        except ValueError:
            return None
        peer = (peer_host, remote[1])
        ours = (our_host, local[1])
        if self._nl is not None:
            try:
                return self._netlink(family, peer, ours)
            except OSError as e:
                # A seccomp filter or an old kernel: fall back for good, and say so once.
                log.warning("NETLINK_SOCK_DIAG failed (%s); reading /proc/net/tcp for peer uids from now on", e)
                self._nl.close()
                self._nl = None
                self.method = "proc"
        return proc_owner(family, peer, ours)

    def _netlink(self, family: int, peer: tuple[str, int], ours: tuple[str, int]) -> int | None:
        assert self._nl is not None
        self._seq = (self._seq + 1) & 0x7FFFFFFF
        req = (
            _REQ_HEAD.pack(family, socket.IPPROTO_TCP, 0, 0xFFFFFFFF)
            + _PORTS.pack(peer[1], ours[1])
            + _packed(family, peer[0])
            + _packed(family, ours[0])
            + _IF_COOKIE.pack(0, _NO_COOKIE, _NO_COOKIE)
        )
        self._nl.send(_NLMSGHDR.pack(_NLMSGHDR.size + len(req), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST, self._seq, 0) + req)
        while True:
            try:
                data = self._nl.recv(8192)
            except BlockingIOError:
                # sock_diag answers within send(); nothing queued means no answer will come.
                raise OSError("no answer from NETLINK_SOCK_DIAG") from None
            _len, kind, _flags, seq, _pid = _NLMSGHDR.unpack_from(data)
            if seq != self._seq:
                continue  # a stale answer to an earlier question
            if kind == NLMSG_ERROR:
                err = -_ERRNO.unpack_from(data, _NLMSGHDR.size)[0]
                if err == 0 or err == 2:  # ENOENT: no such socket (remote peer, or gone)
                    return None
                raise OSError(err, os.strerror(err))
            uid, inode = _MSG_UID_INODE.unpack_from(data, _MSG_UID_OFFSET)
            return uid if inode else None

    def close(self) -> None:
        if self._nl is not None:
            self._nl.close()
            self._nl = None


def _proc_address(family: int, host: str, port: int) -> str:
    """An address as /proc/net/tcp{,6} prints it: the raw 32-bit words in host byte order, in hex."""
    raw = socket.inet_pton(family, host)
    words = struct.unpack(f"={len(raw) // 4}I", raw)
    return "".join(f"{w:08X}" for w in words) + f":{port:04X}"


def proc_owner(family: int, peer: tuple[str, int], ours: tuple[str, int]) -> int | None:
    """The fallback: find the row whose local address is the peer's and remote address ours."""
    path = "/proc/net/tcp6" if family == socket.AF_INET6 else "/proc/net/tcp"
    want_local = _proc_address(family, *peer)
    want_remote = _proc_address(family, *ours)
    with contextlib.suppress(OSError), open(path, encoding="ascii") as f:
        next(f, None)  # the header line
        for line in f:
            cols = line.split()
            # sl local rem st tx:rx tr:when retrnsmt uid timeout inode ...
            if len(cols) > 9 and cols[1] == want_local and cols[2] == want_remote:
                return int(cols[7]) if cols[9] != "0" else None
    return None
