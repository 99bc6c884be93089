"""``!import``: a file's lines streamed to the running daemon and stored through its writer.

``hookd import`` (ops/importing.py) sends, on a control connection (either socket):

    !import {"file": NAME, "type": T}     T optional: store every line as type T
    <the file's bytes>, then it half-closes

and reads JSON lines (docs/protocol.md, "Importing through the daemon"):

    {"ok":true,"import":"ready","max_line":N,"db":D} at once: the client starts sending
    {"ok":true,"progress":{...}}                     as its lines commit, at most 4 a second
    {"ok":true,"done":{...}}                         every line committed; then closed
    {"ok":false,"reason":R,"detail":D}               instead (busy, stopping, idle_timeout)

where {...} is ``{"bytes": read so far, "lines", "imported", "duplicates", "rejected": {reason: n}}``.

Each line is framed by the daemon's own ``Framer`` (the same validation as a live line), keyed
as ``hookd.backfill`` says (the ids and rejection keys of the offline import, so either path
after the other adds nothing), and goes into ``Ingest``'s current batch beside live lines: eids
stay in order, and the import counts against the same backpressure.

Hooks keep priority: an import reads only while fewer than half of ``max_inflight`` batches
wait for the writer (hooks pause at ``max_inflight``). Meanwhile the kernel holds the file's
bytes and the client waits in ``send``; live hooks keep the other half of the pipeline.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import time
from typing import Any

import msgspec

from hookd.backfill import ImportResult, NumberedLines, line_id, too_long_key
from hookd.daemon.ingest import Ingest
from hookd.daemon.writer_link import Batch, error_reply
from hookd.framing import NO_PEER, Rejection, normalize_type
from hookd.records import REJECTED_REASON
from hookd.settings import Settings
from hookd.writer_client import rejected_row

log = logging.getLogger("hookd.import")

#: Imports running at once at most; more are answered ``busy``.
MAX_IMPORTS = 4
#: Seconds between two progress lines at least.
PROGRESS_EVERY = 0.25
#: Lines framed per hand-over to ``Ingest`` (its batch is flushed at ``batch_size``).
GROUP = 256

_encode = msgspec.json.Encoder().encode


class Imports:
    """The imports running in one daemon. ``committed`` is subscribed to ``Ingest.on_commit``
    (app.py); ``Control`` starts and closes them."""

    def __init__(self, settings: Settings, ingest: Ingest) -> None:
        self.settings = settings
        self.ingest = ingest
        self.sessions: set[ImportSession] = set()

    @property
    def limit(self) -> int:
        """Batches in flight above which imports stop reading: half the pipeline."""
        return max(1, self.settings.max_inflight // 2)

    def start(self, transport: asyncio.Transport, params: dict[str, Any], rest: bytes, eof: bool) -> None:
        """Take over a control connection that asked ``!import``, with the bytes after it."""
        raw_type = params.get("type")
        etype = normalize_type(raw_type) if isinstance(raw_type, str) else None
        if raw_type is not None and etype is None:
            _close(transport, "bad_command", f"type {raw_type!r} does not normalize to [a-z][a-z0-9_]{{0,62}}")
            return
        if len(self.sessions) >= MAX_IMPORTS:
            _close(transport, "busy", f"{MAX_IMPORTS} imports are running; try again when one has finished")
            return
        name = str(params.get("file") or "import")[:200]
        session = ImportSession(self, name, etype)
        self.sessions.add(session)
        transport.set_protocol(session)
        session.connection_made(transport)
        if rest:
            session.data_received(rest)
        if eof:
            session.eof_received()

    def committed(self, batch: Batch, dups: list[tuple[int, int]]) -> None:
        """A batch committed: its imports' lines are counted, paused imports may read again."""
        if batch.imports:
            dup_rows = [i for i, _eid in dups]  # ascending, as the writer reports them
            for session, lo, hi, rejects in batch.imports:
                n_dups = bisect.bisect_left(dup_rows, hi) - bisect.bisect_left(dup_rows, lo)
                session.committed(hi - lo - n_dups, n_dups, rejects)
        if self.ingest.link.inflight < self.limit:
            for session in self.sessions:
                session.resume()

    def status(self) -> list[dict[str, Any]]:
        """For ``!status``: each running import's file and counts."""
        return [{"file": s.name, "bytes": s.bytes, **s.result.as_json()} for s in self.sessions]

    def close(self) -> None:
        """At shutdown: each import is told the daemon stops (what it sent is still committed)."""
        for session in list(self.sessions):
            session.fail(
                "stopping",
                f"the daemon is stopping; {session.result.lines} lines of {session.name} were read: "
                "run the same import again to finish (nothing is stored twice)",
            )


