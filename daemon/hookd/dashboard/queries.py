"""The dashboard's panels: each a few read-only queries, shaped as one JSON object.

No panel scans ``events``: they read the summaries of schema migration 7 (``event_hours``,
``session_stats``, ``event_types``) or walk an index for a bounded time range (``events_ts``,
``events_type_ts``, ``events_session_ts``, the ``tool_calls`` pairing index). Figures per
panel on 1M and 10M events: docs/performance.md. The connection they get is read-only and
time-limited (``reader.py``).
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from hookd import spool
from hookd.durations import BUCKETS_PER_DOUBLING, bucket_bounds
from hookd.ops.reading import daemon_status
from hookd.ops.status import STATES, spool_dropped, type_states, with_prefix
from hookd.ops.summary import key_values, summary
from hookd.settings import Settings

#: The time ranges a panel offers, in seconds.
RANGES: Final = {"1h": 3600, "24h": 86_400, "7d": 7 * 86_400, "30d": 30 * 86_400}
#: Events listed at most by Activity, a kind's latest events and a session's timeline.
MAX_EVENTS: Final = 500
#: An event's JSON longer than this is not parsed for its one-line summary (a tool response of
#: megabytes); its preview is cut to ``PREVIEW`` characters.
PARSE_LIMIT: Final = 256 << 10
PREVIEW: Final = 2000


class BadRequest(ValueError):
    """A panel's parameter is wrong: answered 400 with this text."""


@dataclass
class Ask:
    """One panel request: its query parameters, the settings, the time it is asked."""

    params: dict[str, str]
    settings: Settings
    now: float
    #: The dashboard server's own counters, for Health.
    server: dict[str, Any] | None = None

    def since(self, default: str) -> tuple[str, float]:
        name = self.params.get("range") or default
        if name not in RANGES:
            raise BadRequest(f"range must be one of {', '.join(RANGES)}, got {name!r}")
        return name, self.now - RANGES[name]

    def text(self, name: str) -> str | None:
        value = self.params.get(name, "").strip()
        return value or None

    def number(self, name: str) -> float | None:
        value = self.text(name)
        if value is None:
            return None
        try:
            out = float(value)
        except ValueError:
            raise BadRequest(f"{name} must be a number (epoch seconds), got {value!r}") from None
        if not math.isfinite(out):
            raise BadRequest(f"{name} must be a finite number")
        return out


Panel = Callable[[sqlite3.Connection, Ask], dict[str, Any]]


def _event(row: tuple) -> dict[str, Any]:
    """An event for the page: eid, type, ts, session, a one-line summary and a preview."""
    eid, etype, ts, session, data = row
    text = f"({len(data) >> 10} KiB event)"
    if len(data) <= PARSE_LIMIT:
        try:
            text = summary(etype, json.loads(data))
        except ValueError:
            text = data[:200]
    return {"eid": eid, "type": etype, "ts": ts, "session": session, "summary": text, "data": data[:PREVIEW]}


EVENT_COLUMNS: Final = "eid, type, ts, session, data"


# -- Overview -------------------------------------------------------------------------------
def head(conn: sqlite3.Connection, ask: Ask) -> dict[str, Any]:
    """What changed since the page last looked: the newest eid and rejected row (two lookups)."""
    eid = conn.execute("SELECT max(eid) FROM events").fetchone()[0]
    rid = conn.execute("SELECT max(rid) FROM rejected").fetchone()[0]
    return {"eid": eid or 0, "rid": rid or 0, "now": ask.now}


