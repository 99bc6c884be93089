"""clients/python/hookd_client.py: emit() in-process and in a bare subprocess, against the real daemon.

Fire-and-forget emit() hands the event to the daemon's socket, or when the daemon cannot take it
at once writes it to the spool directory (the daemon reads the spool at start and every second).
Every test points HOME, HOOKD_* and the spool at temporary directories: nothing is ever sent or
spooled to the user's real daemon.
"""

from __future__ import annotations

import ast
import datetime as dt
import decimal
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import hookd_client
from conftest import ROOT, Daemon, clean_env, settle, stored
from hookd_client import dropped, emit, socket_path, spool_dir, spooled

CLIENT_FILE = ROOT / "clients" / "python" / "hookd_client.py"


def spool_files(directory: Path) -> list[Path]:
    """Spool files holding events: the shared append file and per-event files (not temporaries)."""
    if not directory.is_dir():
        return []
    return sorted(
        p for p in directory.iterdir() if p.name.endswith((".jsonl", ".spool")) and not p.name.startswith(".")
    )


def spooled_records(directory: Path) -> list[bytes]:
    """The spooled event lines, without the append file's `<time_ns>\\t` stamps."""
    out = []
    for p in spool_files(directory):
        for line in p.read_bytes().splitlines(keepends=True):
            if p.suffix == ".spool":
                stamp, tab, line = line.partition(b"\t")
                assert tab and stamp.isdigit() and abs(int(stamp) / 1e9 - time.time()) < 600, stamp
            out.append(line)
    return out


@pytest.fixture
def no_hookd_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """No HOOKD_* or XDG_* variable set; HOME is a fresh temporary directory."""
    for var in list(os.environ):
        if var.startswith(("HOOKD_", "XDG_")):
            monkeypatch.delenv(var)
    monkeypatch.setenv("HOME", str(tmp_path / "user-home"))
    return monkeypatch


@pytest.fixture
def live(daemon: Daemon, no_hookd_env: pytest.MonkeyPatch) -> Daemon:
    """The daemon, with this process's environment pointing at it through HOOKD_HOME."""
    no_hookd_env.setenv("HOOKD_HOME", str(daemon.home))
    return daemon


@pytest.fixture
def nowhere(home: Path, no_hookd_env: pytest.MonkeyPatch) -> Path:
    """HOOKD_HOME is ``home``, where no daemon runs: events go to ``home/spool``. Returns that."""
    no_hookd_env.setenv("HOOKD_HOME", str(home))
    return home / "spool"


def test_the_module_under_test_is_the_repositorys() -> None:
    assert Path(hookd_client.__file__).resolve() == CLIENT_FILE


# -- emit against the daemon ---------------------------------------------------------------


def test_keyword_fields_dict_and_both(live: Daemon) -> None:
    before = dropped(), spooled()
    assert emit("tool", tool_name="Read", session="s1") is True
    assert emit("tool_dict", {"tool_name": "Write", "n": 2, "nested": {"a": [1, None, True]}}) is True
    assert emit("merged", {"a": 1, "b": "from data"}, b="from fields", c=3.5) is True
    assert emit("bare") is True
    assert (dropped(), spooled()) == before  # all went over the socket
    settle(live, 4)
    assert stored(live) == [
        ("tool", "s1", {"type": "tool", "tool_name": "Read", "session": "s1"}),
        ("tool_dict", None, {"type": "tool_dict", "tool_name": "Write", "n": 2, "nested": {"a": [1, None, True]}}),
        ("merged", None, {"type": "merged", "a": 1, "b": "from fields", "c": 3.5}),
        ("bare", None, {"type": "bare"}),
    ]
    assert live.query("SELECT data FROM events WHERE type = 'bare'") == [('{"type":"bare"}',)]
    assert spool_files(live.home / "spool") == []


def test_type_argument_wins_over_a_type_key(live: Daemon) -> None:
    assert emit("real_a", {"type": "fake", "hook_event_name": "Stop", "k": "a"}) is True
    assert emit("real_b", type="fake", k="b") is True  # `type` is positional-only: this is a field
    assert emit("real_c", {"type": "fake"}, type="fake too", k="c") is True
    settle(live, 3)
    rows = live.query("SELECT type, json_extract(data, '$.type'), json_extract(data, '$.k') FROM events ORDER BY eid")
    assert rows == [("real_a", "real_a", "a"), ("real_b", "real_b", "b"), ("real_c", "real_c", "c")]
    # one `type` key only (unlike the shell client, which appends a second one)
    assert all(d.count('"type"') == 1 for (d,) in live.query("SELECT data FROM events"))


