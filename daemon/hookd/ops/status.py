"""``hookd status``: the daemon's answer plus read-only reads of the database."""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TextIO

from hookd import forwarding, spool
from hookd.ops.reading import daemon_status, open_readonly
from hookd.ops.show import ago, local_time
from hookd.paths import daemon_running
from hookd.settings import Settings

#: Every state of a type, problems first: the order of the table and of ``summary``.
STATES: Final = ("never", "stale", "future", "live")
#: How far ahead of this clock an event's ts may be and still count as now (a client's clock a
#: little ahead); beyond it the type is ``future``: its staleness cannot be judged.
FUTURE_SLACK: Final = 60.0
#: ``hookd status`` counts lost tool calls that started within this many seconds (a week).
LOST_WINDOW = 7 * 86400
#: At most this many sessions are listed by name (all are counted).
LOST_SESSIONS_SHOWN = 10
#: ``hookd status --check`` reports events dropped while the spool was full for this long
#: after the last one (a day).
DROPPED_RECENT = 86400


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
        "truncated": 0,
        "rejected_by_reason": {},
        "connections_closed": {},
        "retention_deleted": 0,
        "spool_waiting": spool.waiting(paths.spool_dir),
        "spool_bytes": spool.usage(paths.spool_dir),
        "spool_max_size": settings.spool_max_size,
        "spool_dropped": None,
        "db_bytes": None,
        "types": {},
        "lost_tool_calls": None,
        "forward": None,
    }
    seen: dict[str, TypeSeen] = {}
    if paths.db.exists():
        with contextlib.closing(open_readonly(paths.db)) as conn:
            out.update(_totals(conn))
            out["forward"] = forward_status(settings, conn, now)
            seen = _types_seen(conn, now)
            out["lost_tool_calls"] = lost_tool_calls(conn, now - LOST_WINDOW)
            out["spool_dropped"] = spool_dropped(conn, paths.spool_dir)
    else:
        out["spool_dropped"] = spool_dropped(None, paths.spool_dir)
    types = _type_states(settings, seen, now)
    out["types"] = types
    out["summary"] = {
        s: sum(1 for t in types.values() if t["state"] == s) for s in ("live", "stale", "never", "future")
    }
    out["problems"] = problems(out, now)
    return out


def spool_dropped(conn: sqlite3.Connection | None, directory: Path) -> dict[str, Any] | None:
    """Events clients dropped while the spool was full: the totals the daemon has recorded
    (``counters``) plus the counters still waiting in the spool, which the daemon collects
    once it has read the spool. ``{"events", "first", "last"}`` (epoch seconds), or None."""
    recorded: dict[str, int] = {}
    done: set[str] = set()
    if conn is not None:
        name = spool.DROPPED_COUNTER
        recorded = dict(conn.execute("SELECT name, value FROM counters WHERE name LIKE ? || '%'", (name,)))
        done = {n for (n,) in conn.execute("SELECT name FROM spool_done")}
    waiting = spool.pending_drops(directory, done)
    events = recorded.get(spool.DROPPED_COUNTER, 0) + sum(d.events for d in waiting)
    if not events:
        return None
    firsts = [t for t in (recorded.get(spool.DROPPED_COUNTER + ".first"), *(d.first for d in waiting)) if t]
    lasts = [t for t in (recorded.get(spool.DROPPED_COUNTER + ".last"), *(d.last for d in waiting)) if t]
    return {"events": events, "first": min(firsts, default=None), "last": max(lasts, default=None)}


