"""Forwarding to a real PostgreSQL (issue 17): exactly once per (host, eid) across kill -9, a
PostgreSQL restart, a wrong password and a missing database; three hosts into one database;
the views giving the local store's answers per host.

PostgreSQL runs for the whole session (tests/pg_server.py: initdb as uid 65534 in a temporary
directory, a Unix socket only); each test gets a database of its own.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from pg_server import PASSWORD_ROLE, PgServer, missing_reason

from conftest import Daemon, clean_env, wait_until
from hookd import forwarding
from hookd.forwarder import pg_schema

pytestmark = pytest.mark.skipif(missing_reason() is not None, reason=str(missing_reason()))
psycopg = pytest.importorskip("psycopg", reason="psycopg is not installed: pip install -e '.[test]'")


@pytest.fixture(scope="session")
def pg() -> Iterator[PgServer]:
    server = PgServer().init()
    yield server
    server.close()


@pytest.fixture
def pgdb(pg: PgServer, request: pytest.FixtureRequest) -> str:
    """A database of this test's own; its name."""
    name = "t_" + request.node.name.removeprefix("test_")[:40].lower()
    pg.fresh_database(name)
    return name


def forwarding_daemon(home: Path, url: str, host: str, *args: str, **forward: object) -> Daemon:
    """A daemon forwarding to ``url`` as ``host``, run with ``args``; ``forward`` are more
    [forward] keys."""
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    keys = {"url": url, "host": host, "interval": "20ms", **forward}
    toml = "[forward]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in keys.items())
    (home / "config.toml").write_text(toml)
    return Daemon(home, *args, env=clean_env(home))


def events(n: int, start: int = 0, etype: str = "tool_event", session: str = "s1") -> bytes:
    return b"".join(
        b'{"type": "%s", "session": "%s", "i": %d}\n' % (etype.encode(), session.encode(), i)
        for i in range(start, start + n)
    )


def pg_eids(pg: PgServer, db: str, host: str) -> list[int]:
    return [e for (e,) in pg.query("SELECT eid FROM events WHERE host = %s ORDER BY eid", (host,), db=db)]


def pg_count(pg: PgServer, db: str, host: str) -> int:
    """Events of ``host`` in PostgreSQL (0 before the forwarder made the table)."""
    try:
        return pg.query("SELECT count(*) FROM events WHERE host = %s", (host,), db=db)[0][0]
    except psycopg.errors.UndefinedTable:
        return 0


def local_eids(d: Daemon) -> list[int]:
    return [e for (e,) in d.query("SELECT eid FROM events ORDER BY eid")]


def status(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hookd", "status", *args], env=clean_env(home), capture_output=True, text=True
    )


def forward_status(home: Path) -> dict:
    return json.loads(status(home, "--json").stdout)["forward"]


def exactly_once(pg: PgServer, db: str, host: str, d: Daemon) -> None:
    """PostgreSQL holds every event of the local store, once, and nothing else."""
    total, distinct = pg.query("SELECT count(*), count(DISTINCT eid) FROM events WHERE host = %s", (host,), db=db)[0]
    assert total == distinct
    assert pg_eids(pg, db, host) == local_eids(d)


def test_three_daemons_with_different_hosts_into_one_database(pg: PgServer, pgdb: str, home: Path) -> None:
    url = pg.url(pgdb)
    daemons = [forwarding_daemon(home / f"h{i}", url, f"host-{i}") for i in range(3)]
    try:
        for d in daemons:  # started together: they migrate the schema at the same time
            d.start(wait=False)
        for i, d in enumerate(daemons):
            d.wait_ready()
            d.send(events(1000 * (i + 1), etype=f"kind_{i}") + events(10, etype="shared"))
        for i, d in enumerate(daemons):
            n = 1000 * (i + 1) + 10
            assert d.wait_count(n) == n
            wait_until(lambda d=d, i=i, n=n: pg_count(pg, pgdb, f"host-{i}") == n, 30, f"host-{i}'s events")
            exactly_once(pg, pgdb, f"host-{i}", d)
        assert pg.query("SELECT count(*) FROM events", db=pgdb)[0][0] == 1010 + 2010 + 3010
        versions = pg.query("SELECT version FROM hookd_schema ORDER BY version", db=pgdb)
        assert versions == [(v,) for v, _name, _script in pg_schema.MIGRATIONS]
        cursors = dict(pg.query("SELECT host, last_eid FROM hookd_forward_cursor", db=pgdb))
        assert cursors == {f"host-{i}": max(local_eids(d)) for i, d in enumerate(daemons)}
        # A view per type, made once whoever brought the type first, with every host's rows.
        assert pg.query("SELECT count(*), count(DISTINCT host) FROM shared_events", db=pgdb) == [(30, 3)]
        assert pg.query("SELECT count(*) FROM kind_2_events WHERE host = 'host-2'", db=pgdb) == [(3000,)]
        f = wait_until(lambda: (s := forward_status(daemons[1].home))["lag_events"] == 0 and s, 10, "no lag")
        assert f["host"] == "host-1" and f["last_eid"] == max(local_eids(daemons[1])) and f["error"] is None
    finally:
        for d in daemons:
            d.kill()


