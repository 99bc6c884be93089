"""The dashboard's HTTP server: its page, its scripts, and one JSON endpoint per panel.

A process of its own (``hookd dashboard``), so panel queries never run in the daemon's process
and never compete with its event loop for the GIL; it only reads the database (``reader.py``).
HTTP is parsed by the standard library's ``http.server`` (``ThreadingHTTPServer``: a thread per
connection, capped at ``MAX_CONNECTIONS``).

Who may look: the page shows prompts, commands and file paths, so

- it listens on loopback only (``dashboard.listen``, checked in settings.py);
- a connection whose peer socket is owned by another uid (``hookd.peer_uid``: the kernel's
  NETLINK_SOCK_DIAG answer, ``/proc/net/tcp`` as a fallback) is closed before a byte is read or
  written: the other user gets nothing; it is counted (``refused_uid``) and logged (throttled);
- a request whose ``Host`` is not the dashboard's own address is refused (``403``, counted
  ``bad_host``): a web page of another site that the user's own browser visits could otherwise
  reach the port under its own name (DNS rebinding), and it would pass the uid check.

It is a viewer and must never slow ingest: it lowers its own CPU priority (``NICE``), so on a
busy machine the daemon and its writer go first; a panel's answer is kept (``AnswerCache``)
while the database's newest eid and rejected row stay the same, so pages looking at an
unchanged database cost no query; connections are kept alive (HTTP/1.1), so a page's poll costs
no new connection, thread or peer-uid lookup.

Every script and style ships in ``static/`` (uPlot, vendored with its LICENSE): no CDN, it works
offline. ``Content-Security-Policy`` allows only this origin.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections import OrderedDict
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Final
from urllib.parse import parse_qsl, urlsplit

from hookd.dashboard.queries import PANELS, Ask, BadRequest, head
from hookd.dashboard.reader import Busy, Reader
from hookd.errors import StoreError
from hookd.peer_uid import PeerUids
from hookd.settings import Settings
from hookd.values import split_listen

log = logging.getLogger("hookd.dashboard")

STATIC: Final = Path(__file__).resolve().parent / "static"
#: Open connections at most (a thread each); more are closed at once.
MAX_CONNECTIONS: Final = 64
#: Seconds a connection may take to send its request.
REQUEST_TIMEOUT: Final = 10.0
TYPES: Final = {".html": "text/html; charset=utf-8", ".js": "text/javascript", ".css": "text/css", ".png": "image/png"}
#: Added to the dashboard process's nice value: its CPU yields to the daemon and the writer.
NICE: Final = 10
#: Panels whose answers are kept while the database is unchanged (not ``head``, which tells
#: whether it changed, nor ``health``, which also reads the daemon, the spool and file sizes).
CACHED_PANELS: Final = frozenset({"overview", "activity", "tools", "sessions", "session", "git", "kinds"})
#: Answers kept at most, and for how long at most (seconds): a panel's time range moves on.
CACHE_ENTRIES: Final = 32
CACHE_SECONDS: Final = 10.0
SECURITY_HEADERS: Final = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


class Counters:
    """What the server did: requests by outcome, connections refused. Shown on Health."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: dict[str, int] = {}
        self.started = time.time()
        self._logged: dict[str, float] = {}

    def add(self, name: str) -> None:
        with self._lock:
            self.counts[name] = self.counts.get(name, 0) + 1

    def log_once_a_minute(self, key: str, message: str, *args: Any) -> None:
        now = time.monotonic()
        with self._lock:
            if now - self._logged.get(key, -1e9) < 60:
                return
            self._logged[key] = now
        log.warning(message, *args)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {"pid": os.getpid(), "started": self.started, "counts": dict(self.counts)}


class AnswerCache:
    """Panel answers (JSON bytes) by panel, parameters and the database's head (newest eid and
    rejected row): an answer is served again while the head is unchanged and it is younger than
    ``CACHE_SECONDS``. At most ``CACHE_ENTRIES``, the least recently used dropped first."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: OrderedDict[tuple, tuple[float, bytes]] = OrderedDict()

    def get(self, key: tuple, now: float) -> bytes | None:
        with self._lock:
            hit = self._entries.get(key)
            if hit is None or now - hit[0] > CACHE_SECONDS:
                return None
            self._entries.move_to_end(key)
            return hit[1]

    def put(self, key: tuple, now: float, body: bytes) -> None:
        with self._lock:
            self._entries[key] = (now, body)
            self._entries.move_to_end(key)
            while len(self._entries) > CACHE_ENTRIES:
                self._entries.popitem(last=False)


class DashboardServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, settings: Settings, listen: str) -> None:
        host, port = split_listen(listen)
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.settings = settings
        self.reader = Reader(settings.paths.db)
        self.counters = Counters()
        self.cache = AnswerCache()
        self.peer_uids = PeerUids()
        self.uid = os.getuid()
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        super().__init__((host, port), Handler)
        bound_host, bound_port = self.server_address[:2]
        shown = f"[{bound_host}]" if self.address_family == socket.AF_INET6 else bound_host
        self.netloc = f"{shown}:{bound_port}"
        self.url = f"http://{self.netloc}/"
        self.hosts = {self.netloc.lower(), f"localhost:{bound_port}"}

    def verify_request(self, request: Any, client_address: Any) -> bool:
        """Only this user's connections are served; others are closed unanswered, and counted."""
        uid = self.peer_uids.owner(request.getsockname(), client_address)
        if uid != self.uid:
            self.counters.add("refused_uid")
            self.counters.log_once_a_minute(
                "refused", "dashboard: refused a connection from uid %s (only uid %d is served)", uid, self.uid
            )
            return False
        if not self._slots.acquire(blocking=False):
            self.counters.add("busy")
            return False
        return True

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("dashboard: a connection failed", exc_info=True)

    def server_close(self) -> None:
        super().server_close()
        self.reader.close()
        self.peer_uids.close()


