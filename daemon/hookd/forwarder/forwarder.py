"""The forwarder process (``python -m hookd.forwarder``): committed events to PostgreSQL.

Started and supervised by the daemon (daemon/forwarder_link.py) when ``forward.url`` is set. It
reads its ``ForwardConfig`` from stdin, then loops: read up to ``batch_size`` events above the
cursor from SQLite (read-only), commit them to PostgreSQL in one transaction with the cursor
(forwarder/pg.py), write the state file. Caught up, it looks again every ``interval``.

A process of its own, not a thread of the daemon: its Python work (reading rows, COPY) would
otherwise take the event loop's GIL, and it runs at a lower CPU priority (nice) so that on a
busy machine ingestion keeps its cores and forwarding catches up after.

Failures (PostgreSQL down or restarting, the network, a wrong password, a missing database)
are retried with a backoff of up to ``BACKOFF_MAX`` seconds; one log line says so when it
starts (and again only if the error changes), one when it is over. The state file carries
the error and since when, for ``hookd status``. Nothing is lost meanwhile: the events wait in
SQLite, and retention keeps them (it spares eids above the state's cursor).

It stops at the end of its stdin (the daemon closed it, or died: a ``kill -9`` of the daemon
leaves no orphan forwarding) or at SIGTERM, between transactions.
"""

from __future__ import annotations

import logging
import os
import signal
import sqlite3
import sys
import threading
import time
from pathlib import Path
from typing import Final

import msgspec

from hookd import wire
from hookd.forwarding import ForwardConfig, ForwardState, state_path, write_state

log = logging.getLogger("hookd.forward")

#: Backoff after a failure: from BACKOFF_MIN seconds, doubling, up to BACKOFF_MAX.
BACKOFF_MIN: Final = 0.5
BACKOFF_MAX: Final = 10.0
#: While forwarding stays paused, a different error is logged at most this often (seconds).
LOG_EVERY: Final = 60.0
#: The forwarder's niceness (added to the daemon's): ingestion first on a busy machine.
NICE: Final = 10


class Reporter:
    """The state file and the log: one line when an error starts or changes, one when it ends."""

    def __init__(self, cfg: ForwardConfig) -> None:
        self.path = state_path(Path(cfg.db))
        self.state = ForwardState(url=cfg.url, host=cfg.host, pid=os.getpid())
        self._logged = 0.0  # when an error was last logged

    def write(self) -> None:
        self.state.updated = time.time()
        try:
            write_state(self.path, self.state)
        except OSError as e:
            log.debug("state file %s not written: %s", self.path, e)

    def connected(self, last_eid: int) -> None:
        self.state.last_eid = last_eid
        self.write()

    def forwarded(self, last_eid: int, stored: int, sanitized: int) -> None:
        s = self.state
        if s.error is not None:
            log.info("forwarding again after %s: %s", _took(time.time() - (s.error_since or 0)), s.error)
            s.error = s.error_since = None
        s.last_eid = last_eid
        s.forwarded += stored
        s.sanitized += sanitized
        s.forwarded_at = time.time()
        self.write()

    def failed(self, message: str) -> None:
        """Logged when forwarding pauses, and again for a different error at most every
        ``LOG_EVERY`` seconds: never once per retry. The state file always has the latest."""
        s = self.state
        if s.error == message:
            return
        now = time.time()
        if s.error is None:
            s.error_since = now
        if s.error is None or now - self._logged >= LOG_EVERY:
            self._logged = now
            log.warning(
                "forwarding paused: %s; events wait in the local database and are forwarded once this is fixed "
                "(retrying every %g s at most; `hookd status` shows the lag)",
                message,
                BACKOFF_MAX,
            )
        s.error = message
        self.write()


def _took(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


def run(cfg: ForwardConfig, stop: threading.Event) -> None:
    """Forward until ``stop`` is set."""
    try:
        from hookd.forwarder import pg, source
    except ImportError as e:  # psycopg not installed: say what to do, and wait for the stop
        reporter = Reporter(cfg)
        reporter.failed(f"psycopg is not installed ({e}): pip install 'hookd[forward]'")
        stop.wait()
        return
    reporter = Reporter(cfg)
    src = source.Source(Path(cfg.db))
    target: pg.Target | None = None
    backoff = BACKOFF_MIN
    while not stop.is_set():
        try:
            if target is None:
                target = pg.Target.connect(cfg)
                reporter.connected(target.last_eid)
            rows = src.after(target.last_eid, cfg.batch_size)
            if not rows:
                stop.wait(cfg.interval)
                continue
            rows, sanitized = source.storable(rows)
            stored = target.send(rows)
            reporter.forwarded(target.last_eid, stored, sanitized)
            backoff = BACKOFF_MIN
        except (pg.ForwardError, pg.psycopg.Error, sqlite3.Error, OSError) as e:
            if target is not None:
                target.close()
                target = None
            reporter.failed(_describe(e))
            stop.wait(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX)
    if target is not None:
        target.close()
    src.close()


def _describe(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    if isinstance(e, sqlite3.Error):
        return f"cannot read the local database: {text}"
    if type(e).__module__.startswith("psycopg"):
        return f"PostgreSQL: {text}"
    return text


def _watch_stdin(stop: threading.Event) -> None:
    """The daemon holds our stdin open for as long as it wants us: its end is our stop."""
    try:
        while sys.stdin.buffer.read(4096):
            pass
    except OSError:
        pass
    stop.set()


def main() -> int:
    frame = wire.read_frame(sys.stdin.buffer)
    if frame is None:
        print("hookd[forward]: no configuration on stdin (the daemon starts this process)", file=sys.stderr)
        return 2
    cfg = msgspec.msgpack.decode(frame, type=ForwardConfig)
    logging.basicConfig(level=cfg.log_level, stream=sys.stderr, format="hookd[forward]: %(levelname)s: %(message)s")
    stop = threading.Event()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C reaches the daemon, which stops us in order
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        os.nice(NICE)
    except OSError:
        pass
    threading.Thread(target=_watch_stdin, args=(stop,), name="hookd-forward-stdin", daemon=True).start()
    log.debug("forwarding %s as host %s to %s", cfg.db, cfg.host, cfg.url)
    run(cfg, stop)
    return 0