def forwarder_pid(home: Path) -> int:
    state = forwarding.read_state(forwarding.state_path(home / "events.db"))
    return state.pid if state else 0


def test_kill_9_of_the_forwarder_and_of_the_daemon_while_forwarding(pg: PgServer, pgdb: str, home: Path) -> None:
    """Small batches make forwarding take a while; both processes are killed in the middle of
    it. Nothing is lost and nothing is there twice."""
    host, n = "killed", 8000
    d = forwarding_daemon(home, pg.url(pgdb), host, batch_size=5).start()
    try:
        d.send(events(n))
        assert d.wait_count(n) == n
        wait_until(lambda: pg_count(pg, pgdb, host) > 500, 30, "forwarding under way")
        first = forwarder_pid(home)
        os.kill(first, signal.SIGKILL)  # in the middle of a transaction, most likely
        assert pg_count(pg, pgdb, host) < n, "forwarding ended before the kill: the test proved nothing"
        # The daemon starts another one, which reads the cursor back from PostgreSQL.
        wait_until(lambda: forwarder_pid(home) not in (0, first), 30, "a new forwarder")
        assert "the forwarder process exited with status -9; starting it again" in d.logtext
        at = pg_count(pg, pgdb, host)
        wait_until(lambda: pg_count(pg, pgdb, host) > at + 200, 30, "forwarding again")
        d.kill()  # kill -9 of the daemon: its forwarder sees its stdin end and stops
        assert pg_count(pg, pgdb, host) < n, "forwarding ended before the kill: the test proved nothing"
        d.wait_output_closed()
        d.start()
        wait_until(lambda: pg_count(pg, pgdb, host) == n, 60, "every event forwarded")
        exactly_once(pg, pgdb, host, d)
    finally:
        d.kill()


def sender(d: Daemon, stop: threading.Event, sent: list[int]) -> None:
    """Hooks at a steady rate: one event per connection, as hookd-emit sends them."""
    i = 0
    while not stop.is_set():
        d.send(events(1, start=i))
        i += 1
        sent[0] = i
        time.sleep(0.002)


def test_postgresql_stopped_for_ten_seconds_under_load(pg: PgServer, pgdb: str, home: Path) -> None:
    host = "restarts"
    d = forwarding_daemon(home, pg.url(pgdb), host).start()
    stop, sent = threading.Event(), [0]
    hooks = threading.Thread(target=sender, args=(d, stop, sent), daemon=True)
    hooks.start()
    try:
        wait_until(lambda: pg_count(pg, pgdb, host) > 100, 30, "forwarding under way")
        pg.stop()
        try:
            down = time.monotonic()
            at_stop = sent[0]
            wait_until(lambda: forward_status(home)["error"], 20, "the error in hookd status")
            while time.monotonic() - down < 10:
                time.sleep(0.2)
            # Hooks noticed nothing: what they sent meanwhile is committed locally.
            during = sent[0]
            assert during > at_stop + 100
            assert d.wait_count(during, timeout=10) >= during
            f = forward_status(home)
            assert f["lag_events"] > 100 and f["lag_seconds"] > 5, f
        finally:
            pg.start()
        stop.set()
        hooks.join()
        assert d.wait_count(sent[0], timeout=10) == sent[0]
        wait_until(lambda: pg_count(pg, pgdb, host) == sent[0], 60, "catching up")
        exactly_once(pg, pgdb, host, d)
        wait_until(lambda: forward_status(home)["error"] is None, 10, "the error cleared")
        paused = [line for line in d.log if "forwarding paused" in line]
        assert len(paused) == 1, d.logtext  # once, not once per retry
        assert any("forwarding again after" in line for line in d.log)
    finally:
        stop.set()
        d.kill()


