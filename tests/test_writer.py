"""The writer process's logic, in-process: schema, batches, duplicates, recovery."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import msgspec
import pytest

from hookd import records, wire
from hookd.errors import StoreError
from hookd.framing import EidClock, Framer, Peer
from hookd.writer import schema as store
from hookd.writer.mirror import Mirror
from hookd.writer.writer import Writer
from hookd.writer_client import type_summary


def make_batch(seq: int, lines: list[bytes], framer: Framer, now: float = 1_800_000_000.0) -> wire.Batch:
    """A batch as the daemon sends it, without the per-type counts (the writer counts)."""
    rows, mirror, with_id = [], [], []
    for line in lines:
        result = framer.frame(line, now, Peer(1, 2))
        assert result is not None
        row, m = result
        if row[records.CLIENT_ID] is not None:
            with_id.append(len(rows))
        rows.append(row)
        mirror.append(m)
    return wire.Batch(seq, rows, mirror, with_id, [], [])


def test_row_positions_match_the_columns() -> None:
    """The named positions, the events table's columns and the rows framing builds agree."""
    names = ("EID", "TYPE", "TS", "SESSION", "CLIENT_ID", "RECV_TS", "PID", "UID", "DATA")
    assert [getattr(records, n) for n in names] == [records.BASE_COLUMNS.index(n.lower()) for n in names]
    assert store.INSERT_EVENT.split("(")[1].split(")")[0].split(", ") == list(records.BASE_COLUMNS)
    assert store.INSERT_REJECTED.split("(")[1].split(")")[0].split(", ") == list(records.REJECTED_COLUMNS)
    row, _ = Framer().frame(b'{"type":"a","ts":5,"session":"s","id":"c"}', 7.0, Peer(1, 2))  # type: ignore[misc]
    assert (row[records.TYPE], row[records.TS], row[records.SESSION], row[records.CLIENT_ID]) == ("a", 5.0, "s", "c")
    assert (row[records.RECV_TS], row[records.PID], row[records.UID]) == (7.0, 1, 2)


def test_frames_keep_their_array_layout() -> None:
    """Tagged array_like Structs: on the wire still [tag, field, ...], as the lists were."""
    unpack = msgspec.msgpack.decode
    assert unpack(wire.pack(wire.Close())[4:]) == ["close"]
    assert unpack(wire.pack(wire.Done(3, 1, [(0, 9)]))[4:]) == ["done", 3, 1, [[0, 9]]]
    assert unpack(wire.pack(wire.Ready(42, 0))[4:]) == ["ready", 42, 0]
    retain = unpack(wire.pack(wire.Retain(wire.Policy(max_age=60.0)))[4:])
    assert retain[0] == "retain" and retain[1]["max_age"] == 60.0 and retain[1]["step_rows"] == wire.STEP_ROWS
    batch = wire.Batch(1, [(1, "a")], [b"x\n"], [], [], ["f"], [("a", 1, 2.0, 2.0)], {"connections.x": 1})
    assert unpack(wire.pack(batch)[4:]) == [
        "batch",
        1,
        [[1, "a"]],
        [b"x\n"],
        [],
        [],
        ["f"],
        [["a", 1, 2.0, 2.0]],
        {"connections.x": 1},
    ]
    # an older sender's batch without the optional tail still decodes
    old = msgspec.msgpack.Decoder(wire.ToWriter).decode(msgspec.msgpack.encode(["batch", 2, [], [], [], [], []]))
    assert old == wire.Batch(2, [], [], [], [], [])


@pytest.fixture
def writer(tmp_path: Path) -> Writer:
    w = Writer(tmp_path / "events.db", tmp_path / "mirror")
    yield w
    w.close()


