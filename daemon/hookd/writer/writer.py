"""The writer process: mirror and SQLite, on a core of its own.

The daemon's event loop decodes and validates events and builds finished rows; this process
only appends them to the mirror and inserts them into SQLite. Keeping SQLite out of the loop
process avoids the GIL convoy measured in the design notes (a sqlite3 thread beside a busy
loop fell to a few hundred rows/s) and lets both cores work.

Per batch, in order: begin, insert (learning which client ids were duplicates), append the
stored events to the mirror, commit, reply. The mirror is written before the commit, so it
always holds at least what SQLite holds; at start, mirror lines newer than the newest stored
event (a crash between the two) are replayed into SQLite.

Run by the daemon as ``python -m hookd.writer``; it reads frames (see ``wire``) on stdin and
answers on stdout. It ignores SIGINT and SIGTERM: the daemon decides when it ends, by a
``close`` frame or by closing stdin (which is also what a killed daemon does).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import fcntl
import json
import logging
import os
import select
import signal
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import msgspec

from hookd import wire
from hookd.errors import HookdError, StoreError
from hookd.framing import MirrorLine
from hookd.records import EID, REJECTED_REASON
from hookd.writer import retention, schema
from hookd.writer.mirror import Maintenance, Mirror

try:  # a newer SQLite than the system's: about 1.2x faster inserts (docs/performance.md)
    import apsw
except ImportError:  # pragma: no cover - apsw is a dependency; stdlib sqlite3 still works
    apsw = None

log = logging.getLogger("hookd.writer")

#: Frames read back to back are committed in one transaction, up to this many.
MAX_COALESCE = 8
#: How long SQLite itself waits for a lock before the writer reports "waiting" and backs off.
BUSY_TIMEOUT_MS = 1000
#: Longest pause between two attempts at a commit that hit a lock or a full disk (seconds).
MAX_BACKOFF = 1.0
#: The dashboard's summaries (schema migrations 7 and 8) are added between batches, not in
#: them: at most this many events a step, when no batch waits ...
SUMMARY_STEP = 5_000
#: ... or whatever waits once they are this many eids behind (eids are milliseconds << 20: about
#: 2 s of events), so a sustained flood cannot leave them behind without bound.
SUMMARY_BEHIND = 2000 << 20


@contextlib.contextmanager
def _as_sqlite3_errors() -> Iterator[None]:
    """apsw's errors as their sqlite3 counterparts, so callers handle one family."""
    try:
        yield
    except (apsw.BusyError, apsw.LockedError, apsw.FullError) as e:
        raise _coded(sqlite3.OperationalError(str(e)), e) from None
    except apsw.Error as e:
        raise _coded(sqlite3.DatabaseError(str(e)), e) from None


def _coded(err: sqlite3.Error, source: Any) -> sqlite3.Error:
    """Carry apsw's result code over as sqlite3's ``sqlite_errorcode``: retry decisions are
    made on the code (``_waiting_for``), never on the message's words."""
    err.sqlite_errorcode = getattr(source, "extendedresult", None) or getattr(source, "result", None)  # type: ignore[attr-defined]
    return err


class ApswConnection:
    """The writer's connection through apsw, with the few sqlite3-style calls the writer uses.

    apsw bundles a current SQLite (3.5x) whose inserts are faster than the system's 3.40; the
    file stays readable by the system ``sqlite3`` because the schema uses nothing newer.
    apsw's errors are raised as their sqlite3 counterparts, so callers handle one family.
    """

    def __init__(self, path: Path, synchronous: str) -> None:
        self._c = apsw.Connection(os.fspath(path))
        self._c.set_busy_timeout(BUSY_TIMEOUT_MS)
        self.execute("PRAGMA journal_mode = WAL")
        self.execute(f"PRAGMA synchronous = {schema.SYNCHRONOUS[synchronous]}")

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        with _as_sqlite3_errors():
            return self._c.execute(sql, params)

    def executemany(self, sql: str, seq: Iterable[Sequence[Any]]) -> Any:
        with _as_sqlite3_errors():
            return self._c.executemany(sql, seq)

    @property
    def total_changes(self) -> int:
        return self._c.total_changes()

    def close(self) -> None:
        self._c.close()


