"""Moving bytes: the listening socket, one Protocol per connection, flow control.

The server knows nothing of JSON: complete lines go to a ``LineSink`` (the ingest pipeline),
which also tells it when to stop reading (backpressure). A listener is either a socket this
process binds, or one it inherits (socket activation); shutdown drains both the same way.
"""

from __future__ import annotations

import _socket
import asyncio
import contextlib
import errno
import fcntl
import logging
import math
import os
import resource
import socket
import stat
import struct
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from hookd.errors import AlreadyRunning, SocketPathError
from hookd.framing import NO_PEER, LineSplitter, Peer
from hookd.paths import check_socket_dir

log = logging.getLogger("hookd.server")

_PEERCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid
#: Longest command line of a control connection (``!status``, ``!follow {...}``).
MAX_COMMAND = 64 << 10
_REFUSED_REPLY = (
    b'{"ok":false,"reason":"refused_uid","detail":"this hookd does not accept connections from your user"}\n'
)


class LogThrottle:
    """At most one log line per key per ``interval``; lines in between are counted instead and
    the count is reported with the next one. Bounded: at most ``max_keys`` keys are kept."""

    def __init__(self, interval: float = 60.0, max_keys: int = 1024) -> None:
        self.interval = interval
        self.max_keys = max_keys
        self._seen: dict[object, list[float]] = {}  # key -> [last logged (monotonic), suppressed]

    def __call__(self, key: object, level: int, msg: str, *args: object) -> None:
        now = time.monotonic()
        entry = self._seen.get(key)
        if entry is not None and now - entry[0] < self.interval:
            entry[1] += 1
            return
        if entry is not None and entry[1]:
            msg += f" (and {int(entry[1])} more like it in the last {now - entry[0]:.0f} s)"
        if entry is None and len(self._seen) >= self.max_keys:
            self._seen.clear()
        self._seen[key] = [now, 0]
        log.log(level, msg, *args)