def test_a_wrong_password_then_the_right_one(pg: PgServer, pgdb: str, home: Path) -> None:
    user, password = PASSWORD_ROLE
    secret = home / "pgpass"
    home.mkdir(exist_ok=True)
    secret.write_text("not-the-password\n")
    secret.chmod(0o600)
    d = forwarding_daemon(home, pg.url(pgdb, user=user), "pw", password_file=str(secret), max_lag="1s").start()
    try:
        d.send(events(50))
        assert d.wait_count(50) == 50
        f = wait_until(lambda: (s := forward_status(home))["error"] and s, 20, "the error")
        assert "password authentication failed" in f["error"] and f["lag_events"] == 50
        human = status(home).stdout
        assert "forward: to " in human and "ERROR since" in human and "password authentication failed" in human
        wait_until(lambda: forward_status(home)["lag_seconds"] > 1, 10, "lag past max_lag")
        check = status(home, "--check")
        assert check.returncode == 1 and "over forward.max_lag" in check.stdout, check
        secret.write_text(password + "\n")
        wait_until(lambda: pg_count(pg, pgdb, "pw") == 50, 30, "forwarded once the password is right")
        exactly_once(pg, pgdb, "pw", d)
        wait_until(lambda: forward_status(home)["error"] is None, 10, "the error cleared")
        assert status(home, "--check").returncode == 0
    finally:
        d.kill()


def test_a_missing_database_then_created(pg: PgServer, home: Path) -> None:
    name = "t_created_later"
    with pg.connect("postgres") as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    d = forwarding_daemon(home, pg.url(name), "late").start()
    try:
        d.send(events(30))
        assert d.wait_count(30) == 30
        f = wait_until(lambda: (s := forward_status(home))["error"] and s, 20, "the error")
        assert f'database "{name}" does not exist' in f["error"], f
        assert f["lag_events"] == 30 and f["last_eid"] == 0
        with pg.connect("postgres") as conn:
            conn.execute(f"CREATE DATABASE {name}")
        wait_until(lambda: pg_count(pg, name, "late") == 30, 30, "forwarded once the database exists")
        exactly_once(pg, name, "late", d)
    finally:
        d.kill()


def test_unstorable_text_is_forwarded_with_replacement_characters(pg: PgServer, pgdb: str, home: Path) -> None:
    d = forwarding_daemon(home, pg.url(pgdb), "nul").start()
    try:
        # (A lone surrogate, "\ud800", is rejected by hookd itself: only NUL gets this far.)
        d.send(b'{"type": "odd", "session": "a\\u0000b", "text": "x\\u0000y", "ok": "\\u00e9"}\n' + events(3))
        assert d.wait_count(4) == 4
        wait_until(lambda: pg_count(pg, pgdb, "nul") == 4, 30, "forwarded")
        [(session, data)] = pg.query("SELECT session, data FROM events WHERE type = 'odd'", db=pgdb)
        assert session == "a\ufffdb" and data["text"] == "x\ufffdy" and data["ok"] == "\u00e9"
        wait_until(lambda: forward_status(home)["sanitized"] == 1, 10, "counted")
    finally:
        d.kill()


def claude_session(session: str, t0: float, calls: int) -> bytes:
    """A Claude Code session as its hooks send it: tool calls finished (with and without Claude
    Code's own duration), failed, answered before their PreToolUse, denied, and one lost."""
    out = [
        {"type": "SessionStart", "session_id": session, "ts": t0, "cwd": f"/work/{session}"},
        {"type": "UserPromptSubmit", "session_id": session, "ts": t0 + 0.5, "prompt": "go"},
    ]
    t = t0 + 1
    for i in range(calls):
        tid = f"{session}-tool-{i}"
        pre = {
            "type": "PreToolUse",
            "session_id": session,
            "ts": t,
            "tool_use_id": tid,
            "tool_name": f"T{i % 3}",
            "prompt_id": f"{session}-p{i % 3}",
        }
        close = {"type": "PostToolUse", "session_id": session, "ts": t + 0.123 + i / 1000, "tool_use_id": tid}
        if i % 4 == 1:
            close["duration_ms"] = 50 + i
        if i % 4 == 2:
            close["type"] = "PostToolUseFailure"
        out += [close, pre] if i % 5 == 3 else [pre, close]  # async hooks: any order
        t += 1
    out.append({"type": "PreToolUse", "session_id": session, "ts": t, "tool_use_id": f"{session}-lost"})
    out.append({"type": "PreToolUse", "session_id": session, "ts": t + 1, "tool_use_id": f"{session}-denied"})
    out.append({"type": "PermissionDenied", "session_id": session, "ts": t + 2, "tool_use_id": f"{session}-denied"})
    out.append({"type": "SessionEnd", "session_id": session, "ts": t + 3, "reason": "exit"})
    return b"".join(json.dumps(e).encode() + b"\n" for e in out)


