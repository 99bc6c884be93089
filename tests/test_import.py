"""`hookd import`: backfill from JSONL logs through the same validation, idempotently."""

from __future__ import annotations

import contextlib
import json
import os
import pty
import random
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from conftest import Daemon, clean_env
from hookd.backfill import NumberedLines


@pytest.fixture
def daemons(home: Path) -> Iterator[Callable[..., Daemon]]:
    """Make daemons on ``home`` (with arguments); any still running at the end is killed,
    also when the test fails."""
    made: list[Daemon] = []

    def make(*args: str) -> Daemon:
        made.append(Daemon(home, *args))
        return made[-1]

    yield make
    for d in made:
        d.kill()


def hookd(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hookd", *args], env=clean_env(home), capture_output=True, text=True, timeout=120
    )


def test_import_is_validated_idempotent_and_mirrored(home: Path, tmp_path: Path) -> None:
    log = tmp_path / "tool_events.jsonl"
    lines = [json.dumps({"hook_event_name": "PostToolUse", "session_id": "s", "n": i}) for i in range(500)]
    lines[10] = "not json"
    lines[20] = json.dumps({"no_type": True})
    lines.append(json.dumps({"type": "tool", "n": 0}))  # same content as another line but distinct
    lines.append(json.dumps({"type": "tool", "n": 0}))
    lines.append(json.dumps({"type": "tool", "id": "explicit-1"}))
    log.write_text("\n".join(lines) + "\n\n")

    out = hookd(home, "import", str(log))
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0].startswith("503 lines: 501 imported, 0 duplicate, 2 rejected")
    assert "rejected invalid_json: 1" in out.stdout and "rejected missing_type: 1" in out.stdout

    d = Daemon(home)
    # the per-type counts the importer sends with each batch are exact, and a re-import (all
    # duplicates, counted by the writer from what it really stored) adds nothing to them
    types = "SELECT type, count, first_ts, last_ts FROM event_types ORDER BY type"
    actual = "SELECT type, count(*), min(ts), max(ts) FROM events GROUP BY type ORDER BY type"
    assert d.query(types) == d.query(actual)
    assert [(t, n) for t, n, _f, _l in d.query(types)] == [("post_tool_use", 498), ("tool", 3)]

    rejected = "SELECT reason, detail, size, preview, line_key FROM rejected ORDER BY rid"
    first_rejected = d.query(rejected)
    assert len(first_rejected) == 2 and all(key.startswith("import:") for *_, key in first_rejected)
    counters = "SELECT name, value FROM counters WHERE name LIKE 'rejected.%' ORDER BY name"
    first_counters = d.query(counters)

    again = hookd(home, "import", str(log))
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines()[0].startswith("503 lines: 0 imported, 501 duplicate, 2 rejected")
    assert "through the running daemon" not in again.stdout
    assert d.query(rejected) == first_rejected, "the rejected lines are recorded once"
    assert d.query(counters) == first_counters
    assert d.query(types) == d.query(actual)
    assert d.count() == 501
    assert d.query("SELECT count(*) FROM post_tool_use_events") == [(498,)]
    assert d.query("SELECT count(*) FROM tool_events") == [(3,)]
    assert d.query("SELECT client_id FROM events WHERE json_extract(data, '$.id') = 'explicit-1'") == [("explicit-1",)]
    # the stored data is the line exactly as it was in the log
    assert d.query("SELECT data FROM events WHERE json_extract(data,'$.n') = 5") == [(lines[5],)]
    # imported events are in the mirror too, so a rebuild keeps them
    assert len(d.mirror_lines()) == 501
    assert hookd(home, "rebuild").returncode == 0
    assert d.count() == 501
    # the rebuilt database keeps the rejected lines' keys: importing again still adds nothing
    assert hookd(home, "import", str(log)).returncode == 0
    assert d.query(rejected) == first_rejected and d.count() == 501
    # the daemon starts on the imported database and continues the eids
    d.start()
    d.send(b'{"type":"live"}\n')
    assert d.wait_count(502) == 502
    assert d.stop() == 0
    assert d.query("SELECT max(eid) = (SELECT eid FROM events WHERE type = 'live') FROM events") == [(1,)]


