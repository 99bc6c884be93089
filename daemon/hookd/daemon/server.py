"""The accept loop: take connections off the event socket, serve the quick ones, hand on the rest.

The server only moves bytes: complete lines go to a ``LineSink`` (the ingest pipeline), which
pauses the ``FlowControl`` when it is full; the server then stops accepting, and the listen
queue holds what hooks send. A listener is either a socket this process binds, or one it
inherits (socket activation); shutdown drains both the same way (``stop``).
"""

from __future__ import annotations

import _socket
import asyncio
import contextlib
import logging
import math
import socket
import time

from hookd import oversize
from hookd.daemon.control import Control
from hookd.daemon.control_protocol import ControlProtocol
from hookd.daemon.flow import FlowControl
from hookd.daemon.limits import LogThrottle
from hookd.daemon.listener import Listener
from hookd.daemon.peers import PEERCRED, REFUSED_REPLY, UidRule
from hookd.daemon.protocol import EventProtocol, LineSink
from hookd.daemon.state import DaemonState
from hookd.framing import NO_PEER, LineSplitter, Peer
from hookd.oversize import Budget
from hookd.settings import Settings

log = logging.getLogger("hookd.server")


class Server:
    """Accepts connections on a Listener and feeds their lines to a LineSink.

    Most hooks connect, send one line and close before the daemon even accepts. Such a
    connection is served right in the accept loop: peer credentials, the bytes and the end of
    stream are already there, so it is read, framed and closed with a few system calls and no
    transport. A connection that is still open, asks for acknowledgements, or sends a lot is
    handed to an ``EventProtocol`` on a loop transport, with the bytes already read; one that
    starts with ``!`` to a ``ControlProtocol``. (Measured: a uvloop transport per connection
    cost the daemon about 32 µs per event, twice a bare accept-read-close server; see
    docs/performance.md.)

    Reads ``max_line``, ``truncate_limit`` and ``backlog`` once (they need a restart to
    change) and ``idle_timeout`` and ``allowed_uids`` live from ``settings`` (SIGHUP changes
    them).
    """

    #: Connections accepted per wake-up before other work gets a turn.
    ACCEPT_BATCH = 128
    #: A connection that has sent more than this at accept time is streaming: hand it over.
    QUICK_BYTES = 1 << 16

    def __init__(
        self,
        listener: Listener,
        sink: LineSink,
        *,
        flow: FlowControl,
        state: DaemonState,
        settings: Settings,
        uids: UidRule,
        control: Control,
    ) -> None:
        self.listener = listener
        self.sink = sink
        self.flow = flow
        self.state = state
        self.settings = settings
        self.uids = uids
        self.control = control
        self.max_line = settings.max_line
        #: Lines over ``max_line`` up to this are read whole and cut to fit (oversize.py).
        self.cut_limit = settings.truncate_limit
        #: What all connections together may hold of such lines while reading them.
        self.cut_budget = Budget(oversize.BUDGET_FACTOR * settings.truncate_limit)
        self.backlog = settings.backlog
        self.connections: set[EventProtocol] = set()
        self._own_uid = uids.own_uid
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reading = False
        self._handoffs: set[asyncio.Task[object]] = set()
        self._all_closed: asyncio.Event | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._throttle = LogThrottle()

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
            timeout = self.settings.idle_timeout  # read each round: SIGHUP may change it
            interval = max(0.05, min(1.0, timeout / 4))
            ticks = max(1, math.ceil(timeout / interval))
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
                self._throttle(
                    "idle",
                    logging.INFO,
                    "closed %d connection(s) that completed no line in %.1f s (idle_timeout)",
                    closed,
                    timeout,
                )

    def _watch(self, on: bool) -> None:
        """Accept while reading is allowed; under backpressure the listen queue holds the rest."""
        assert self._loop is not None
        if on and not self._reading:
            self._loop.add_reader(self.listener.sock.fileno(), self._accept_ready)
        elif not on and self._reading:
            self._loop.remove_reader(self.listener.sock.fileno())
        self._reading = on

    def flow_changed(self, paused: bool) -> None:
        """Subscribed to FlowControl (app.py): stop accepting while reading is paused."""
        if self._loop is not None and self.listener.sock.fileno() >= 0:
            self._watch(not paused)

    def _accept_ready(self) -> None:
        self._accept(self.ACCEPT_BATCH, stopping=False)

    def _accept(self, limit: int | None, *, stopping: bool) -> None:
        """Accept up to ``limit`` queued connections (all of them when stopping) and serve them."""
        accept = self.listener.sock._accept  # type: ignore[attr-defined]
        state = self.state
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
            state.accepted += 1
            self._serve(conn)
            if self.flow.paused and not stopping:
                return  # the listen queue holds the rest until the writer catches up

    def _serve(self, conn: _socket.socket) -> None:
        # Credentials and the uid rule inline, not through peers.peer_of and UidRule.allows:
        # this runs once per event for connect-send-close hooks, where each call costs.
        try:
            pid, uid, _gid = PEERCRED.unpack(conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, PEERCRED.size))
            peer = Peer(pid, uid)
        except OSError:
            peer = NO_PEER
        if peer.uid != self._own_uid and peer.uid not in self.settings.allowed_uids:
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
            # The quick path: everything this finished connection sent, framed right here.
            marked = 0
            if len(data) <= self.max_line:
                lines = data.split(b"\n")  # no line can be too long; a last line without \n counts
                if not lines[-1]:
                    lines.pop()
            else:
                # An over-long line here is whole in ``data`` already (at most 2 x QUICK_BYTES):
                # it is cut right away, with no budget to take.
                splitter = LineSplitter(self.max_line, cut_limit=self.cut_limit, in_order=True)
                lines = splitter.feed(data)
                tail = splitter.finish()
                if tail is not None:
                    lines.append(tail)
                marked = splitter.marked
            if marked:
                self.sink.lines(lines, peer, None, marked=True)
            elif lines:
                self.sink.lines(lines, peer, None)
            conn.close()
            self.state.quick += 1
            return
        self._hand_over(conn, peer, data)

    def _hand_over(self, conn: _socket.socket, peer: Peer, data: bytes) -> None:
        """Still open, waiting for answers, streaming, or a control command: a protocol on a
        loop transport takes over, with the bytes already read."""
        full = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM, 0, conn.detach())
        full.setblocking(False)
        proto: asyncio.Protocol
        if data[:1] == b"!":
            proto = ControlProtocol(self.control, pending=data)  # the uid was checked above
        else:
            proto = EventProtocol(self, peer=peer, pending=data)
        assert self._loop is not None
        task = self._loop.create_task(self._loop.connect_accepted_socket(lambda: proto, full))
        self._handoffs.add(task)
        task.add_done_callback(self._handoff_done)

    def _refuse(self, conn: _socket.socket, peer: Peer) -> None:
        """Another user's connection: answer once (a waiting client learns why), store nothing."""
        with contextlib.suppress(OSError):
            conn.send(REFUSED_REPLY, socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL)
            # Discard what it already sent (bounded): closing with unread data would reset the
            # connection and the client could lose the answer.
            conn.recv(self.QUICK_BYTES, socket.MSG_DONTWAIT)
        conn.close()
        self.uids.refused(peer)

    def _handoff_done(self, task: asyncio.Task[object]) -> None:
        self._handoffs.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("could not take over a connection: %s", task.exception())

    def to_control(self, proto: EventProtocol, first: bytes) -> None:
        """An event connection whose first bytes arrived after the accept and start with ``!``:
        its transport goes to a ControlProtocol, which is never paused by backpressure."""
        self.connection_closed(proto)
        t = proto.release()
        assert t is not None
        ctl = ControlProtocol(self.control, pending=first)
        t.set_protocol(ctl)
        t.resume_reading()  # flow control may have paused it as an event connection
        ctl.connection_made(t)

    def connection_opened(self, proto: EventProtocol) -> None:
        self.connections.add(proto)
        t = proto.transport
        assert t is not None
        self.flow.transports.add(t)
        if self.flow.paused:
            t.pause_reading()

    def connection_closed(self, proto: EventProtocol) -> None:
        self.connections.discard(proto)
        if proto.transport is not None:
            self.flow.transports.discard(proto.transport)
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
            proto.close()