class ImportSession(asyncio.Protocol):
    """One ``!import`` connection: a file's bytes in, progress and a summary out."""

    def __init__(self, imports: Imports, name: str, etype: str | None) -> None:
        self.imports = imports
        self.ingest = imports.ingest
        self.name = name
        self.etype = etype
        self.numbered = NumberedLines(imports.settings.max_line)
        self.result = ImportResult()
        self.bytes = 0
        self.eof = False
        self.paused = False
        self.closed = False  # answered (done or failed) and closed by the daemon
        self._handed = 0  # rows and rejections given to Ingest and not yet committed
        self._transport: asyncio.Transport | None = None
        self._last_progress = 0.0
        self._timer: asyncio.TimerHandle | None = None

    # -- the connection ------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._transport = transport
        settings = self.imports.settings
        # The database: ``hookd import --db X`` must not end up in another one unnoticed.
        self._write({"ok": True, "import": "ready", "max_line": settings.max_line, "db": str(settings.paths.db)})
        self._idle()

    def data_received(self, data: bytes) -> None:
        if self.eof or self._transport is None:
            return
        if not self.bytes:
            log.info("import of %s through the daemon started", self.name)
        self.bytes += len(data)
        self._frame(list(self.numbered.feed(data)))
        self._oversized()
        self._idle()
        if self.ingest.link.inflight >= self.imports.limit:
            self.paused = True
            self._transport.pause_reading()  # the client waits in send: hooks keep priority
            self._stop_timer()

    def eof_received(self) -> bool:
        if not self.eof:
            self.eof = True
            self._stop_timer()
            self._frame(self.numbered.finish())
            self._oversized()
            self.ingest.flush()  # the last lines now, not after batch_delay
            self._maybe_done()
        return True  # keep writing: the summary comes once every line is committed

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_timer()
        self.imports.sessions.discard(self)
        self._transport = None
        if not self.closed:
            log.warning(
                "import of %s through the daemon ended by the client after %d lines", self.name, self.result.lines
            )

    def resume(self) -> None:
        if self.paused and self._transport is not None:
            self.paused = False
            self._transport.resume_reading()
            self._idle()

    # -- lines -----------------------------------------------------------------------------------
    def _frame(self, numbered: list[tuple[int, bytes]]) -> None:
        """Frame the lines and hand them to Ingest, a group at a time."""
        frame, etype, name = self.ingest.framer.frame, self.etype, self.name
        for start in range(0, len(numbered), GROUP):
            rows: list[tuple] = []
            mirror: list[bytes] = []
            rejects: list[tuple] = []
            now = time.time()
            for lineno, line in numbered[start : start + GROUP]:
                if not line.strip():
                    continue
                cid = line_id(lineno, line)
                try:
                    framed = frame(line, now, NO_PEER, force_type=etype, default_id=cid)
                except Rejection as r:
                    rejects.append(rejected_row(now, r.reason, f"{name}:{lineno}: {r.detail}", line, key=cid))
                    continue
                except Exception as e:  # a bug in framing must cost this line only
                    detail = f"{name}:{lineno}: {type(e).__name__}: {e}"
                    log.error("framing failed on a line (a bug in hookd; please report it): %s", detail, exc_info=True)
                    rejects.append(rejected_row(now, "internal_error", detail, line, key=cid))
                    continue
                if framed is not None:
                    rows.append(framed[0])
                    mirror.append(framed[1])
            self._hand(rows, mirror, rejects)

    def _oversized(self) -> None:
        rejects = [
            rejected_row(
                time.time(),
                "too_long",
                f"{self.name}: line of {size} bytes exceeds {self.imports.settings.max_line}",
                head,
                size=size,
                key=too_long_key(size, head),
            )
            for size, head in self.numbered.oversized()
        ]
        self._hand([], [], rejects)

    def _hand(self, rows: list[tuple], mirror: list[bytes], rejects: list[tuple]) -> None:
        if rows or rejects:
            # Over-long lines are not counted as lines read, as in the offline import.
            self.result.lines += len(rows) + sum(r[REJECTED_REASON] != "too_long" for r in rejects)
            for r in rejects:
                self.result.rejected[r[REJECTED_REASON]] += 1
            self._handed += len(rows) + len(rejects)
            self.ingest.imported(rows, mirror, rejects, self)

    # -- replies ---------------------------------------------------------------------------------
    def committed(self, stored: int, duplicates: int, rejects: int) -> None:
        """Some of this import's lines committed (``Imports.committed``)."""
        self.result.imported += stored
        self.result.duplicates += duplicates
        self._handed -= stored + duplicates + rejects
        now = time.monotonic()
        if not self.eof and now - self._last_progress >= PROGRESS_EVERY:
            self._last_progress = now
            self._write({"ok": True, "progress": {"bytes": self.bytes, **self.result.as_json()}})
        self._maybe_done()

    def _maybe_done(self) -> None:
        if self.eof and self._handed == 0 and self._transport is not None:
            self._write({"ok": True, "done": {"bytes": self.bytes, **self.result.as_json()}})
            r = self.result
            log.log(
                logging.INFO if self.bytes else logging.DEBUG,
                "import of %s through the daemon: %d lines, %d imported, %d duplicate, %d rejected",
                self.name, r.lines, r.imported, r.duplicates, sum(r.rejected.values()),
            )  # fmt: skip
            self._close()

    def fail(self, reason: str, detail: str) -> None:
        if self._transport is not None:
            self._transport.write(error_reply(reason, detail))
            self._close()

    def _write(self, obj: dict[str, Any]) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(_encode(obj) + b"\n")

    def _close(self) -> None:
        self.closed = True
        self.imports.sessions.discard(self)
        self._stop_timer()
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    # -- a client that stops sending -------------------------------------------------------------
    def _idle(self) -> None:
        """(Re)arm ``idle_timeout`` while reading: a client that stops sending without ending
        the file would hold an import slot forever."""
        self._stop_timer()
        if not self.eof and not self.paused:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self.imports.settings.idle_timeout, self._too_slow)

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _too_slow(self) -> None:
        self._timer = None
        self.ingest.count("idle_timeout")
        self.fail("idle_timeout", f"nothing sent for {self.imports.settings.idle_timeout:g} s; run the import again")


def _close(transport: asyncio.Transport, reason: str, detail: str) -> None:
    transport.write(error_reply(reason, detail))
    transport.close()