def test_import_with_forced_type_and_several_files(home: Path, tmp_path: Path) -> None:
    a = tmp_path / "a.jsonl"
    b = tmp_path / "b.jsonl"
    a.write_text('{"sha": "1"}\n{"sha": "2", "type": "other"}\n')
    b.write_text('{"sha": "3"}')  # no final newline
    out = hookd(home, "import", "--type", "Git-Commit", str(a), str(b))
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("3 lines: 3 imported, 0 duplicate, 0 rejected")
    assert Daemon(home).query("SELECT type, count(*) FROM events GROUP BY type") == [("git_commit", 3)]


def test_import_reports_missing_files_and_bad_types_with_or_without_a_daemon(
    home: Path, tmp_path: Path, daemons: Callable[..., Daemon]
) -> None:
    f = tmp_path / "x.jsonl"
    f.write_text('{"type": "x"}\n')
    for running in (False, True):
        d = daemons().start() if running else None
        missing = hookd(home, "import", str(f), str(tmp_path / "nope.jsonl"))
        assert missing.returncode == 2 and "nope.jsonl: no such file" in missing.stderr
        bad_type = hookd(home, "import", "--type", "9 bad", str(f))
        assert bad_type.returncode == 2 and "--type" in bad_type.stderr
        if d is not None:  # a daemon that writes another database than --db names
            other = hookd(home, "import", "--db", str(tmp_path / "other.db"), str(f))
            assert other.returncode == 2 and f"stores into {d.db_path}, not {tmp_path}/other.db" in other.stderr
            assert d.stop() == 0
    assert not Daemon(home).db_path.exists() or Daemon(home).count() == 0


def test_import_cuts_oversized_lines_or_skips_them_in_bounded_memory(home: Path, tmp_path: Path) -> None:
    """Import splits lines with framing's LineSplitter, so it cuts over-long events to fit as
    the daemon does (oversize.py), and skips what cannot be cut (here, over 16 x max_line)."""
    f = tmp_path / "big.jsonl"
    with open(f, "wb") as out:
        out.write(b'{"type":"a"}\n{"type":"b","x":"')
        out.write(b"y" * (3 << 20))
        out.write(b'"}\n{"type":"c"}\n{"type":"d","x":"')
        out.write(b"y" * (17 << 20))
        out.write(b'"}\n{"type":"e"}\n')
    r = hookd(home, "import", str(f))
    assert r.returncode == 0, r.stderr
    assert "rejected too_long: 1" in r.stdout
    rows = Daemon(home).query("SELECT type, length(data), json_extract(data, '$._hookd_truncated.values') FROM events")
    assert [t for t, _, _ in rows] == ["a", "b", "c", "e"]
    assert rows[1][1] <= 1 << 20 and json.loads(rows[1][2]) == [{"path": "$.x", "length": 3 << 20}]


def test_lines_are_numbered_by_their_place_in_the_file_whatever_the_chunks() -> None:
    """Both import paths key a line by its number: the daemon gets the file in a socket's
    chunks, the offline import in 1 MiB reads; over-long lines count too."""
    rng = random.Random(13)
    lines = [b"x" * rng.choice([0, 5, 50, 99, 100, 101, 250]) + b"%d" % i for i in range(400)]
    data = b"\n".join(lines)  # the last line without a newline
    expected = [(n, line) for n, line in enumerate(lines, 1) if line.strip() and len(line) <= 100]
    too_long = sum(len(line) > 100 for line in lines)
    for _ in range(30):
        numbered = NumberedLines(100)
        got, oversized, pos = [], 0, 0
        while pos < len(data):
            size = rng.choice([1, 7, 64, 150, 333, 4096])
            got += numbered.feed(data[pos : pos + size])
            oversized += len(numbered.oversized())
            pos += size
        got += numbered.finish()
        oversized += len(numbered.oversized())
        assert [(n, line) for n, line in got if line.strip()] == expected
        assert oversized == too_long


# -- through a running daemon (issue 13 item 10) ----------------------------------------------


def log_file(path: Path, n: int, bad_every: int = 0, name: str = "PostToolUse") -> int:
    """A JSONL log of ``n`` lines; every ``bad_every``-th is not JSON. Returns the bad lines."""
    bad = 0
    with open(path, "w") as f:
        for i in range(n):
            if bad_every and i % bad_every == bad_every - 1:
                f.write(f"not json {i}\n")
                bad += 1
            else:
                f.write(json.dumps({"hook_event_name": name, "session_id": f"s{i % 7}", "n": i}) + "\n")
    return bad


