"""``hookd status``, ``hookd tail`` and ``hookd query``: answers from the daemon and the database.

The database is opened read-only (``mode=ro`` and ``PRAGMA query_only``), so these commands
never take the writer's lock; the daemon is asked over its socket (``!status``, ``!follow``,
see control.py). Everything works with the daemon down, from the database alone.
"""

from __future__ import annotations

import contextlib
import json
import socket
import sqlite3
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from . import spool, store
from .errors import HookdError, StoreError
from .framing import normalize_type, parse_ts
from .paths import control_path, daemon_running
from .settings import Settings

EVENT_COLUMNS = ", ".join(store.BASE_COLUMNS)


class DaemonDown(HookdError):
    pass


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
    socket activation, which the event socket then starts), the event socket is asked.
    """
    try:
        return _send_command(control_path(sock_path), command, timeout)
    except (FileNotFoundError, ConnectionRefusedError):
        pass
    except OSError as e:
        raise DaemonDown(f"no daemon answers at {control_path(sock_path)} ({e.strerror or e})") from None
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


# -- status ---------------------------------------------------------------------------------
def gather_status(settings: Settings, now: float | None = None) -> dict[str, Any]:
    """Everything ``hookd status --json`` prints (keys documented in docs/operations.md)."""
    now = time.time() if now is None else now
    paths = settings.paths
    daemon = daemon_status(paths.socket)
    out: dict[str, Any] = {
        # a daemon that holds its lock but did not answer in time (flooded, stuck) still runs
        "running": daemon is not None or daemon_running(paths),
        "daemon": daemon,
        "socket": str(paths.socket),
        "db": str(paths.db),
        "mirror_dir": str(paths.mirror_dir),
        "spool_dir": str(paths.spool_dir),
        "committed": 0,
        "rejected": 0,
        "duplicates": 0,
        "rejected_by_reason": {},
        "connections_closed": {},
        "retention_deleted": 0,
        "spool_waiting": spool.waiting(paths.spool_dir),
        "db_bytes": None,
        "types": {},
    }
    seen: dict[str, tuple[int, float, float]] = {}
    last_hour: dict[str, int] = {}
    if paths.db.exists():
        conn = open_readonly(paths.db)
        with contextlib.closing(conn):
            counters = dict(conn.execute("SELECT name, value FROM counters"))
            out["committed"] = counters.get("committed", 0)
            out["duplicates"] = counters.get("duplicate", 0)
            rej = _with_prefix(counters, "rejected.")
            out["rejected_by_reason"] = rej
            out["rejected"] = sum(rej.values())
            out["connections_closed"] = _with_prefix(counters, "connections.")
            out["retention_deleted"] = counters.get("retention.deleted", 0)
            for etype, count, first_ts, last_ts in conn.execute(
                "SELECT type, count, first_ts, last_ts FROM event_types"
            ):
                seen[etype] = (count, first_ts, last_ts)
                (last_hour[etype],) = conn.execute(
                    "SELECT count(*) FROM events WHERE type = ? AND ts >= ?", (etype, now - 3600)
                ).fetchone()
            page = conn.execute("PRAGMA page_count").fetchone()[0] * conn.execute("PRAGMA page_size").fetchone()[0]
            out["db_bytes"] = page
    types: dict[str, dict[str, Any]] = {}
    for etype in sorted(set(seen) | {t for t, tc in settings.types.items() if tc.expected}):
        tc = settings.types.get(etype)
        stale_after = tc.stale_after if tc and tc.stale_after is not None else settings.stale_after
        count, first_ts, last_ts = seen.get(etype, (0, None, None))
        if etype not in seen:
            state = "never"
        elif now - last_ts <= stale_after:
            state = "live"
        else:
            state = "stale"
        types[etype] = {
            "state": state,
            "count": count,
            "first_ts": first_ts,
            "last_ts": last_ts,
            "last_hour": last_hour.get(etype, 0),
            "expected": bool(tc and tc.expected),
            "stale_after": stale_after,
        }
    out["types"] = types
    out["summary"] = {s: sum(1 for t in types.values() if t["state"] == s) for s in ("live", "stale", "never")}
    return out


def _with_prefix(counters: dict[str, int], prefix: str) -> dict[str, int]:
    """``{"rejected.bad_ts": 3}`` with prefix ``"rejected."`` -> ``{"bad_ts": 3}``."""
    return {k.removeprefix(prefix): v for k, v in counters.items() if k.startswith(prefix)}


def _ago(seconds: float) -> str:
    seconds = max(0.0, seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit} ago"
    return f"{seconds:.0f}s ago"


def _time(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _uptime(seconds: float) -> str:
    h, rem = divmod(int(seconds), 3600)
    m, s = divmod(rem, 60)
    return f"{h}h {m:02d}m" if h else f"{m}m {s:02d}s"


def render_status(st: dict[str, Any], out: TextIO, now: float | None = None) -> None:
    now = time.time() if now is None else now
    d = st["daemon"]
    w = out.write
    if d:
        w(f"hookd: running (pid {d['pid']}, up {_uptime(d['uptime'])}, version {d['version']})\n")
    elif st["running"]:
        w("hookd: running, but it did not answer within 3 s (flooded or stuck? see its log)\n")
    else:
        w("hookd: NOT running (figures below are from the database)\n")
        if st["spool_waiting"]:
            w(f"  {st['spool_waiting']} spool file(s) wait in {st['spool_dir']} for the daemon\n")
        w("  start it with `hookd run` (or `systemctl --user start hookd.socket`)\n")
    w(f"socket    {st['socket']}\n")
    size = f" ({st['db_bytes'] / 1e6:.1f} MB)" if st["db_bytes"] is not None else " (not created yet)"
    w(f"database  {st['db']}{size}\n")
    w(f"mirror    {st['mirror_dir']}\n")
    if d:
        s = d["since_start"]
        w(
            f"since start: {s['received']:,} received, {s['committed']:,} committed, {s['rejected']:,} rejected, "
            f"{s['spooled']:,} from the spool, {s['duplicates']:,} duplicates\n"
        )
        q = d["queue"]
        paused = ", reading PAUSED (writer behind)" if q["reading_paused"] else ""
        w(
            f"queue: {q['open_batch']:,} in the open batch, {q['inflight_batches']} batches "
            f"({q['inflight_events']:,} events) at the writer{paused}\n"
        )
        w(f"rate: {d['rate']['last_10s']:,.1f}/s over 10 s, {d['rate']['last_1m']:,.1f}/s over 1 min\n")
        w(f"writer: {d['writer']['state']}\n")  # e.g. "waiting for a database lock since 10:02:03, 4 retries"
    w(f"total: {st['committed']:,} committed, {st['rejected']:,} rejected, {st['duplicates']:,} duplicates")
    if st["rejected_by_reason"]:
        w(" (" + ", ".join(f"{k} {v:,}" for k, v in sorted(st["rejected_by_reason"].items())) + ")")
    w("\n")
    closed = st["connections_closed"]
    if closed or st["retention_deleted"]:
        parts = [f"{v:,} connections closed for {k}" for k, v in sorted(closed.items())]
        if st["retention_deleted"]:
            parts.append(f"{st['retention_deleted']:,} events deleted by retention")
        w("also: " + ", ".join(parts) + "\n")
    types = st["types"]
    if not types:
        w("\nno events stored yet\n")
        return
    width = max(12, *(len(t) for t in types))
    w(f"\n{'TYPE':<{width}}  {'STATE':<5}  {'COUNT':>10}  {'LAST SEEN':<19}  {'':<9}  {'LAST HOUR':>9}\n")
    for name, t in types.items():
        ago = _ago(now - t["last_ts"]) if t["last_ts"] is not None else ""
        w(
            f"{name:<{width}}  {t['state']:<5}  {t['count']:>10,}  {_time(t['last_ts']):<19}  {ago:<9}  "
            f"{t['last_hour']:>9,}\n"
        )
    sm = st["summary"]
    w(f"\n{sm['live']} live, {sm['stale']} stale, {sm['never']} never\n")


# -- tail -----------------------------------------------------------------------------------
def since_value(text: str, now: float) -> float:
    """``1h``/``30m``/``2d`` ago, or a time (epoch seconds or RFC 3339)."""
    from .config import parse_duration

    try:
        return now - (parse_duration(text) or 0.0)
    except ValueError:
        pass
    try:
        return parse_ts(float(text) if text.replace(".", "", 1).isdigit() else text, now)
    except Exception:  # noqa: BLE001 - Rejection or ValueError alike
        raise HookdError(
            f"--since {text!r}: expected a duration (30s, 15m, 1h, 2d) or a time (2026-11-30T08:00:00, epoch seconds)"
        ) from None


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


def format_event(ev: dict[str, Any], as_json: bool) -> str:
    if as_json:
        return json.dumps(ev, ensure_ascii=False, separators=(",", ":"))
    t = datetime.fromtimestamp(ev["ts"], UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    session = f" [{ev['session']}]" if ev.get("session") else ""
    data = json.dumps(ev["data"], ensure_ascii=False, separators=(",", ":"))
    return f"{t} {ev['type']}{session} {data}"


def tail(settings: Settings, args: Any, out: TextIO = sys.stdout) -> int:
    now = time.time()
    etype = None
    if args.type:
        etype = normalize_type(args.type)
        if etype is None:
            raise HookdError(f"--type {args.type!r} is not a valid event type")
        etype = settings.aliases.get(etype, etype)
    since = since_value(args.since, now) if args.since else None
    limit = args.lines
    last = 0
    if settings.paths.db.exists():
        with contextlib.closing(open_readonly(settings.paths.db)) as conn:
            rows = select_events(conn, etype=etype, session=args.session, since=since, limit=limit)
            for row in rows:
                out.write(format_event(event_json(row), args.json) + "\n")
            last = rows[-1][0] if rows else (conn.execute("SELECT coalesce(max(eid), 0) FROM events").fetchone()[0])
    elif not args.follow:
        raise StoreError(f"no database at {settings.paths.db} yet: nothing has been stored")
    out.flush()
    if not args.follow:
        return 0
    for ev in follow(settings, etype, args.session, last):
        if since is not None and ev["ts"] < since:
            continue
        out.write(format_event(ev, args.json) + "\n")
        out.flush()
    return 0


def follow(settings: Settings, etype: str | None, session: str | None, last: int) -> Iterator[dict[str, Any]]:
    """Events committed after eid ``last``, forever: pushed by the daemon; the gaps (before it
    answered, after a restart or when this reader lagged) are read from the database."""
    params = json.dumps({"type": etype, "session": session})
    waiting = False
    while True:
        try:
            s = ask(settings.paths.socket, f"follow {params}", timeout=None)
        except DaemonDown as e:
            if not waiting:
                print(f"hookd: {e}; waiting for it to start", file=sys.stderr)
                waiting = True
            time.sleep(1.0)
            continue
        if waiting:
            print("hookd: following again", file=sys.stderr)
            waiting = False
        with s, s.makefile("rb") as f:
            head = f.readline()
            try:
                hello = json.loads(head) if head else {}
            except ValueError:
                hello = {}
            if not hello.get("ok"):
                if head:
                    raise HookdError(f"the daemon refused to be followed: {hello.get('detail', head)!r}")
                continue
            if hello["committed_eid"] > last and settings.paths.db.exists():
                with contextlib.closing(open_readonly(settings.paths.db)) as conn:
                    for row in select_events(
                        conn, etype=etype, session=session, after=last, upto=hello["committed_eid"]
                    ):
                        last = row[0]
                        yield event_json(row)
                last = max(last, hello["committed_eid"])
            for line in f:
                obj = json.loads(line)
                if "gap_upto" in obj:  # committed, but framed before we followed: read it
                    with contextlib.closing(open_readonly(settings.paths.db)) as conn:
                        for row in select_events(conn, etype=etype, session=session, after=last, upto=obj["gap_upto"]):
                            last = row[0]
                            yield event_json(row)
                    last = max(last, obj["gap_upto"])
                    continue
                if "eid" not in obj:  # {"ok": false, "reason": "lagging", ...}: reconnect, catch up
                    break
                if obj["eid"] <= last:
                    continue
                last = obj["eid"]
                yield obj
            else:
                print("hookd: the daemon stopped; waiting for it to start again", file=sys.stderr)
                waiting = True


# -- query ----------------------------------------------------------------------------------
def query(settings: Settings, sql: str, as_json: bool, out: TextIO = sys.stdout) -> int:
    with contextlib.closing(open_readonly(settings.paths.db)) as conn:
        try:
            cur = conn.execute(sql)
        except sqlite3.Error as e:
            hint = " (hookd query is read-only)" if "readonly" in str(e) or "query_only" in str(e) else ""
            raise HookdError(f"query failed: {e}{hint}") from None
        cols = [c[0] for c in cur.description or ()]
        rows = cur.fetchall()
    if as_json:
        for row in rows:
            out.write(json.dumps(dict(zip(cols, row, strict=True)), ensure_ascii=False) + "\n")
        return 0
    if not cols:
        return 0
    text = [[_cell(v) for v in row] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in text)) if text else len(c) for i, c in enumerate(cols)]
    widths = [min(w, 80) for w in widths]
    out.write("  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)).rstrip() + "\n")
    for r in text:
        cells = [(v if len(v) <= w else v[: w - 1] + "…").ljust(w) for v, w in zip(r, widths, strict=True)]
        out.write("  ".join(cells).rstrip() + "\n")
    out.write(f"({len(rows)} row{'s' if len(rows) != 1 else ''})\n")
    return 0


def _cell(v: Any) -> str:
    if v is None:
        return "NULL"
    if isinstance(v, bytes):
        return "x'" + v.hex() + "'"
    return str(v)