def raise_fd_limit() -> int:
    """Raise the soft limit on open files to the hard limit; return the soft limit now in force.

    Each connection holds a descriptor; the usual soft limit (1024) would cap the daemon at
    about a thousand simultaneous hooks, while the hard limit is usually far higher.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as e:
            log.warning("cannot raise the open-file limit from %d to %d: %s", soft, target, e)
    if soft != resource.RLIM_INFINITY and soft < 4096:
        log.warning(
            "only %d open files allowed: at most about %d simultaneous connections; raise `ulimit -Hn`",
            soft,
            soft - 64,
        )
    return soft


class LineSink(Protocol):
    """Where complete lines go. Implemented by the ingest pipeline."""

    def lines(self, lines: list[bytes], peer: Peer, conn: EventProtocol | None = None) -> None: ...
    def oversized(self, size: int, head: bytes, peer: Peer) -> None: ...
    def count(self, name: str) -> None:
        """A connection the server refused or closed (``refused_uid``, ``idle_timeout``)."""


class FlowControl:
    """Pauses every connection's reading while the pipeline is full, and resumes them.

    The kernel's socket buffers and the listen backlog then hold what hooks send, and the
    daemon's memory stays bounded however fast events arrive.
    """

    def __init__(self) -> None:
        self.paused = False
        self.transports: set[asyncio.Transport] = set()
        #: Called with the new state (True = paused): the server stops and resumes accepting.
        self.listeners: list[Callable[[bool], None]] = []

    def pause(self) -> None:
        if not self.paused:
            self.paused = True
            for t in self.transports:
                t.pause_reading()
            for cb in self.listeners:
                cb(True)

    def resume(self) -> None:
        if self.paused:
            self.paused = False
            for t in self.transports:
                t.resume_reading()
            for cb in self.listeners:
                cb(False)


class EventProtocol(asyncio.Protocol):
    """One client connection: split bytes into lines, hand them on, keep the tail.

    Lines that ask for an acknowledgement get a reply slot; replies are written in the order
    the lines came, and a client that half-closes (EOF) is answered before the connection
    closes.
    """

    __slots__ = (
        "_server",
        "_transport",
        "_splitter",
        "_peer",
        "_pending",
        "_slots",
        "_head",
        "_eof",
        "_control",
        "idle",
    )

    def __init__(self, server: Server, *, peer: Peer | None = None, pending: bytes = b"") -> None:
        self._server = server
        self._splitter = LineSplitter(server.max_line)
        self._peer = peer if peer is not None else NO_PEER
        self._pending = pending  # bytes the accept loop already read
        self._transport: asyncio.Transport | None = None
        self._slots: deque[bytes | None] | None = None
        self._head = 0
        self._eof = False
        #: None until the first byte: b"" then the command so far on a control connection
        #: (first byte ``!``), or False on an event connection.
        self._control: bytes | bool | None = None
        #: Idle sweeps since this connection last completed a line (see Server._sweep_idle).
        self.idle = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None and self._peer is NO_PEER:
            try:
                pid, uid, _gid = _PEERCRED.unpack(
                    sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
                )
                self._peer = Peer(pid, uid)
            except OSError:
                pass
        self._server.connection_opened(self)
        if self._pending:
            pending, self._pending = self._pending, b""
            self.data_received(pending)

    def data_received(self, data: bytes) -> None:
        if self._control is not False:
            if self._control is None and data:
                self._control = b"" if data[:1] == b"!" else False
            if self._control is not False:
                self._control_data(data)
                return
        if self._server.flow.paused:
            # uvloop starts reading after connection_made returns, undoing a pause made there;
            # catch such a connection at its first read. This chunk is still handled.
            self._transport.pause_reading()  # type: ignore[union-attr]
        splitter = self._splitter
        lines = splitter.feed(data)
        if splitter.oversized:
            self._report_oversized()
        if lines:
            self.idle = 0
            self._server.sink.lines(lines, self._peer, self)

    def _control_data(self, data: bytes) -> None:
        """A control connection (``!status``, ``!follow``): one command line, see control.py."""
        if not isinstance(self._control, bytes):
            return  # the command was handled; anything more is ignored
        buf = self._control + data
        nl = buf.find(b"\n")
        if nl < 0 and len(buf) <= MAX_COMMAND and not self._eof:
            self._control = buf
            return
        self._control = True
        line = buf[1:nl] if nl >= 0 else buf[1:]
        handler = self._server.control
        t = self._transport
        if t is None:
            return
        if handler is None:
            t.write(b'{"ok":false,"reason":"bad_command","detail":"no control here"}\n')
            t.close()
        else:
            handler.handle(t, line)

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
        """The daemon owes this client replies, the client has finished sending, or it is a
        control connection whose command was taken (a follower): not idle."""
        return self._eof or bool(self._slots) or self._control is True

    def close_idle(self) -> bool:
        """Close this connection for idleness; what it sent so far is still framed."""
        t = self._transport
        if t is None or t.is_closing():
            return False
        t.close()
        return True

    def _report_oversized(self) -> None:
        for size, head in self._splitter.oversized:
            self._server.sink.oversized(size, head, self._peer)
        self._splitter.oversized.clear()

    def eof_received(self) -> bool:
        if isinstance(self._control, bytes):  # a command without its newline
            self._eof = True
            self._control_data(b"")
            return True
        if self._control is True:
            return True  # a follower that half-closed still gets its events
        self._finish()
        self._eof = True
        # Keep the socket open for writing while acknowledgements are owed; otherwise close.
        return self.awaiting_replies

    def connection_lost(self, exc: Exception | None) -> None:
        if self._control is not None and self._control is not False:
            if self._server.control is not None and self._transport is not None:
                self._server.control.forget(self._transport)
            self._server.connection_closed(self)
            return
        self._finish()
        self._server.connection_closed(self)

    def _finish(self) -> None:
        # A last line without a newline still counts; an unfinished oversized line is reported.
        tail = self._splitter.finish()
        if self._splitter.oversized:
            self._report_oversized()
        if tail is not None:
            self._server.sink.lines([tail], self._peer, self)

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
                    while True:
                        try:
                            data = dup.recv(1 << 16)
                        except (BlockingIOError, InterruptedError):
                            break
                        if not data:
                            break
                        self.data_received(data)
                finally:
                    dup.close()
        self._finish()
        self._eof = True
        if not self.awaiting_replies:
            t.close()


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


class Server:
    """Accepts connections on a Listener and feeds their lines to a LineSink.

    Most hooks connect, send one line and close before the daemon even accepts. Such a
    connection is served right in the accept loop: peer credentials, the bytes and the end of
    stream are already there, so it is read, framed and closed with a few system calls and no
    transport. A connection that is still open, asks for acknowledgements, or sends a lot is
    handed to an ``EventProtocol`` on a loop transport, with the bytes already read.
    (Measured: a uvloop transport per connection cost the daemon about 32 µs per event,
    twice a bare accept-read-close server; see docs/performance.md.)
    """

    #: Connections accepted per wake-up before other work gets a turn.
    ACCEPT_BATCH = 128
    #: A connection that has sent more than this at accept time is streaming: hand it over.
    QUICK_BYTES = 1 << 16

    def __init__(
        self,
        listener: Listener,
        sink: LineSink,
        flow: FlowControl,
        *,
        max_line: int,
        backlog: int = 4096,
        idle_timeout: float = 30.0,
        accepted_uids: frozenset[int] | None = None,
    ) -> None:
        self.listener = listener
        self.backlog = backlog
        self.sink = sink
        self.flow = flow
        self.max_line = max_line
        self.connections: set[EventProtocol] = set()
        self.accepted = 0
        self.quick = 0  # connections served in the accept loop
        #: Answers control connections (``!status``, ``!follow``); see control.py.
        self.control: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reading = False
        self._handoffs: set[asyncio.Task[object]] = set()
        self._all_closed: asyncio.Event | None = None
        self.idle_timeout = idle_timeout
        #: Peer uids served; None serves everyone (tests of the server alone).
        self.accepted_uids = accepted_uids
        self.refused = 0  # connections refused for their uid
        self.idle_closed = 0  # connections closed by the idle sweep
        self._sweeper: asyncio.Task[None] | None = None
        self._throttle = LogThrottle()
        flow.listeners.append(self._flow_changed)

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.listener.sock.listen(self.backlog)
        self._watch(True)
        self._sweeper = self._loop.create_task(self._sweep_idle(), name="hookd-idle-sweep")

    async def _sweep_idle(self) -> None:
        """Close connections that have completed no line for ``idle_timeout`` seconds.

        One task for all connections: the read path only resets a counter when a line
        completes, so the timeout costs nothing per event. A connection is not idle while the
        daemon owes it replies, after it has finished sending, or while the pipeline is full
        (then the daemon is the one not reading).
        """
        while True:
            # Read each round: SIGHUP may change idle_timeout.
            interval = max(0.05, min(1.0, self.idle_timeout / 4))
            ticks = max(1, math.ceil(self.idle_timeout / interval))
            await asyncio.sleep(interval)
            if self.flow.paused:
                continue
            closed = 0
            for proto in list(self.connections):
                if proto.waiting_on_us:
                    proto.idle = 0
                    continue
                proto.idle += 1
                if proto.idle >= ticks and proto.close_idle():
                    closed += 1
                    self.sink.count("idle_timeout")
            if closed:
                self.idle_closed += closed
                self._throttle(
                    "idle",
                    logging.INFO,
                    "closed %d connection(s) that completed no line in %.1f s (idle_timeout)",
                    closed,
                    self.idle_timeout,
                )

    def _watch(self, on: bool) -> None:
        """Accept while reading is allowed; under backpressure the listen queue holds the rest."""
        assert self._loop is not None
        if on and not self._reading:
            self._loop.add_reader(self.listener.sock.fileno(), self._accept_ready)
        elif not on and self._reading:
            self._loop.remove_reader(self.listener.sock.fileno())
        self._reading = on

    def _flow_changed(self, paused: bool) -> None:
        if self._loop is not None and self.listener.sock.fileno() >= 0:
            self._watch(not paused)

    def _accept_ready(self) -> None:
        self._accept(self.ACCEPT_BATCH, stopping=False)

    def _accept(self, limit: int | None, *, stopping: bool) -> None:
        """Accept up to ``limit`` queued connections (all of them when stopping) and serve them."""
        accept = self.listener.sock._accept  # type: ignore[attr-defined]
        n = 0
        while limit is None or n < limit:
            try:
                # The C-level accept and socket: socket.socket's wrapper converts family and
                # type to enums for every connection (measured ~10% of the daemon's time).
                conn = _socket.socket(socket.AF_UNIX, socket.SOCK_STREAM, 0, accept()[0])
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                if stopping:
                    log.warning("accepting queued connections at shutdown: %s", e.strerror)
                    return
                # Out of descriptors, say: back off instead of spinning on a readable socket.
                log.warning("cannot accept connections (%s); retrying in 0.1 s", e.strerror)
                self._watch(False)
                assert self._loop is not None
                self._loop.call_later(0.1, lambda: self._watch(not self.flow.paused))
                return
            n += 1
            self.accepted += 1
            self._serve(conn)
            if self.flow.paused and not stopping:
                return  # the listen queue holds the rest until the writer catches up

    def _serve(self, conn: _socket.socket) -> None:
        try:
            pid, uid, _gid = _PEERCRED.unpack(conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size))
            peer = Peer(pid, uid)
        except OSError:
            peer = NO_PEER
        if self.accepted_uids is not None and peer.uid not in self.accepted_uids:
            self._refuse(conn, peer)
            return
        chunks: list[bytes] = []
        size = 0
        eof = False
        try:
            while size <= self.QUICK_BYTES:
                chunk = conn.recv(self.QUICK_BYTES, socket.MSG_DONTWAIT)
                if not chunk:
                    eof = True
                    break
                chunks.append(chunk)
                size += len(chunk)
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            eof = True  # reset by the client: what was read still counts
        data = b"".join(chunks) if len(chunks) != 1 else chunks[0]
        if eof and not (data.startswith((b"?", b"!")) or b"\n?" in data):
            if len(data) <= self.max_line:
                lines = data.split(b"\n")  # no line can be too long; a last line without \n counts
                if not lines[-1]:
                    lines.pop()
            else:
                splitter = LineSplitter(self.max_line)
                lines = splitter.feed(data)
                tail = splitter.finish()
                if tail is not None:
                    lines.append(tail)
                for n, head in splitter.oversized:
                    self.sink.oversized(n, head, peer)
            if lines:
                self.sink.lines(lines, peer, None)
            conn.close()
            self.quick += 1
            return
        # Still open, waiting for answers, or streaming: a protocol on a transport takes over.
        full = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM, 0, conn.detach())
        full.setblocking(False)
        proto = EventProtocol(self, peer=peer, pending=data)
        assert self._loop is not None
        task = self._loop.create_task(self._loop.connect_accepted_socket(lambda: proto, full))
        self._handoffs.add(task)
        task.add_done_callback(self._handoff_done)

    def _refuse(self, conn: _socket.socket, peer: Peer) -> None:
        """Another user's connection: answer once (a waiting client learns why), store nothing."""
        with contextlib.suppress(OSError):
            conn.send(_REFUSED_REPLY, socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL)
            # Discard what it already sent (bounded): closing with unread data would reset the
            # connection and the client could lose the answer.
            conn.recv(self.QUICK_BYTES, socket.MSG_DONTWAIT)
        conn.close()
        self.note_refused(peer)

    def note_refused(self, peer: Peer) -> None:
        """Count and log (throttled) a connection refused for its uid, on any of our sockets."""
        self.refused += 1
        self.sink.count("refused_uid")
        self._throttle(
            ("uid", peer.uid),
            logging.WARNING,
            "refused a connection from uid %s (pid %s): this daemon accepts uid(s) %s; "
            "to accept that user, run hookd with --allow-uid %s (or HOOKD_ALLOWED_UIDS)",
            peer.uid,
            peer.pid,
            ",".join(map(str, sorted(self.accepted_uids or ()))),
            peer.uid,
        )

    def _handoff_done(self, task: asyncio.Task[object]) -> None:
        self._handoffs.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("could not take over a connection: %s", task.exception())

    def connection_opened(self, proto: EventProtocol) -> None:
        self.connections.add(proto)
        t = proto._transport
        assert t is not None
        self.flow.transports.add(t)
        if self.flow.paused:
            t.pause_reading()

    def connection_closed(self, proto: EventProtocol) -> None:
        self.connections.discard(proto)
        if proto._transport is not None:
            self.flow.transports.discard(proto._transport)
        if not self.connections and self._all_closed is not None:
            self._all_closed.set()

    async def stop(self, grace: float) -> None:
        """Stop accepting without losing what clients already sent.

        1. unlink the socket path (new clients fail fast and spool);
        2. accept every connection still in the listen queue: those clients have sent
           already (twice, a moment apart, for a connect that raced the unlink);
        3. let open connections finish for up to ``grace`` seconds;
        4. read what the kernel still holds for the rest, and close them.

        An inherited socket (systemd's) is not ours to remove and stays listening after we
        exit: step 2 takes one pass over the connections queued now, bounded by the backlog
        so that a steady stream of hooks cannot hold the stop up, and leaves later ones in
        the listen queue for the next instance.
        """
        self._watch(False)
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        deadline = time.monotonic() + grace
        if self.listener.owned:
            self.listener.unlink()
            for _ in range(2):
                self._accept(None, stopping=True)
                await asyncio.sleep(0.02)
            self._accept(None, stopping=True)
        else:
            self._accept(self.backlog, stopping=True)
        self.listener.sock.close()  # for an inherited socket, only our descriptor of it
        if self._handoffs:
            await asyncio.gather(*self._handoffs, return_exceptions=True)
        self._all_closed = asyncio.Event()
        if self.connections:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._all_closed.wait(), max(0.0, deadline - time.monotonic()))
        for proto in list(self.connections):
            proto.read_what_is_left()
        await asyncio.sleep(0)  # let connection_lost callbacks run

    def close_all(self) -> None:
        """After the last commit: close connections that were kept open for their replies."""
        for proto in list(self.connections):
            if proto._transport is not None:
                proto._transport.close()