def snapshot(d: Daemon) -> tuple[list[tuple], list[tuple], list[tuple]]:
    """Everything an import may add to: events (without receive times), rejected, counters."""
    return (
        d.query("SELECT type, ts, session, client_id, data FROM events ORDER BY client_id"),
        d.query("SELECT reason, detail, size, preview, line_key FROM rejected ORDER BY line_key"),
        d.query("SELECT name, value FROM counters WHERE name NOT IN ('duplicate') ORDER BY name"),
    )


def acked_sender(d: Daemon, stop: threading.Event, acked: list[float]) -> None:
    """A hook that waits for its acknowledgement, again and again, until ``stop``; ``acked``
    gets how long each waited."""
    i = 0
    while not stop.is_set():
        started = time.monotonic()
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(30)
            s.connect(str(d.socket))
            s.sendall(b'?{"type":"live","i":%d}\n' % i)
            with s.makefile("rb") as replies:
                reply = json.loads(replies.readline())
        assert reply["ok"], reply
        acked.append(time.monotonic() - started)
        i += 1
        time.sleep(0.005)


def test_import_while_the_daemon_runs_and_hooks_keep_sending(daemon: Daemon, tmp_path: Path) -> None:
    big = tmp_path / "big.jsonl"
    bad = log_file(big, 200_000, bad_every=1000)
    stop = threading.Event()
    acked: list[float] = []
    hooks = threading.Thread(target=acked_sender, args=(daemon, stop, acked))
    hooks.start()
    imp = subprocess.Popen(
        [sys.executable, "-m", "hookd", "import", str(big)],
        env=clean_env(daemon.home),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    answers = []
    acked_before = len(acked)
    try:
        while imp.poll() is None:  # hookd status answers meanwhile, and shows the import
            st = hookd(daemon.home, "status", "--json")
            assert st.returncode == 0, st.stderr
            answers.append(json.loads(st.stdout)["daemon"]["imports"])
        out, err = imp.communicate(timeout=120)
        during = acked[acked_before:]
    finally:
        stop.set()
        hooks.join()
        imp.kill()
    assert imp.returncode == 0, err
    assert out.splitlines()[0].startswith(f"200000 lines: {200_000 - bad} imported, 0 duplicate, {bad} rejected")
    assert "through the running daemon" in out and f"rejected invalid_json: {bad}" in out
    assert any(a and a[0]["file"] == "big.jsonl" for a in answers), answers
    assert during and max(during) < 10, "hooks were answered during the import, without starving"
    assert daemon.stop() == 0, daemon.logtext
    assert daemon.count("type = 'post_tool_use'") == 200_000 - bad
    assert daemon.count("type = 'live'") == len(acked), "every hook event is stored"
    assert daemon.query("SELECT count(*) FROM rejected") == [(bad,)]
    assert len(daemon.mirror_lines()) == daemon.count()


def test_reimport_on_either_path_adds_nothing_and_bad_lines_are_recorded_once(
    home: Path, tmp_path: Path, daemons: Callable[..., Daemon]
) -> None:
    f = tmp_path / "old.jsonl"
    bad = log_file(f, 3000, bad_every=7)
    with open(f, "ab") as out:  # over-long lines (over max_line): one cut to fit, one that cannot be
        out.write(b'{"type":"big","x":"' + b"y" * (2 << 20) + b'"}\n')
        out.write(b"[" + b"1," * (1 << 20) + b"1]\n")  # not an object: too_long
        out.write(b'{"type":"last"}')  # and a last line without newline
    d = daemons()
    offline = hookd(home, "import", str(f))
    assert offline.returncode == 0, offline.stderr
    assert "through the running daemon" not in offline.stdout
    first = snapshot(d)
    assert len(first[0]) == 3000 - bad + 2 and len(first[1]) == bad + 1
    assert dict(first[2])["rejected.too_long"] == 1
    assert [json.loads(e[4])["_hookd_truncated"]["values"] for e in first[0] if e[0] == "big"] == [
        [{"path": "$.x", "length": 2 << 20}]
    ]

    d.start()
    for _ in range(2):  # through the daemon: the same ids and keys as offline
        through = hookd(home, "import", str(f))
        assert through.returncode == 0, through.stderr
        assert through.stdout.startswith(f"{3002} lines: 0 imported, {3000 - bad + 2} duplicate, {bad + 1} rejected")
        assert "through the running daemon" in through.stdout
        assert snapshot(d) == first
    assert d.stop() == 0, d.logtext
    assert snapshot(d) == first


def test_bad_lines_through_the_daemon_are_recorded_once_with_the_file_and_line(daemon: Daemon, tmp_path: Path) -> None:
    f = tmp_path / "mixed.jsonl"
    f.write_text('{"type":"ok"}\n[1]\n{"no_type":1}\n\n{"type":"ok","n":2}\n{bad\n')
    for _ in range(3):
        out = hookd(daemon.home, "import", "--type", "Mixed", str(f))
        assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("5 lines: 0 imported, 3 duplicate, 2 rejected")
    assert "rejected invalid_json: 1" in out.stdout and "rejected not_object: 1" in out.stdout
    assert daemon.stop() == 0
    # --type replaces the line's own type, so {"no_type":1} is stored, not rejected
    assert daemon.query("SELECT type, count(*) FROM events GROUP BY type") == [("mixed", 3)]
    assert daemon.query("SELECT reason, detail FROM rejected ORDER BY rid") == [
        ("not_object", "mixed.jsonl:2: Expected `object`, got `array`"),
        ("invalid_json", "mixed.jsonl:6: JSON is malformed: object keys must be strings (byte 1)"),
    ]
    counters = dict(daemon.query("SELECT name, value FROM counters"))
    assert counters["rejected.not_object"] == 1 and counters["rejected.invalid_json"] == 1


def test_import_progress_and_summary_through_the_daemon(
    home: Path, tmp_path: Path, daemons: Callable[..., Daemon]
) -> None:
    # Small batches: many commits, so progress comes while the file streams.
    d = daemons("--batch-size", "100").start()
    f = tmp_path / "p.jsonl"
    log_file(f, 20_000)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:  # the protocol itself
        s.connect(str(home / "hookd.sock.ctl"))
        s.sendall(b'!import {"file":"p.jsonl"}\n')
        with s.makefile("rb") as replies:
            ready = {"ok": True, "import": "ready", "max_line": 1 << 20, "db": str(d.db_path)}
            assert json.loads(replies.readline()) == ready
            s.sendall(f.read_bytes())
            s.shutdown(socket.SHUT_WR)
            lines = [json.loads(x) for x in replies]
    *progress, done = lines
    assert progress and all(p["ok"] and p["progress"]["imported"] > 0 for p in progress), lines
    assert done == {
        "ok": True,
        "done": {"bytes": f.stat().st_size, "lines": 20_000, "imported": 20_000, "duplicates": 0, "rejected": {}},
    }
    # hookd import on a terminal: the progress bar on stderr (a pty), the summary on stdout
    main, sub = pty.openpty()
    g = tmp_path / "q.jsonl"
    log_file(g, 20_000, bad_every=500, name="Other")
    proc = subprocess.run(
        [sys.executable, "-m", "hookd", "import", "--type", "q", str(g)],
        env=clean_env(home), stdout=subprocess.PIPE, stderr=sub, text=True, timeout=120,
    )  # fmt: skip
    os.close(sub)
    bar = read_pty(main)
    assert proc.returncode == 0, bar
    assert proc.stdout.startswith("20000 lines: 19960 imported, 0 duplicate, 40 rejected")
    assert "importing [" in bar and "100%" in bar and "19,960 stored" in bar
    assert d.stop() == 0


def read_pty(fd: int) -> str:
    out = b""
    with contextlib.suppress(OSError):  # EIO once the other end is closed
        while chunk := os.read(fd, 65536):
            out += chunk
    os.close(fd)
    return out.decode(errors="replace")


def test_a_daemon_stopping_mid_import_says_to_run_it_again_and_that_finishes_it(
    home: Path, tmp_path: Path, daemons: Callable[..., Daemon]
) -> None:
    f = tmp_path / "long.jsonl"
    log_file(f, 150_000)
    d = daemons().start()
    imp = subprocess.Popen(
        [sys.executable, "-m", "hookd", "import", str(f)],
        env=clean_env(home),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert d.wait_count(10_000) >= 10_000
    assert d.stop() == 0, d.logtext
    out, err = imp.communicate(timeout=60)
    assert imp.returncode == 1, out
    assert "run the same import again" in err and "Traceback" not in err
    partial = d.count()
    assert 10_000 <= partial < 150_000
    d.start()
    again = hookd(home, "import", str(f))
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith(f"150000 lines: {150_000 - partial} imported, {partial} duplicate, 0 rejected")
    assert d.stop() == 0
    assert d.count() == 150_000 == len(d.mirror_lines())
