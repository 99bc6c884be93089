"""``hookd tail`` (``-f``: follow events as they commit).

Two line formats. Into a pipe or a file (and with ``--full``): the whole event, UTC time to the
millisecond, as before, for grep and scripts. On a terminal: one line per event, local time as
``hookd status`` shows it, then the type, the session and the event's key fields
(ops/summary.py), cut to the terminal's width so that one event is one line.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, TextIO

from hookd.errors import DaemonDown, HookdError, StoreError, UsageError
from hookd.framing import normalize_type, parse_ts
from hookd.ops.reading import ask, event_json, open_readonly, select_events
from hookd.ops.show import cut, local_time, one_line
from hookd.ops.summary import summary
from hookd.records import EID
from hookd.settings import Settings
from hookd.values import parse_duration


# -- tail -----------------------------------------------------------------------------------
def since_value(text: str, now: float) -> float:
    """``1h``/``30m``/``2d`` ago, or a time (epoch seconds or RFC 3339)."""
    try:
        return now - (parse_duration(text) or 0.0)
    except ValueError:
        pass
    try:
        return parse_ts(float(text) if text.replace(".", "", 1).isdigit() else text, now)
    except Exception:  # noqa: BLE001 - Rejection or ValueError alike
        raise UsageError(
            f"--since {text!r}: expected a duration (30s, 15m, 1h, 2d) or a time (2026-11-30T08:00:00, epoch seconds)"
        ) from None


def format_event(ev: dict[str, Any], as_json: bool, width: int | None = None) -> str:
    """``--json``: the event as JSON; ``width`` (a terminal's): the one-line summary cut to it;
    otherwise the whole event after its UTC time, type and session."""
    if as_json:
        return json.dumps(ev, ensure_ascii=False, separators=(",", ":"))
    if width is not None:
        return cut(f"{local_time(ev['ts'])} {ev['type']}{_session(ev)} {summary(ev['type'], ev['data'])}", width)
    t = datetime.fromtimestamp(ev["ts"], UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    session = f" [{ev['session']}]" if ev.get("session") else ""
    data = json.dumps(ev["data"], ensure_ascii=False, separators=(",", ":"))
    return f"{t} {ev['type']}{session} {data}"


def _session(ev: dict[str, Any]) -> str:
    """`` [8f2c1a2b]``: a session key, its first 8 characters when long (a Claude Code session
    id is a 36-character UUID; 8 tell sessions apart at a glance)."""
    session = ev.get("session")
    if not session:
        return ""
    return f" [{one_line(session if len(session) <= 12 else session[:8])}]"


def terminal_width(out: TextIO, args: Any) -> int | None:
    """The width to cut summary lines to, or None for whole events: ``--json``, ``--full``, or
    output that is not a terminal. Asked for each line: a terminal can be resized meanwhile."""
    if args.json or getattr(args, "full", False):
        return None
    try:
        if not out.isatty():
            return None
        return os.get_terminal_size(out.fileno()).columns or 80
    except (OSError, ValueError):  # not a real file (tests' StringIO), or closed
        return None


def tail(settings: Settings, args: Any, out: TextIO = sys.stdout) -> int:
    now = time.time()
    etype = None
    if args.type:
        etype = normalize_type(args.type)
        if etype is None:
            raise UsageError(f"--type {args.type!r} is not a valid event type")
        etype = settings.aliases.get(etype, etype)
    since = since_value(args.since, now) if args.since else None
    limit = args.lines
    last = 0
    if settings.paths.db.exists():
        with contextlib.closing(open_readonly(settings.paths.db)) as conn:
            rows = select_events(conn, etype=etype, session=args.session, since=since, limit=limit)
            for row in rows:
                out.write(format_event(event_json(row), args.json, terminal_width(out, args)) + "\n")
            last = rows[-1][EID] if rows else (conn.execute("SELECT coalesce(max(eid), 0) FROM events").fetchone()[0])
    elif not args.follow:
        raise StoreError(f"no database at {settings.paths.db} yet: nothing has been stored")
    out.flush()
    if not args.follow:
        return 0
    for ev in follow(settings, etype, args.session, last):
        if since is not None and ev["ts"] < since:
            continue
        out.write(format_event(ev, args.json, terminal_width(out, args)) + "\n")
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
                        last = row[EID]
                        yield event_json(row)
                last = max(last, hello["committed_eid"])
            for line in f:
                obj = json.loads(line)
                if "gap_upto" in obj:  # committed, but framed before we followed: read it
                    with contextlib.closing(open_readonly(settings.paths.db)) as conn:
                        for row in select_events(conn, etype=etype, session=session, after=last, upto=obj["gap_upto"]):
                            last = row[EID]
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