def test_schema_is_versioned_and_in_wal_mode(writer: Writer) -> None:
    assert writer.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert writer.db.execute("SELECT version, name FROM schema_migrations").fetchall() == [
        (1, "initial"),
        (2, "counters_and_spool"),
        (3, "analysis_views"),
        (4, "claude_code_pairing"),
        (5, "rejected_line_key"),
        (6, "telemetry_usage"),
        (7, "dashboard_summaries"),
        (8, "tool_summaries"),
    ]
    indexes = {r[0] for r in writer.db.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    assert {"events_type_ts", "events_session_ts", "events_client_id", "events_tool_use_id"} <= indexes
    # migrating again is a no-op
    assert store.migrate(writer.db) == []
    # the line_key migration runs again harmlessly: a renumbering at a merge cannot break it
    store._m_rejected_line_key(writer.db)
    assert "rejected_line_key" in {r[0] for r in writer.db.execute("SELECT name FROM sqlite_master")}
    store._m_telemetry_usage(writer.db)  # so does the telemetry one
    assert "session_usage" in {r[0] for r in writer.db.execute("SELECT name FROM sqlite_master")}


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    w = Writer(tmp_path / "e.db", tmp_path / "m")
    w.db.execute("INSERT INTO schema_migrations VALUES (99, 'future', 0)")
    w.close()
    with pytest.raises(StoreError, match="newer than this hookd"):
        Writer(tmp_path / "e.db", tmp_path / "m")


def test_query_plans_use_the_indexes(writer: Writer) -> None:
    plan = " ".join(
        r[3] for r in writer.db.execute("EXPLAIN QUERY PLAN SELECT * FROM events WHERE type = 'a' AND ts > 5")
    )
    assert "events_type_ts" in plan
    plan = " ".join(
        r[3] for r in writer.db.execute("EXPLAIN QUERY PLAN SELECT * FROM events WHERE session = 's' ORDER BY ts")
    )
    assert "events_session_ts" in plan


def test_batches_store_rows_views_types_and_mirror(writer: Writer) -> None:
    f = Framer()
    replies = writer.commit(
        [
            make_batch(1, [b'{"type":"tool","n":1}', b'{"hook_event_name":"Stop"}'], f),
            make_batch(2, [b'{"type":"tool","n":2}'], f),
        ]
    )
    assert replies == [wire.Done(1, 2, []), wire.Done(2, 1, [])]
    assert writer.db.execute("SELECT count(*) FROM tool_events").fetchone() == (2,)
    assert writer.db.execute("SELECT count(*) FROM stop_events").fetchone() == (1,)
    assert writer.db.execute("SELECT type, count FROM event_types ORDER BY type").fetchall() == [
        ("stop", 1),
        ("tool", 2),
    ]
    lines = b"".join(p.read_bytes() for p in writer.mirror.files()).splitlines()
    assert len(lines) == 3


def test_duplicate_client_ids_are_stored_and_mirrored_once(writer: Writer) -> None:
    f = Framer()
    b1 = make_batch(1, [b'{"type":"a","id":"x"}', b'{"type":"a","id":"x"}', b'{"type":"a"}'], f)
    b2 = make_batch(2, [b'{"type":"a","id":"x"}', b'{"type":"a","id":"y"}'], f)
    first_x = b1.rows[0][records.EID]
    assert writer.commit([b1]) == [wire.Done(1, 2, [(1, first_x)])]
    assert writer.commit([b2]) == [wire.Done(2, 1, [(0, first_x)])]
    assert dict(writer.db.execute("SELECT name, value FROM counters").fetchall()) == {"committed": 3, "duplicate": 2}
    assert writer.db.execute("SELECT count(*) FROM events").fetchone() == (3,)
    assert writer.db.execute("SELECT count FROM event_types WHERE type='a'").fetchone() == (3,)
    lines = b"".join(p.read_bytes() for p in writer.mirror.files()).splitlines()
    assert sorted(json.loads(x)["id"] or "" for x in lines) == ["", "x", "y"]


def test_type_named_like_sqlite_internal_gets_no_view(writer: Writer) -> None:
    writer.commit([make_batch(1, [b'{"type":"sqlite_master"}'], Framer())])
    assert writer.db.execute("SELECT count(*) FROM events WHERE type='sqlite_master'").fetchone() == (1,)
    views = {name for (name,) in writer.db.execute("SELECT name FROM sqlite_master WHERE type='view'")}
    own = {"tool_calls", "sessions", "lost_tool_calls", "session_usage", "prompt_usage", "metric_totals"}
    assert views == own  # the schema's own views, no sqlite_master_events


def test_recovery_replays_mirror_lines_missing_from_sqlite(tmp_path: Path) -> None:
    """A crash after the mirror write but before the commit: the next start replays."""
    w = Writer(tmp_path / "e.db", tmp_path / "m")
    f = Framer()
    w.commit([make_batch(1, [b'{"type":"a","n":1}'], f)])
    lost = make_batch(2, [b'{"type":"a","n":2}', b'{"type":"b","n":3}'], f)
    w.mirror.write(b"".join(lost.mirror_lines))  # mirror written, SQLite never committed
    w.mirror.write(b'{"eid":99999999999999999,"type":"a","torn')  # torn half line
    w.close()

    w2 = Writer(tmp_path / "e.db", tmp_path / "m")
    assert w2.recover() == 2
    assert [r[0] for r in w2.db.execute("SELECT json_extract(data,'$.n') FROM events ORDER BY eid")] == [1, 2, 3]
    assert w2.db.execute("SELECT count(*) FROM b_events").fetchone() == (1,)
    content = b"".join(p.read_bytes() for p in w2.mirror.files())
    assert content.endswith(b"\n") and b"torn" not in content
    assert w2.recover() == 0  # idempotent
    w2.close()


def test_eid_floor_comes_from_the_database(writer: Writer) -> None:
    f = Framer(EidClock())
    writer.commit([make_batch(1, [b'{"type":"a"}'], f, now=4_000_000_000.0)])
    top = store.max_eid(writer.db)
    assert EidClock(top).next(1_800_000_000.0) > top


def test_mirror_file_per_utc_day(tmp_path: Path) -> None:
    m = Mirror(tmp_path / "m")
    m.write(b"a\n", now=0.0)
    m.write(b"b\n", now=86400.0 * 2 + 5)
    m.close()
    assert [p.name for p in m.files()] == ["1970-01-01.jsonl", "1970-01-03.jsonl"]


def test_readonly_connect_does_not_create(tmp_path: Path) -> None:
    with pytest.raises(StoreError):
        store.connect(tmp_path / "missing.db", readonly=True).execute("SELECT 1")


def test_view_names_are_validated() -> None:
    assert store.view_name("tool") == "tool_events"
    assert store.view_name("x'; DROP TABLE events; --") is None
    assert store.view_name("sqlite_x") is None
    db = sqlite3.connect(":memory:")
    assert store.create_view(db, "a b") is False


def test_type_counts_sent_by_the_daemon_match_the_rows(writer: Writer) -> None:
    framer = Framer()
    lines = [json.dumps({"type": t, "ts": 1_700_000_000 + i, "i": i}).encode() for i, t in enumerate("abcabca" * 3)]
    with_summary = make_batch(1, lines[:10], framer)
    with_summary.types = type_summary(with_summary.rows)
    plain = make_batch(2, lines[10:], framer)  # an older daemon's frame: the writer counts itself
    writer.commit([with_summary])
    writer.commit([plain])
    # ids make the second send of a batch all duplicates: the summary must not count them
    dup_lines = [json.dumps({"type": "a", "id": f"x{i}"}).encode() for i in range(3)]
    for seq in (3, 4):
        b = make_batch(seq, dup_lines, framer)
        b.types = type_summary(b.rows)
        writer.commit([b])
    got = writer.db.execute("SELECT type, count, first_ts, last_ts FROM event_types ORDER BY type").fetchall()
    want = writer.db.execute(
        "SELECT type, count(*), min(ts), max(ts) FROM events GROUP BY type ORDER BY type"
    ).fetchall()
    assert got == want
    assert dict((t, n) for t, n, _f, _l in got) == {"a": 9 + 3, "b": 6, "c": 6}


def test_database_full_is_retried_until_space_returns_and_nothing_is_doubled(writer: Writer) -> None:
    """SQLITE_FULL (here from PRAGMA max_page_count): rolled back, reported, retried; the mirror
    holds the batch once."""
    f = Framer()
    writer.commit([make_batch(1, [b'{"type":"a"}'], f)])
    pages = writer.db.execute("PRAGMA page_count").fetchone()[0]
    writer.db.execute(f"PRAGMA max_page_count = {pages}")
    states: list[str] = []

    def on_state(state: str, since: float) -> None:
        states.append(state)
        if len(states) == 3:  # space returns after the third failed attempt
            writer.db.execute("PRAGMA max_page_count = 1073741823")

    writer.on_state = on_state
    big = [b'{"type":"b","pad":"%s","i":%d}' % (b"x" * 2000, i) for i in range(200)]
    replies = writer.commit([make_batch(2, big, f)])
    assert replies == [wire.Done(2, 200, [])]
    assert len(states) == 4, states
    assert all(s.startswith("waiting for disk space (database) since ") for s in states[:3]), states
    assert states[2].endswith(", 3 retries")
    assert states[-1] == "ok"
    assert writer.db.execute("SELECT count(*) FROM events").fetchone()[0] == 201
    lines = b"".join(p.read_bytes() for p in writer.mirror.files()).splitlines()
    assert len(lines) == 201


def test_failed_mirror_write_is_cut_back_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A write cut short by ENOSPC leaves no partial batch behind (simulated: tmpfs needs root)."""
    import errno
    import os

    m = Mirror(tmp_path / "mirror")
    m.write(b'{"eid":1}\n', now=0)
    real_write = os.write
    calls = [0]

    def short_then_enospc(fd: int, data) -> int:
        calls[0] += 1
        if calls[0] == 1:
            return real_write(fd, bytes(data[:7]))  # a partial line reaches the file ...
        raise OSError(errno.ENOSPC, "No space left on device")  # ... then the disk is full

    monkeypatch.setattr(os, "write", short_then_enospc)
    with pytest.raises(OSError):
        m.write(b'{"eid":2}\n{"eid":3}\n', now=0)
    monkeypatch.undo()
    assert m.path_for("1970-01-01").read_bytes() == b'{"eid":1}\n'
    m.write(b'{"eid":2}\n', now=0)
    assert m.path_for("1970-01-01").read_bytes() == b'{"eid":1}\n{"eid":2}\n'
    m.close()


def test_frames_cross_the_enlarged_pipe_whole_however_the_reads_fall() -> None:
    """The writer's FrameReader over a real pipe from wire.pipe(): frames larger than the pipe,
    many small ones in one read, a frame split across reads, then end of stream."""
    import fcntl
    import os
    import threading

    from hookd.writer.writer import FrameReader

    r, w = wire.pipe()
    try:
        limit = int(Path("/proc/sys/fs/pipe-max-size").read_text())
        if limit >= wire.PIPE_SIZE:
            assert fcntl.fcntl(w, fcntl.F_GETPIPE_SZ) == wire.PIPE_SIZE
        frames: list[wire.ToWriter] = [
            wire.Batch(i, [], [b"x" * (i * 997 % 50_000)], list(range(i % 7)), [], []) for i in range(300)
        ]
        frames.append(wire.Batch(300, [], [b"y" * (3 * wire.PIPE_SIZE)], [], [], []))  # bigger than the pipe itself
        frames += [wire.Views({"t": {"c": f"$.c{i}"}}) for i in range(2000)]
        frames.append(wire.Close())
        data = b"".join(wire.pack(f) for f in frames)

        def feed() -> None:
            with os.fdopen(w, "wb", buffering=0) as out:
                for k in range(0, len(data), 77_777):  # cuts inside headers and bodies alike
                    out.write(data[k : k + 77_777])

        t = threading.Thread(target=feed)
        t.start()
        reader = FrameReader(r)
        got: list = []
        while not reader.eof:
            got.extend(reader.read())
        t.join()
    finally:
        os.close(r)
    assert got == frames


def test_absurd_token_counts_cannot_break_the_usage_views(writer: Writer) -> None:
    """One record with a token count past any model's ("9" * 30 casts to SQLite's largest
    integer) must not make the sums overflow: that fails the whole view, for every session."""
    f = Framer()
    rec = {"type": "claude_code_api_request", "session": "s1", "cost_usd": 0.5, "model": "m"}
    junk = [dict(rec, input_tokens="9" * 30, output_tokens=-5) for _ in range(2)]
    good = [{**rec, "session": "s2", "input_tokens": 1200, "output_tokens": "310"}]
    writer.commit([make_batch(1, [json.dumps(r).encode() for r in junk + good], f)])
    for view in ("sessions", "session_usage", "prompt_usage"):
        writer.db.execute(f"SELECT * FROM {view}").fetchall()  # no "integer overflow"
    got = writer.db.execute("SELECT session, input_tokens, output_tokens FROM session_usage ORDER BY session")
    assert got.fetchall() == [("s1", 2 * store.TOKENS_MAX, 0), ("s2", 1200, 310)]
    assert writer.db.execute("SELECT input_tokens FROM sessions WHERE session = 's2'").fetchone() == (1200,)


TOOL_EVENTS = "('pre_tool_use', 'post_tool_use', 'post_tool_use_failure')"
#: migration 8's summaries as plain SQL over ``events``: (tool, hour, calls, closed, failed, timed)
TOOL_HOURS_EXACT = (
    "SELECT coalesce(json_extract(data, '$.tool_name'), '?'), CAST(ts / 3600 AS INTEGER), "
    "sum(type = 'pre_tool_use'), sum(type <> 'pre_tool_use'), sum(type = 'post_tool_use_failure'), "
    "sum(type <> 'pre_tool_use' AND typeof(json_extract(data, '$.duration_ms')) IN ('integer', 'real')) "
    f"FROM events WHERE type IN {TOOL_EVENTS} GROUP BY 1, 2 ORDER BY 1, 2"
)


def tool_summaries_are_exact(db: sqlite3.Connection) -> None:
    from hookd.durations import BUCKETS, bucket_bounds

    def bucket(ms: float) -> str:
        return str(next(b for b in range(BUCKETS - 1, -1, -1) if b == 0 or ms >= bucket_bounds(b)[0]))

    hours = db.execute("SELECT type, CAST(ts / 3600 AS INTEGER), count(*) FROM events GROUP BY 1, 2 ORDER BY 1, 2")
    assert db.execute("SELECT type, hour, count FROM event_hours ORDER BY 1, 2").fetchall() == hours.fetchall()
    got = db.execute("SELECT tool, hour, calls, closed, failed, timed FROM tool_hours ORDER BY 1, 2").fetchall()
    assert got == db.execute(TOOL_HOURS_EXACT).fetchall()
    days = db.execute(TOOL_HOURS_EXACT.replace("ts / 3600", "ts / 86400")).fetchall()
    assert db.execute("SELECT tool, day, calls, closed, failed, timed FROM tool_days ORDER BY 1, 2").fetchall() == days
    for table, unit in (("tool_hours", "hour"), ("tool_days", "day")):
        want: dict[tuple, dict[str, int]] = {}
        for tool, span, ms in db.execute(
            f"SELECT json_extract(data, '$.tool_name'), CAST(ts / {3600 if unit == 'hour' else 86400} AS INTEGER), "
            "json_extract(data, '$.duration_ms') FROM events WHERE type IN ('post_tool_use', 'post_tool_use_failure') "
            "AND typeof(json_extract(data, '$.duration_ms')) IN ('integer', 'real')"
        ):
            hist = want.setdefault((tool, span), {})
            hist[bucket(ms)] = hist.get(bucket(ms), 0) + 1
        rows = db.execute(f"SELECT tool, {unit}, durations FROM {table} WHERE timed > 0").fetchall()
        assert {(t, s): json.loads(h) for t, s, h in rows} == want, table
    # the slowest of each hour: every timed closing event when an hour has few
    slowest = db.execute("SELECT eid FROM tool_slowest ORDER BY eid").fetchall()
    timed = db.execute(
        "SELECT eid FROM events WHERE type IN ('post_tool_use', 'post_tool_use_failure') "
        "AND typeof(json_extract(data, '$.duration_ms')) IN ('integer', 'real') ORDER BY eid"
    ).fetchall()
    assert slowest == timed


def test_tool_summaries_stay_exact_through_inserts_and_deletes(writer: Writer) -> None:
    """Migration 8: per tool and hour (and day) counts and duration histograms equal the same
    SQL over ``events`` after batches and after retention-like deletes (the trigger); events
    without a tool name or with a non-numeric duration count, untimed; closing events may come
    before their PreToolUse."""
    framer, t0, lines = Framer(), 1_800_000_000.0, []
    for i in range(60):
        call = {"session_id": f"s{i % 3}", "tool_name": ("Read", "Bash", "Edit")[i % 3], "tool_use_id": f"t{i}"}
        pre = {"hook_event_name": "PreToolUse", **call, "ts": t0 + i * 400}
        done = "PostToolUseFailure" if i % 7 == 0 else "PostToolUse"
        ms = "slow" if i % 11 == 0 else 3 * i * i + 0.5
        post = {"hook_event_name": done, **call, "duration_ms": ms, "ts": t0 + i * 400 + 3}
        lines += [json.dumps(e).encode() for e in ((post, pre) if i % 5 == 0 else (pre, post))]
    lines.append(json.dumps({"hook_event_name": "PostToolUse", "session_id": "s0", "ts": t0}).encode())
    for seq, start in enumerate(range(0, len(lines), 25)):
        writer.commit([make_batch(seq, lines[start : start + 25], framer)])
    assert writer.behind  # added between batches, not in them
    writer.summarize_step(limit=50)  # part of them: the mark lies among the events
    assert writer.behind and store.summary_mark(writer.db) == writer.summarized
    writer.db.execute("DELETE FROM events WHERE type = 'post_tool_use' AND ts < ?", (t0 + 8000,))  # by age
    writer.summarize_all()
    assert not writer.behind
    tool_summaries_are_exact(writer.db)
    writer.db.execute("DELETE FROM events WHERE eid IN (SELECT eid FROM events ORDER BY eid LIMIT 30)")  # oldest
    tool_summaries_are_exact(writer.db)
    assert writer.db.execute("SELECT sum(calls), sum(closed) FROM tool_days").fetchone() == (36, 37)
    writer.db.execute("DELETE FROM events")
    assert [writer.db.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("tool_hours", "tool_days")] == [0, 0]
    assert writer.db.execute("SELECT count(*) FROM tool_slowest").fetchone()[0] == 0
    # a database at migration 7 with events gets them summarized by migration 8
    writer.commit([make_batch(99, lines, framer)])
    writer.summarize_step(limit=10)  # a run again finds the summaries behind: they catch up
    writer.db.execute("DELETE FROM schema_migrations WHERE version = 8")
    writer.db.execute("DROP TABLE tool_days")
    writer.db.execute("DELETE FROM tool_hours")
    assert store.migrate(writer.db) == ["tool_summaries"]
    tool_summaries_are_exact(writer.db)


def test_tool_slowest_keeps_the_slowest_of_each_hour(writer: Writer) -> None:
    """``tool_slowest`` holds an hour's 20 slowest timed calls, however its batches fall."""
    framer, t0, lines = Framer(), 1_800_000_000.0, []
    for i in range(70):
        call = {"session_id": "s", "tool_name": "Bash", "tool_use_id": f"t{i}", "duration_ms": (i * 37) % 101}
        lines.append(json.dumps({"hook_event_name": "PostToolUse", **call, "ts": t0 + i}).encode())
    for seq, start in enumerate(range(0, len(lines), 9)):
        writer.commit([make_batch(seq, lines[start : start + 9], framer)])
        writer.summarize_all()
    kept = writer.db.execute("SELECT duration_ms FROM tool_slowest ORDER BY duration_ms DESC").fetchall()
    want = sorted(((i * 37) % 101 for i in range(70)), reverse=True)[: store.SLOWEST_PER_HOUR]
    assert [k[0] for k in kept] == want
