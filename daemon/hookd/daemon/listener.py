"""The event socket's listening side: claim it, then bind it (or take it from systemd), its lock,
its file.

Rules: the socket file has mode 0600 in a private directory; a file at the path is replaced
only when it is a stale socket of ours (nobody answers on it); a lock file beside it keeps a
second daemon off the same path, also when systemd holds the socket. The control socket is
bound with the same rules (control_listener.py).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import socket
import stat
from pathlib import Path

from hookd.errors import AlreadyRunning, SocketPathError
from hookd.paths import check_socket_dir

log = logging.getLogger("hookd.server")


class Listener:
    """A listening Unix stream socket: bound here (``owned``) or inherited from systemd.

    An owned socket is claimed first (its lock taken, the path checked) and bound only once
    the writer is ready (``bind``): until then clients find no daemon and spool, so a start
    that fails or is stopped while the writer is still starting leaves nothing behind in a
    listen queue (what waits there is lost when the socket closes). An inherited socket's
    queue is systemd's and survives us.
    """

    def __init__(self, path: Path, *, sock: socket.socket | None = None, lock_fd: int | None = None) -> None:
        self.path = path
        self._sock = sock
        self.owned = sock is None
        self._lock_fd = lock_fd
        self._ino: int | None = None

    @property
    def sock(self) -> socket.socket:
        if self._sock is None:
            raise RuntimeError(f"the socket {self.path} is not bound yet")
        return self._sock

    @classmethod
    def claim(cls, path: Path, lock_path: Path) -> Listener:
        """Take ``path`` for this daemon: its directory checked (private), the lock beside it
        taken, a file already there checked. Refuses (SocketPathError) anything that is not a
        socket of ours, and (AlreadyRunning) a path a live daemon is serving. Not bound yet."""
        check_socket_dir(path.parent)
        lock_fd = _take_lock(lock_path, path)
        try:
            _stale(path)
        except BaseException:
            os.close(lock_fd)
            raise
        return cls(path, lock_fd=lock_fd)

    def bind(self, backlog: int) -> None:
        """Bind a claimed path (mode 0600), replacing a stale socket file; blocking file system
        calls (run in a thread). Nothing to do for an inherited socket."""
        if self._sock is not None:
            return
        self._sock = bind_unix(self.path, backlog)
        self._ino = os.stat(self.path).st_ino

    @classmethod
    def inherit(cls, fds: list[tuple[int, str]], path: Path) -> Listener:
        """Take the listening socket systemd passed (socket activation); see sdnotify.listen_fds.

        The descriptor named ``hookd`` (the socket unit's ``FileDescriptorName=``) is used, or
        the only one passed. The lock beside the socket's real path still keeps a second daemon
        off it. ``path`` is where clients will look; a different inherited path is logged.
        """
        named = [fd for fd, name in fds if name == "hookd"]
        if named:
            fd = named[0]
        elif len(fds) == 1:
            fd = fds[0][0]
        else:
            names = ", ".join(name for _fd, name in fds)
            raise SocketPathError(
                f"systemd passed {len(fds)} sockets ({names}) and none is named 'hookd'; "
                "set FileDescriptorName=hookd in the socket unit (see systemd/hookd.socket)"
            )
        sock = socket.socket(fileno=fd)
        if (
            sock.family != socket.AF_UNIX
            or sock.type != socket.SOCK_STREAM
            or not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
        ):
            sock.detach()
            raise SocketPathError(
                f"the socket systemd passed (fd {fd}) is not a listening Unix stream socket; "
                "the socket unit needs ListenStream=%t/hookd/hookd.sock (see systemd/hookd.socket)"
            )
        name = sock.getsockname()
        # Its real path: the lock goes beside it. Where clients look is app.py's warning.
        real = Path(name) if isinstance(name, str) and name.startswith("/") else path
        try:
            check_socket_dir(real.parent)
            lock_fd = _take_lock(real.with_name(real.name + ".lock"), real)
        except BaseException:
            sock.close()  # our descriptor only: systemd's stays open and listening
            raise
        sock.setblocking(False)
        return cls(real, sock=sock, lock_fd=lock_fd)

    def unlink(self) -> None:
        """Remove our socket file, so new clients see 'no daemon' (and spool) at once."""
        if not self.owned or self._ino is None:
            return  # an inherited socket belongs to systemd, which keeps listening for us
        with contextlib.suppress(OSError):
            if os.stat(self.path).st_ino == self._ino:
                os.unlink(self.path)

    def release(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


def _take_lock(lock_path: Path, sock_path: Path) -> int:
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise AlreadyRunning(
            f"another hookd (pid {holder}) is already serving {sock_path}; "
            "stop it first, or choose another socket with --socket or HOOKD_HOME"
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def bind_unix(path: Path, backlog: int) -> socket.socket:
    """A non-blocking listening socket at ``path``, mode 0600, replacing only a stale socket of
    ours (see _clear_stale). The caller holds the daemon's lock."""
    _clear_stale(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        old = os.umask(0o177)
        try:
            sock.bind(os.fspath(path))
        finally:
            os.umask(old)
        os.chmod(path, 0o600)
        sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _clear_stale(path: Path) -> None:
    if _stale(path):
        log.info("removing stale socket %s left by a daemon that is gone", path)
        os.unlink(path)


def _stale(path: Path) -> bool:
    """Whether ``path`` holds a stale socket of ours (nobody answers on it); False when there is
    nothing. Raises for anything hookd must not replace: not a socket, another user's, live."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    if not stat.S_ISSOCK(st.st_mode):
        kind = "a symlink" if stat.S_ISLNK(st.st_mode) else "not a socket"
        raise SocketPathError(
            f"{path} exists and is {kind}; hookd will not replace it. Remove it yourself if it is garbage."
        )
    if st.st_uid != os.getuid():
        raise SocketPathError(f"{path} belongs to uid {st.st_uid}; hookd will not replace another user's socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(os.fspath(path))
    except ConnectionRefusedError:
        return True
    except OSError as e:
        if e.errno in (errno.EAGAIN, errno.ETIMEDOUT):
            raise AlreadyRunning(f"a live process is serving {path} (it is busy); not taking it over") from None
        raise SocketPathError(f"cannot probe existing socket {path}: {e.strerror}") from None
    finally:
        probe.close()
    raise AlreadyRunning(f"another process is already serving {path}; stop it first, or choose another socket")