def test_camel_case_type_is_normalized_by_the_daemon(live: Daemon) -> None:
    assert emit("PostToolUse", session_id="abc") is True
    settle(live, 1)
    assert stored(live) == [("post_tool_use", "abc", {"type": "PostToolUse", "session_id": "abc"})]


def test_values_json_cannot_encode_are_sent_as_str(live: Daemon) -> None:
    when = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    uid = uuid.UUID(int=7)

    class Custom:
        def __str__(self) -> str:
            return "custom!"

    values = {
        "a_set": {42},
        "when": when,
        "day": when.date(),
        "price": decimal.Decimal("1.10"),
        "path": Path("/x/y"),
        "uuid": uid,
        "obj": Custom(),
        "raw": b"\x00\xff",
        "nested": [{"deep": frozenset({"z"})}],
    }
    assert emit("odd_values", values) is True  # no exception
    settle(live, 1)
    [(_, _, data)] = stored(live)
    assert data == {
        "type": "odd_values",
        "a_set": "{42}",
        "when": str(when),
        "day": "2026-01-02",
        "price": "1.10",
        "path": "/x/y",
        "uuid": str(uid),
        "obj": "custom!",
        "raw": str(b"\x00\xff"),
        "nested": [{"deep": "frozenset({'z'})"}],
    }


def test_text_with_newlines_quotes_and_unicode_is_one_event(live: Daemon) -> None:
    text = 'line 1\nline 2\r\n"quoted" } { \\ \t naïve 日本語 🎉 \u2028 \x00'
    assert emit("text", text=text, **{"weird key \n": 1}) is True
    settle(live, 1)
    [(_, _, data)] = stored(live)
    assert data == {"type": "text", "text": text, "weird key \n": 1}
    # (SQLite's json_extract stops at the NUL; everything before it is intact)
    assert live.query("SELECT json_extract(data, '$.text') FROM events") == [(text[: text.index("\x00")],)]


def test_large_event_bigger_than_the_socket_buffer_arrives_whole(live: Daemon) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        sndbuf = s.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
    blob = "".join(f"{i:07d}|" for i in range(75_000))  # 600 KB, every chunk distinct
    assert len(blob) == 600_000 > sndbuf
    before = spooled()
    assert emit("big", blob=blob, tail="end") is True
    assert emit("after_big", n=1) is True
    assert spooled() == before  # sent, not spooled
    settle(live, 2)
    [(etype, _, data), (etype2, _, _)] = stored(live)
    assert (etype, etype2) == ("big", "after_big")
    assert data == {"type": "big", "blob": blob, "tail": "end"}


def test_concurrent_emitters_store_everything_exactly_once(live: Daemon) -> None:
    """8 threads emitting at once: all True, nothing dropped, every event stored exactly once
    (those that found the listen queue full arrive through the spool)."""
    threads, per = 8, 150
    results: list[list[bool]] = [[] for _ in range(threads)]
    before = dropped()

    def work(k: int) -> None:
        for i in range(per):
            results[k].append(emit("conc", k=k, i=i))

    ts = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(30)
    assert results == [[True] * per] * threads
    assert dropped() == before
    settle(live, threads * per)
    pairs = live.query("SELECT json_extract(data, '$.k'), json_extract(data, '$.i') FROM events")
    assert sorted(pairs) == [(k, i) for k in range(threads) for i in range(per)]
    assert spool_files(live.home / "spool") == []