def forward_status(settings: Settings, conn: sqlite3.Connection | None, now: float) -> dict[str, Any] | None:
    """Forwarding to PostgreSQL (None when ``forward.url`` is not set): the forwarder's state
    file, and the lag counted in the database, in events and in seconds (how long the oldest
    event not forwarded yet has waited since hookd received it)."""
    if not settings.forward_url:
        return None
    state = forwarding.current_state(settings)
    last = state.last_eid if state else 0
    lag_events, oldest = 0, None
    if conn is not None:
        lag_events = conn.execute("SELECT count(*) FROM events WHERE eid > ?", (last,)).fetchone()[0]
        row = conn.execute("SELECT recv_ts FROM events WHERE eid > ? ORDER BY eid LIMIT 1", (last,)).fetchone()
        oldest = row[0] if row else None
    return {
        "url": settings.forward_url,
        "host": forwarding.host_of(settings),
        "state_known": state is not None,
        "last_eid": last,
        "forwarded_at": state.forwarded_at if state else None,
        "lag_events": lag_events,
        "lag_seconds": max(0.0, now - oldest) if oldest is not None else 0.0,
        "error": state.error if state else None,
        "error_since": state.error_since if state else None,
        "sanitized": state.sanitized if state else 0,
        "max_lag": settings.forward_max_lag,
    }


def _forward_problem(f: dict[str, Any] | None) -> str | None:
    """``--check``: forwarding more than ``forward.max_lag`` behind."""
    if not f or f["lag_seconds"] <= f["max_lag"]:
        return None
    why = f"; last error: {f['error']}" if f["error"] else ""
    return (
        f"forward: {f['lag_events']:,} events not forwarded to PostgreSQL, the oldest for "
        f"{_duration(f['lag_seconds'])}, over forward.max_lag ({_duration(f['max_lag'])}){why}"
    )


def problems(st: dict[str, Any], now: float) -> list[str]:
    """One line per thing a monitor should hear about (``hookd status --check``): an expected
    type that is never seen, stale, or in the future; events dropped while the spool was full
    (for a day after the last one); and a daemon that is needed but absent."""
    out = []
    for name, t in sorted(st["types"].items(), key=_problems_first):
        if not t["expected"] or t["state"] == "live":
            continue
        if t["state"] == "never":
            out.append(f"{name}: never seen (expected = true in the configuration)")
        elif t["state"] == "stale":
            out.append(
                f"{name}: stale: last seen {ago(now - t['last_ts'])} ({local_time(t['last_ts'])}), "
                f"stale after {_duration(t['stale_after'])}"
            )
        else:
            out.append(
                f"{name}: its last ts is in the future ({local_time(t['last_ts'])}, {ago(now - t['last_ts'])}): "
                "a client's clock or ts unit is wrong, and whether it is live cannot be told"
            )
    dropped = st.get("spool_dropped")
    if dropped and dropped["last"] and now - dropped["last"] < DROPPED_RECENT:
        out.append(f"{_dropped_text(dropped)} (the last one {ago(now - dropped['last'])}): {_DROPPED_HELP}")
    forward = _forward_problem(st.get("forward"))
    if forward:
        out.append(forward)
    if not st["running"] and st["spool_waiting"]:
        out.append(f"the daemon is not running and {st['spool_waiting']} spool file(s) wait in {st['spool_dir']}")
    elif st["running"] and st["daemon"] is None:
        out.append("the daemon holds its lock but did not answer within 3 s (flooded or stuck? see its log)")
    return out


def _dropped_text(d: dict[str, Any]) -> str:
    since = f", since {local_time(d['first'])}" if d["first"] else ""
    return f"{d['events']:,} events dropped while the spool was full{since}"


_DROPPED_HELP = "start the daemon (`hookd run`), or raise HOOKD_SPOOL_MAX where hooks run"


def _problems_first(item: tuple[str, dict[str, Any]]) -> tuple[int, str]:
    name, t = item
    return STATES.index(t["state"]), name


def _duration(seconds: float) -> str:
    return ago(seconds).removesuffix(" ago")


@dataclass(frozen=True)
class TypeSeen:
    """One row of ``event_types``, and how many of its events are from the last hour."""

    count: int
    first_ts: float
    last_ts: float
    last_hour: int


