"""The PostgreSQL side of forwarding (psycopg 3): connect, migrate, and commit batches.

A batch is one transaction: lock this host's cursor row, COPY the rows into a temporary
staging table, ``INSERT … SELECT … ON CONFLICT (host, eid) DO NOTHING`` into ``events``, make
the views of types seen for the first time, and move the cursor, then COMMIT. The cursor and
the events it covers are committed together or not at all, so after any crash (of this
process, of the daemon, of PostgreSQL, of the network in the middle of COMMIT) the cursor read
back from PostgreSQL says exactly what is there; and the primary key makes a second copy of an
event impossible even if two forwarders of one host ever ran at once.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import psycopg

from hookd.forwarder import pg_schema
from hookd.forwarding import ForwardConfig

log = logging.getLogger("hookd.forward")

#: How long a connection attempt may take, and TCP keepalives so that a dead peer is noticed
#: instead of waited on for ever (the forwarder's process is the only thing that would wait).
CONNECT_OPTIONS: Final = {
    "connect_timeout": 10,
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
    "application_name": "hookd-forward",
}
_STAGING = "CREATE TEMP TABLE hookd_staging (LIKE events INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
_COPY = f"COPY hookd_staging ({', '.join(pg_schema.COLUMNS)}) FROM STDIN"
_MOVE = "INSERT INTO events SELECT * FROM hookd_staging ON CONFLICT (host, eid) DO NOTHING"


class ForwardError(Exception):
    """A problem the forwarder reports as its state and retries (or waits on the user for)."""


class CursorMoved(Exception):
    """PostgreSQL's cursor for this host is not where this forwarder thought: read it again."""

    def __init__(self, last_eid: int) -> None:
        super().__init__(last_eid)
        self.last_eid = last_eid


def read_password(path: str) -> str:
    """forward.password_file: its first line. The file must be yours and private."""
    try:
        st = os.stat(path)
        text = Path(path).read_text()
    except OSError as e:
        raise ForwardError(f"forward.password_file {path}: cannot read it ({e.strerror})") from None
    if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid():
        raise ForwardError(f"forward.password_file {path} must be a regular file of yours")
    if st.st_mode & 0o077:
        raise ForwardError(f"forward.password_file {path} has mode {st.st_mode & 0o777:04o}: chmod 600 it")
    return text.splitlines()[0] if text else ""


class Target:
    """One connection to PostgreSQL, migrated, with this host's cursor."""

    def __init__(self, conn: psycopg.Connection[Any], host: str) -> None:
        self.conn = conn
        self.host = host
        self.last_eid = 0
        self.types: set[str] = set()

    @classmethod
    def connect(cls, cfg: ForwardConfig) -> Target:
        """Connect, migrate the schema if need be, read this host's cursor."""
        extra: dict[str, Any] = dict(CONNECT_OPTIONS)
        if cfg.password_file:
            extra["password"] = read_password(cfg.password_file)
        try:
            conn = psycopg.connect(cfg.url, autocommit=True, **extra)
        except psycopg.Error as e:
            raise ForwardError(f"cannot connect to PostgreSQL: {_one_line(e)}") from None
        target = cls(conn, cfg.host)
        try:
            target._prepare()
        except BaseException:
            conn.close()
            raise
        return target

    def _prepare(self) -> None:
        migrate(self.conn)
        with self.conn.transaction():
            self.conn.execute(
                "INSERT INTO hookd_forward_cursor (host) VALUES (%s) ON CONFLICT (host) DO NOTHING", (self.host,)
            )
        row = self.conn.execute("SELECT last_eid FROM hookd_forward_cursor WHERE host = %s", (self.host,)).fetchone()
        self.last_eid = row[0] if row else 0
        self.types = {t for (t,) in self.conn.execute("SELECT type FROM hookd_types")}
        self.conn.execute(_STAGING)

    def send(self, rows: Sequence[Sequence[Any]]) -> int:
        """Commit ``rows`` (events rows in eid order, all above ``last_eid``) in one transaction;
        returns how many were new there. When PostgreSQL's cursor is not ``last_eid``, nothing is
        sent and ``last_eid`` becomes PostgreSQL's."""
        try:
            return self._send(rows)
        except CursorMoved as e:  # rolled back: read from there (a restored database, or a second forwarder)
            log.warning(
                "PostgreSQL's cursor of host %s is at eid %d, not %d: going on from there",
                self.host,
                e.last_eid,
                self.last_eid,
            )
            self.last_eid = e.last_eid
            return 0

    def _send(self, rows: Sequence[Sequence[Any]]) -> int:
        host = self.host
        new_types = sorted({r[1] for r in rows} - self.types)
        with self.conn.transaction(), self.conn.cursor() as cur:
            (pg_last,) = cur.execute(
                "SELECT last_eid FROM hookd_forward_cursor WHERE host = %s FOR UPDATE", (host,)
            ).fetchone()
            if pg_last != self.last_eid:
                raise CursorMoved(pg_last)
            with cur.copy(_COPY) as copy:
                for r in rows:
                    copy.write_row((host, *r))
            cur.execute(_MOVE)
            stored = cur.rowcount
            last = rows[-1][0]
            cur.execute(
                "UPDATE hookd_forward_cursor SET last_eid = %s, events = events + %s, updated_at = now() "
                "WHERE host = %s",
                (last, stored, host),
            )
            made = self._make_views(cur, new_types)
        self.last_eid = last
        self.types.update(made)
        return stored

    def _make_views(self, cur: psycopg.Cursor[Any], new_types: list[str]) -> list[str]:
        """The ``<type>_events`` view of each type not seen before, in the batch's transaction.
        The row in ``hookd_types`` decides who makes it: a second forwarder waits on that row
        and then finds it there."""
        for etype in new_types:
            cur.execute(
                "INSERT INTO hookd_types (type, first_host) VALUES (%s, %s) ON CONFLICT (type) DO NOTHING",
                (etype, self.host),
            )
            if cur.rowcount:
                statement = pg_schema.type_view(etype)
                if statement is None:
                    log.warning("type %s: its view name is over PostgreSQL's 63 bytes; no %s_events view", etype, etype)
                else:
                    cur.execute(statement)
        return new_types

    def close(self) -> None:
        try:
            self.conn.close()
        except psycopg.Error:
            pass


def migrate(conn: psycopg.Connection[Any]) -> int:
    """Bring the schema to ``pg_schema.SCHEMA_VERSION`` (one transaction per migration, under an
    advisory lock); returns the version found there before."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (pg_schema.LOCK_KEY,))
        conn.execute(pg_schema.VERSION_TABLE)
        done = {v for (v,) in conn.execute("SELECT version FROM hookd_schema")}
        if not done and conn.execute("SELECT to_regclass('events')").fetchone()[0] is not None:
            raise ForwardError(
                "PostgreSQL already has a table `events` that hookd did not create: give hookd a database or "
                "a schema of its own (e.g. ?options=-csearch_path%3Dhookd in forward.url; docs/operations.md)"
            )
        for version, name, script in pg_schema.MIGRATIONS:
            if version in done:
                continue
            for statement in pg_schema.statements(script):
                conn.execute(statement)
            conn.execute("INSERT INTO hookd_schema (version, name) VALUES (%s, %s)", (version, name))
            log.info("PostgreSQL schema: migration %d (%s) applied", version, name)
    return max(done, default=0)


def _one_line(e: BaseException) -> str:
    """psycopg's message on one line (libpq's run over several)."""
    return " ".join(str(e).split())
