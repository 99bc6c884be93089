"""The event socket's listening side: bind it (or take it from systemd), its lock, its file.

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
    """A listening Unix stream socket: bound here (``owned``) or inherited from systemd."""

    def __init__(self, sock: socket.socket, path: Path, *, owned: bool, lock_fd: int | None = None) -> None:
        self.sock = sock
        self.path = path
        self.owned = owned
        self._lock_fd = lock_fd
        self._ino = os.stat(path).st_ino if owned else None

    @classmethod
    def bind(cls, path: Path, lock_path: Path, backlog: int) -> Listener:
        """Bind ``path`` with mode 0600 in a private directory, replacing a stale socket file.

        Refuses (SocketPathError) to touch anything that is not a socket of ours, and
        (AlreadyRunning) to take a path a live daemon is serving.
        """
        check_socket_dir(path.parent)
        lock_fd = _take_lock(lock_path, path)
        try:
            sock = bind_unix(path, backlog)
        except BaseException:
            os.close(lock_fd)
            raise
        return cls(sock, path, owned=True, lock_fd=lock_fd)

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
        real = Path(name) if isinstance(name, str) and name.startswith("/") else path
        if real != path:
            log.warning(
                "systemd passed the socket %s, but clients look for %s (HOOKD_SOCKET, HOOKD_HOME or "
                "the default): make the socket unit listen there, or point clients at %s",
                real,
                path,
                real,
            )
        try:
            check_socket_dir(real.parent)
            lock_fd = _take_lock(real.with_name(real.name + ".lock"), real)
        except BaseException:
            sock.close()  # our descriptor only: systemd's stays open and listening
            raise
        sock.setblocking(False)
        return cls(sock, real, owned=False, lock_fd=lock_fd)

    def unlink(self) -> None:
        """Remove our socket file, so new clients see 'no daemon' (and spool) at once."""
        if not self.owned:
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
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
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
        log.info("removing stale socket %s left by a daemon that is gone", path)
        os.unlink(path)
        return
    except OSError as e:
        if e.errno in (errno.EAGAIN, errno.ETIMEDOUT):
            raise AlreadyRunning(f"a live process is serving {path} (it is busy); not taking it over") from None
        raise SocketPathError(f"cannot probe existing socket {path}: {e.strerror}") from None
    finally:
        probe.close()
    raise AlreadyRunning(f"another process is already serving {path}; stop it first, or choose another socket")