def _totals(conn: sqlite3.Connection) -> dict[str, Any]:
    """The database's counters and size: the totals part of ``gather_status``."""
    counters = dict(conn.execute("SELECT name, value FROM counters"))
    rejected = with_prefix(counters, "rejected.")
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    return {
        "committed": counters.get("committed", 0),
        "duplicates": counters.get("duplicate", 0),
        "truncated": counters.get("truncated", 0),
        "rejected_by_reason": rejected,
        "rejected": sum(rejected.values()),
        "connections_closed": with_prefix(counters, "connections."),
        "retention_deleted": counters.get("retention.deleted", 0),
        "retention_deleted_unforwarded": counters.get("retention.deleted.unforwarded", 0),
        "db_bytes": pages * conn.execute("PRAGMA page_size").fetchone()[0],
    }


def _types_seen(conn: sqlite3.Connection, now: float) -> dict[str, TypeSeen]:
    seen = {}
    for etype, count, first_ts, last_ts in conn.execute("SELECT type, count, first_ts, last_ts FROM event_types"):
        (last_hour,) = conn.execute(
            "SELECT count(*) FROM events WHERE type = ? AND ts >= ?", (etype, now - 3600)
        ).fetchone()
        seen[etype] = TypeSeen(count, first_ts, last_ts, last_hour)
    return seen


def type_states(conn: sqlite3.Connection, settings: Settings, now: float) -> dict[str, dict[str, Any]]:
    """Per type, seen or expected: its state and figures, as ``hookd status`` shows them (the
    dashboard's Overview asks this too)."""
    return _type_states(settings, _types_seen(conn, now), now)


def _type_states(settings: Settings, seen: dict[str, TypeSeen], now: float) -> dict[str, dict[str, Any]]:
    """Per type, seen or expected: live, stale, never or future, with its figures."""
    types: dict[str, dict[str, Any]] = {}
    for etype in sorted(set(seen) | {t for t, tc in settings.types.items() if tc.expected}):
        tc = settings.types.get(etype)
        stale_after = tc.stale_after if tc and tc.stale_after is not None else settings.stale_after
        row = seen.get(etype)
        if row is None:
            state = "never"
        elif row.last_ts > now + FUTURE_SLACK:
            state = "future"  # not "0s ago, live": one event stamped ahead would hide staleness for good
        elif now - row.last_ts <= stale_after:
            state = "live"
        else:
            state = "stale"
        types[etype] = {
            "state": state,
            "count": row.count if row else 0,
            "first_ts": row.first_ts if row else None,
            "last_ts": row.last_ts if row else None,
            "last_hour": row.last_hour if row else 0,
            "expected": bool(tc and tc.expected),
            "stale_after": stale_after,
        }
    return types


def lost_tool_calls(conn: sqlite3.Connection, since: float) -> dict[str, Any] | None:
    """Tool calls with a PreToolUse and no closing event in sessions that have ended (the
    ``lost_tool_calls`` view), started since ``since``: ``{"since", "total", "sessions":
    {session: count}}``, latest ended first. None for a database older than the view."""
    try:
        rows = conn.execute(
            "SELECT session, count(*) FROM lost_tool_calls WHERE started >= ? "
            "GROUP BY session ORDER BY max(session_ended) DESC, session",
            (since,),
        ).fetchall()
    except sqlite3.OperationalError:  # no such table: the daemon has not migrated it yet
        return None
    return {"since": since, "total": sum(n for _, n in rows), "sessions": dict(rows)}


def _render_lost(lost: dict[str, Any] | None, w: Any) -> None:
    if not lost or not lost["total"]:
        return
    sessions = lost["sessions"]
    w(
        f"lost: {lost['total']:,} tool call(s) in {len(sessions)} ended session(s) of the last "
        f"{LOST_WINDOW // 86400} days have a PreToolUse and no PostToolUse, PostToolUseFailure or PermissionDenied "
        "(hooks that Claude Code did not deliver)\n"
    )
    for session, n in list(sessions.items())[:LOST_SESSIONS_SHOWN]:
        w(f"  {session}  {n:,}\n")
    if len(sessions) > LOST_SESSIONS_SHOWN:
        w(f"  ... and {len(sessions) - LOST_SESSIONS_SHOWN} more\n")
    w('  see: hookd query "SELECT * FROM lost_tool_calls ORDER BY started DESC LIMIT 20"\n')


