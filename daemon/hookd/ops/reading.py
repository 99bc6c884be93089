"""``hookd status``, ``hookd tail`` and ``hookd query``: answers from the daemon and the database.

The database is opened read-only (``mode=ro`` and ``PRAGMA query_only``), so these commands
never take the writer's lock; the daemon is asked over its socket (``!status``, ``!follow``,
see control.py). Everything works with the daemon down, from the database alone.
"""

from __future__ import annotations

import json
import socket
import sqlite3
from pathlib import Path
from typing import Any

from hookd import records
from hookd.errors import DaemonDown, StoreError
from hookd.paths import control_path, socket_path_fits

EVENT_COLUMNS = ", ".join(records.BASE_COLUMNS)


def open_readonly(db: Path) -> sqlite3.Connection:
    if not db.exists():
        raise StoreError(f"no database at {db} yet: start the daemon (`hookd run`) or check --db/HOOKD_DB")
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5.0)
        conn.execute("PRAGMA query_only = ON")
        conn.execute("SELECT 1 FROM events LIMIT 1")
    except sqlite3.DatabaseError as e:
        raise StoreError(f"cannot read {db}: {e}; see `hookd rebuild --help`") from None
    return conn


def ask(sock_path: Path, command: str, timeout: float | None = 3.0) -> socket.socket:
    """Connect and send a control command; the caller reads the answer.

    The daemon's control socket (``<socket>.ctl``) is asked first: it answers even while the
    event socket is paused by backpressure. Where there is none (a daemon not started yet under
    socket activation, which the event socket then starts, or a control path too long to bind),
    the event socket is asked.
    """
    ctl = control_path(sock_path)
    # A control path over the AF_UNIX limit was never bound (the daemon logged that it runs
    # without one): ask on the event socket instead of failing as if no daemon ran.
    if socket_path_fits(ctl):
        try:
            return _send_command(ctl, command, timeout)
        except (FileNotFoundError, ConnectionRefusedError):
            pass
        except OSError as e:
            raise DaemonDown(f"no daemon answers at {ctl} ({e.strerror or e})") from None
    try:
        return _send_command(sock_path, command, timeout)
    except OSError as e:
        raise DaemonDown(f"no daemon answers at {sock_path} ({e.strerror or e})") from None


def _send_command(path: Path, command: str, timeout: float | None) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.settimeout(timeout)
        s.connect(str(path))
        s.sendall(b"!" + command.encode() + b"\n")
    except BaseException:
        s.close()
        raise
    return s


def daemon_status(sock_path: Path) -> dict[str, Any] | None:
    try:
        s = ask(sock_path, "status")
    except DaemonDown:
        return None
    with s, s.makefile("rb") as f:
        try:
            line = f.readline(1 << 20)
        except OSError:
            return None
    try:
        obj = json.loads(line)
    except ValueError:
        return None
    return obj if isinstance(obj, dict) and obj.get("ok") else None


def select_events(
    conn: sqlite3.Connection,
    *,
    etype: str | None = None,
    session: str | None = None,
    since: float | None = None,
    after: int | None = None,
    upto: int | None = None,
    limit: int | None = None,
) -> list[tuple]:
    given = [
        (cond, value)
        for cond, value in (
            ("type = ?", etype),
            ("session = ?", session),
            ("ts >= ?", since),
            ("eid > ?", after),
            ("eid <= ?", upto),
        )
        if value is not None
    ]
    where = [cond for cond, _ in given]
    params: list[Any] = [value for _, value in given]
    sql = f"SELECT {EVENT_COLUMNS} FROM events"
    if where:
        sql += " WHERE " + " AND ".join(where)
    if limit is not None:
        rows = conn.execute(sql + " ORDER BY eid DESC LIMIT ?", (*params, limit)).fetchall()
        rows.reverse()
        return rows
    return conn.execute(sql + " ORDER BY eid", params).fetchall()


def event_json(row: tuple) -> dict[str, Any]:
    eid, etype, ts, session, cid, recv_ts, pid, uid, data = row
    return {
        "eid": eid,
        "type": etype,
        "ts": ts,
        "session": session,
        "id": cid,
        "recv_ts": recv_ts,
        "pid": pid,
        "uid": uid,
        "data": json.loads(data),
    }