def hourly(conn: sqlite3.Connection, first_hour: int, last_hour: int, etype: str | None = None) -> dict[str, Any]:
    """Events per hour from ``event_hours``: ``{"x": [hour start...], "series": {type: [n...]}}``."""
    sql = "SELECT type, hour, count FROM event_hours WHERE hour BETWEEN ? AND ?"
    params: list[Any] = [first_hour, last_hour]
    if etype is not None:
        sql += " AND type = ?"
        params.append(etype)
    width = last_hour - first_hour + 1
    series: dict[str, list[int]] = {}
    for t, hour, count in conn.execute(sql, params):
        series.setdefault(t, [0] * width)[hour - first_hour] = count
    return {"x": [(first_hour + i) * 3600 for i in range(width)], "series": dict(sorted(series.items()))}


def _hours(ask: Ask, default: str) -> tuple[str, int, int]:
    name, since = ask.since(default)
    last = int(ask.now // 3600)
    return name, int(since // 3600) + 1, last


def overview(conn: sqlite3.Connection, ask: Ask) -> dict[str, Any]:
    name, first, last = _hours(ask, "24h")
    chart = hourly(conn, first, last)
    states = type_states(conn, ask.settings, ask.now)
    kinds = [
        {"type": t, **{k: v[k] for k in ("state", "count", "last_ts", "last_hour", "expected")}}
        for t, v in sorted(states.items(), key=lambda item: (STATES.index(item[1]["state"]), item[0]))
    ]
    rejected = conn.execute("SELECT coalesce(sum(value), 0) FROM counters WHERE name LIKE 'rejected.%'").fetchone()[0]
    return {
        "range": name,
        "chart": chart,
        "totals": {
            "events": sum(k["count"] for k in kinds),
            "in_range": sum(sum(v) for v in chart["series"].values()),
            "types": sum(1 for k in kinds if k["count"]),
            "sessions": conn.execute("SELECT count(*) FROM session_stats").fetchone()[0],
            "rejected": rejected,
        },
        "states": {s: sum(1 for k in kinds if k["state"] == s) for s in STATES},
        "kinds": kinds,
    }


# -- Activity -------------------------------------------------------------------------------
def activity(conn: sqlite3.Connection, ask: Ask) -> dict[str, Any]:
    """The latest events, newest first; filters: type, session, since/until (epoch s), q (text).

    The text filter reads events newest first until ``limit`` match or the query's time runs
    out: then the events found so far are given with ``partial`` and how far back it read."""
    where, params = [], []
    for cond, value in (
        ("type = ?", ask.text("type")),
        ("session = ?", ask.text("session")),
        ("ts >= ?", ask.number("since")),
        ("ts <= ?", ask.number("until")),
        ("instr(data, ?) > 0", ask.text("q")),
    ):
        if value is not None:
            where.append(cond)
            params.append(value)
    limit = int(ask.number("limit") or 200)
    if not 1 <= limit <= MAX_EVENTS:
        raise BadRequest(f"limit must be 1..{MAX_EVENTS}")
    sql = f"SELECT {EVENT_COLUMNS} FROM events"
    if where:
        sql += " WHERE " + " AND ".join(where)
    events, partial = [], False
    cur = conn.execute(sql + " ORDER BY ts DESC, eid DESC LIMIT ?", (*params, limit))
    try:
        for row in cur:
            events.append(_event(row))
    except sqlite3.OperationalError as e:
        if "interrupted" not in str(e):
            raise
        partial = True  # out of time: what was found, and how far back it looked
    return {"events": events, "partial": partial, "limit": limit}


# -- Tools ----------------------------------------------------------------------------------
#: Calls that never closed: the newest PreToolUse events of the range searched (each one an
#: index lookup of its closing event), and the calls listed at most.
UNCLOSED_SEARCHED: Final = 5000
UNCLOSED_LISTED: Final = 50
SLOWEST_LISTED: Final = 20


def bucket_percentile(hist: dict[int, int], p: float) -> dict[str, float] | None:
    """The nearest-rank ``p`` percentile of a duration histogram (bucket -> count): the bucket
    that holds it, ``[lo, hi)`` ms, and its geometric middle as the figure shown (within half a
    bucket, 9%, of the exact value; bucket 0 is under 1 ms, the last one open-ended)."""
    total = sum(hist.values())
    if total <= 0:
        return None
    rank, seen = max(1, math.ceil(p / 100 * total)), 0
    for bucket in sorted(hist):
        seen += hist[bucket]
        if seen >= rank:
            break
    lo, hi = bucket_bounds(bucket)
    ms = lo if math.isinf(hi) else (hi / 2 if bucket == 0 else math.sqrt(lo * hi))
    return {"ms": ms, "lo": lo, "hi": hi if math.isfinite(hi) else None}


_TOOL_ROWS: Final = (
    "SELECT tool, calls, closed, failed, timed, durations FROM tool_days WHERE day BETWEEN ?3 AND ?4 UNION ALL "
    "SELECT tool, calls, closed, failed, timed, durations FROM tool_hours "
    "WHERE hour BETWEEN ?1 AND ?2 AND NOT hour BETWEEN ?3 * 24 AND ?4 * 24 + 23"
)


def _tool_table(conn: sqlite3.Connection, first: int, last: int) -> list[dict[str, Any]]:
    """Per tool, over the hours ``first``..``last``: the whole days among them from
    ``tool_days``, the hours at either end from ``tool_hours``."""
    per: dict[str, dict[str, Any]] = {}
    first_day, last_day = -(-first // 24), (last + 1) // 24 - 1  # may be empty: first_day > last_day
    for tool, calls, closed, failed, timed, durations in conn.execute(_TOOL_ROWS, (first, last, first_day, last_day)):
        t = per.setdefault(tool, {"calls": 0, "closed": 0, "failed": 0, "timed": 0, "hist": {}})
        t["calls"] += calls
        t["closed"] += closed
        t["failed"] += failed
        t["timed"] += timed
        hist = t["hist"]
        for bucket, n in json.loads(durations).items():
            hist[int(bucket)] = hist.get(int(bucket), 0) + n
    table = []
    for tool, t in per.items():
        hist = t.pop("hist")
        p50, p95 = bucket_percentile(hist, 50), bucket_percentile(hist, 95)
        table.append(
            {
                "tool": tool,
                **t,
                "failure_rate": t["failed"] / t["closed"] if t["closed"] else None,
                "p50_ms": p50 and p50["ms"],
                "p95_ms": p95 and p95["ms"],
                "p50_bucket": p50,
                "p95_bucket": p95,
            }
        )
    table.sort(key=lambda r: (-r["calls"], r["tool"]))
    return table


CALL_KEYS: Final = ("eid", "tool", "status", "duration_ms", "session", "tool_use_id", "started", "finished")


def _slowest(conn: sqlite3.Connection, first: int, last: int) -> list[dict[str, Any]]:
    """The slowest timed calls closed in the hours, from ``tool_slowest`` (the slowest of each
    hour are kept), with their closing events."""
    rows = conn.execute(
        "SELECT s.eid, s.tool, CASE WHEN e.type = 'post_tool_use_failure' THEN 'failed' ELSE 'finished' END, "
        "s.duration_ms, e.session, json_extract(e.data, '$.tool_use_id'), e.ts - s.duration_ms / 1000.0, e.ts "
        "FROM (SELECT eid, tool, duration_ms FROM tool_slowest WHERE hour BETWEEN ? AND ? "
        "      ORDER BY duration_ms DESC, eid LIMIT ?) AS s JOIN events AS e ON e.eid = s.eid "
        "ORDER BY s.duration_ms DESC, s.eid",
        (first, last, SLOWEST_LISTED),
    )
    return [dict(zip(CALL_KEYS, r, strict=True)) for r in rows]


def _unclosed(conn: sqlite3.Connection, since: float) -> tuple[list[dict[str, Any]], int, float | None]:
    """Calls started since ``since`` with no PostToolUse or PostToolUseFailure yet, newest
    first, among the newest ``UNCLOSED_SEARCHED``; status ``lost`` when their session ended
    after them. Returns them, how many calls were searched, and the oldest one's start."""
    searched, oldest = conn.execute(
        "SELECT count(*), min(ts) FROM (SELECT ts FROM events WHERE type = 'pre_tool_use' AND ts >= ? "
        "ORDER BY ts DESC LIMIT ?)",
        (since, UNCLOSED_SEARCHED),
    ).fetchone()
    rows = conn.execute(
        "SELECT pre.eid, coalesce(json_extract(pre.data, '$.tool_name'), '?'), "
        "CASE WHEN st.ended >= pre.ts THEN 'lost' ELSE 'unfinished' END, NULL, pre.session, "
        "json_extract(pre.data, '$.tool_use_id') AS id, pre.ts, NULL "
        "FROM (SELECT eid, session, ts, data FROM events WHERE type = 'pre_tool_use' AND ts >= ? "
        "      ORDER BY ts DESC LIMIT ?) AS pre "
        "LEFT JOIN session_stats AS st ON st.session = pre.session "
        "WHERE json_extract(pre.data, '$.tool_use_id') IS NOT NULL AND NOT EXISTS ("
        "  SELECT 1 FROM events AS c WHERE c.type IN ('post_tool_use', 'post_tool_use_failure') "
        "  AND json_extract(c.data, '$.tool_use_id') = json_extract(pre.data, '$.tool_use_id')) "
        "ORDER BY pre.ts DESC LIMIT ?",
        (since, UNCLOSED_SEARCHED, UNCLOSED_LISTED),
    )
    return [dict(zip(CALL_KEYS, r, strict=True)) for r in rows], searched, oldest


def tools(conn: sqlite3.Connection, ask: Ask) -> dict[str, Any]:
    """Per tool: calls, failures, failure rate, p50/p95 duration (from the histogram of Claude
    Code's own ``duration_ms``); the slowest calls; calls that never closed. Over whole hours:
    the range's first hour is the one after ``now - range`` began, as Overview's chart."""
    name, first, last = _hours(ask, "24h")  # every range: the summaries grow with tools x hours
    table = _tool_table(conn, first, last)
    unclosed, searched, oldest = _unclosed(conn, first * 3600.0)
    return {
        "range": name,
        "since": first * 3600,
        "tools": table,
        "calls": sum(t["calls"] for t in table),
        "closed": sum(t["closed"] for t in table),
        "failed": sum(t["failed"] for t in table),
        "bucket_ratio": 2 ** (1 / BUCKETS_PER_DOUBLING),
        "slowest": _slowest(conn, first, last),
        "unclosed": unclosed,
        "unclosed_searched": searched,
        "unclosed_searched_since": oldest,
        "lost": sum(1 for c in unclosed if c["status"] == "lost"),
    }


# -- Sessions -------------------------------------------------------------------------------
SESSION_COLUMNS: Final = (
    "session",
    "started",
    "last_seen",
    "ended",
    "events",
    "prompts",
    "tool_calls",
    "tool_failures",
    "tool_closed",
    "end_reason",
    "cwd",
)
#: Columns of the telemetry view ``session_usage`` (schema migration 6, OTLP), when it exists.
USAGE_COLUMNS: Final = (
    "cost_usd",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_creation_tokens",
    "api_requests",
    "api_errors",
    "models",
)


def has_usage(conn: sqlite3.Connection) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'session_usage'").fetchone() is not None


def _usage(conn: sqlite3.Connection, sessions: list[str]) -> dict[str, dict[str, Any]]:
    """Cost and tokens of these sessions from ``session_usage``."""
    cols = ", ".join(USAGE_COLUMNS)
    rows = conn.execute(
        f"SELECT session, {cols} FROM session_usage WHERE session IN (SELECT value FROM json_each(?))",
        (json.dumps(sessions),),
    )
    return {r[0]: dict(zip(USAGE_COLUMNS, r[1:], strict=True)) for r in rows}


def sessions(conn: sqlite3.Connection, ask: Ask) -> dict[str, Any]:
    """Sessions started in the range, newest first (at most 200), from ``session_stats``."""
    name, since = ask.since("7d")
    rows = conn.execute(
        f"SELECT {', '.join(SESSION_COLUMNS)} FROM session_stats WHERE started >= ? ORDER BY started DESC LIMIT 200",
        (since,),
    ).fetchall()
    out = [dict(zip(SESSION_COLUMNS, r, strict=True)) for r in rows]
    usage = has_usage(conn)
    if usage and out:
        found = _usage(conn, [s["session"] for s in out])
        for s in out:
            s.update(found.get(s["session"], dict.fromkeys(USAGE_COLUMNS)))
    return {"range": name, "sessions": out, "usage": usage}


CALL_COLUMNS: Final = ("tool", "started", "finished", "duration_ms", "status")


def session(conn: sqlite3.Connection, ask: Ask) -> dict[str, Any]:
    """One session as its own timeline: its figures, its events in order, its tool calls."""
    key = ask.text("id")
    if key is None:
        raise BadRequest("id (the session) is required")
    row = conn.execute(f"SELECT {', '.join(SESSION_COLUMNS)} FROM session_stats WHERE session = ?", (key,)).fetchone()
    events = conn.execute(
        f"SELECT {EVENT_COLUMNS} FROM events WHERE session = ? ORDER BY ts, eid LIMIT ?", (key, MAX_EVENTS)
    ).fetchall()
    calls = conn.execute(
        "SELECT tool_name, started, finished, duration_ms, status FROM tool_calls WHERE session = ? "
        "ORDER BY started LIMIT ?",
        (key, MAX_EVENTS),
    ).fetchall()
    stats = dict(zip(SESSION_COLUMNS, row, strict=True)) if row else None
    if stats is not None and has_usage(conn):
        stats.update(_usage(conn, [key]).get(key, {}))
    return {
        "session": key,
        "stats": stats,
        "events": [_event(r) for r in events],
        "tool_calls": [dict(zip(CALL_COLUMNS, c, strict=True)) for c in calls],
    }


# -- Git ------------------------------------------------------------------------------------
def git(conn: sqlite3.Connection, ask: Ask) -> dict[str, Any]:
    """Commits per repository and day; branches with their commits and last activity; the
    latest merges and rewrites (amends, rebases)."""
    name, since = ask.since("30d")
    per_day = conn.execute(
        "SELECT coalesce(json_extract(data, '$.repo'), '?'), CAST(ts / 86400 AS INTEGER) * 86400, count(*) "
        "FROM events WHERE type = 'git_commit' AND ts >= ? GROUP BY 1, 2 ORDER BY 2",
        (since,),
    ).fetchall()
    branches = conn.execute(
        "SELECT coalesce(json_extract(data, '$.repo'), '?') AS repo, json_extract(data, '$.branch') AS branch, "
        "sum(type = 'git_commit'), sum(type = 'git_merge'), sum(type = 'git_rewrite'), max(ts) "
        "FROM events WHERE type IN ('git_commit', 'git_checkout', 'git_merge', 'git_rewrite') AND ts >= ? "
        "GROUP BY 1, 2 ORDER BY max(ts) DESC LIMIT 100",
        (since,),
    ).fetchall()
    changes = conn.execute(
        f"SELECT {EVENT_COLUMNS} FROM events WHERE type IN ('git_merge', 'git_rewrite') AND ts >= ? "
        "ORDER BY ts DESC LIMIT 50",
        (since,),
    ).fetchall()
    days = sorted({d for _, d, _ in per_day})
    repos: dict[str, list[int]] = {}
    for repo, day, n in per_day:
        repos.setdefault(repo, [0] * len(days))[days.index(day)] = n
    return {
        "range": name,
        "commits": {"x": days, "series": dict(sorted(repos.items()))},
        "branches": [
            dict(zip(("repo", "branch", "commits", "merges", "rewrites", "last_ts"), b, strict=True)) for b in branches
        ],
        "merges_and_rewrites": [_event(r) for r in changes],
    }


# -- Kinds ----------------------------------------------------------------------------------
def kinds(conn: sqlite3.Connection, ask: Ask) -> dict[str, Any]:
    """Every type ever stored; with ``type``: its events per hour and its latest events, each
    with its fields as ``key=value``: any type works, planned or not."""
    all_types = [
        dict(zip(("type", "count", "first_ts", "last_ts"), r, strict=True))
        for r in conn.execute("SELECT type, count, first_ts, last_ts FROM event_types ORDER BY type")
    ]
    etype = ask.text("type")
    if etype is None:
        return {"types": all_types, "type": None}
    name, first, last = _hours(ask, "7d")
    latest = conn.execute(
        f"SELECT {EVENT_COLUMNS} FROM events WHERE type = ? ORDER BY ts DESC, eid DESC LIMIT 50", (etype,)
    ).fetchall()
    events = []
    for r in latest:
        e = _event(r)
        if len(r[4]) <= PARSE_LIMIT:
            try:
                data = json.loads(r[4])
                e["fields"] = key_values(data) if isinstance(data, dict) else e["summary"]
            except ValueError:
                pass
        events.append(e)
    return {
        "types": all_types,
        "type": etype,
        "range": name,
        "chart": hourly(conn, first, last, etype),
        "events": events,
    }


# -- Health ---------------------------------------------------------------------------------
def _dir_size(directory: Path) -> int:
    total = 0
    try:
        with os.scandir(directory) as it:
            for entry in it:
                if entry.is_file(follow_symlinks=False):
                    total += entry.stat(follow_symlinks=False).st_size
    except OSError:
        pass
    return total


def _file_size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None


def health(conn: sqlite3.Connection, ask: Ask) -> dict[str, Any]:
    """Rejected lines by reason, drops, the spool, the daemon's writer and listeners (asked
    over its control socket), the database's and the mirror's size."""
    paths = ask.settings.paths
    counters = dict(conn.execute("SELECT name, value FROM counters"))
    latest = conn.execute(
        "SELECT rid, recv_ts, reason, detail, size, preview FROM rejected ORDER BY rid DESC LIMIT 20"
    ).fetchall()
    daemon = daemon_status(paths.socket)
    return {
        "rejected_by_reason": with_prefix(counters, "rejected."),
        "rejected_latest": [
            dict(zip(("rid", "recv_ts", "reason", "detail", "size", "preview"), r, strict=True)) for r in latest
        ],
        "duplicates": counters.get("duplicate", 0),
        "truncated": counters.get("truncated", 0),
        "connections_closed": with_prefix(counters, "connections."),
        "spool": {
            "dir": str(paths.spool_dir),
            "waiting": spool.waiting(paths.spool_dir),
            "bytes": spool.usage(paths.spool_dir),
            "max_size": ask.settings.spool_max_size,
            "dropped": spool_dropped(conn, paths.spool_dir),
        },
        "daemon": daemon,
        "files": {
            "db": str(paths.db),
            "db_bytes": _file_size(paths.db),
            "wal_bytes": _file_size(paths.db.with_name(paths.db.name + "-wal")),
            "mirror_dir": str(paths.mirror_dir),
            "mirror_bytes": _dir_size(paths.mirror_dir),
        },
        "dashboard": ask.server,
    }


PANELS: Final[dict[str, Panel]] = {
    "head": head,
    "overview": overview,
    "activity": activity,
    "tools": tools,
    "sessions": sessions,
    "session": session,
    "git": git,
    "kinds": kinds,
    "health": health,
}