class Writer:
    """Owns the write connection and the mirror; every method runs in this process only."""

    def __init__(
        self,
        db_path: Path,
        mirror_dir: Path,
        *,
        spool_dir: Path | None = None,
        synchronous: str = "normal",
        use_apsw: bool = True,
    ) -> None:
        self.spool_dir = spool_dir
        db_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._lock_fd = _exclusive(schema.writer_lock(db_path))
        self.db: Any = schema.connect(db_path, synchronous=synchronous)
        schema.migrate(self.db)
        if apsw is not None and use_apsw:
            self.db.close()
            self.db = ApswConnection(db_path, synchronous)
        # The daemon checkpoints from its own connection; this is only a safety net so the WAL
        # cannot grow without bound if that ever stops.
        self.db.execute("PRAGMA wal_autocheckpoint = 20000")
        self.mirror = Mirror(mirror_dir, fsync=synchronous == "full")
        self.types = schema.known_types(self.db)
        #: The dashboard's summaries hold every event up to ``summarized``; ``newest`` is the
        #: largest eid stored. ``summarize_step`` closes the gap, between batches.
        self.summarized = schema.summary_mark(self.db)
        self.newest = schema.max_eid(self.db)
        self._summary_logged = -60.0
        self.columns: dict[str, dict[str, str]] = {}
        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hookd-mirror")
        # Mirror upkeep (gzip, deletions) has a thread of its own: on _io it would hold up commits.
        self._upkeep = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hookd-mirror-upkeep")
        self._upkeep_job: Future[Maintenance] | None = None
        self._stopping = threading.Event()
        #: Told (text, since) when a commit starts waiting (a lock, a full disk) and "ok" after.
        self.on_state: Callable[[str, float], None] | None = None

    def recover(self) -> int:
        """Bring SQLite level with the mirror after a crash. Returns the events replayed.

        Also finishes spool files whose events were committed before the crash but whose
        files were not yet deleted, so that they are not ingested twice.
        """
        self.mirror.repair_torn_tail()
        replayed = self.load(self.mirror.records_after(schema.max_eid(self.db)))
        self.newest = max(self.newest, schema.max_eid(self.db))
        done = [name for (name,) in self.db.execute("SELECT name FROM spool_done")]
        if done:
            self._remove_spooled(done)
        return replayed

    def _remove_spooled(self, names: list[str]) -> None:
        """Delete committed spool files, then forget them (a crash in between is harmless)."""
        if self.spool_dir is not None:
            for name in names:
                try:
                    os.unlink(self.spool_dir / name)
                except FileNotFoundError:
                    pass
        self.db.execute("DELETE FROM spool_done WHERE name IN (SELECT value FROM json_each(?))", (json.dumps(names),))

    def load(self, records: Iterable[MirrorLine], chunk: int = 20_000) -> int:
        """Insert mirror records (recovery, rebuild) in large transactions. Not mirrored again."""
        total = 0
        rows: list[tuple] = []
        for rec in records:
            rows.append(rec.row())
            if len(rows) >= chunk:
                total += self._load_chunk(rows)
                rows = []
        if rows:
            total += self._load_chunk(rows)
        return total

    def _load_chunk(self, rows: list[tuple]) -> int:
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            before = db.total_changes
            db.executemany(schema.INSERT_EVENT, rows)
            stored = db.total_changes - before
            db.execute(schema.TYPES_FROM_RANGE, (min(r[EID] for r in rows), max(r[EID] for r in rows)))
            self._new_views()
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return stored

    @property
    def behind(self) -> int:
        """Eids (not events) between the summaries' mark and the newest event: 0 when level."""
        return max(0, self.newest - self.summarized)

    def summarize_step(self, limit: int = SUMMARY_STEP) -> None:
        """Add up to ``limit`` events not yet summarized to the dashboard's summaries, in a
        transaction of their own (``schema.summarize_upto``). Off the ingest path: the serve loop
        calls it when no batch is waiting, or when the summaries fall ``SUMMARY_BEHIND`` behind.
        A failure (a lock, a full disk) is logged and left for the next call."""
        db = self.db
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                mark = schema.summarize_upto(db, self.newest, limit)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        except sqlite3.Error as e:
            now = time.monotonic()
            if now - self._summary_logged >= 60:
                self._summary_logged = now
                log.warning("the dashboard's summaries could not catch up now (will retry): %s", e)
            time.sleep(0.05)  # a lock or a full disk: do not spin; batches waiting are read next
            return
        self.summarized = mark

    def summarize_all(self) -> None:
        """Catch the summaries up with every stored event (after a rebuild or a recovery)."""
        self.newest = max(self.newest, schema.max_eid(self.db))
        while self.behind:
            before = self.summarized
            self.summarize_step()
            if self.summarized == before:
                return

    def commit(self, batches: Sequence[wire.Batch]) -> list[wire.Done]:
        """Store several ``batch`` frames in one transaction; return one ``done`` reply each.

        A lock held by another process or a full disk is waited out: the transaction is rolled
        back (and the mirror cut back to where it was), then retried with backoff, for as long
        as it takes; ``on_state`` hears what the writer is waiting for. Meanwhile the daemon's
        pipeline fills up to its bound and reading pauses. Other errors are fatal.
        """
        mirrored = False
        delay = 0.01
        retries = 0
        since: float | None = None
        logged = 0.0
        while True:
            try:
                replies = self._commit_once(batches, mirrored_already=mirrored)
            except _MirroredThenFailed as e:
                mirrored = True
                err: Exception = e.cause
            except (sqlite3.OperationalError, OSError) as e:
                err = e
            else:
                if since is not None:
                    log.warning("committed after %.1f s and %d retries", time.time() - since, retries)
                    self._report("ok", time.time())
                return replies
            waiting = _waiting_for(err)
            if waiting is None:
                raise StoreError(f"cannot write the database or the mirror: {err}") from None
            now = time.time()
            if since is None:
                since = now
            retries += 1
            state = f"{waiting} since {time.strftime('%H:%M:%S', time.localtime(since))}, {retries} retries"
            self._report(state, since)
            if now - logged >= 10.0:
                logged = now
                log.warning("%s (%s); retrying", state, err)
            time.sleep(delay)
            delay = min(delay * 2, MAX_BACKOFF)

    def _report(self, state: str, since: float) -> None:
        if self.on_state is not None:
            self.on_state(state, since)

    def _commit_once(self, batches: Sequence[wire.Batch], *, mirrored_already: bool) -> list[wire.Done]:
        """One attempt: insert every batch, write the mirror, commit, forget spool files."""
        db = self.db
        early = None if mirrored_already else self._mirror_early(batches)
        txn = _Transaction()
        try:
            # Inside the try: a lock here must still wait for (and account for) the early mirror write.
            db.execute("BEGIN IMMEDIATE")
            for batch in batches:
                self._insert(batch, txn, mirror=early is None)
            self._account(txn)
        except BaseException as e:
            _rollback(db)
            if early is not None and early.exception() is None and isinstance(e, sqlite3.OperationalError):
                raise _MirroredThenFailed(e) from None  # a retry must not mirror the batch again
            raise
        if not mirrored_already:
            self._write_mirror(txn.mirror, early)
        try:
            db.execute("COMMIT")
        except sqlite3.OperationalError as e:
            _rollback(db)
            raise _MirroredThenFailed(e) from None
        if txn.spooled:
            try:
                self._remove_spooled(txn.spooled)
            except sqlite3.Error as e:  # committed already: never retry the batch for this
                log.warning("spool files committed; forgetting them failed (%s), done at the next start", e)
        return txn.replies

    def _mirror_early(self, batches: Sequence[wire.Batch]) -> Future[None] | None:
        """Without client ids there are no duplicates: the mirror's part is known before the
        inserts. Written meanwhile in the mirror thread (both release the GIL); the commit
        still waits for it."""
        if any(b.with_id for b in batches):
            return None
        return self._io.submit(self.mirror.write, b"".join(line for b in batches for line in b.mirror_lines))

    def _insert(self, batch: wire.Batch, txn: _Transaction, *, mirror: bool) -> None:
        """One batch into the open transaction; ``mirror``: collect its mirror lines for
        writing after the inserts (the lines of duplicates are always left out)."""
        db = self.db
        rows = batch.rows
        if batch.counts:
            for name, n in batch.counts.items():
                txn.count(name, n)
        dups = schema.insert_events(db, rows, batch.with_id) if rows else []
        if txn.types is not None:
            if dups or batch.types is None:
                txn.types = None  # count what was really stored, in _account
            else:
                txn.types.extend(batch.types)
        if dups:
            skip = {i for i, _eid in dups}
            txn.mirror.extend(line for i, line in enumerate(batch.mirror_lines) if i not in skip)
            txn.count("duplicate", len(dups))
        elif mirror:
            txn.mirror.extend(batch.mirror_lines)
        if batch.rejects:
            # Counted as recorded: a re-imported file's rejected lines add nothing, counters neither.
            for r in schema.insert_rejected(db, batch.rejects):
                txn.count("rejected." + r[REJECTED_REASON], 1)
            txn.rejected = True
        if batch.spool_names:
            db.executemany("INSERT OR IGNORE INTO spool_done (name) VALUES (?)", [(n,) for n in batch.spool_names])
            txn.spooled.extend(batch.spool_names)
        if rows:
            txn.span(rows[0][EID], rows[-1][EID])
        stored = len(rows) - len(dups)
        txn.count("committed", stored)
        txn.replies.append(wire.Done(batch.seq, stored, dups))

    def _account(self, txn: _Transaction) -> None:
        """Per-type counts, views for new types, counters: in the batches' transaction."""
        db = self.db
        if txn.lo is not None:
            if txn.types is not None:
                db.executemany(schema.ADD_TYPE_COUNTS, txn.types)
            else:
                db.execute(schema.TYPES_FROM_RANGE, (txn.lo, txn.hi))
            self._new_views()
            # Before the COMMIT, but commit() retries until it succeeds (or the process ends).
            self.newest = max(self.newest, txn.hi)
        schema.bump_counters(db, txn.counts)
        if txn.rejected:
            schema.trim_rejected(db)  # a flood of bad lines must not fill the disk

    def _write_mirror(self, lines: list[bytes], early: Future[None] | None) -> None:
        """The mirror before the commit, so it always holds at least what SQLite holds."""
        try:
            if early is not None:
                early.result()
            else:
                self.mirror.write(b"".join(lines))
        except OSError:
            _rollback(self.db)
            raise

    def retain(self, policy: wire.Policy, *, upkeep: bool = False) -> retention.StepResult:
        """One retention step (see ``retention``); with ``upkeep`` (a new ``retain`` frame) also
        starts mirror upkeep in its thread, unless one is still running.

        A busy database skips the step (``more`` stays true): the next one tries again."""
        if upkeep and policy.mirror_rules and (self._upkeep_job is None or self._upkeep_job.done()):
            self._upkeep_job = self._upkeep.submit(
                self.mirror.maintain,
                compress=policy.mirror_compress,
                max_age=policy.mirror_max_age,
                max_size=policy.mirror_max_size,
                stop=self._stopping,
            )
            self._upkeep_job.add_done_callback(_log_upkeep)
        if not policy.db_rules:
            return retention.StepResult()
        try:
            result = retention.step(self.db, policy)
        except sqlite3.OperationalError as e:
            if _waiting_for(e) is None:
                raise StoreError(f"retention cannot write the database: {e}") from None
            log.debug("retention step skipped, database busy: %s", e)
            return retention.StepResult(more=True)
        if result.unforwarded:
            log.warning(
                "retention.max_size deleted %d events that were not forwarded to PostgreSQL yet (forwarding is "
                "behind: see `hookd status`); they are counted in %s",
                result.unforwarded,
                retention.UNFORWARDED,
            )
        return result

    def _new_views(self) -> None:
        if len(self.types) == self.db.execute("SELECT count(*) FROM event_types").fetchone()[0]:
            return
        for etype in schema.known_types(self.db) - self.types:
            if not schema.create_view(self.db, etype, self.columns.get(etype)):
                log.warning("type %r gets no view: SQLite reserves names starting with sqlite_", etype)
            self.types.add(etype)

    def set_views(self, columns: dict[str, dict[str, str]]) -> None:
        """Configured view columns (``[types.NAME] columns``): recreate the views whose columns
        changed, and create views for configured types not seen yet."""
        changed = {t for t in set(columns) | set(self.columns) if columns.get(t) != self.columns.get(t)}
        if not changed:
            return
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            for etype in sorted(changed):
                schema.create_view(db, etype, columns.get(etype), replace=True)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self.columns = dict(columns)
        log.info("views with configured columns: %s", ", ".join(sorted(changed)))

    def close(self) -> None:
        self._stopping.set()  # a compression in progress stops; its plain file stays
        self._upkeep.shutdown()
        try:
            self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.OperationalError as e:
            log.warning("final WAL checkpoint skipped: %s", e)
        self.db.close()
        self._io.shutdown()
        self.mirror.close()
        os.close(self._lock_fd)