def with_prefix(counters: dict[str, int], prefix: str) -> dict[str, int]:
    """``{"rejected.bad_ts": 3}`` with prefix ``"rejected."`` -> ``{"bad_ts": 3}``."""
    return {k.removeprefix(prefix): v for k, v in counters.items() if k.startswith(prefix)}


def _reasons(counts: dict[str, int]) -> str:
    return "; " + ", ".join(f"{k} {v:,}" for k, v in counts.items()) if counts else ""


def _count(n: int, noun: str) -> str:
    """``1 request``, ``1,200 requests``."""
    return f"{n:,} {noun}" if n == 1 else f"{n:,} {noun}s"


def _size(n: int | None) -> str:
    if n is None:
        return "unlimited"
    return f"{n / (1 << 20):,.1f} MiB" if n >= 1 << 20 else f"{n / 1024:,.0f} KiB"


def _uptime(seconds: float) -> str:
    h, rem = divmod(int(seconds), 3600)
    m, s = divmod(rem, 60)
    return f"{h}h {m:02d}m" if h else f"{m}m {s:02d}s"


def render_status(st: dict[str, Any], out: TextIO, now: float | None = None) -> None:
    now = time.time() if now is None else now
    w = out.write
    _render_daemon(st, w)
    _render_totals(st, w)
    _render_types(st, w, now)


def _render_daemon(st: dict[str, Any], w: Callable[[str], object]) -> None:
    """Is it up, where its files are, and what it did since it started."""
    d = st["daemon"]
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
    if not d:
        return
    s = d["since_start"]
    w(
        f"since start: {s['received']:,} received, {s['committed']:,} committed, {s['rejected']:,} rejected, "
        f"{s['spooled']:,} from the spool, {s['duplicates']:,} duplicates, {s.get('truncated', 0):,} cut to fit\n"
    )
    q = d["queue"]
    paused = ", reading PAUSED (writer behind)" if q["reading_paused"] else ""
    w(
        f"queue: {q['open_batch']:,} in the open batch, {q['inflight_batches']} batches "
        f"({q['inflight_events']:,} events) at the writer{paused}\n"
    )
    w(f"rate: {d['rate']['last_10s']:,.1f}/s over 10 s, {d['rate']['last_1m']:,.1f}/s over 1 min\n")
    w(f"writer: {d['writer']['state']}\n")  # e.g. "waiting for a database lock since 10:02:03, 4 retries"
    if d.get("http"):  # e.g. "http: http://127.0.0.1:8787/v1/events, 120 requests; not_found 2, refused_uid 1"
        w(f"http: {d['http']['url']}, {_count(d['http']['requests'], 'request')}{_reasons(d['http']['by_reason'])}\n")
        _render_otlp(d["http"].get("otlp") or {}, w)


#: The signals of ``daemon.http.otlp``, and what each counts besides requests and errors.
_OTLP_SIGNALS: Final = (("logs", "records"), ("metrics", "points"))


def _render_otlp(otlp: dict[str, Any], w: Callable[[str], object]) -> None:
    """The OTLP routes' counts under the ``http:`` line, a line per signal that was used, e.g.
    ``  otlp logs: 3 requests ok, 1,536 records (2 rejected); not_otlp 1, too_long 1``."""
    for signal, items in _OTLP_SIGNALS:
        c = otlp.get(signal) or {}
        if not c:
            continue
        rejected = f" ({c['rejected']:,} rejected)" if c.get("rejected") else ""
        errors = {k: v for k, v in c.items() if k not in ("requests", "rejected", items)}
        counts = f"{_count(c.get('requests', 0), 'request')} ok, {c.get(items, 0):,} {items}{rejected}"
        w(f"  otlp {signal}: {counts}{_reasons(errors)}\n")
    if otlp.get("buffered_bytes"):
        w(f"  otlp: {_size(otlp['buffered_bytes'])} of bodies held now\n")