TOKENS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_creation_tokens")
#: What a client may send where a number belongs: numbers, numbers as strings (Claude Code
#: sends some so), and what is no number at all; the views read each as SQLite's CAST does.
COSTS: Sequence[Any] = (0.125, "0.25", " 1.5e-2 ", "n/a", True, None, {"usd": 1}, "12abc", 2.5)
COUNTS: Sequence[Any] = (1200, "310", "12abc", "", 7.9, False, "1e3", 40, " 0012 ")


def claude_telemetry(session: str, t0: float, calls: int) -> bytes:
    """Claude Code's telemetry of ``claude_session``'s session as hookd.otlp makes events of its
    records (attributes flat, ``prompt.id``; docs/protocol.md), with every kind of figure:
    api_request and api_error records, tool_result records of half its tool calls, a prompt, and
    otel_metric points of a cumulative series restarted once, a delta series and a gauge."""
    out: list[dict[str, Any]] = []

    def record(etype: str, ts: float, prompt: int, **fields: Any) -> None:
        out.append({"type": etype, "session": session, "ts": t0 + ts, "prompt.id": f"{session}-p{prompt}", **fields})

    for i in range(calls + 2):
        figures = {name: COUNTS[(i + k) % len(COUNTS)] for k, name in enumerate(TOKENS)}
        figures["cost_usd"] = COSTS[i % len(COSTS)]
        if i == 1:  # missing
            del figures["cost_usd"], figures["input_tokens"]
        figures["model"] = ("claude-sonnet-4-5", "claude-haiku-4-5")[i % 2]
        figures["duration_ms"] = (900, "1e3", "slow")[i % 3]
        record("claude_code_api_request", 0.7 + i, i % 3, **figures)
    record("claude_code_api_error", 0.8, 0, model="claude-sonnet-4-5", error="overloaded", status_code="529")
    for i in range(0, calls, 2):
        error = {"error": "exit 1"} if i % 4 == 2 else {}
        success = ("true", "false", True, "1", "maybe")[i % 5]
        record("claude_code_tool_result", 1.2 + i, i % 3, tool_use_id=f"{session}-tool-{i}", tool_name=f"T{i % 3}",
               duration_ms=("37", 41, "x")[i % 3], success=success, **error)  # fmt: skip
    record("claude_code_user_prompt", 0.5, 0, prompt_length="2")
    series = (("cost", "cumulative", (0.1, 0.3, 0.05, 0.2)), ("tokens", "delta", (100, "50", 7, 1)),
              ("active", "unspecified", (3, 1, 4, 1)))  # fmt: skip
    for name, temporality, values in series:
        kind = "gauge" if temporality == "unspecified" else "sum"
        for j, value in enumerate(values):
            out.append({"type": "otel_metric", "session": session, "ts": t0 + 2 + j, "name": f"claude_code.{name}",
                        "unit": "1", "kind": kind, "temporality": temporality, "value": value,
                        "start_ts": t0 if j < 2 else t0 + 2.5, "series": f"{session}-{name}",
                        "attributes": {"session.id": session, "type": name}})  # fmt: skip
    return b"".join(json.dumps(e).encode() + b"\n" for e in out)


def otlp_exports(d: Daemon) -> int:
    """Claude-Code-shaped logs and cumulative metrics through the daemon's OTLP/HTTP endpoint,
    by the OpenTelemetry SDK's exporters (tests/test_otlp.py's records); how many events."""
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.resources import Resource
    from test_otlp import RESOURCE, A, emit_claude_records, endpoint

    records = emit_claude_records()
    assert OTLPLogExporter(endpoint=endpoint(d)).export(records).name == "SUCCESS"
    reader = InMemoryMetricReader()
    meter = MeterProvider(metric_readers=[reader], resource=Resource.create(RESOURCE)).get_meter("claude_code")
    cost = meter.create_counter("claude_code.cost.usage", unit="USD")
    cost.add(0.125, {"session.id": A, "model": "claude-sonnet-4-5"})
    first = reader.get_metrics_data()
    cost.add(0.25, {"session.id": A, "model": "claude-sonnet-4-5"})
    exporter = OTLPMetricExporter(endpoint=endpoint(d, "metrics"))
    for data in (first, reader.get_metrics_data()):
        assert exporter.export(data).name == "SUCCESS"
    return len(records) + 2


