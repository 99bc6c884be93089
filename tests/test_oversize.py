"""Events over ``max_line`` (issue 13, item 8): cut to fit and stored, or rejected as
``too_long`` with the real reason told to a waiting sender, on every path in.

The first part tests oversize.py and the line splitter without a daemon; the rest runs a real
daemon and every client: the socket (connect-send-close and acknowledged), ``hookd-emit``
(which spools large events: the spool path), ``hookd-emit --wait``, the Python client, and
``hookd emit --wait``. Many concurrent senders in bounded memory: tests/test_hardening.py.
"""

from __future__ import annotations

import json
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import hookd_client
from conftest import SHELL_CLIENT, Daemon, clean_env, read_replies
from hookd import oversize
from hookd.framing import NO_PEER, Framer, LineSplitter, Rejection
from hookd.oversize import MARK, Budget, Cut, TooLong, fit

MIB = 1 << 20


def post_tool_use(size: int, tool_use_id: str = "toolu_1", session: str = "s1") -> dict:
    """A Claude Code PostToolUse whose tool_response holds ``size`` characters of output."""
    return {
        "session_id": session,
        "transcript_path": "/home/me/.claude/projects/p/s1.jsonl",
        "cwd": "/home/me/p",
        "permission_mode": "default",
        "hook_event_name": "PostToolUse",
        "tool_name": "Bash",
        "tool_input": {"command": "cat big.log", "description": "Show the log"},
        "tool_response": {"stdout": "line of output\n" * (size // 15), "stderr": "", "interrupted": False},
        "tool_use_id": tool_use_id,
        "duration_ms": 1.25,
    }


def pre_tool_use(tool_use_id: str = "toolu_1", session: str = "s1") -> dict:
    return {
        "session_id": session,
        "hook_event_name": "PreToolUse",
        "tool_name": "Bash",
        "tool_input": {"command": "cat big.log"},
        "tool_use_id": tool_use_id,
    }


def line_of(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


NUMBERS = b'{"type":"numbers","v":[' + b"12345," * (2 * MIB // 6) + b"0]}"  # 2 MB that cannot be cut


# -- cutting, without a daemon ------------------------------------------------------------------


def test_a_2mb_post_tool_use_is_cut_to_fit_keeping_what_joins_it() -> None:
    event = post_tool_use(2 * MIB)
    line = line_of(event)
    out = fit(line, MIB)
    assert type(out) is Cut and len(out) <= MIB
    got = json.loads(out)
    stdout = event["tool_response"]["stdout"]
    assert got[MARK] == {
        "size": len(line),
        "limit": MIB,
        "values": [{"path": "$.tool_response.stdout", "length": len(stdout)}],
    }
    assert stdout.startswith(got["tool_response"]["stdout"]) and len(out) > MIB - 2000  # no more cut than needed
    del got[MARK]
    got["tool_response"]["stdout"] = stdout
    assert got == event  # nothing else changed: type, session, tool_use_id, numbers (1.25)
    assert out.values == [{"path": "$.tool_response.stdout", "length": len(stdout)}]
    assert out.ack_extra() == b',"truncated":[{"path":"$.tool_response.stdout","length":%d}]' % len(stdout)
    row, mirror = Framer().frame(out, 1.0, NO_PEER)  # type: ignore[misc]
    assert row[1] == "post_tool_use" and row[3] == "s1" and json.loads(mirror)["data"] == json.loads(out)


def test_the_longest_values_are_cut_to_one_length_and_the_rest_is_kept_byte_for_byte() -> None:
    line = (
        b'{"type":"t","a":"' + b"a" * 900_000 + b'","b":"' + b"b" * 600_000 + b'","c":"' + b"c" * 100_000 + b'",'
        b'"n":[1.10,1e999,-0.0],"key with space":{"x":"' + b"x" * 500_000 + b'"},"id":"' + b"i" * 40 + b'"}'
    )
    out = fit(line, MIB)
    got = json.loads(out)
    assert len(out) <= MIB and len(out) > MIB - 2000  # cut no more than needed
    assert len(got["a"]) == len(got["b"]) == len(got["key with space"]["x"]) > 100_000  # one level
    assert got["c"] == "c" * 100_000  # shorter than the level: untouched
    assert b'"n":[1.10,1e999,-0.0]' in out  # untouched values are copied as sent
    assert got["id"] == "i" * 40
    assert [v["path"] for v in got[MARK]["values"]] == ["$.a", "$.b", '$."key with space".x']
    db = sqlite3.connect(":memory:")  # the paths are SQLite's: json_extract finds each value
    for v in got[MARK]["values"]:
        (n,) = db.execute("SELECT length(json_extract(?, ?))", (line.decode(), v["path"])).fetchone()
        assert n == v["length"]


def test_a_question_mark_or_a_spool_stamp_stays_in_front() -> None:
    line = line_of(post_tool_use(2 * MIB))
    asked = fit(b"?" + line, MIB)
    assert type(asked) is Cut and asked.startswith(b'?{"session_id"') and len(asked) <= MIB + 1
    assert json.loads(asked[1:])[MARK]["size"] == len(line)
    stamped = fit(b"1795990963136000000\t" + line, MIB, stamped=True)
    assert type(stamped) is Cut and stamped.startswith(b"1795990963136000000\t{")
    assert fit(b"?" + b"{" + b" " * (MIB - 2) + b"}", MIB) == b"?{" + b" " * (MIB - 2) + b"}"  # the event fits


@pytest.mark.parametrize(
    ("line", "why"),
    [
        (NUMBERS, "cutting its long string values does not make it fit"),
        (b"[" + b'"' + b"x" * (2 * MIB) + b'"]', "not a JSON object"),
        (b'{"no_type":"' + b"x" * (2 * MIB) + b'"}', "without a type"),
        (b'{"type":7,"v":"' + b"x" * (2 * MIB) + b'"}', "its `type` is not a string"),
        (b'{"type":"t","v":"' + b"x" * (2 * MIB) + b'"', "not valid JSON"),
        (b'{"type":"t",' + b",".join(b'"k%d":"v"' % i for i in range(300_000)) + b"}", "too many values"),
    ],
    ids=["numbers", "array", "no type", "type not a string", "invalid", "300k keys"],
)
def test_what_cannot_be_cut_says_why_with_the_size_and_the_limit(line: bytes, why: str) -> None:
    out = fit(b"?" + line, MIB)
    assert type(out) is TooLong
    assert why in out.detail and f"({len(line)} bytes, limit {MIB})" in out.detail, out.detail
    assert out.size == len(line) + 1 and out == (b"?" + line)[:256]  # the head, "?" included


def test_more_values_cut_than_listed_are_counted() -> None:
    obj = {"type": "t", "v": [f"{i:06d}" + "y" * 100 for i in range(20_000)]}
    out = fit(line_of(obj), MIB)
    mark = json.loads(out)[MARK]
    assert len(mark["values"]) == oversize.MAX_LISTED and mark["unlisted"] == 20_000 - oversize.MAX_LISTED
    assert all(len(v) >= oversize.MIN_KEEP for v in json.loads(out)["v"])


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.integers(min_value=0, max_value=10_000), st.binary(min_size=0, max_size=3)), max_size=6),
    st.sampled_from([b"", b"?"]),
)
@example(edits=[(20, b"\xff")], prefix=b"")  # invalid UTF-8 inside a value that is cut
def test_no_bytes_make_cutting_raise_or_store_anything_over_the_limit(edits: list, prefix: bytes) -> None:
    """A valid over-long event, damaged anywhere (invalid UTF-8, quotes, brackets, escapes):
    cut, or rejected as too long, and what is cut fits and frames or is rejected with a reason."""
    line = bytearray(
        line_of({"type": "t", "a": "x" * 3000, "o": {"b": ["y" * 2000, 1.5, None], "c": "é" * 900}, "n": [1, 2]})
    )
    for pos, data in edits:
        pos %= len(line)
        line[pos : pos + len(data)] = data
    out = fit(prefix + bytes(line), 1000)
    assert isinstance(out, bytes)
    if type(out) is TooLong:
        assert out.detail and out.size == len(prefix) + len(line)
    elif type(out) is Cut:
        assert len(out) <= 1000 + len(prefix)
        try:
            Framer().frame(out[len(prefix) :], 1.0, NO_PEER)
        except Rejection as r:
            assert r.reason in ("invalid_utf8", "invalid_json", "bad_field", "bad_type", "bad_ts", "missing_type")


# -- the line splitter ----------------------------------------------------------------------------


def test_splitter_holds_an_over_long_line_within_the_budget_and_gives_it_back() -> None:
    budget = Budget(8 * MIB)
    sp = LineSplitter(MIB, cut_limit=4 * MIB, budget=budget, in_order=True)
    data = b'{"type":"a"}\n?' + line_of(post_tool_use(3 * MIB)) + b'\n{"type":"b"}\n'
    out: list[bytes] = []
    for i in range(0, len(data), 65536):
        out += sp.feed(data[i : i + 65536])
        assert budget.used <= 4 * MIB
    assert [type(x) for x in out] == [bytes, Cut, bytes] and out[0] == b'{"type":"a"}' and out[2] == b'{"type":"b"}'
    assert out[1].startswith(b"?") and sp.marked == 1 and budget.used == 0 and sp.buffered == 0


def test_splitter_skips_what_is_over_the_cutting_limit_or_the_budget() -> None:
    budget = Budget(5 * MIB)
    first = LineSplitter(MIB, cut_limit=4 * MIB, budget=budget, in_order=True)
    second = LineSplitter(MIB, cut_limit=4 * MIB, budget=budget, in_order=True)
    first.feed(b'{"type":"x","v":"' + b"x" * (3 * MIB))  # held: 3 MiB of the 5
    assert budget.used > 3 * MIB and first.buffered > 3 * MIB
    assert second.feed(b'?{"type":"y","v":"' + b"y" * (3 * MIB)) == []  # over what is left: skipped
    assert second.buffered == 0
    (t,) = second.feed(b'"}\n')
    assert type(t) is TooLong and t.startswith(b'?{"type":"y"') and "memory set aside for cutting" in t.detail
    assert first.feed(b"x" * (2 * MIB)) == []  # over the cutting limit now: skipped, budget given back
    assert first.buffered == 0 and budget.used == 0
    (t,) = first.feed(b'"}\n')
    assert type(t) is TooLong and f"lines over {4 * MIB} bytes are not cut" in t.detail and t.size == 5 * MIB + 19


def test_splitter_gives_the_budget_back_when_a_connection_ends_mid_line() -> None:
    budget = Budget(8 * MIB)
    sp = LineSplitter(MIB, budget=budget, in_order=True)
    sp.feed(b'{"type":"x","v":"' + b"x" * (2 * MIB))
    assert budget.used > 2 * MIB
    t = sp.finish()  # the client went away: what it sent is judged as a last line
    assert type(t) is TooLong and "not valid JSON" in t.detail and budget.used == 0


def test_without_cutting_over_long_lines_are_rejected_as_before() -> None:
    sp = LineSplitter(MIB, cut_limit=0, in_order=True)
    (t,) = sp.feed(line_of(post_tool_use(2 * MIB)) + b"\n")
    assert (
        type(t) is TooLong and t.detail == f"line too long ({len(line_of(post_tool_use(2 * MIB)))} bytes, limit {MIB})"
    )


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.sampled_from(["small", "cut", "numbers", "asked"]), min_size=1, max_size=6),
    st.lists(st.integers(min_value=1, max_value=400), max_size=30),
)
def test_any_chunking_gives_the_same_lines_in_order(kinds: list[str], cuts: list[int]) -> None:
    lines = {
        "small": b'{"type":"s"}',
        "cut": b'{"type":"c","v":"' + b"v" * 3000 + b'"}',
        "numbers": b'{"type":"n","v":[' + b"1," * 1500 + b"1]}",
        "asked": b'?{"type":"q","v":"' + b"q" * 3000 + b'"}',
    }
    data = b"\n".join(lines[k] for k in kinds) + b"\n"

    def split(chunks: list[int]) -> list[tuple[str, bytes]]:
        sp = LineSplitter(1000, in_order=True, budget=Budget(4000 * 16))
        out, pos = [], 0
        for n in [*chunks, len(data)]:
            out += sp.feed(data[pos : pos + n])
            pos += n
        tail = sp.finish()
        assert sp.budget is not None and sp.budget.used == 0
        return [(type(x).__name__, bytes(x)) for x in out + ([tail] if tail is not None else [])]

    whole = split([])
    assert [k for k, _ in whole] == [{"small": "bytes", "numbers": "TooLong"}.get(k, "Cut") for k in kinds]
    assert split(cuts) == whole


