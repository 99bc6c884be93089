"""The daemon end to end: a real process, a real socket, real clients, real signals."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time

import pytest

from conftest import SHELL_CLIENT, Daemon, clean_env


def emit_in_subprocess(home, code: str) -> str:
    out = subprocess.run(
        [sys.executable, "-c", "from hookd_client import emit\n" + code],
        env=clean_env(home),
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return out.stdout


def test_events_from_all_three_clients_land_once_in_table_view_and_mirror(daemon: Daemon, socat: str) -> None:
    home = daemon.home
    emit_in_subprocess(home, "emit('tool', tool_name='Read', session='s1')\nemit('tool', {'tool_name': 'Write'})")
    payload = json.dumps({"hook_event_name": "PostToolUse", "session_id": "abc", "tool_name": "Bash"})
    subprocess.run([str(SHELL_CLIENT), "-"], input=payload, env=clean_env(home), check=True, text=True, timeout=10)
    subprocess.run([str(SHELL_CLIENT), "git_commit", '{"sha": "abc123"}'], env=clean_env(home), check=True, timeout=10)
    subprocess.run(
        [socat, "-u", "-", f"UNIX-CONNECT:{daemon.socket}"],
        input=b'{"type":"raw","n":1}\n{"event":"Routing-Metrics","n":2}',
        check=True,
        timeout=10,
    )
    assert daemon.stop() == 0

    rows = daemon.query("SELECT type, session, json_extract(data, '$.tool_name'), data FROM events ORDER BY eid")
    types = [r[0] for r in rows]
    assert sorted(types) == sorted(["tool", "tool", "post_tool_use", "git_commit", "raw", "routing_metrics"])
    assert ("tool", "s1", "Read") in [r[:3] for r in rows]
    assert ("post_tool_use", "abc", "Bash") in [r[:3] for r in rows]
    assert json.loads(next(r[3] for r in rows if r[0] == "git_commit")) == {"sha": "abc123", "type": "git_commit"}
    # views per type, as dashboards expect
    assert daemon.query("SELECT count(*) FROM tool_events")[0][0] == 2
    assert daemon.query("SELECT count(*) FROM post_tool_use_events")[0][0] == 1
    assert daemon.query("SELECT count(*) FROM routing_metrics_events")[0][0] == 1
    # the mirror holds the same events, once each, with the client's object under data
    mirror = [json.loads(line) for line in daemon.mirror_lines()]
    assert sorted(m["eid"] for m in mirror) == [e for (e,) in daemon.query("SELECT eid FROM events ORDER BY eid")]
    by_type = {m["type"]: m for m in mirror}
    assert by_type["raw"]["data"] == {"type": "raw", "n": 1}
    assert {"eid", "type", "ts", "session", "data"} <= set(by_type["tool"])
    # sender credentials are recorded
    pids_uids = daemon.query("SELECT DISTINCT uid FROM events")
    assert pids_uids == [(os.getuid(),)]
    assert daemon.count("pid IS NULL OR pid <= 0") == 0


def test_bad_lines_are_rejected_with_reasons_and_cost_no_good_event(daemon: Daemon) -> None:
    bad = [
        b"not json",
        b"[1, 2]",
        b'{"type": "has space!"}',
        b'{"no_type": 1}',
        b'{"type": "ok", "ts": true}',
        b'{"type": "x", "a": 1} trailing',
        b'{"type": "x", "s": "\xff"}',
    ]
    good = [json.dumps({"type": "good", "i": i}).encode() for i in range(len(bad) + 1)]
    stream = b""
    for i, b in enumerate(bad):
        stream += good[i] + b"\n" + b + b"\n"
    stream += good[-1] + b"\n"
    daemon.send(stream)
    assert daemon.stop() == 0
    assert daemon.count("type = 'good'") == len(good)
    reasons = [r[0] for r in daemon.query("SELECT reason FROM rejected ORDER BY rid")]
    assert reasons == [
        "invalid_json",
        "not_object",
        "bad_type",
        "missing_type",
        "bad_field",
        "invalid_json",
        "invalid_utf8",
    ]
    previews = [r[0] for r in daemon.query("SELECT preview FROM rejected ORDER BY rid")]
    assert previews[0] == "not json"
    assert "\\xff" in previews[-1]


def test_oversized_line_is_cut_or_rejected_and_the_next_line_is_read(home) -> None:
    d = Daemon(home, "--max-line", "1024").start()
    try:
        d.send(
            b'{"type":"before"}\n'
            + b'{"type":"big","x":"'
            + b"a" * 5000
            + b'"}\n'  # cut to fit
            + b"["
            + b"1," * 3000
            + b"1]\n"  # not an object: rejected
            + b'{"type":"after"}\n'
        )
        assert d.stop() == 0
    finally:
        d.kill()
    rows = [(t, json.loads(data)) for t, data in d.query("SELECT type, data FROM events ORDER BY eid")]
    assert [t for t, _ in rows] == ["before", "big", "after"]
    assert rows[1][1]["_hookd_truncated"] == {
        "size": 5000 + 21,
        "limit": 1024,
        "values": [{"path": "$.x", "length": 5000}],
    }
    assert d.query("SELECT reason, size FROM rejected") == [("too_long", 6003)]


def test_last_line_without_newline_counts_and_many_events_per_connection(daemon: Daemon) -> None:
    body = b"\n".join(json.dumps({"type": "bulk", "i": i}).encode() for i in range(5000))
    daemon.send(body)  # no final newline
    assert daemon.wait_count(5000) == 5000
    assert daemon.query("SELECT max(json_extract(data, '$.i')) FROM events")[0][0] == 4999


def test_client_id_is_stored_once(daemon: Daemon) -> None:
    line = b'{"type":"job","id":"run-42"}\n'
    daemon.send(line * 3)
    daemon.send(line)
    daemon.send(b'{"type":"job","id":7}\n{"type":"job","id":"7"}\n')
    assert daemon.stop() == 0
    assert daemon.query("SELECT client_id, count(*) FROM events GROUP BY client_id ORDER BY 1") == [
        ("7", 1),
        ("run-42", 1),
    ]
    assert len(daemon.mirror_lines()) == 2


def test_private_modes(daemon: Daemon) -> None:
    assert stat.S_IMODE(os.stat(daemon.socket).st_mode) == 0o600
    assert stat.S_ISSOCK(os.stat(daemon.socket).st_mode)
    assert stat.S_IMODE(os.stat(daemon.home / "mirror").st_mode) == 0o700
    daemon.send(b'{"type":"x"}\n')
    daemon.wait_count(1)
    for p in [daemon.db_path, *(daemon.home / "mirror").glob("*.jsonl")]:
        assert stat.S_IMODE(os.stat(p).st_mode) == 0o600, p


def test_default_directories_are_created_private(tmp_path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HOOKD_", "XDG_"))}
    short = tmp_path.parent / f"x{os.getpid()}"
    short.mkdir(exist_ok=True)
    env.update(HOME=str(short), XDG_RUNTIME_DIR=str(short / "run"))
    d = Daemon(short, env=env).start()
    try:
        sock = short / "run" / "hookd" / "hookd.sock"
        assert sock.exists()
        assert stat.S_IMODE(os.stat(sock.parent).st_mode) == 0o700
        assert (short / ".local/share/hookd/events.db").exists()
        assert (short / ".local/state/hookd/mirror").is_dir()
        assert stat.S_IMODE(os.stat(short / ".local/state/hookd").st_mode) == 0o700
        assert d.stop() == 0
    finally:
        d.kill()


def test_stale_socket_is_replaced(home) -> None:
    d = Daemon(home).start()
    d.kill()  # SIGKILL leaves the socket file behind
    assert (home / "hookd.sock").exists()
    d2 = Daemon(home).start()
    try:
        d2.send(b'{"type":"after_restart"}\n')
        assert d2.wait_count(1, where="type = 'after_restart'") == 1
        assert d2.stop() == 0
        assert not (home / "hookd.sock").exists()  # a clean stop removes its socket
    finally:
        d2.kill()


def test_live_daemon_is_not_stolen(daemon: Daemon) -> None:
    second = Daemon(daemon.home).start(wait=False)
    assert second.proc is not None
    assert second.proc.wait(20) == 1
    second._exited.wait(5)
    assert "already serving" in second.logtext
    # the first one still serves
    daemon.send(b'{"type":"still_here"}\n')
    assert daemon.wait_count(1) == 1


def test_socket_path_that_is_not_a_socket_is_refused(home) -> None:
    (home / "hookd.sock").write_text("precious")
    d = Daemon(home).start(wait=False)
    assert d.proc is not None and d.proc.wait(20) == 1
    d._exited.wait(5)
    assert "not a socket" in d.logtext
    assert (home / "hookd.sock").read_text() == "precious"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_under_load_loses_nothing_that_was_sent(home, sig: int) -> None:
    """Streaming and connect-per-event clients run while the daemon is stopped by a signal:
    every event whose send completed before the daemon went away is stored."""
    d = Daemon(home).start()
    sent = [0] * 6
    stop = threading.Event()

    def streamer(k: int) -> None:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(str(d.socket))
            i = 0
            try:
                while not stop.is_set() and i < 200_000:
                    s.sendall(json.dumps({"type": "stream", "k": k, "i": i}).encode() + b"\n")
                    i += 1
                    sent[k] = i
            except OSError:
                pass

    def one_shot(k: int) -> None:
        i = 0
        while not stop.is_set():
            try:
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                    s.connect(str(d.socket))
                    s.sendall(json.dumps({"type": "shot", "k": k, "i": i}).encode() + b"\n")
            except OSError:
                return  # the daemon is gone: nothing more can be sent
            i += 1
            sent[k] = i

    threads = [threading.Thread(target=streamer, args=(k,)) for k in range(3)]
    threads += [threading.Thread(target=one_shot, args=(k,)) for k in range(3, 6)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    d.send_signal(sig)
    code = d.proc.wait(60)  # type: ignore[union-attr]
    stop.set()
    for t in threads:
        t.join(30)
    assert code == 0, d.logtext
    stored = dict(d.query("SELECT json_extract(data,'$.k'), count(*) FROM events GROUP BY 1"))
    # Streamers' sends can complete into the kernel buffer after the daemon's last read and
    # before it closed the connection; those are the only ones allowed to be missing, and the
    # client sees the connection reset. Per-event clients have nothing in between.
    for k in range(3, 6):
        assert stored.get(k, 0) == sent[k], (k, stored, sent)
    assert sum(stored.values()) > 1000
    for k in range(3):
        assert stored.get(k, 0) >= sent[k] - 1000, (k, stored, sent)
    dup = d.query(
        "SELECT count(*) FROM (SELECT 1 FROM events "
        "GROUP BY json_extract(data,'$.k'), json_extract(data,'$.i') HAVING count(*) > 1)"
    )
    assert dup == [(0,)]


def test_restart_continues_eids_and_views(home) -> None:
    d = Daemon(home).start()
    d.send(b'{"type":"a"}\n')
    assert d.stop() == 0
    first = d.query("SELECT max(eid) FROM events")[0][0]
    d.start()
    d.send(b'{"type":"a"}\n')
    assert d.stop() == 0
    eids = [e for (e,) in d.query("SELECT eid FROM events ORDER BY eid")]
    assert len(eids) == 2 and eids[0] == first and eids[1] > first
    assert d.query("SELECT count(*) FROM a_events") == [(2,)]
    assert d.query("SELECT version, name FROM schema_migrations") == [
        (1, "initial"),
        (2, "counters_and_spool"),
        (3, "analysis_views"),
        (4, "claude_code_pairing"),
        (5, "rejected_line_key"),
        (6, "telemetry_usage"),
        (7, "dashboard_summaries"),
        (8, "tool_summaries"),
    ]