class Handler(BaseHTTPRequestHandler):
    server: DashboardServer
    server_version = "hookd-dashboard"
    protocol_version = "HTTP/1.1"  # keep-alive: every answer carries Content-Length
    timeout = REQUEST_TIMEOUT

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
        log.debug("dashboard: %s " + format, self.address_string(), *args)

    def do_HEAD(self) -> None:  # noqa: N802 - the stdlib's name
        self.do_GET()

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        counters = self.server.counters
        if (self.headers.get("Host") or "").lower() not in self.server.hosts:
            counters.add("bad_host")
            self._send(HTTPStatus.FORBIDDEN, b"this dashboard answers to its own address only\n", ".txt")
            return
        url = urlsplit(self.path)
        counters.add("requests")
        if url.path == "/":
            self._file("index.html")
        elif url.path.startswith("/static/"):
            self._file(url.path.removeprefix("/static/"))
        elif url.path.startswith("/api/"):
            self._panel(url.path.removeprefix("/api/"), dict(parse_qsl(url.query)))
        else:
            counters.add("not_found")
            self._send(HTTPStatus.NOT_FOUND, b"not found\n", ".txt")

    def _file(self, name: str) -> None:
        path = STATIC / name
        if "/" in name or name.startswith(".") or not path.is_file():
            self.server.counters.add("not_found")
            self._send(HTTPStatus.NOT_FOUND, b"not found\n", ".txt")
            return
        self._send(HTTPStatus.OK, path.read_bytes(), path.suffix, cache=True)

    def _panel(self, name: str, params: dict[str, str]) -> None:
        panel = PANELS.get(name)
        if panel is None:
            self._json(HTTPStatus.NOT_FOUND, {"error": f"no panel {name!r}"})
            return
        ask = Ask(params, self.server.settings, time.time())
        if name == "health":
            ask.server = {**self.server.counters.snapshot(), "interrupted": self.server.reader.interrupted}
        started = time.perf_counter()
        try:
            with self.server.reader.connection() as conn:
                body = self._answer(conn, name, panel, ask, started)
        except BadRequest as e:
            self._json(HTTPStatus.BAD_REQUEST, {"error": str(e)})
            return
        except Busy as e:
            self.server.counters.add("busy")
            self._json(HTTPStatus.SERVICE_UNAVAILABLE, {"error": str(e)})
            return
        except StoreError as e:
            self._json(HTTPStatus.SERVICE_UNAVAILABLE, {"error": str(e)})
            return
        except Exception as e:  # an interrupted (too slow) query, a locked or damaged file
            self.server.counters.add("failed")
            log.warning("dashboard: panel %s failed: %s", name, e)
            self._json(HTTPStatus.SERVICE_UNAVAILABLE, {"error": f"{name}: {e}"})
            return
        self._send(HTTPStatus.OK, body, ".json")

    def _answer(self, conn: Any, name: str, panel: Any, ask: Ask, started: float) -> bytes:
        """The panel's JSON: kept from an earlier ask while the database's head is unchanged."""
        key = None
        if name in CACHED_PANELS:
            h = head(conn, ask)
            key = (name, tuple(sorted(ask.params.items())), h["eid"], h["rid"])
            kept = self.server.cache.get(key, ask.now)
            if kept is not None:
                self.server.counters.add("cached")
                return kept
        obj = panel(conn, ask)
        obj["query_ms"] = round((time.perf_counter() - started) * 1000, 1)
        body = json.dumps(obj, separators=(",", ":")).encode()
        if key is not None:
            self.server.cache.put(key, ask.now, body)
        return body

    def _json(self, status: HTTPStatus, obj: dict[str, Any]) -> None:
        self._send(status, json.dumps(obj, separators=(",", ":")).encode(), ".json")

    def _send(self, status: HTTPStatus, body: bytes, suffix: str, cache: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", TYPES.get(suffix, "application/json" if suffix == ".json" else "text/plain"))
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "max-age=60" if cache else "no-store")
        for k, v in SECURITY_HEADERS.items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


def serve(settings: Settings, listen: str, ready: Any = None) -> None:
    """Serve until interrupted; ``ready(url)`` is called once the port listens."""
    try:
        os.nice(NICE)  # a viewer: ingest goes first
    except OSError:
        log.debug("dashboard: cannot lower its priority", exc_info=True)
    with DashboardServer(settings, listen) as server:
        log.info("dashboard: %s (peer uids by %s)", server.url, server.peer_uids.method)
        if ready is not None:
            ready(server.url)
        server.serve_forever(poll_interval=0.5)
