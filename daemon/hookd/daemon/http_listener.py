"""The HTTP listener (``http.listen``): Claude Code's http hooks, without a process per event.

A loopback TCP port, bound here or inherited from systemd (the descriptor named ``hookd-http``,
from ``hookd-http.socket``), serving ``POST /v1/events`` (http_protocol.py) into the same
Ingest as the Unix socket. What this module owns:

- **Who may connect.** TCP has no SO_PEERCRED; the kernel still knows which user owns the
  peer's socket (peer_uid.py). Other users are refused (``403``, counted ``refused_uid``,
  logged like a refusal on the Unix socket), and so is a peer whose owner cannot be found
  (``peer_gone``, not logged: on loopback, a client that closed at once, such as a port probe),
  unless ``http.allow_remote`` is on: then a peer that is not on this machine is let through to
  the token check, which that setting requires.
- **Bounds.** At most ``MAX_CONNECTIONS`` open (more are answered ``503``); a connection that
  completes no request (or NDJSON line) within ``idle_timeout`` is closed, counted
  ``idle_timeout`` when it was inside a request (a slowloris) and ``idle_closed`` when it was an
  idle keep-alive connection; clients are told ``Keep-Alive: timeout=`` so they close first.
- **Backpressure.** While Ingest's pipeline is full every connection stops reading, as on the
  Unix socket; connections are still accepted (each costs a descriptor, bounded above) and wait.
- **Stop.** The port stops listening (an inherited one stays with systemd, and connections
  queued there wait for the next start); requests on open connections are answered for up to
  ``shutdown_grace`` with ``Connection: close``; answers that wait for a commit are written
  before the connections close.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hmac
import logging
import math
import os
import socket
import stat
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from hookd.daemon.http_protocol import HttpProtocol
from hookd.daemon.otlp_http import OtlpReceiver
from hookd.errors import ConfigError, HookdError
from hookd.framing import Peer
from hookd.oversize import Budget
from hookd.peer_uid import PeerUids
from hookd.settings import Settings
from hookd.values import is_loopback, split_listen

if TYPE_CHECKING:
    from hookd.daemon.ingest import Ingest

log = logging.getLogger("hookd.http")

#: The name of the descriptor systemd passes (``FileDescriptorName=`` in hookd-http.socket).
FD_NAME: Final = "hookd-http"
MAX_CONNECTIONS: Final = 1024
MIN_TOKEN: Final = 16


def read_token(path: Path) -> bytes:
    """The bearer token: the file's content without surrounding whitespace. The file must be
    ours and private (a token others can read protects nothing)."""
    how = f"create it with: (umask 077; head -c 32 /dev/urandom | base64 > {path})"
    try:
        st = os.stat(path)
        token = Path(path).read_bytes().strip()
    except FileNotFoundError:
        raise ConfigError(f"http.token_file {path} does not exist; {how}") from None
    except OSError as e:
        raise ConfigError(f"http.token_file {path}: cannot read it ({e.strerror})") from None
    if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid():
        raise ConfigError(f"http.token_file {path} must be a regular file of yours; {how}")
    if st.st_mode & 0o077:
        mode = f"{st.st_mode & 0o777:04o}"
        raise ConfigError(f"http.token_file {path} has mode {mode}: other users can read it; chmod 600 it")
    if len(token) < MIN_TOKEN or not all(33 <= c < 127 for c in token):
        raise ConfigError(f"http.token_file {path} must hold one token of {MIN_TOKEN}+ printable characters; {how}")
    return token


def bind_tcp(listen: str, backlog: int) -> socket.socket:
    """A non-blocking listening TCP socket on ``HOST:PORT`` (IPv6 only on an IPv6 address)."""
    host, port = split_listen(listen)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        # A restart must get its port back while the last run's connections sit in TIME_WAIT.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError as e:
        sock.close()
        hint = ""
        if e.errno == errno.EADDRINUSE:
            hint = f"; another process has it (`ss -ltnp 'sport = :{port}'` shows which)"
        raise HookdError(
            f"cannot listen for HTTP on {listen}: {e.strerror}{hint}; choose another HOST:PORT with "
            "--http, HOOKD_HTTP or [http] listen"
        ) from None
    return sock


def _address(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"[{host}]:{port}" if sock.family == socket.AF_INET6 else f"{host}:{port}"


def _inherit(fd: int) -> socket.socket:
    sock = socket.socket(fileno=fd)
    if (
        sock.family not in (socket.AF_INET, socket.AF_INET6)
        or sock.type != socket.SOCK_STREAM
        or not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
    ):
        sock.detach()
        raise HookdError(
            f"the socket systemd passed as {FD_NAME} (fd {fd}) is not a listening TCP socket; "
            "hookd-http.socket needs ListenStream=127.0.0.1:PORT (run `hookd install-service` again)"
        )
    sock.setblocking(False)
    return sock


class HttpListener:
    """The HTTP port and its connections. ``open`` binds or inherits it; ``attach`` joins it
    to the pipeline; ``start`` serves; ``stop`` then ``close_all`` end it."""

    def __init__(self, settings: Settings, sock: socket.socket, *, owned: bool, token: bytes | None) -> None:
        self.settings = settings
        self.sock = sock
        self.owned = owned
        self.address = _address(sock)
        self.token = token
        host, _port = split_listen(self.address)
        #: A peer not on this machine may pass (to the token check): only with allow_remote.
        self.remote_ok = not is_loopback(host)
        self.peer_uids = PeerUids()
        self.connections: set[HttpProtocol] = set()
        self.stopping = False
        self.accepted = 0  # connections
        self.requests = 0
        self.by_status: Counter[int] = Counter()
        self.by_reason: Counter[str] = Counter()
        #: POST /v1/logs and /v1/metrics (daemon/otlp_http.py): the decoding process (otlp_link.py), budget, counts.
        self.otlp = OtlpReceiver(self)
        self.ingest: Ingest = None  # type: ignore[assignment]  # set by attach
        self.flow: Any = None
        #: What JSON bodies over ``max_line`` (read whole to be cut to fit) may hold at once; the
        #: Unix server's, given by attach: one bound for both listeners.
        self.cut_budget: Budget | None = None
        self._refused: Callable[[Peer], None] = lambda peer: None
        self._accepted_uids: Callable[[], frozenset[int] | None] = lambda: None
        self._server: asyncio.AbstractServer | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._all_closed: asyncio.Event | None = None
        self._handoffs: set[asyncio.Task[Any]] = set()

    @classmethod
    def open(cls, settings: Settings, fds: list[tuple[int, str]]) -> HttpListener | None:
        """The listener ``settings`` and systemd ask for, or None when neither does. Raises
        (HookdError, ConfigError) when it cannot be had: the user asked for it, and an http
        hook with nothing behind its port loses its events."""
        named = [fd for fd, name in fds if name == FD_NAME]
        if not named and settings.http_listen is None:
            return None
        token = read_token(settings.http_token_file) if settings.http_token_file is not None else None
        if named:
            sock, owned = _inherit(named[0]), False
            got = _address(sock)
            if settings.http_listen is not None and got != settings.http_listen:
                log.warning(
                    "systemd passed the HTTP socket %s, but http.listen is %s: hooks use the URL of "
                    "http.listen; run `hookd install-service` again to make them agree",
                    got,
                    settings.http_listen,
                )
            host, _port = split_listen(got)
            if not is_loopback(host) and (token is None or not settings.http_allow_remote):
                sock.close()
                raise ConfigError(
                    f"systemd passed the HTTP socket {got}, which is not a loopback address: set "
                    "allow_remote = true and token_file in [http], or make hookd-http.socket listen on 127.0.0.1"
                )
        else:
            assert settings.http_listen is not None
            sock, owned = bind_tcp(settings.http_listen, settings.backlog), True
            if fds:
                log.info("the HTTP port is not socket-activated: `hookd install-service` makes systemd hold it")
        return cls(settings, sock, owned=owned, token=token)

    def attach(
        self,
        ingest: Ingest,
        *,
        refused: Callable[[Peer], None],
        accepted_uids: Callable[[], frozenset[int] | None],
        cut_budget: Budget | None = None,
    ) -> None:
        """Feed ``ingest``; ``refused`` counts and logs another user (the Unix server's, so that
        both sockets log alike); ``accepted_uids`` is read per connection (SIGHUP may change it);
        ``cut_budget``: the Unix server's memory for cutting long lines, which long JSON bodies
        share (without it, a body over ``max_line`` is refused, never cut)."""
        self.ingest = ingest
        self.flow = ingest.flow
        self._refused = refused
        self._accepted_uids = accepted_uids
        self.cut_budget = cut_budget

    @property
    def max_line(self) -> int:
        return self.settings.max_line

    @property
    def cut_limit(self) -> int:
        """A JSON body over ``max_line`` up to this is read whole and cut to fit, as a line on
        the Unix socket (oversize.py); a longer one is answered 413."""
        return self.settings.truncate_limit

    @property
    def keep_alive(self) -> int:
        """Seconds a client may keep an idle connection: our idle timeout, rounded down."""
        return max(1, int(self.settings.idle_timeout))

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        backlog = self.settings.backlog
        self._server = await loop.create_server(lambda: HttpProtocol(self), sock=self.sock, backlog=backlog)
        self._sweeper = loop.create_task(self._sweep_idle(), name="hookd-http-idle-sweep")
        self.otlp.preload()  # the OTLP decoder's imports, in its thread
        how = "" if self.owned else " (from systemd)"
        log.info("HTTP: POST http://%s/v1/events%s; peer uids by %s", self.address, how, self.peer_uids.method)
        log.info("OTLP/HTTP: POST http://%s/v1/logs and /v1/metrics (protobuf or JSON)", self.address)

    # -- connections ---------------------------------------------------------------------------
    def opened(self, proto: HttpProtocol) -> None:
        self.accepted += 1
        self.connections.add(proto)

    def closed(self, proto: HttpProtocol) -> None:
        self.connections.discard(proto)
        if not self.connections and self._all_closed is not None:
            self._all_closed.set()

    def check_peer(self, transport: asyncio.Transport) -> Peer | tuple[int, str, str]:
        """The peer, or the refusal to answer with (status, reason, detail)."""
        if len(self.connections) > MAX_CONNECTIONS:
            return 503, "busy", f"more than {MAX_CONNECTIONS} connections are open; retry later"
        local = transport.get_extra_info("sockname")
        remote = transport.get_extra_info("peername")
        uid = self.peer_uids.owner(local, remote) if local and remote else None
        if uid is None and self.remote_ok:
            return Peer(None, None)  # not on this machine: the token decides
        accepted = self._accepted_uids()
        if accepted is not None and uid not in accepted:
            if uid is None:
                # No socket of that address is left on this machine: the client closed at once (a
                # port probe such as install-claude's, a health check). Refused all the same, but
                # neither logged nor counted as another user: there is no user to name.
                log.debug("refused a connection closed before its owner could be found (peer_gone)")
                return 403, "peer_gone", "the owner of your connection could not be found (did it close?)"
            self._refused(Peer(None, uid))
            return 403, "refused_uid", "this hookd does not accept connections from your user"
        return Peer(None, uid)

    def authorized(self, header: bytes | None) -> bool:
        if self.token is None:
            return True
        if header is None:
            return False
        scheme, _, value = header.partition(b" ")
        return scheme.lower() == b"bearer" and hmac.compare_digest(value.strip(), self.token)

    def count(self, status: int, reason: str) -> None:
        self.by_status[status] += 1
        if reason:
            self.by_reason[reason] += 1

    def flow_changed(self, paused: bool) -> None:
        for proto in list(self.connections):
            proto.update_reading()

    async def _sweep_idle(self) -> None:
        """Close connections that completed no request (or NDJSON line) for ``idle_timeout``:
        one task for all of them, as on the Unix socket; nothing is timed per request."""
        while True:
            timeout = self.settings.idle_timeout  # read each round: SIGHUP may change it
            interval = max(0.05, min(1.0, timeout / 4))
            ticks = max(1, math.ceil(timeout / interval))
            await asyncio.sleep(interval)
            if self.flow is not None and self.flow.paused:
                continue  # the daemon is the one not reading
            for proto in list(self.connections):
                if proto.waiting_on_us or proto.ending:
                    proto.idle = 0
                    continue
                proto.idle += 1
                if proto.idle >= ticks:
                    slow = proto.mid_request
                    proto.close()
                    self.by_reason["idle_timeout" if slow else "idle_closed"] += 1
                    if slow:
                        self.ingest.count("idle_timeout")

    # -- stop ----------------------------------------------------------------------------------
    async def stop(self, grace: float) -> None:
        """Stop listening; answer open connections' requests for up to ``grace`` seconds (with
        ``Connection: close``), then close those that owe nothing (``close_all`` does the rest
        once the last batch is committed)."""
        self.stopping = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        if self.owned:
            self._accept_queued()  # they have connected, and maybe sent: serve them too
        if self._server is not None:
            self._server.close()
        with contextlib.suppress(OSError):
            self.sock.close()  # an inherited socket: only our descriptor of it
        if self._handoffs:
            await asyncio.gather(*self._handoffs, return_exceptions=True)
        # Idle keep-alive connections close now: a client that sends on one after this finds
        # it closed and connects again (to systemd's queue, under socket activation) instead
        # of sending into a connection about to close.
        for proto in list(self.connections):
            if not proto.waiting_on_us and not proto.mid_request:
                proto.close()
        self._all_closed = asyncio.Event()
        if self.connections:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._all_closed.wait(), grace)
        for proto in list(self.connections):
            if not proto.waiting_on_us:
                proto.close()
        await self.otlp.drain()  # OTLP bodies in decoding: their records join the last batches
        await asyncio.sleep(0)  # let connection_lost callbacks run

    def _accept_queued(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, _addr = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                log.warning("accepting queued HTTP connections at shutdown: %s", e.strerror)
                return
            conn.setblocking(False)
            task = loop.create_task(loop.connect_accepted_socket(lambda: HttpProtocol(self), conn))
            self._handoffs.add(task)
            task.add_done_callback(self._handoffs.discard)

    def close_all(self) -> None:
        for proto in list(self.connections):
            proto.close()

    def release(self) -> None:
        """At exit, whatever happened: our descriptors."""
        with contextlib.suppress(OSError):
            self.sock.close()
        self.peer_uids.close()
        self.otlp.close()

    def status(self) -> dict[str, Any]:
        """The ``http`` part of ``!status`` (docs/operations.md)."""
        return {
            "listen": self.address,
            "url": f"http://{self.address}/v1/events",
            "from_systemd": not self.owned,
            "token_required": self.token is not None,
            "peer_uid_method": self.peer_uids.method,
            "open_connections": len(self.connections),
            "connections": self.accepted,
            "requests": self.requests,
            "by_status": {str(k): v for k, v in sorted(self.by_status.items())},
            "by_reason": dict(sorted(self.by_reason.items())),
            "otlp": self.otlp.status(),
        }