def _exclusive(path: Path) -> int:
    """One writer per database: after a daemon is killed, its writer may still be committing
    what it had received; the next writer waits for it instead of racing it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        log.warning("another writer still holds %s; waiting for it to finish", path)
        fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def _log_upkeep(job: Future[Maintenance]) -> None:
    if job.cancelled():
        return
    e = job.exception()
    if e is not None:
        log.error("mirror upkeep failed (it is tried again at the next retention run): %s", e)
        return
    m = job.result()
    if m.compressed or m.deleted:
        log.info("mirror: compressed %d file(s), deleted %d (%d bytes)", len(m.compressed), len(m.deleted), m.freed)


class _Transaction:
    """What the batches of one transaction add up to."""

    def __init__(self) -> None:
        self.replies: list[wire.Done] = []
        self.mirror: list[bytes] = []  # lines to mirror (unless written early)
        self.spooled: list[str] = []
        self.counts: dict[str, int] = {}
        self.rejected = False  # rows were added to ``rejected``
        #: The batches' own per-type counts; None once one lacks them or had duplicates.
        self.types: list[tuple[str, int, float, float]] | None = []
        self.lo: int | None = None  # eid range of the rows
        self.hi: int | None = None

    def count(self, name: str, n: int) -> None:
        self.counts[name] = schema.merge_counter(name, self.counts.get(name), n)

    def span(self, first: int, last: int) -> None:
        self.lo = first if self.lo is None else min(self.lo, first)
        self.hi = last if self.hi is None else max(self.hi, last)


class _MirroredThenFailed(Exception):
    def __init__(self, cause: sqlite3.OperationalError) -> None:
        self.cause = cause


def _rollback(db: Any) -> None:
    """Roll back if a transaction is open; SQLite may already have rolled back (a full disk)."""
    with contextlib.suppress(sqlite3.Error):
        db.execute("ROLLBACK")


#: errnos of a write that may succeed later, once space is freed.
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def _waiting_for(err: Exception) -> str | None:
    """What a failed commit waits for, or None if retrying cannot help."""
    if isinstance(err, OSError):
        return "waiting for disk space (mirror)" if err.errno in _NO_SPACE else None
    code = getattr(err, "sqlite_errorcode", None)
    primary = code & 0xFF if isinstance(code, int) else None  # extended codes keep it in the low byte
    if primary in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
        return "waiting for a database lock"
    if primary == sqlite3.SQLITE_FULL:
        return "waiting for disk space (database)"
    return None


_decode = msgspec.msgpack.Decoder(wire.ToWriter).decode


class FrameReader:
    """Reads length-prefixed frames from a pipe, several at once when they are waiting."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buf = bytearray()
        self.eof = False
        # One reused read buffer: os.read(fd, 1 MiB) would allocate (mmap) a fresh 1 MiB object
        # for every read of a pipe that holds 64 KiB to 1 MiB.
        self._chunk = bytearray(wire.PIPE_SIZE)
        self._view = memoryview(self._chunk)

    def _fill(self) -> None:
        n = os.readv(self.fd, [self._chunk])
        if n:
            self.buf += self._view[:n]
        else:
            self.eof = True

    def _parse(self, out: list[wire.ToWriter], limit: int) -> None:
        buf = self.buf
        pos = 0
        with memoryview(buf) as view:  # decode in place: no copy of each frame
            while len(out) < limit and len(buf) - pos >= 4:
                (n,) = wire.HEADER.unpack_from(buf, pos)
                if len(buf) - pos - 4 < n:
                    break
                out.append(_decode(view[pos + 4 : pos + 4 + n]))
                pos += 4 + n
        del buf[:pos]

    def read(self, limit: int = MAX_COALESCE, block: bool = True) -> list[wire.ToWriter]:
        """Block for at least one frame (or EOF), then take whatever else is already waiting.
        With ``block=False``, only what is waiting (possibly nothing)."""
        out: list[wire.ToWriter] = []
        while block and not out and not self.eof:
            self._parse(out, limit)
            if not out:
                self._fill()
        while len(out) < limit and not self.eof and select.select([self.fd], [], [], 0)[0]:
            self._fill()
            self._parse(out, limit)
        self._parse(out, limit)
        return out