# -- a real daemon and every client ------------------------------------------------------------


def ask(daemon: Daemon, payload: bytes, replies: int) -> list[dict]:
    """Send ``payload`` on one connection, half-close, read ``replies`` JSON lines."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(20)
        s.connect(str(daemon.socket))
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        return read_replies(s, replies)


def status(daemon: Daemon) -> dict:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(str(daemon.socket) + ".ctl")
        s.sendall(b"!status\n")
        return json.loads(s.makefile("rb").readline())


def test_socket_a_2mb_post_tool_use_is_stored_cut_and_pairs_in_tool_calls(daemon: Daemon) -> None:
    post = post_tool_use(2 * MIB)
    daemon.send(b'{"type":"good","i":0}\n' + line_of(pre_tool_use()) + b"\n" + line_of(post) + b"\n")
    daemon.send(NUMBERS + b'\n{"type":"good","i":1}\n')
    assert daemon.wait_count(4) == 4
    st = status(daemon)["since_start"]
    assert st["truncated"] == 1 and st["rejected_by_reason"] == {"too_long": 1}
    assert daemon.stop() == 0, daemon.logtext
    assert daemon.query("SELECT tool_use_id, tool_name, status FROM tool_calls") == [("toolu_1", "Bash", "finished")]
    (data,) = daemon.query("SELECT data FROM events WHERE type = 'post_tool_use'")[0]
    assert len(data.encode()) <= MIB and json.loads(data)[MARK]["values"][0]["path"] == "$.tool_response.stdout"
    mirrored = [json.loads(x) for x in daemon.mirror_lines()]
    assert [m["data"] for m in mirrored if m["type"] == "post_tool_use"] == [json.loads(data)]  # the mirror too
    ((reason, detail, size),) = daemon.query("SELECT reason, detail, size FROM rejected")
    assert reason == "too_long" and size == len(NUMBERS) and f"({len(NUMBERS)} bytes, limit {MIB})" in detail
    counters = dict(daemon.query("SELECT name, value FROM counters"))
    assert counters["truncated"] == 1 and counters["rejected.too_long"] == 1 and counters["committed"] == 4
    assert daemon.count("type = 'good'") == 2


def test_socket_acknowledged_lines_are_answered_in_order_with_the_real_reason(daemon: Daemon) -> None:
    lines = [
        b'?{"type":"good","i":0}',
        b"?" + line_of(post_tool_use(2 * MIB, "toolu_a")),
        b"?" + NUMBERS,
        b'{"type":"good","i":1}',  # not asked: no reply
        b"?" + line_of(post_tool_use(3 * MIB, "toolu_b")),
        b'?{"type":"good","i":2}',
    ]
    replies = ask(daemon, b"\n".join(lines) + b"\n", 5)
    assert [r["ok"] for r in replies] == [True, True, False, True, True]
    assert "truncated" not in replies[0] and "truncated" not in replies[4]
    assert replies[1]["truncated"][0]["path"] == "$.tool_response.stdout"
    assert replies[2]["reason"] == "too_long" and f"({len(NUMBERS)} bytes, limit {MIB})" in replies[2]["detail"]
    for r in (replies[1], replies[3]):
        (data,) = daemon.query("SELECT data FROM events WHERE eid = ?", (r["eid"],))[0]
        assert json.loads(data)[MARK]["values"] == r["truncated"]
    assert daemon.count("type = 'good'") == 3


@pytest.fixture
def live(daemon: Daemon, monkeypatch: pytest.MonkeyPatch) -> Daemon:
    """The daemon, with this process's environment (the Python client's) pointing at it."""
    for var in ("HOOKD_SOCKET", "HOOKD_SPOOL_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOOKD_HOME", str(daemon.home))
    return daemon


def test_python_client_waits_and_learns_what_was_cut_or_why_not(live: Daemon) -> None:
    eid = hookd_client.emit("pre_tool_use", pre_tool_use("toolu_py"), wait=True)
    cut = hookd_client.emit("post_tool_use", post_tool_use(2 * MIB, "toolu_py"), wait=True)
    assert cut > eid and cut.truncated == [{"path": "$.tool_response.stdout", "length": 2 * MIB // 15 * 15}]
    assert eid.truncated == [] and not eid.duplicate
    with pytest.raises(hookd_client.EventRejected) as e:
        hookd_client.emit("numbers", {"v": list(range(400_000))}, wait=True)
    assert e.value.reason == "too_long" and f"limit {MIB})" in e.value.detail
    assert hookd_client.emit("post_tool_use", post_tool_use(2 * MIB, "toolu_ff")) is True  # fire-and-forget
    assert live.wait_count(3) == 3
    assert live.query("SELECT tool_use_id, status FROM tool_calls") == [("toolu_py", "finished")]


def test_python_client_spool_file_of_a_large_event_is_cut_when_read(home: Path, monkeypatch) -> None:
    """The daemon down: the event goes to append.spool (stamped records), read in the spool
    thread when the daemon starts, and cut there."""
    monkeypatch.setenv("HOOKD_HOME", str(home))
    monkeypatch.delenv("HOOKD_SOCKET", raising=False)
    monkeypatch.delenv("HOOKD_SPOOL_DIR", raising=False)
    assert hookd_client.emit("post_tool_use", post_tool_use(2 * MIB, "toolu_sp")) is True
    assert (home / "spool" / "append.spool").stat().st_size > 2 * MIB
    d = Daemon(home).start()
    try:
        assert d.wait_count(1) == 1
        assert d.stop() == 0, d.logtext
    finally:
        d.kill()
    ((data, recv_ts),) = d.query("SELECT data, recv_ts FROM events")
    assert json.loads(data)[MARK]["values"][0]["path"] == "$.tool_response.stdout"
    assert abs(recv_ts - time.time()) < 120  # the record's stamp: the stamp was not taken for JSON
    assert dict(d.query("SELECT name, value FROM counters"))["truncated"] == 1


def shell(*args: str, home: Path, payload: bytes) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        ["sh", str(SHELL_CLIENT), *args], env=clean_env(home), input=payload, capture_output=True, timeout=30
    )


def test_hookd_emit_spools_a_large_event_and_the_daemon_cuts_it(daemon: Daemon, socat: str) -> None:
    p = shell("-", home=daemon.home, payload=line_of(post_tool_use(2 * MIB, "toolu_sh")))
    assert p.returncode == 0 and b"the event is large" in p.stderr, p
    assert daemon.wait_count(1) == 1
    assert daemon.stop() == 0, daemon.logtext
    ((data,),) = daemon.query("SELECT data FROM events")
    assert json.loads(data)["tool_use_id"] == "toolu_sh" and MARK in json.loads(data)
    assert status_counters(daemon)["truncated"] == 1


def status_counters(daemon: Daemon) -> dict[str, int]:
    return dict(daemon.query("SELECT name, value FROM counters"))


def test_hookd_emit_wait_says_what_was_cut_or_why_it_was_refused(daemon: Daemon, socat: str) -> None:
    p = shell("--wait", "-", home=daemon.home, payload=line_of(post_tool_use(2 * MIB, "toolu_w")))
    assert p.returncode == 0, p
    eid = int(p.stdout)
    assert b"cut to fit the line limit" in p.stderr and b"$.tool_response.stdout" in p.stderr, p
    p = shell("--wait", "numbers", home=daemon.home, payload=NUMBERS)
    assert p.returncode == 1 and p.stdout == b"", p
    assert p.stderr.startswith(b"hookd-emit: rejected (too_long): line too long"), p
    assert b"bytes, limit 1048576)" in p.stderr
    assert daemon.query("SELECT count(*) FROM events WHERE eid = ?", (eid,)) == [(1,)]


def test_hookd_emit_cli_wait_says_what_was_cut_or_why_it_was_refused(home: Path) -> None:
    d = Daemon(home, "--max-line", "1024").start()
    try:
        env = clean_env(home)
        emit = [sys.executable, "-m", "hookd", "emit", "--wait"]
        p = subprocess.run([*emit, "big", "text=" + "t" * 5000], env=env, capture_output=True, text=True, timeout=30)
        assert p.returncode == 0 and int(p.stdout) > 0, p
        assert "cut to fit the line limit: $.text (5000 characters)" in p.stderr, p
        p = subprocess.run(
            [*emit, "nums", "v:=" + json.dumps(list(range(2000)))], env=env, capture_output=True, text=True
        )
        assert p.returncode == 1 and "too_long" in p.stderr and "limit 1024)" in p.stderr, p
    finally:
        d.kill()