def test_emit_in_a_bare_interpreter_with_only_the_client_file(daemon: Daemon) -> None:
    """`python -I -S`: no site-packages, no PYTHON* variables; only the file's directory on sys.path."""
    code = (
        "import sys; sys.path.insert(0, sys.argv[1])\n"
        "from hookd_client import emit, dropped, spooled\n"
        "ok = emit('bare_py', {'from': 'subprocess'}, n=1)\n"
        "third = sorted(m for m in sys.modules if m.split('.')[0] in ('msgspec', 'uvloop', 'hookd'))\n"
        "print(ok, dropped(), spooled(), third)\n"
    )
    p = subprocess.Popen(
        [sys.executable, "-I", "-S", "-c", code, str(CLIENT_FILE.parent)],
        env=clean_env(daemon.home),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    out, err = p.communicate(timeout=30)
    assert p.returncode == 0, err
    assert out == "True 0 0 []\n"
    settle(daemon, 1)
    assert stored(daemon) == [("bare_py", None, {"type": "bare_py", "from": "subprocess", "n": 1})]
    assert daemon.query("SELECT pid FROM events") == [(p.pid,)]


def test_hookd_socket_wins_over_hookd_home(daemon: Daemon, no_hookd_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    no_hookd_env.setenv("HOOKD_HOME", str(tmp_path))  # no daemon there
    no_hookd_env.setenv("HOOKD_SOCKET", str(daemon.socket))
    before = spooled()
    assert emit("via_socket") is True
    assert spooled() == before
    assert spool_files(tmp_path / "spool") == []
    # the other way round: HOOKD_SOCKET names a dead path; the event is spooled (under HOOKD_HOME)
    no_hookd_env.setenv("HOOKD_SOCKET", str(tmp_path / "dead.sock"))
    assert emit("spooled_one") is True
    assert spooled() == before + 1
    assert len(spool_files(tmp_path / "spool")) == 1
    settle(daemon, 1)
    assert [t for t, *_ in stored(daemon)] == ["via_socket"]


# -- wait=True -----------------------------------------------------------------------------


def test_wait_returns_the_committed_eid(live: Daemon) -> None:
    eid = emit("acked", {"type": "ignored", "n": 1}, wait=True)
    assert isinstance(eid, int) and not isinstance(eid, bool)
    # committed before emit returned: visible at once, without waiting
    assert live.query("SELECT eid, type, json_extract(data, '$.n') FROM events") == [(eid, "acked", 1)]
    assert emit("acked", n=2, wait=2.5) > eid
    settle(live, 2)


def test_wait_raises_event_rejected_with_the_reason(live: Daemon) -> None:
    with pytest.raises(hookd_client.EventRejected) as e:
        emit("not a type!", wait=True)
    assert e.value.reason == "bad_type"
    assert isinstance(e.value, hookd_client.HookdClientError)
    settle(live, 0, rejected=1)


def test_wait_without_daemon_raises_at_once_and_does_not_spool(nowhere: Path) -> None:
    before = dropped(), spooled()
    t0 = time.perf_counter()
    with pytest.raises(hookd_client.DaemonUnavailable):
        emit("t", wait=True)
    assert time.perf_counter() - t0 < 0.5
    assert (dropped(), spooled()) == before
    assert spool_files(nowhere) == []


# -- daemon missing: the spool -------------------------------------------------------------


@pytest.fixture
def ram_spool(home: Path, no_hookd_env: pytest.MonkeyPatch) -> Iterator[tuple[Path, float]]:
    """HOOKD_SPOOL_DIR on tmpfs when there is one, so that timing measures the client rather than
    the disk (creating a file on this machine's ext4 /tmp costs about 1 ms). Yields the directory
    and the time budget for 1000 spooled emits."""
    no_hookd_env.setenv("HOOKD_SOCKET", str(home / "nobody.sock"))
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        base = Path(tempfile.mkdtemp(prefix="hookd-test-", dir=shm))
        budget = 0.5
    else:
        base = home
        budget = 5.0
    directory = base / "spool"
    no_hookd_env.setenv("HOOKD_SPOOL_DIR", str(directory))
    try:
        yield directory, budget
    finally:
        if base != home:
            shutil.rmtree(base, ignore_errors=True)


def test_daemon_missing_spools_never_raises_and_is_fast(ram_spool: tuple[Path, float]) -> None:
    directory, budget = ram_spool
    before_dropped, before_spooled = dropped(), spooled()
    assert emit("t", {"i": -1}, x="y") is True
    assert spooled() == before_spooled + 1
    assert spooled_records(directory) == [b'{"type":"t","i":-1,"x":"y"}\n']
    n = 1000
    t0 = time.perf_counter()
    results = [emit("t", {"i": i}, x="y") for i in range(n)]
    elapsed = time.perf_counter() - t0
    assert results == [True] * n
    assert spooled() == before_spooled + 1 + n
    assert dropped() == before_dropped
    assert elapsed < budget, f"{n} spooled emits took {elapsed:.3f} s"
    files = spool_files(directory)
    assert [p.name for p in files] == ["append.spool"]  # one shared append file, no temporaries
    assert all(os.stat(p).st_mode & 0o777 == 0o600 for p in files)
    assert os.stat(directory).st_mode & 0o777 == 0o700
    assert sorted(json.loads(r)["i"] for r in spooled_records(directory)) == list(range(-1, n))


def test_spooled_events_are_stored_once_when_the_daemon_starts(nowhere: Path) -> None:
    home = nowhere.parent
    for i in range(20):
        assert emit("later", i=i) is True
    assert len(spooled_records(nowhere)) == 20
    d = Daemon(home).start()
    try:
        assert d.wait_count(20) == 20
        assert emit("live", i=20) is True  # and the socket works as usual
        settle(d, 21)
    finally:
        d.kill()
    assert sorted(i for (i,) in d.query("SELECT json_extract(data, '$.i') FROM events")) == list(range(21))
    assert spool_files(nowhere) == []


def test_spool_not_writable_returns_false_and_counts_dropped(home: Path, no_hookd_env: pytest.MonkeyPatch) -> None:
    (home / "a-file").write_text("x")
    no_hookd_env.setenv("HOOKD_SOCKET", str(home / "nobody.sock"))
    no_hookd_env.setenv("HOOKD_SPOOL_DIR", str(home / "a-file" / "spool"))  # under a regular file
    before_dropped, before_spooled = dropped(), spooled()
    n = 1000
    t0 = time.perf_counter()
    results = [emit("t", i=i) for i in range(n)]
    elapsed = time.perf_counter() - t0
    assert results == [False] * n
    assert dropped() == before_dropped + n
    assert spooled() == before_spooled
    assert elapsed < 0.5, f"{n} dropped emits took {elapsed:.3f} s"


@pytest.mark.parametrize("kind", ["missing", "stale_socket", "regular_file", "directory", "missing_dir", "too_long"])
def test_unusable_socket_paths_spool_at_once(home: Path, no_hookd_env: pytest.MonkeyPatch, kind: str) -> None:
    path = home / "hookd.sock"
    if kind == "stale_socket":  # a SIGKILLed daemon leaves its socket file behind
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.bind(str(path))
    elif kind == "regular_file":
        path.write_text("not a socket")
    elif kind == "directory":
        path.mkdir()
    elif kind == "missing_dir":
        path = home / "no" / "such" / "dir" / "hookd.sock"
    elif kind == "too_long":
        path = home / ("x" * 200) / "hookd.sock"
    no_hookd_env.setenv("HOOKD_SOCKET", str(path))
    no_hookd_env.setenv("HOOKD_SPOOL_DIR", str(home / "sp"))
    before = spooled()
    t0 = time.perf_counter()
    assert emit("t", a=1) is True
    assert time.perf_counter() - t0 < 0.1
    assert spooled() == before + 1
    assert spooled_records(home / "sp") == [b'{"type":"t","a":1}\n']


def test_unencodable_input_is_dropped_not_raised(nowhere: Path) -> None:
    before = dropped(), spooled()
    assert emit("t", [1, 2]) is False  # type: ignore[arg-type]  # data that is not a mapping
    assert emit("t", {(1, 2): "tuple key"}) is False  # JSON cannot have that key
    circular: list = []
    circular.append(circular)
    assert emit("t", loop=circular) is False
    assert (dropped(), spooled()) == (before[0] + 3, before[1])
    assert spool_files(nowhere) == []


def test_full_listen_queue_spools_at_once(home: Path, no_hookd_env: pytest.MonkeyPatch) -> None:
    """A daemon that does not accept: once its listen queue is full, emit spools without waiting."""
    path = home / "busy.sock"
    no_hookd_env.setenv("HOOKD_SOCKET", str(path))
    no_hookd_env.setenv("HOOKD_SPOOL_DIR", str(home / "sp"))
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    queued: list[socket.socket] = []
    try:
        server.bind(str(path))
        server.listen(1)
        for _ in range(16):  # fill the queue
            c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            c.setblocking(False)
            try:
                c.connect(str(path))
            except BlockingIOError:
                c.close()
                break
            queued.append(c)
        else:
            pytest.fail("the listen queue never filled")
        before = spooled()
        t0 = time.perf_counter()
        assert emit("busy") is True
        assert time.perf_counter() - t0 < 0.1
        assert spooled() == before + 1
        assert spooled_records(home / "sp") == [b'{"type":"busy"}\n']
    finally:
        for c in queued:
            c.close()
        server.close()


def test_stalled_daemon_bounds_a_large_send_then_spools(home: Path, no_hookd_env: pytest.MonkeyPatch) -> None:
    """Accepted but never read: a send bigger than the buffers gives up after about 1 s and spools."""
    path = home / "stalled.sock"
    no_hookd_env.setenv("HOOKD_SOCKET", str(path))
    no_hookd_env.setenv("HOOKD_SPOOL_DIR", str(home / "sp"))
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(str(path))
        server.listen(8)
        before = spooled()
        t0 = time.perf_counter()
        assert emit("huge", blob="z" * 4_000_000) is True
        elapsed = time.perf_counter() - t0
        assert 0.5 < elapsed < 2.0, elapsed
        assert spooled() == before + 1
        [record] = spooled_records(home / "sp")
        assert json.loads(record) == {"type": "huge", "blob": "z" * 4_000_000}
        # a small event still fits in the buffer of a queued connection: handed over
        assert emit("small") is True
        assert spooled() == before + 1
        for _ in range(2):
            conn, _ = server.accept()
            conn.close()


# -- socket_path and spool_dir -------------------------------------------------------------


def test_socket_path_precedence(no_hookd_env: pytest.MonkeyPatch) -> None:
    fallback = f"/tmp/hookd-{os.getuid()}/hookd.sock"
    assert socket_path() == fallback
    no_hookd_env.setenv("XDG_RUNTIME_DIR", "run/user/1000")  # relative: ignored, as the XDG spec says
    assert socket_path() == fallback
    no_hookd_env.setenv("XDG_RUNTIME_DIR", "/run/user/1000")
    assert socket_path() == "/run/user/1000/hookd/hookd.sock"
    no_hookd_env.setenv("HOOKD_HOME", "/srv/hk")
    assert socket_path() == "/srv/hk/hookd.sock"
    no_hookd_env.setenv("HOOKD_SOCKET", "/elsewhere/h.sock")
    assert socket_path() == "/elsewhere/h.sock"
    no_hookd_env.setenv("HOOKD_SOCKET", "")  # empty counts as unset
    assert socket_path() == "/srv/hk/hookd.sock"
    no_hookd_env.setenv("HOOKD_HOME", "")
    assert socket_path() == "/run/user/1000/hookd/hookd.sock"
    no_hookd_env.setenv("XDG_RUNTIME_DIR", "")
    assert socket_path() == fallback


def test_spool_dir_precedence(no_hookd_env: pytest.MonkeyPatch) -> None:
    home = os.environ["HOME"]
    assert spool_dir() == f"{home}/.local/state/hookd/spool"
    no_hookd_env.setenv("XDG_STATE_HOME", "relative/state")
    assert spool_dir() == f"{home}/.local/state/hookd/spool"
    no_hookd_env.setenv("XDG_STATE_HOME", "/st")
    assert spool_dir() == "/st/hookd/spool"
    no_hookd_env.setenv("HOOKD_HOME", "/srv/hk")
    assert spool_dir() == "/srv/hk/spool"
    no_hookd_env.setenv("HOOKD_SPOOL_DIR", "/sp")
    assert spool_dir() == "/sp"


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"XDG_RUNTIME_DIR": "/run/user/5", "XDG_STATE_HOME": "/st"},
        {"XDG_RUNTIME_DIR": "rel", "XDG_STATE_HOME": "rel"},
        {"HOOKD_HOME": "/srv/hk", "XDG_RUNTIME_DIR": "/run/user/5"},
        {"HOOKD_SOCKET": "/a/b.sock", "HOOKD_SPOOL_DIR": "/sp", "HOOKD_HOME": "/srv/hk"},
        {"HOOKD_SOCKET": "", "HOOKD_SPOOL_DIR": "", "HOOKD_HOME": "/srv/hk"},
    ],
    ids=lambda e: ",".join(f"{k}={v}" for k, v in e.items()) or "none",
)
def test_paths_agree_with_the_daemon(no_hookd_env: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    from hookd.paths import resolve

    for k, v in env.items():
        no_hookd_env.setenv(k, v)
    daemon_paths = resolve(dict(os.environ))
    assert socket_path() == str(daemon_paths.socket)
    assert spool_dir() == str(daemon_paths.spool_dir)


def test_emit_reads_the_environment_at_each_call(daemon: Daemon, home: Path, no_hookd_env: pytest.MonkeyPatch) -> None:
    no_hookd_env.setenv("HOOKD_SOCKET", str(home / "dead.sock"))
    no_hookd_env.setenv("HOOKD_SPOOL_DIR", str(home / "sp"))  # not the daemon's spool
    before = spooled()
    assert emit("before") is True
    assert spooled() == before + 1
    no_hookd_env.setenv("HOOKD_SOCKET", str(daemon.socket))
    assert emit("after") is True
    assert spooled() == before + 1
    settle(daemon, 1)
    assert [t for t, *_ in stored(daemon)] == ["after"]


# -- standard library only -----------------------------------------------------------------


def imported_modules(tree: ast.AST) -> list[tuple[str, int]]:
    """(top-level module name, relative level) of every import anywhere in the file."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name.split(".")[0], 0) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            out.append(((node.module or "").split(".")[0], node.level))
        elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "__import__":
            out.append(("__import__()", 0))
    return out


def test_imports_only_the_standard_library() -> None:
    tree = ast.parse(CLIENT_FILE.read_text(encoding="utf-8"), filename=str(CLIENT_FILE))
    mods = imported_modules(tree)
    assert {"json", "os", "socket"} <= {m for m, _ in mods}
    for name, level in mods:
        assert level == 0, f"relative import of {name!r}"
        assert name in sys.stdlib_module_names, f"{name!r} is not in the standard library"


def test_public_names_exist() -> None:
    assert {"emit", "socket_path", "dropped"} <= set(hookd_client.__all__)
    for name in hookd_client.__all__:
        assert hasattr(hookd_client, name), name


# -- regressions: bugs found by these tests, fixed --


def test_a_briefly_stalled_daemon_queues_hundreds_of_emits(live: Daemon) -> None:
    """While the daemon's loop is stalled, connect-per-event emits wait in its listen queue
    (Settings.backlog, 4096 by default) rather than in the spool; either way each is stored once."""
    before = spooled()
    live.send_signal(signal.SIGSTOP)
    try:
        results = [emit("queued", i=i) for i in range(500)]
    finally:
        live.send_signal(signal.SIGCONT)
    assert results == [True] * 500
    via_spool = spooled() - before
    settle(live, 500)
    assert sorted(i for (i,) in live.query("SELECT json_extract(data, '$.i') FROM events")) == list(range(500))
    # (a regression: create_unix_server(sock=...) re-listened with asyncio's default of 100)
    try:  # the kernel caps every listen backlog at somaxconn
        cap = int(Path("/proc/sys/net/core/somaxconn").read_text())
    except (OSError, ValueError):
        cap = 4096
    assert via_spool == max(0, 500 - (min(4096, cap) + 1))


def test_nan_and_infinity_do_not_lose_the_event(live: Daemon) -> None:
    """Bare NaN/Infinity are not JSON: they are sent as null, like JSON.stringify does."""
    assert emit("metric", latency=float("nan"), peak=float("inf"), ok=1.5, nested=[float("-inf")]) is True
    assert live.stop() == 0, live.logtext
    assert live.query("SELECT reason FROM rejected") == []
    data = json.loads(live.query("SELECT data FROM events")[0][0])
    assert data == {"type": "metric", "latency": None, "peak": None, "ok": 1.5, "nested": [None]}


def test_lone_surrogate_does_not_lose_the_event(live: Daemon) -> None:
    """A file name read with surrogateescape is not UTF-8: the bad byte becomes U+FFFD."""
    name = os.fsdecode(b"caf\xe9.txt")  # a Latin-1 file name read on a UTF-8 system: 'caf\udce9.txt'
    assert emit("fs", name=name) is True
    assert live.stop() == 0, live.logtext
    assert live.query("SELECT reason FROM rejected") == []
    assert live.query("SELECT json_extract(data, '$.name') FROM events") == [("caf\ufffd.txt",)]
