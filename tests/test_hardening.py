"""Hardening (issue 5): bad input, hostile or broken clients, other users, a locked database,
a full disk, a missing database. Real daemon processes, real sockets, real SQLite files.

Every case that sends events records its figures (sent, stored, rejected by reason, lost) with
``record()``; ``tests/reliability_table.py`` runs this file and renders docs/reliability.md's table.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import Daemon, clean_env, read_replies, wait_for
from hookd.framing import NO_PEER, Framer, Rejection
from hookd.settings import DEFAULT_TRUNCATE_LIMIT

DATA = Path(__file__).parent / "data"
CORPUS = DATA / "jsontestsuite" / "test_parsing"
NOBODY = 65534


def record(case: str, sent: int, stored: int, rejected: dict[str, int], refused: int = 0) -> None:
    """Check that every event sent is accounted for (stored, rejected, or refused before it
    reached the daemon's store), and append the case's figures to $HOOKD_RELIABILITY_OUT."""
    lost = sent - stored - sum(rejected.values()) - refused
    assert lost == 0, (case, sent, stored, rejected, refused)
    out = os.environ.get("HOOKD_RELIABILITY_OUT")
    if out:
        with open(out, "a") as f:
            row = {"case": case, "sent": sent, "stored": stored, "rejected": rejected, "refused": refused, "lost": lost}
            f.write(json.dumps(row) + "\n")


def rejected_by_reason(d: Daemon) -> dict[str, int]:
    return dict(d.query("SELECT reason, count(*) FROM rejected GROUP BY reason ORDER BY reason"))


def counters(d: Daemon) -> dict[str, int]:
    return dict(d.query("SELECT name, value FROM counters"))


def good(i: int, kind: str = "good") -> bytes:
    return json.dumps({"type": kind, "i": i}).encode()


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def writer_pid(d: Daemon) -> int:
    assert d.proc is not None
    return int(Path(f"/proc/{d.proc.pid}/task/{d.proc.pid}/children").read_text().split()[0])


# -- bad input, mixed with good events on one connection -------------------------------------

BAD_LINES: list[tuple[str, bytes, str]] = [
    ("truncated", b'{"type":"x","a":', "invalid_json"),
    ("trailing garbage", b'{"type":"x"} xyz', "invalid_json"),
    ("two objects on a line", b'{"type":"x"}{"type":"y"}', "invalid_json"),
    ("NaN", b'{"type":"x","v":NaN}', "invalid_json"),
    ("Infinity", b'{"type":"x","v":Infinity}', "invalid_json"),
    ("-Infinity", b'{"type":"x","v":-Infinity}', "invalid_json"),
    ("lone surrogate escape", b'{"type":"x","v":"\\ud800"}', "invalid_json"),
    ("lone surrogate bytes", b'{"type":"x","v":"\xed\xa0\x80"}', "invalid_utf8"),
    ("invalid UTF-8", b'{"type":"x","v":"\xff\xfe"}', "invalid_utf8"),
    ("overlong UTF-8", b'{"type":"x","v":"\xc0\xaf"}', "invalid_utf8"),
    ("NUL inside a string", b'{"type":"x","v":"a\x00b"}', "invalid_json"),
    ("NUL after the object", b'{"type":"x"}\x00', "invalid_json"),
    ("UTF-8 BOM", b'\xef\xbb\xbf{"type":"x"}', "invalid_json"),
    ("UTF-16 BOM", b'\xff\xfe{\x00"\x00', "invalid_utf8"),
    ("array", b'[{"type":"x"}]', "not_object"),
    ("string", b'"x"', "not_object"),
    ("number", b"42", "not_object"),
    ("null", b"null", "not_object"),
    ("type is a number", b'{"type":5}', "bad_field"),
    ("type is an object", b'{"type":{"a":1}}', "bad_field"),
    ("ts is a boolean", b'{"type":"x","ts":true}', "bad_field"),
    ("ts is a list", b'{"type":"x","ts":[1]}', "bad_field"),
    ("id is a float", b'{"type":"x","id":1.5}', "bad_field"),
    ("id is an object", b'{"type":"x","id":{}}', "bad_field"),
    ("session is a boolean", b'{"type":"x","session":false}', "bad_field"),
    ("ts is a huge integer", b'{"type":"x","ts":1' + b"0" * 400 + b"}", "bad_ts"),
    ("ts is an integer too long to parse", b'{"type":"x","ts":1' + b"0" * 5000 + b"}", "bad_field"),
    ("ts is 1e999", b'{"type":"x","ts":1e999}', "bad_field"),
    ("ts is negative", b'{"type":"x","ts":-1}', "bad_ts"),
    ("ts is not a date", b'{"type":"x","ts":"tomorrow"}', "bad_ts"),
    ("no type", b'{"a":1}', "missing_type"),
    ("SQL in the type", b'{"type":"x\'; DROP TABLE events; --"}', "bad_type"),
    ("quote in the type", b'{"type":"x\\"_events"}', "bad_type"),
    ("type too long", b'{"type":"' + b"a" * 64 + b'"}', "bad_type"),
    ("10,000 nested arrays", b'{"type":"x","v":' + b"[" * 10_000 + b"]" * 10_000 + b"}", "too_deep"),
    ("10,000 nested objects", b'{"type":"x","v":' + b'{"a":' * 10_000 + b"1" + b"}" * 10_000 + b"}", "too_deep"),
    # (one with long strings would be cut to fit and stored: tests/test_oversize.py)
    ("line over 1 MiB that cannot be cut", b'{"type":"x","v":[' + b"0," * (1 << 19) + b"0]}", "too_long"),
]

# Valid events that are merely large or odd: stored, byte for byte.
ODD_BUT_VALID: list[tuple[str, bytes]] = [
    ("huge integer in data", b'{"type":"odd","v":1' + b"0" * 5000 + b"}"),
    ("huge float in data", b'{"type":"odd","v":1e99999}'),
    ("100,000 keys", b'{"type":"odd",' + b",".join(b'"%x":0' % i for i in range(100_000)) + b"}"),
    ("string of 900 KB", b'{"type":"odd","v":"' + b"y" * 900_000 + b'"}'),
    ("depth 500", b'{"type":"odd","v":' + b"[" * 500 + b"]" * 500 + b"}"),
    ("duplicate keys", b'{"type":"odd","v":1,"v":2}'),
    ("escaped surrogate pair", b'{"type":"odd","v":"\\ud83d\\ude00"}'),
    ("CRLF line end", b'{"type":"odd","v":"crlf"}\r'),
]


def test_every_kind_of_bad_line_is_rejected_precisely_and_costs_no_good_event(daemon: Daemon) -> None:
    stream = bytearray()
    n = 0
    for _name, line, _reason in BAD_LINES:
        stream += good(n) + b"\n" + line + b"\n"
        n += 1
    for _name, line in ODD_BUT_VALID:
        stream += good(n) + b"\n" + line + b"\n"
        n += 1
    stream += good(n) + b"\n"
    n += 1
    daemon.send(bytes(stream))
    assert daemon.stop() == 0, daemon.logtext
    assert [i for (i,) in daemon.query("SELECT json_extract(data, '$.i') FROM events WHERE type = 'good'")] == list(
        range(n)
    )
    got = daemon.query("SELECT reason, detail FROM rejected ORDER BY rid")
    assert [r for r, _ in got] == [reason for _, _, reason in BAD_LINES], got
    assert all(detail for _, detail in got)
    odd = [d for (d,) in daemon.query("SELECT data FROM events WHERE type = 'odd' ORDER BY eid")]
    assert [d.encode() for d in odd] == [line.rstrip(b"\r") for _, line in ODD_BUT_VALID]
    sizes = daemon.query("SELECT size FROM rejected WHERE reason = 'too_long'")
    assert sizes == [(len(BAD_LINES[-1][1]),)]
    stored = daemon.count()
    assert stored == n + len(ODD_BUT_VALID)
    assert len(daemon.mirror_lines()) == stored
    c = counters(daemon)
    assert c["committed"] == stored
    assert sum(v for k, v in c.items() if k.startswith("rejected.")) == len(BAD_LINES)
    sent = n + len(BAD_LINES) + len(ODD_BUT_VALID)
    record("every kind of bad line, between good events, one connection", sent, stored, rejected_by_reason(daemon))


def test_jsontestsuite_corpus_between_good_events(daemon: Daemon) -> None:
    """Every JSONTestSuite parsing case as a line between good events: stored or rejected with
    a reason, never lost; n_* never stored; y_* never refused as bad JSON."""
    files = sorted(CORPUS.iterdir())
    assert len(files) >= 300
    framer = Framer()
    expect: list[str] = []  # per non-blank piece: "stored" or a reason, in order
    stream = bytearray()
    pieces_of: dict[str, list[str]] = {}
    n = 0
    for path in files:
        content = path.read_bytes()
        stream += good(n) + b"\n"
        n += 1
        outcomes = []
        for piece in content.split(b"\n"):
            if not piece.strip():
                continue
            if len(piece) > (1 << 20):
                outcomes.append("too_long")
                continue
            try:
                framer.frame(piece, 1.0, NO_PEER)
                outcomes.append("stored")
            except Rejection as r:
                outcomes.append(r.reason)
        pieces_of[path.name] = outcomes
        expect += outcomes
        stream += content + b"\n"
    stream += good(n) + b"\n"
    n += 1
    daemon.send(bytes(stream))
    assert daemon.stop() == 0, daemon.logtext

    for name, outcomes in pieces_of.items():
        content = (CORPUS / name).read_bytes()
        if name.startswith("n_") and b"\n" not in content:
            # rejected, or a blank line (the protocol skips those: n_single_space.json)
            assert "stored" not in outcomes and (outcomes or not content.strip()), name
        if name.startswith("y_") and b"\n" not in content:  # (newlines split a document: the protocol's rule)
            assert not {"invalid_json", "invalid_utf8"} & set(outcomes), (name, outcomes)
    # The daemon did what framing says, line for line: rejections in order, the rest stored.
    assert [r for (r,) in daemon.query("SELECT reason FROM rejected ORDER BY rid")] == [
        o for o in expect if o != "stored"
    ]
    assert daemon.count("type = 'good'") == n
    others = daemon.count("type != 'good'")
    assert others == expect.count("stored")
    assert len(daemon.mirror_lines()) == n + others
    record(
        f"JSONTestSuite: {len(files)} files ({len(expect)} lines) between good events",
        n + len(expect),
        n + others,
        rejected_by_reason(daemon),
        0,
    )


def test_client_that_vanishes_mid_line_keeps_what_it_completed(daemon: Daemon) -> None:
    daemon.send(good(0) + b"\n" + good(1) + b'\n{"type":"half","v":"abc')  # closes mid-line
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:  # reset mid-line
        s.connect(str(daemon.socket))
        s.sendall(good(2) + b"\n" + b'{"type":"cut')
        time.sleep(0.2)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    assert daemon.wait_count(3) == 3
    assert daemon.stop() == 0
    assert daemon.count("type = 'good'") == 3
    assert rejected_by_reason(daemon) == {"invalid_json": 2}
    record("clients vanishing mid-line (close, reset)", 5, 3, rejected_by_reason(daemon))


@pytest.mark.slow
def test_100_mib_line_without_newline_is_skipped_in_bounded_memory(home: Path) -> None:
    d = Daemon(home).start()
    assert d.proc is not None
    pid = d.proc.pid
    base = rss_kb(pid)
    peak = [base]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], rss_kb(pid))
            time.sleep(0.01)

    sampler = threading.Thread(target=sample)
    sampler.start()
    chunk = b"a" * (1 << 20)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:  # 100 MiB, then the next line
            s.connect(str(d.socket))
            s.sendall(good(0) + b'\n{"type":"big","v":"')
            for _ in range(100):
                s.sendall(chunk)
            s.sendall(b'"}\n' + good(1) + b"\n")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:  # 100 MiB and no newline at all
            s.connect(str(d.socket))
            for _ in range(100):
                s.sendall(chunk)
        d.send(good(2) + b"\n")
        assert d.wait_count(3) == 3
    finally:
        done.set()
        sampler.join()
    assert d.stop() == 0, d.logtext
    grew_mb = (peak[0] - base) / 1024
    sizes = sorted(n for (n,) in d.query("SELECT size FROM rejected WHERE reason = 'too_long'"))
    assert sizes == [100 << 20, (100 << 20) + len(b'{"type":"big","v":"') + 2]
    assert d.count("type = 'good'") == 3
    (home.parent / "hookd-100mib-rss.txt").write_text(f"{base / 1024:.1f} {peak[0] / 1024:.1f}\n")
    # A line is held whole up to the cutting limit (16 MiB), to be cut to fit, before it is
    # known to be too long for that: then skipped, and what it held given back.
    limit_mb = DEFAULT_TRUNCATE_LIMIT / (1 << 20)
    assert grew_mb < limit_mb + 16, f"daemon RSS grew {grew_mb:.1f} MB while skipping 200 MiB"
    record(
        f"two 100 MiB lines (one without any newline); daemon RSS +{grew_mb:.1f} MB",
        5,
        3,
        rejected_by_reason(d),
        0,
    )


def big_post_tool_use(i: int, size: int) -> bytes:
    """A Claude Code PostToolUse with ``size`` bytes of tool output: over max_line, cuttable."""
    event = {
        "hook_event_name": "PostToolUse",
        "session_id": "s-big",
        "tool_name": "Bash",
        "tool_use_id": f"toolu_{i}",
        "tool_response": {"stdout": "o" * size, "stderr": ""},
    }
    return json.dumps(event).encode()


def test_ten_2mb_tool_calls_at_once_are_all_cut_stored_and_paired(daemon: Daemon) -> None:
    """Claude Code's parallel tool calls, each answered with 2 MB of output, with the default
    limits: every PostToolUse is stored cut to fit, and pairs with its PreToolUse."""
    conns = []
    for i in range(10):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(str(daemon.socket))
        pre = {"hook_event_name": "PreToolUse", "session_id": "s-big", "tool_name": "Bash", "tool_use_id": f"toolu_{i}"}
        conns.append((s, json.dumps(pre).encode() + b"\n" + big_post_tool_use(i, 2_000_000) + b"\n"))
    for pos in range(0, max(len(p) for _, p in conns), 1 << 16):
        for s, payload in conns:
            s.sendall(payload[pos : pos + (1 << 16)])
    for s, _ in conns:
        s.close()
    assert daemon.wait_count(20) == 20
    assert daemon.stop() == 0, daemon.logtext
    assert daemon.query("SELECT count(*) FROM tool_calls WHERE status = 'finished'") == [(10,)]
    assert counters(daemon)["truncated"] == 10 and rejected_by_reason(daemon) == {}
    record("ten 2 MB Claude Code tool calls at once (PreToolUse + PostToolUse): all cut to fit, all paired", 20, 20, {})


@pytest.mark.slow
def test_many_oversized_senders_at_once_are_cut_or_refused_in_bounded_memory(home: Path) -> None:
    """40 connections send a 3 MB acknowledged PostToolUse at once, a chunk each in turn, and
    8 more a 2 MB array that cannot be cut, with a good event after each. The daemon holds at
    most 4 x truncate_limit (4 MiB here) of such lines at once: the lines it could hold are
    cut and stored, the others are answered too_long (the budget is named), every good event
    is stored, and its RSS stays bounded."""
    d = Daemon(home, env=clean_env(home, HOOKD_TRUNCATE_LIMIT="4MiB")).start()
    assert d.proc is not None
    pid, base, peak, done = d.proc.pid, rss_kb(d.proc.pid), [0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], rss_kb(pid))
            time.sleep(0.005)

    sampler = threading.Thread(target=sample)
    sampler.start()
    numbers = b'{"type":"numbers","v":[' + b"1," * (1 << 20) + b"1]}"
    payloads = [b"?" + big_post_tool_use(i, 3_000_000) for i in range(40)] + [b"?" + numbers] * 8
    conns = []
    try:
        for i, payload in enumerate(payloads):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(str(d.socket))
            s.settimeout(60)
            conns.append((s, payload + b"\n?" + good(i) + b"\n"))
        for pos in range(0, max(len(p) for _, p in conns), 1 << 16):  # all of them in step
            for s, payload in conns:
                if pos < len(payload):
                    s.sendall(payload[pos : pos + (1 << 16)])
        replies = []
        for s, _ in conns:
            s.shutdown(socket.SHUT_WR)
            replies.append(read_replies(s, 2))
    finally:
        for s, _ in conns:
            s.close()
        done.set()
        sampler.join()
    assert d.stop() == 0, d.logtext
    assert all(len(r) == 2 and r[1]["ok"] for r in replies), replies  # every good event, acknowledged
    cut = [r[0] for r in replies[:40] if r[0]["ok"]]
    refused = [r[0] for r in replies[:40] if not r[0]["ok"]]
    assert cut and refused, "some were held and cut, the others found the budget spent"
    assert all(r["truncated"][0]["path"] == "$.tool_response.stdout" for r in cut)
    assert all(r["reason"] == "too_long" and "memory set aside for cutting" in r["detail"] for r in refused)
    # the arrays: refused as they cannot be cut, or before that, for want of the budget
    assert all(r[0]["reason"] == "too_long" and "limit 1048576)" in r[0]["detail"] for r in replies[40:])
    assert d.count("type = 'good'") == 48 and d.count("type = 'post_tool_use'") == len(cut)
    assert rejected_by_reason(d) == {"too_long": len(refused) + 8}
    assert counters(d)["truncated"] == len(cut)
    grew_mb = (peak[0] - base) / 1024
    print(f"cut {len(cut)}, refused {len(refused)}, RSS {base / 1024:.0f} -> {peak[0] / 1024:.0f} MB")
    # The budget (16 MiB here), one line being cut (a few copies of it) and the allocator's slack.
    assert grew_mb < 96, f"daemon RSS grew {grew_mb:.1f} MB"
    record(
        f"48 oversized lines at once (40 cuttable, 3 MB, with a 16 MiB budget: {len(cut)} cut and stored), "
        f"a good event after each; daemon RSS +{grew_mb:.0f} MB",
        96,
        48 + len(cut),
        rejected_by_reason(d),
    )


# -- idle and slow clients, many connections --------------------------------------------------


def test_idle_and_slow_clients_are_closed_and_regular_ones_are_not(home: Path) -> None:
    d = Daemon(home, "--idle-timeout", "1").start()
    try:
        t0 = time.monotonic()
        silent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        silent.connect(str(d.socket))
        after_one = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        after_one.connect(str(d.socket))
        after_one.sendall(good(0, "one") + b"\n")
        slow = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        slow.connect(str(d.socket))
        regular = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        regular.connect(str(d.socket))
        for s in (silent, after_one, slow, regular):
            s.settimeout(0.01)
        closed_at: dict[str, float] = {}
        slow_line = b'{"type":"slow","v":"' + b"z" * 100
        sent_regular = 0
        i = 0
        while time.monotonic() - t0 < 3.5:
            now = time.monotonic() - t0
            for name, s in (("silent", silent), ("after_one", after_one), ("slow", slow), ("regular", regular)):
                if name in closed_at:
                    continue
                try:
                    if s.recv(1) == b"":
                        closed_at[name] = now
                except (TimeoutError, BlockingIOError):
                    pass
                except ConnectionResetError:
                    closed_at[name] = now
            if "slow" not in closed_at and i < len(slow_line):
                try:
                    slow.sendall(slow_line[i : i + 1])  # one byte every 50 ms, never a whole line
                except OSError:
                    closed_at.setdefault("slow", now)
                i += 1
            if int(now / 0.3) > sent_regular:  # a whole event every 0.3 s
                regular.sendall(good(sent_regular, "regular") + b"\n")
                sent_regular += 1
            time.sleep(0.04)
        assert set(closed_at) == {"silent", "after_one", "slow"}, closed_at
        for name, at in closed_at.items():
            assert 0.9 <= at <= 2.5, (name, at)
        regular.close()
        for s in (silent, after_one, slow):
            s.close()
        assert d.wait_count(sent_regular + 1) == sent_regular + 1
        assert d.stop() == 0, d.logtext
    finally:
        d.kill()
    assert d.count("type = 'regular'") == sent_regular
    assert d.count("type = 'one'") == 1
    assert rejected_by_reason(d) == {"invalid_json": 1}  # the slow client's unfinished line
    assert counters(d)["connections.idle_timeout"] == 3
    assert "completed no line in 1.0 s" in d.logtext
    record(
        "idle, one-byte-a-second and regular clients (idle timeout 1 s); 3 idle connections closed",
        sent_regular + 2,
        sent_regular + 1,
        rejected_by_reason(d),
        0,
    )


@pytest.mark.slow
def test_two_thousand_simultaneous_connections_with_a_low_soft_fd_limit(home: Path) -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 4200:
        pytest.skip(f"the hard open-file limit ({hard}) is too low for 2,000 connections on both ends")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(_soft, 4200), hard))
    # Started with a soft limit of 1024, the daemon must raise it itself.
    d = Daemon(home, wrap=("prlimit", f"--nofile=1024:{hard}", "--")).start()
    conns: list[socket.socket] = []
    try:
        for i in range(2000):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(str(d.socket))
            s.sendall(good(i, "many") + b"\n")
            conns.append(s)
        assert d.wait_count(2000, timeout=60) == 2000
        assert d.proc is not None
        open_fds = len(os.listdir(f"/proc/{d.proc.pid}/fd"))
        assert open_fds > 2000  # every connection is still open on the daemon's side too
        d.send(good(0, "after") + b"\n")
        assert d.wait_count(1, where="type = 'after'") == 1
    finally:
        for s in conns:
            s.close()
    assert d.stop() == 0, d.logtext
    assert "cannot accept" not in d.logtext
    assert d.count() == 2001
    record("2,000 simultaneous open connections (daemon started with 1,024 fds)", 2001, 2001, {})


# -- other users ------------------------------------------------------------------------------

OTHER_USER_CLIENT = """
import json, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
try:
    s.connect(sys.argv[1])
except OSError as e:
    print("connect:" + type(e).__name__); sys.exit(0)
data, err = b"", ""
try:
    s.sendall(b'?{"type":"from_other","n":1}\\n')
    s.shutdown(socket.SHUT_WR)
except OSError as e:  # a refusing daemon may close before the client has sent
    err = type(e).__name__
try:
    while True:
        chunk = s.recv(4096)
        if not chunk: break
        data += chunk
except OSError as e:
    err = err or type(e).__name__
print("reply:" + data.decode().strip() if data else "closed:" + err)
"""


def as_other_user(sock: Path) -> str:
    if os.getuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to act as another user")
    out = subprocess.run(
        [
            "setpriv",
            f"--reuid={NOBODY}",
            f"--regid={NOBODY}",
            "--clear-groups",
            "/usr/bin/python3",
            "-c",
            OTHER_USER_CLIENT,
            str(sock),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        cwd="/",
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_other_users_cannot_reach_the_socket_and_the_daemon_refuses_them_anyway(home: Path) -> None:
    d = Daemon(home).start()
    try:
        # 1. The file system: the socket's directory is 0700 and the socket 0600.
        assert as_other_user(d.socket) == "connect:PermissionError"
        # 2. The daemon itself: open the path up (as a misconfigured system might) and try again.
        os.chmod(home, 0o711)
        os.chmod(d.socket, 0o666)
        replies = [as_other_user(d.socket) for _ in range(5)]
        for r in replies:  # the refusal, or the connection closed before the client finished sending
            assert r.startswith("closed:") or json.loads(r[6:])["reason"] == "refused_uid", r
        assert any(r.startswith("reply:") for r in replies), replies
        d.send(good(0) + b"\n")  # the owner is still served
        assert d.wait_count(1) == 1
        assert wait_for(lambda: d.query("SELECT value FROM counters WHERE name = 'connections.refused_uid'") == [(5,)])
        assert d.stop() == 0
    finally:
        d.kill()
    assert d.count("type = 'from_other'") == 0
    refusals = [line for line in d.log if "refused a connection from uid 65534" in line]
    assert len(refusals) == 1, d.logtext  # logged once, not once per connection
    assert "--allow-uid 65534" in refusals[0]
    record("another user: 1 blocked by the directory's mode, 5 refused by the uid check", 7, 1, {}, refused=6)


@pytest.mark.parametrize("how", ["flag", "env"])
def test_an_allowed_uid_is_served(home: Path, how: str) -> None:
    if how == "flag":
        d = Daemon(home, "--allow-uid", str(NOBODY), "--allow-uid", "4242")
    else:
        d = Daemon(home, env=clean_env(home, HOOKD_ALLOWED_UIDS=f"4242,{NOBODY}"))
    d.start()
    try:
        os.chmod(home, 0o711)
        os.chmod(d.socket, 0o666)
        r = as_other_user(d.socket)
        assert json.loads(r[6:])["ok"] is True, r
        assert d.stop() == 0
    finally:
        d.kill()
    assert d.query("SELECT uid FROM events WHERE type = 'from_other'") == [(NOBODY,)]


def test_bad_allowed_uids_are_a_usage_error(home: Path) -> None:
    env = clean_env(home, HOOKD_ALLOWED_UIDS="12,bob")
    out = subprocess.run([sys.executable, "-m", "hookd", "run"], env=env, capture_output=True, text=True)
    assert out.returncode == 2
    assert "HOOKD_ALLOWED_UIDS: expected user ids (comma-separated in a variable" in out.stderr
    assert "'bob'" in out.stderr


# -- the socket path and file modes ------------------------------------------------------------


def test_socket_path_symlink_is_refused_and_not_followed(home: Path) -> None:
    target = home / "precious.txt"
    target.write_text("keep me")
    (home / "hookd.sock").symlink_to(target)
    d = Daemon(home).start(wait=False)
    assert d.proc is not None and d.proc.wait(20) == 1
    d._exited.wait(5)
    assert "is a symlink; hookd will not replace it" in d.logtext
    assert (home / "hookd.sock").is_symlink() and target.read_text() == "keep me"


def test_socket_owned_by_another_user_is_refused_and_not_deleted(home: Path) -> None:
    if os.getuid() != 0:
        pytest.skip("needs root to create a file owned by another user")
    path = home / "hookd.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))
    s.close()  # a stale socket file, but not ours
    os.chown(path, NOBODY, NOBODY)
    d = Daemon(home).start(wait=False)
    assert d.proc is not None and d.proc.wait(20) == 1
    d._exited.wait(5)
    assert f"belongs to uid {NOBODY}; hookd will not replace another user's socket" in d.logtext
    assert path.exists() and path.lstat().st_uid == NOBODY


def test_database_wal_mirror_and_spool_files_are_private(home: Path) -> None:
    env = clean_env(home)
    code = "import hookd_client\nassert hookd_client.emit('spooled', n=1)\nassert hookd_client.spooled() == 1"
    subprocess.run([sys.executable, "-c", code], env=env, check=True)  # no daemon yet: spools
    spool = home / "spool"
    assert oct(spool.stat().st_mode & 0o777) == "0o700"
    assert {oct(p.stat().st_mode & 0o777) for p in spool.iterdir()} == {"0o600"}
    d = Daemon(home).start()
    try:
        d.send(good(0) + b"\n")
        assert d.wait_count(2) == 2
        files = [d.db_path, home / "events.db-wal", home / "events.db-shm", *(home / "mirror").iterdir()]
        for p in files:
            assert oct(p.stat().st_mode & 0o777) == "0o600", p
        assert oct((home / "mirror").stat().st_mode & 0o777) == "0o700"
        assert d.stop() == 0
    finally:
        d.kill()


# -- faults: a locked database, a full disk, a missing database --------------------------------

# Holds a write lock (BEGIN IMMEDIATE) until a line arrives on stdin, at least argv[2] seconds:
# the test decides when the lock ends, so a slow machine cannot let it end before the checks.
HOLD_WRITE_LOCK = """
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN IMMEDIATE")
t0 = time.monotonic()
print("locked", flush=True)
sys.stdin.readline()
time.sleep(max(0.0, float(sys.argv[2]) - (time.monotonic() - t0)))
db.execute("COMMIT")
print("released", flush=True)
"""


def reap(*procs: subprocess.Popen[str] | None) -> None:
    """End helper processes a failed test left behind, so no ResourceWarning leaks into the next."""
    for p in procs:
        if p is None:
            continue
        if p.poll() is None:
            p.kill()
        p.communicate(timeout=10)


def stream(path: Path, lines: list[bytes], conns: int = 4) -> None:
    def one(k: int) -> None:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(str(path))
            s.sendall(b"".join(lines[k::conns]))

    threads = [threading.Thread(target=one, args=(k,)) for k in range(conns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)


@pytest.mark.slow
def test_database_locked_by_another_process_is_waited_out_and_nothing_is_lost(home: Path) -> None:
    d = Daemon(home).start()
    reader = holder = None
    try:
        d.send(good(0, "first") + b"\n")
        assert d.wait_count(1) == 1
        # A long reader (the system sqlite3 in a read transaction) does not block the writer ...
        reader = subprocess.Popen(["sqlite3", str(d.db_path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert reader.stdin is not None and reader.stdout is not None
        reader.stdin.write("BEGIN; SELECT count(*) FROM events;\n")
        reader.stdin.flush()
        assert reader.stdout.readline().strip() == "1"
        # ... and a write lock held (3 s at least) by a sqlite3 connection in another process is waited out.
        holder = subprocess.Popen(
            [sys.executable, "-c", HOLD_WRITE_LOCK, str(d.db_path), "3"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        n = 20_000
        t = threading.Thread(target=stream, args=(d.socket, [good(i, "during_lock") + b"\n" for i in range(n)]))
        t.start()
        assert wait_for(lambda: "waiting for a database lock" in d.logtext, 20), d.logtext
        assert d.count("type = 'during_lock'") == 0  # the reader's snapshot has nothing new either way
        # `hookd status` says what is happening (the writer's log line may come before its report)

        def writer_state() -> str:
            out = subprocess.run(
                [sys.executable, "-m", "hookd", "status", "--json"], env=clean_env(home), capture_output=True, text=True
            )
            return json.loads(out.stdout).get("daemon", {}).get("writer", {}).get("state", f"no answer: {out.stdout}")

        assert wait_for(lambda: writer_state().startswith("waiting for a database lock since"), 20), writer_state()
        assert d.count("type = 'during_lock'") == 0
        holder.communicate("release\n", timeout=30)
        assert holder.returncode == 0
        t.join(60)
        assert d.wait_count(n, timeout=60, where="type = 'during_lock'") == n
        assert wait_for(lambda: "back to normal" in d.logtext, 10), d.logtext
        assert wait_for(lambda: writer_state() == "ok", 10), writer_state()
        reader.communicate("COMMIT;\n.quit\n", timeout=10)
        assert reader.returncode == 0
        assert d.proc is not None and d.proc.poll() is None
        assert d.stop() == 0, d.logtext
    finally:
        d.kill()
        reap(reader, holder)
    assert d.count() == n + 1
    assert len(d.mirror_lines()) == n + 1  # a retried commit never mirrors a batch twice
    assert sorted(
        i for (i,) in d.query("SELECT json_extract(data,'$.i') FROM events WHERE type='during_lock'")
    ) == list(range(n))
    record("database write-locked by another process for 3 s, plus a long reader", n + 1, n + 1, {})


def can_mount_tmpfs(where: Path) -> bool:
    if os.getuid() != 0 or shutil.which("mount") is None:
        return False
    where.mkdir(exist_ok=True)
    ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m,mode=0700", "tmpfs", str(where)]).returncode == 0
    return ok


def fill(directory: Path) -> Path:
    """Fill the file system of ``directory`` to the last byte."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (1 << 16, 512, 1):
            block = b"\0" * size
            try:
                while True:
                    os.write(fd, block)
            except OSError:
                pass
    finally:
        os.close(fd)
    return filler


@pytest.mark.slow
def test_disk_full_holds_events_and_recovers_without_corruption_or_torn_mirror(home: Path) -> None:
    disk = home / "disk"
    if not can_mount_tmpfs(disk):
        pytest.skip("needs root to mount a small tmpfs")
    try:
        env = clean_env(disk, HOOKD_SPOOL_DIR=str(home / "spool"))
        d = Daemon(disk, env=env).start()
        try:
            d.send(good(0, "before") + b"\n")
            assert d.wait_count(1) == 1
            filler = fill(disk)
            n = 20_000
            pad = "p" * 200
            lines = [json.dumps({"type": "while_full", "i": i, "pad": pad}).encode() + b"\n" for i in range(n)]
            t = threading.Thread(target=stream, args=(d.socket, lines))
            t.start()
            assert wait_for(lambda: "waiting for disk space" in d.logtext, 20), d.logtext
            time.sleep(1.0)  # a while with no space at all: the daemon holds on
            assert d.proc is not None and d.proc.poll() is None
            held = d.count("type = 'while_full'")
            assert held < n
            filler.unlink()  # space returns
            t.join(60)
            assert d.wait_count(n, timeout=60, where="type = 'while_full'") == n
            assert wait_for(lambda: "back to normal" in d.logtext, 10)
            assert d.stop() == 0, d.logtext
            print("\n".join(line for line in d.log if "WARNING" in line))
        finally:
            d.kill()
        assert d.query("PRAGMA integrity_check") == [("ok",)]
        mirror = d.mirror_lines()
        assert len(mirror) == n + 1
        assert all(json.loads(line)["eid"] for line in mirror)  # every line whole
        assert sorted(i for (i,) in d.query("SELECT json_extract(data,'$.i') FROM events WHERE type='while_full'")) == (
            list(range(n))
        )
        record(f"disk full (tmpfs filled to the last byte), {held} stored before space returned", n + 1, n + 1, {})
    finally:
        subprocess.run(["umount", "-l", str(disk)])


def test_database_deleted_while_stopped_is_restored_from_the_mirror(home: Path) -> None:
    d = Daemon(home).start()
    d.send(b"".join(good(i) + b"\n" for i in range(100)) + b"not json\n")
    assert d.wait_count(100) == 100
    assert d.stop() == 0
    for p in home.glob("events.db*"):
        p.unlink()
    d.start()
    try:
        assert d.count() == 100
        assert "the database" in d.logtext and "was missing" in d.logtext and "restored 100 events" in d.logtext
        d.send(good(100) + b"\n")
        assert d.wait_count(101) == 101
        assert d.stop() == 0
    finally:
        d.kill()
    assert len(d.mirror_lines()) == 101
    record("database deleted while stopped, then started", 102, 101, {"invalid_json": 1})
