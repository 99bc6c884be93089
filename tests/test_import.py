"""`hookd import`: backfill from JSONL logs through the same validation, idempotently."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import Daemon, clean_env


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

    again = hookd(home, "import", str(log))
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines()[0].startswith("503 lines: 0 imported, 501 duplicate, 2 rejected")
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


def test_import_refuses_while_the_daemon_runs_and_reports_missing_files(daemon: Daemon, tmp_path: Path) -> None:
    f = tmp_path / "x.jsonl"
    f.write_text('{"type": "x"}\n')
    out = hookd(daemon.home, "import", str(f))
    assert out.returncode == 1
    assert "stop it for the import" in out.stderr
    missing = hookd(daemon.home, "import", str(tmp_path / "nope.jsonl"))
    assert missing.returncode == 2 and "no such file" in missing.stderr
    bad_type = hookd(daemon.home, "import", "--type", "9 bad", str(f))
    assert bad_type.returncode == 2


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