VIEW_QUERIES = {
    "tool_calls": (
        "SELECT session, tool_use_id, tool_name, started, finished, duration_ms, duration_source, status, pre_eid, "
        "post_eid, telemetry_duration_ms, telemetry_success, telemetry_error, telemetry_eid FROM tool_calls {where} "
        "ORDER BY pre_eid"
    ),
    "lost_tool_calls": (
        "SELECT session, tool_use_id, tool_name, started, session_ended, pre_eid FROM lost_tool_calls {where} "
        "ORDER BY pre_eid"
    ),
    "sessions": (
        "SELECT session, started, ended, last_seen, events, prompts, tool_calls, tool_failures, tool_calls_unfinished, "
        "end_reason, cwd, cost_usd, input_tokens, output_tokens, cache_read_tokens, cache_creation_tokens, "
        "api_requests FROM sessions {where} ORDER BY session"
    ),
    "session_usage": (
        "SELECT session, cost_usd, input_tokens, output_tokens, cache_read_tokens, cache_creation_tokens, "
        "api_requests, api_errors, models, api_duration_ms, first_ts, last_ts FROM session_usage {where} "
        "ORDER BY session"
    ),
    "prompt_usage": (
        "SELECT prompt_id, session, cost_usd, input_tokens, output_tokens, cache_read_tokens, cache_creation_tokens, "
        "api_requests, api_errors, models, tool_calls, api_duration_ms, first_ts, last_ts FROM prompt_usage {where} "
        "ORDER BY prompt_id"
    ),
    "metric_totals": (
        "SELECT series, session, name, unit, kind, temporality, attributes, value, points, first_ts, last_ts "
        "FROM metric_totals {where} ORDER BY series"
    ),
    "pre_tool_use_events": "SELECT eid, type, ts, session, client_id, recv_ts, pid, uid FROM pre_tool_use_events "
    "{where} ORDER BY eid",
}


def comparable(rows: Sequence[Sequence[Any]]) -> list[tuple[Any, ...]]:
    """Rows of either database in one form: numeric as int or float, JSON text parsed (SQLite
    gives JSON columns as text, PostgreSQL as jsonb), floats to within rounding (the two add up
    in their own order)."""

    def one(v: Any) -> Any:
        if isinstance(v, Decimal):
            v = int(v) if v == v.to_integral_value() else float(v)
        if isinstance(v, str) and v.startswith("{"):
            return json.loads(v)
        return pytest.approx(v, rel=1e-12) if isinstance(v, float) else v

    return [tuple(one(v) for v in row) for row in rows]


def test_the_views_on_postgresql_answer_as_the_local_store_does_per_host(pg: PgServer, pgdb: str, home: Path) -> None:
    """Hook events and Claude Code's telemetry (by hand, with numbers as strings and strings that
    are not numbers, and through the OTLP endpoint by the OpenTelemetry SDK) on two hosts: every
    view on PostgreSQL gives, per host, the rows of that host's own database."""
    t0 = time.time() - 3600
    daemons = {
        "laptop": forwarding_daemon(home / "a", pg.url(pgdb), "laptop", "--http", "127.0.0.1:0"),
        "ci": forwarding_daemon(home / "b", pg.url(pgdb), "ci", "--http", "127.0.0.1:0"),
    }
    try:
        for i, (host, d) in enumerate(daemons.items()):
            d.start()
            # The same session ids on both hosts: pairing and grouping must stay within a host.
            lines = b""
            for session, start, calls in (("s1", t0 + i, 12 + i), (f"only-{host}", t0 + 100, 7)):
                lines += claude_session(session, start, calls) + claude_telemetry(session, start, calls)
            d.send(lines)
            n = lines.count(b"\n") + otlp_exports(d)
            assert d.wait_count(n) == n
        for host, d in daemons.items():
            wait_until(lambda host=host, d=d: pg_count(pg, pgdb, host) == d.count(), 30, f"{host} forwarded")
        for host, d in daemons.items():
            for view, sql in VIEW_QUERIES.items():
                local = comparable(d.query(sql.format(where="")))
                central = pg.query(sql.format(where="WHERE host = %s"), (host,), db=pgdb)
                assert local, view
                assert comparable(central) == local, f"{view} of {host}"
    finally:
        for d in daemons.values():
            d.kill()