def _render_totals(st: dict[str, Any], w: Callable[[str], object]) -> None:
    """The database's lifetime totals, drops while the spool was full, lost tool calls."""
    w(f"total: {st['committed']:,} committed, {st['rejected']:,} rejected, {st['duplicates']:,} duplicates")
    if st.get("truncated"):
        w(f", {st['truncated']:,} cut to fit the line limit")
    if st["rejected_by_reason"]:
        w(" (" + ", ".join(f"{k} {v:,}" for k, v in sorted(st["rejected_by_reason"].items())) + ")")
    w("\n")
    closed = st["connections_closed"]
    if closed or st["retention_deleted"]:
        parts = [f"{v:,} connections closed for {k}" for k, v in sorted(closed.items())]
        if st["retention_deleted"]:
            parts.append(f"{st['retention_deleted']:,} events deleted by retention")
        w("also: " + ", ".join(parts) + "\n")
    _render_forward(st.get("forward"), st.get("retention_deleted_unforwarded", 0), w)
    if st.get("spool_dropped"):
        cap = st["spool_max_size"]
        w(f"spool: {_dropped_text(st['spool_dropped'])} (cap {_size(cap)}; now {_size(st['spool_bytes'])})\n")
    _render_lost(st.get("lost_tool_calls"), w)


def _render_forward(f: dict[str, Any] | None, deleted: int, w: Callable[[str], object]) -> None:
    """Where forwarding to PostgreSQL is: ``forward: to URL as host H: ...``."""
    if not f:
        return
    w(f"forward: to {f['url']} as host {f['host']}: ")
    if f["forwarded_at"] is not None:
        w(f"eid {f['last_eid']} forwarded, the last batch {local_time(f['forwarded_at'])}; ")
    elif not f["state_known"]:
        w("nothing forwarded yet; ")
    w(f"lag {f['lag_events']:,} events, {f['lag_seconds']:,.1f} s\n")
    if f["error"]:
        w(f"  ERROR since {local_time(f['error_since'])}: {f['error']}\n")
    if f["sanitized"]:
        w(f"  {f['sanitized']:,} events had NUL characters or lone surrogates, stored with U+FFFD in PostgreSQL\n")
    if deleted:
        w(f"  {deleted:,} events were deleted by retention.max_size before they were forwarded\n")


def _render_types(st: dict[str, Any], w: Callable[[str], object], now: float) -> None:
    """One row per type, problems first (never, stale, future, then live), and the summary."""
    types = st["types"]
    if not types:
        w("\nno events stored yet\n")
        return
    width = max(12, *(len(t) for t in types))
    w(f"\n{'TYPE':<{width}}  {'STATE':<6}  {'COUNT':>10}  {'LAST SEEN':<19}  {'':<9}  {'LAST HOUR':>9}\n")
    for name, t in sorted(types.items(), key=_problems_first):
        when = ago(now - t["last_ts"]) if t["last_ts"] is not None else ""
        w(
            f"{name:<{width}}  {t['state']:<6}  {t['count']:>10,}  {local_time(t['last_ts']):<19}  {when:<9}  "
            f"{t['last_hour']:>9,}\n"
        )
    sm = st["summary"]
    future = f", {sm['future']} future (ts ahead of this clock)" if sm["future"] else ""
    w(f"\n{sm['live']} live, {sm['stale']} stale, {sm['never']} never{future}\n")


def render_problems(st: dict[str, Any], out: TextIO) -> None:
    """``hookd status --check``: one line per problem, nothing when all is well (cron mails
    only what a command prints)."""
    for line in st["problems"]:
        out.write(f"hookd: {line}\n")