class Replies:
    """The writer's answers, on stdout. A daemon killed (kill -9) leaves this pipe without a
    reader: the writer then stops answering and logs one line, instead of a traceback, and
    goes on committing what the daemon had sent (its input pipe ends once that is read). What
    it committed stays; what reached only the mirror is replayed at the next start."""

    def __init__(self, fd: int = 1) -> None:
        self.fd = fd
        #: The daemon is gone: nothing more is sent.
        self.gone = False

    def send(self, message: wire.FromWriter) -> None:
        if self.gone:
            return
        data = memoryview(wire.pack(message))
        try:
            while data:
                n = os.write(self.fd, data)
                data = data[n:]
        except BrokenPipeError:
            self.gone = True
            log.warning("the daemon is gone (its reply pipe closed): committing what it had sent, then exiting")


def serve(writer: Writer, reader: FrameReader, replies: Replies) -> None:
    policy: wire.Policy | None = None  # set while retention steps remain to be done
    while True:
        frames = reader.read(block=policy is None and not writer.behind)
        batches: list[wire.Batch] = []
        fresh: wire.Policy | None = None
        close = reader.eof
        for f in frames:  # views first: the batches read with them may need them
            if isinstance(f, wire.Batch):
                batches.append(f)
            elif isinstance(f, wire.Views):
                try:
                    writer.set_views(f.columns)
                except (HookdError, sqlite3.Error) as e:
                    log.error("views not changed: %s", e)
            elif isinstance(f, wire.Retain):
                fresh = f.policy
            else:
                close = True
        if batches:
            for reply in writer.commit(batches):
                replies.send(reply)
        if close:
            writer.summarize_all()  # at most about SUMMARY_BEHIND of events: a moment
            return
        if writer.behind and (not frames or writer.behind >= SUMMARY_BEHIND):
            writer.summarize_step()  # idle, or too far behind: the dashboard's summaries
        if fresh is not None:
            policy = fresh
        if policy is not None:
            # One short step between batches, so ingestion never waits for more than one.
            r = writer.retain(policy, upkeep=fresh is not None)
            if r.age or r.size or not r.more:
                replies.send(wire.Retained(r.age, r.size, r.more))
            if not r.more:
                policy = None
            elif not (r.age or r.size):
                time.sleep(0.05)  # busy: do not spin; batches waiting meanwhile are read next


