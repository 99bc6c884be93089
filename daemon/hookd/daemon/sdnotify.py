"""systemd's side of the daemon, in the standard library only: inherited sockets and sd_notify.

Outside systemd (no ``LISTEN_*``, no ``NOTIFY_SOCKET`` in the environment) everything here does
nothing, so ``hookd run`` behaves the same by hand, under another supervisor, or under systemd.

Protocols (systemd's sd_listen_fds(3), sd_notify(3), sd_watchdog_enabled(3)):

- Socket activation: the manager passes ``LISTEN_FDS`` descriptors starting at fd 3, with
  ``LISTEN_PID`` set to the pid they are meant for (a child that inherited the environment
  must not take them) and optionally ``LISTEN_FDNAMES``, colon-separated names
  (``FileDescriptorName=`` of the socket unit; the unit's name by default).
- Notifications: newline-separated ``KEY=VALUE`` assignments in one datagram to the
  ``AF_UNIX`` socket named by ``NOTIFY_SOCKET``; a name starting with ``@`` is in the abstract
  namespace (the ``@`` stands for a NUL byte).
- Watchdog: ``WATCHDOG_USEC`` asks for ``WATCHDOG=1`` more often than that; when
  ``WATCHDOG_PID`` is set it must be our pid. systemd recommends pinging at half the interval.

The variables are removed from the environment once read, as sd_notify's
``unset_environment`` does, so the writer subprocess neither takes the sockets nor notifies.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import socket
import time
from collections.abc import Callable, MutableMapping

log = logging.getLogger("hookd.sdnotify")

LISTEN_FDS_START = 3
_LISTEN_VARS = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")
_NOTIFY_VARS = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")
#: How often ``keep_alive`` wakes (seconds): it refreshes STATUS= and pings the watchdog, more
#: often when the watchdog interval is under twice this. docs/operations.md quotes the figure.
STATUS_INTERVAL = 5.0


def listen_fds(env: MutableMapping[str, str] | None = None, *, unset: bool = True) -> list[tuple[int, str]]:
    """The descriptors systemd passed to this process, as ``(fd, name)`` pairs; ``[]`` if none.

    Each descriptor is made close-on-exec, as sd_listen_fds does.
    """
    env = os.environ if env is None else env
    pid, count, names = (env.get(k, "") for k in _LISTEN_VARS)
    if unset:
        for k in _LISTEN_VARS:
            env.pop(k, None)
    if not pid or not count:
        return []
    try:
        if int(pid) != os.getpid():
            return []  # meant for another process (we inherited our parent's environment)
        n = int(count)
    except ValueError:
        log.warning("ignoring malformed LISTEN_PID=%r LISTEN_FDS=%r", pid, count)
        return []
    labels = names.split(":") if names else []
    out = []
    for i in range(max(n, 0)):
        fd = LISTEN_FDS_START + i
        try:
            flags = fcntl.fcntl(fd, fcntl.F_GETFD)
            fcntl.fcntl(fd, fcntl.F_SETFD, flags | fcntl.FD_CLOEXEC)
        except OSError:
            log.warning("LISTEN_FDS=%d but fd %d is not open; ignoring it", n, fd)
            continue
        out.append((fd, labels[i] if i < len(labels) and labels[i] else "unknown"))
    return out


def _address(value: str) -> str | bytes | None:
    if value.startswith("@"):
        return b"\0" + value[1:].encode()  # Linux abstract namespace
    if value.startswith("/"):
        return value
    return None  # e.g. vsock: addresses (for VMs), which a user service never gets


class Notifier:
    """Sends sd_notify messages when systemd asked for them (``NOTIFY_SOCKET``); else a no-op.

    Sending never blocks: the datagram is dropped (and logged at debug level) if the manager's
    queue is full, as systemd's own sd_notify would rather fail than wait.
    """

    def __init__(self, env: MutableMapping[str, str] | None = None, *, unset: bool = True) -> None:
        env = os.environ if env is None else env
        raw, usec, wpid = (env.get(k, "") for k in _NOTIFY_VARS)
        if unset:
            for k in _NOTIFY_VARS:
                env.pop(k, None)
        self.address = _address(raw) if raw else None
        if raw and self.address is None:
            log.warning("NOTIFY_SOCKET=%r is not a Unix socket address; not notifying systemd", raw)
        #: Seconds within which systemd expects WATCHDOG=1, or None when it does not.
        self.watchdog: float | None = None
        try:
            if usec and int(usec) > 0 and (not wpid or int(wpid) == os.getpid()):
                self.watchdog = int(usec) / 1e6
        except ValueError:
            log.warning("ignoring malformed WATCHDOG_USEC=%r WATCHDOG_PID=%r", usec, wpid)
        self._sock: socket.socket | None = None
        if self.address is not None:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.setblocking(False)

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def send(self, *assignments: str) -> bool:
        """Send ``KEY=VALUE`` assignments in one datagram. True if systemd got it."""
        if self._sock is None:
            return False
        message = "\n".join(assignments)
        try:
            self._sock.sendto(message.encode(), self.address)  # type: ignore[arg-type]
        except OSError as e:
            log.debug("sd_notify %r not sent: %s", message, e.strerror)
            return False
        return True

    def ready(self, status: str) -> bool:
        return self.send("READY=1", f"STATUS={_one_line(status)}")

    def status(self, status: str) -> bool:
        return self.send(f"STATUS={_one_line(status)}")

    def ping(self) -> bool:
        return self.send("WATCHDOG=1")

    def stopping(self, status: str) -> bool:
        return self.send("STOPPING=1", f"STATUS={_one_line(status)}")

    def close(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None


def _one_line(text: str) -> str:
    return " ".join(text.split("\n"))


async def keep_alive(
    notifier: Notifier,
    *,
    status: Callable[[], str],
    progress: Callable[[], tuple[int, int]],
    status_interval: float = STATUS_INTERVAL,
) -> None:
    """Ping the watchdog every ``status_interval`` (every half watchdog interval if that is
    shorter) and refresh STATUS= every ``status_interval``.

    That this coroutine runs at all shows the event loop is alive. ``progress()`` returns
    ``(waiting, done)``: work handed on and not finished, and a count that grows as work
    finishes. When work has waited longer than the watchdog interval with ``done`` standing
    still (a wedged writer), the pings stop, so that systemd restarts the service instead of
    leaving it accepting events it cannot store.
    """
    wd = notifier.watchdog
    period = min(status_interval, wd / 2) if wd else status_interval
    last_done = progress()[1]
    since = time.monotonic()
    last_status = ""
    next_status = 0.0
    stuck = False
    while True:
        now = time.monotonic()
        waiting, done = progress()
        if done != last_done or not waiting:
            last_done, since = done, now
        if wd:
            if now - since <= wd:
                notifier.ping()
                stuck = False
            elif not stuck:
                stuck = True
                log.error(
                    "no batch committed for %.1f s with %d waiting: no more watchdog pings, "
                    "systemd will restart hookd (its writer replays the mirror at start)",
                    now - since,
                    waiting,
                )
        if now >= next_status:
            text = _one_line(status())
            if text != last_status:
                notifier.status(text)
                last_status = text
            next_status = now + status_interval
        await asyncio.sleep(period)