def main(argv: list[str] | None = None) -> int:
    os.umask(0o077)  # everything this process creates is the user's alone
    # The daemon owns our lifetime; a Ctrl-C at a terminal reaches the whole process group.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    p = argparse.ArgumentParser(prog="hookd-writer", description="hookd's writer process (internal)")
    p.add_argument("--db", required=True, type=Path)
    p.add_argument("--mirror-dir", required=True, type=Path)
    p.add_argument("--spool-dir", type=Path)
    p.add_argument("--synchronous", default="normal", choices=sorted(schema.SYNCHRONOUS))
    p.add_argument("--log-level", default="INFO")
    args = p.parse_args(argv)
    logging.basicConfig(level=args.log_level, stream=sys.stderr, format="hookd[writer]: %(levelname)s: %(message)s")
    replies = Replies()
    try:
        existed = args.db.exists()
        writer = Writer(args.db, args.mirror_dir, spool_dir=args.spool_dir, synchronous=args.synchronous)
        replayed = writer.recover()
        if replayed and not existed:
            log.warning(
                "the database %s was missing: created it anew and restored %d events from the mirror in %s "
                "(rejected lines and counters from before are not in the mirror)",
                args.db,
                replayed,
                args.mirror_dir,
            )
        elif replayed:
            log.warning("replayed %d events from the mirror that had not reached the database", replayed)
        replies.send(wire.Ready(schema.max_eid(writer.db), replayed))
    except sqlite3.DatabaseError as e:
        replies.send(
            wire.Fatal(
                f"database {args.db} is unreadable ({e}); move it aside, or run `hookd rebuild` "
                "(with the daemon stopped) to recreate it from the mirror"
            )
        )
        return 1
    except (HookdError, OSError, sqlite3.Error) as e:
        replies.send(wire.Fatal(str(e)))
        return 1
    writer.on_state = lambda state, since: replies.send(wire.State(state, since))
    try:
        serve(writer, FrameReader(0), replies)
    except (HookdError, OSError, sqlite3.Error) as e:
        log.error("%s", e)
        replies.send(wire.Fatal(str(e)))
        return 1
    finally:
        writer.close()
    return 0
